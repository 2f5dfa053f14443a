#version 450
// The WKV7 recurrence fused with everything per head around it (spec §2.2 steps 6, 9-13,
// §2.3): workgroup (h, s) runs head h of sequence s over the sequence's tokens in order,
// invocation i < N owning row i (value channel) of the head's N x N state in registers.
// Per token: value-residual mix, removal key kk = normalize(k * k_k), k_mod, the state
// update and read-out y = S'r, group norm (ln_x), the bonus (sum r*k_mod*r_k) * v, and the
// gate: out = (ln_x(y) + bonus * v) * g. Layer 0 stores v as v_first. Also commits the
// attention shift state (the last row's ln1 output) for this head's channels. For decode
// and short sequences; long ones take the prefill form (wkv_scan.comp).
// Built twice. Plain: N invocations read decay, a, g, nu [T x C], written by the matrix
// stage before (mat.lora). With -DLORA: WG >= N invocations first compute them for each
// token from the LoRA down projections' outputs (wkv_lora.glsl), then the first N run the
// recurrence; decode steps save the matrix stage's dispatch and barrier.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "wkv_io.glsl"

layout(constant_id = 0) const uint N = 64;
#if defined(LORA)
#include "wkv_lora.glsl"
layout(local_size_x_id = 1) in;
#else
layout(local_size_x_id = 0) in;
#endif

shared float sh_r[N], sh_d[N], sh_k[N], sh_a[N], sh_b[N];

// Row i of the head's N x N state, channel c's weights, and the next token's inputs (token
// t+1's are loaded while token t is computed: prefill runs the token loop once per token, and
// the loads would otherwise stall every iteration).
float st[N];
float kk_w, ka_w, rk_w, lw, lb;
float r_n, k_n, v_n, vf_n;
#if !defined(LORA)
float a_n, d_n, g_n, nu_n;
#endif

// Loads token row t's inputs of channel c into the *_n registers.
void load_inputs(uint t, uint c, bool layer0) {
  uint o = t * pc.C + c;
  r_n = act[pc.r + o];
  k_n = act[pc.k + o];
  v_n = act[pc.v + o];
  if (!layer0) vf_n = act[pc.v_first + o];
#if !defined(LORA)
  a_n = act[pc.a + o];
  d_n = act[pc.decay + o];
  g_n = act[pc.g + o];
  if (!layer0) nu_n = act[pc.nu + o];
#endif
}

void main() {
  uint h = gl_WorkGroupID.x, seq = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
#if defined(LORA)
  // Invocations N.. only help with the LoRA part: they load channel N - 1's inputs, write
  // nothing and add zeros to the reductions.
  bool own = tid < N;
  float bias;  // lora_bias(tid, h)
  bool layer0 = pc.v_mid == NONE;
#else
  const bool own = true;
  bool layer0 = pc.nu == NONE;
#endif
  uint i = min(tid, N - 1u);
  uint c = h * N + i;
  uint row0 = meta[pc.seq_start + seq], n = meta[pc.seq_rows + seq], slot = meta[pc.seq_slot + seq];
  uint sbase = slot * pc.slot_stride + 2u * pc.C + (h * N + i) * N;  // S[h][i][*]
  vf_n = 0.0;
#if !defined(LORA)
  nu_n = 0.0;
#endif
  // Every sequence has a row: a do-while, so that nothing waits for the tables in meta
  // before the LoRA weights' loads are issued.
  uint t = row0;
  do {
#if defined(LORA)
    lora_load(h);  // first: no earlier dispatch writes the weights (later tokens: cache hits)
#endif
    if (t == row0) {
      if (own) {
        for (uint j = 0u; j < N; j += 4u) {
          vec4 q = state4[(sbase + j) >> 2];
          st[j] = q.x;
          st[j + 1u] = q.y;
          st[j + 2u] = q.z;
          st[j + 3u] = q.w;
        }
      }
      kk_w = vecs[pc.k_k + c];
      ka_w = vecs[pc.k_a + c];
      rk_w = vecs[pc.r_k + c];
      lw = vecs[pc.lnx_w + c];
      lb = vecs[pc.lnx_b + c];
      load_inputs(t, c, layer0);
#if defined(LORA)
      bias = tid < 4u * N ? lora_bias(tid, h) : 0.0;
#endif
    }
#if defined(LORA)
    lora_sums(h, t, bias);
    float d = lora_out[i], a = lora_out[N + i], g = lora_out[2u * N + i];
    float nu = layer0 ? 0.0 : lora_out[3u * N + i];
    float r = r_n, k = k_n, v = v_n, vf = vf_n;
#else
    float r = r_n, k = k_n, v = v_n, a = a_n, d = d_n, g = g_n, nu = nu_n, vf = vf_n;
#endif
    if (t + 1u < row0 + n) load_inputs(t + 1u, c, layer0);
    uint o = t * pc.C + c;
    if (layer0) {
      if (own) act[pc.v_first + o] = v;
    } else {
      v += nu * (vf - v);
    }
    float kk = k * kk_w;
    float kmod = k * (1.0 + (a - 1.0) * ka_w);
    vec2 red = wg_sum2(own ? vec2(kk * kk, r * kmod * rk_w) : vec2(0.0));
    float kkh = kk / max(sqrt(red.x), 1e-12);
    if (own) {
      sh_r[i] = r;
      sh_d[i] = d;
      sh_k[i] = kmod;
      sh_a[i] = -kkh;
      sh_b[i] = kkh * a;
    }
    barrier();
    float y = 0.0;
    if (own) {
      float sa = 0.0;
      for (uint j = 0u; j < N; ++j) sa += sh_a[j] * st[j];  // uses the state before decay
      for (uint j = 0u; j < N; ++j) {
        st[j] = st[j] * sh_d[j] + v * sh_k[j] + sa * sh_b[j];
        y += st[j] * sh_r[j];
      }
    }
    float mean = wg_sum(y) / float(N);
    float dy = y - mean;
    float var = wg_sum(own ? dy * dy : 0.0) / float(N);
    float lnx = dy * inversesqrt(var + pc.gn_eps) * lw + lb + red.y * v;
    if (own) {
      act[pc.out_ + o] = lnx * g;
      if (pc.dbg != NONE) {
        act[dbg_at(DBG_KK, o)] = kkh;
        act[dbg_at(DBG_KMOD, o)] = kmod;
        act[dbg_at(DBG_V, o)] = v;
        act[dbg_at(DBG_WKV, o)] = y;
        act[dbg_at(DBG_LNX, o)] = lnx;
      }
    }
  } while (++t < row0 + n);
  if (own) {
    for (uint j = 0u; j < N; j += 4u) state4[(sbase + j) >> 2] = vec4(st[j], st[j + 1u], st[j + 2u], st[j + 3u]);
    state[slot * pc.slot_stride + c] = act[pc.xa + (row0 + n - 1u) * pc.C + c];
  }
}
