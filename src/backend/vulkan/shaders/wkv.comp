#version 450
// The WKV7 recurrence fused with everything per head around it (spec §2.2 steps 6, 9-13,
// §2.3): workgroup (h, s) runs head h of sequence s over the sequence's tokens in order,
// invocation i owning row i (value channel) of the head's N x N state in registers.
// Per token: value-residual mix, removal key kk = normalize(k * k_k), k_mod, the state
// update and read-out y = S'r, group norm (ln_x), the bonus (sum r*k_mod*r_k) * v, and the
// gate: out = (ln_x(y) + bonus * v) * g. Layer 0 stores v as v_first. Also commits the
// attention shift state (the last row's ln1 output) for this head's channels. For decode
// and short sequences; long ones take the prefill form (wkv_scan.comp).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "wkv_io.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint N = 64;

shared float sh_r[N], sh_d[N], sh_k[N], sh_a[N], sh_b[N];

void main() {
  uint h = gl_WorkGroupID.x, seq = gl_WorkGroupID.y, i = gl_LocalInvocationID.x;
  uint c = h * N + i;
  uint row0 = meta[pc.seq_start + seq], n = meta[pc.seq_rows + seq], slot = meta[pc.seq_slot + seq];
  uint sbase = slot * pc.slot_stride + 2u * pc.C + (h * N + i) * N;  // S[h][i][*]
  float st[N];
  for (uint j = 0u; j < N; j += 4u) {
    vec4 q = state4[(sbase + j) >> 2];
    st[j] = q.x;
    st[j + 1u] = q.y;
    st[j + 2u] = q.z;
    st[j + 3u] = q.w;
  }
  float kk_w = vecs[pc.k_k + c], ka_w = vecs[pc.k_a + c], rk_w = vecs[pc.r_k + c];
  float lw = vecs[pc.lnx_w + c], lb = vecs[pc.lnx_b + c];

  // Token t+1's inputs are loaded while token t is computed: prefill runs this loop once per
  // token, and the loads would otherwise stall every iteration.
  uint o = row0 * pc.C + c;
  float r_n = act[pc.r + o], k_n = act[pc.k + o], v_n = act[pc.v + o], a_n = act[pc.a + o];
  float d_n = act[pc.decay + o], g_n = act[pc.g + o];
  float nu_n = pc.nu == NONE ? 0.0 : act[pc.nu + o], vf_n = pc.nu == NONE ? 0.0 : act[pc.v_first + o];
  for (uint t = row0; t < row0 + n; ++t) {
    o = t * pc.C + c;
    float r = r_n, k = k_n, v = v_n, a = a_n, d = d_n, g = g_n, nu = nu_n, vf = vf_n;
    if (t + 1u < row0 + n) {
      uint o1 = o + pc.C;
      r_n = act[pc.r + o1];
      k_n = act[pc.k + o1];
      v_n = act[pc.v + o1];
      a_n = act[pc.a + o1];
      d_n = act[pc.decay + o1];
      g_n = act[pc.g + o1];
      if (pc.nu != NONE) {
        nu_n = act[pc.nu + o1];
        vf_n = act[pc.v_first + o1];
      }
    }
    if (pc.nu == NONE) {
      act[pc.v_first + o] = v;
    } else {
      v += nu * (vf - v);
    }
    float kk = k * kk_w;
    float kmod = k * (1.0 + (a - 1.0) * ka_w);
    vec2 red = wg_sum2(vec2(kk * kk, r * kmod * rk_w));
    float kkh = kk / max(sqrt(red.x), 1e-12);
    sh_r[i] = r;
    sh_d[i] = d;
    sh_k[i] = kmod;
    sh_a[i] = -kkh;
    sh_b[i] = kkh * a;
    barrier();
    float sa = 0.0;
    for (uint j = 0u; j < N; ++j) sa += sh_a[j] * st[j];  // uses the state before decay
    float y = 0.0;
    for (uint j = 0u; j < N; ++j) {
      st[j] = st[j] * sh_d[j] + v * sh_k[j] + sa * sh_b[j];
      y += st[j] * sh_r[j];
    }
    float mean = wg_sum(y) / float(N);
    float dy = y - mean;
    float var = wg_sum(dy * dy) / float(N);
    float lnx = dy * inversesqrt(var + pc.gn_eps) * lw + lb + red.y * v;
    act[pc.out_ + o] = lnx * g;
    if (pc.dbg != NONE) {
      act[dbg_at(DBG_KK, o)] = kkh;
      act[dbg_at(DBG_KMOD, o)] = kmod;
      act[dbg_at(DBG_V, o)] = v;
      act[dbg_at(DBG_WKV, o)] = y;
      act[dbg_at(DBG_LNX, o)] = lnx;
    }
  }
  for (uint j = 0u; j < N; j += 4u) state4[(sbase + j) >> 2] = vec4(st[j], st[j + 1u], st[j + 2u], st[j + 3u]);
  state[slot * pc.slot_stride + c] = act[pc.xa + (row0 + n - 1u) * pc.C + c];
}
