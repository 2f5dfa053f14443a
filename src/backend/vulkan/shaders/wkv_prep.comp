#version 450
// Prefill WKV, part 1 of 3 (spec §2.2 steps 6, 9, 10): the per-token work before the
// recurrence, in parallel over (head h, token row t) = workgroup (x, y), invocation i for
// channel c = h N + i:
//   v' = v + nu (v_first - v) (layer 0: v' = v, stored as v_first),
//   kk = normalize over the head (k * k_k),  k_mod = k (1 + (a - 1) k_a),
// into the kk, k_mod and v debug regions, where wkv_scan and wkv_post read them.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "wkv_io.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint N = 64;

void main() {
  uint c = gl_WorkGroupID.x * N + gl_LocalInvocationID.x;
  uint o = gl_WorkGroupID.y * pc.C + c;
  float k = act[pc.k + o], a = act[pc.a + o], v = act[pc.v + o];
  float kk_w = vecs[pc.k_k + c], ka_w = vecs[pc.k_a + c];
  if (pc.nu == NONE) {
    act[pc.v_first + o] = v;
  } else {
    v += act[pc.nu + o] * (act[pc.v_first + o] - v);
  }
  float kk = k * kk_w;
  float norm = sqrt(wg_sum(kk * kk));
  act[dbg_at(DBG_KK, o)] = kk / max(norm, 1e-12);
  act[dbg_at(DBG_KMOD, o)] = k * (1.0 + (a - 1.0) * ka_w);
  act[dbg_at(DBG_V, o)] = v;
}
