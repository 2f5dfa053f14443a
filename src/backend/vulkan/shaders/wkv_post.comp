#version 450
// Prefill WKV, part 3 of 3 (spec §2.2 steps 11-13): after the recurrence, in parallel over
// (head h, token row t) = workgroup (x, y), invocation i for channel c = h N + i:
//   lnx = group norm over the head (y) * lnx_w + lnx_b + (sum r k_mod r_k) v',
//   out = lnx * g,
// with y from wkv_scan and k_mod, v' from wkv_prep (debug regions); lnx also goes to its
// debug region. OUT16: out goes out as float16 (the tensor-core matmul's input, kernels.h
// MatF16) at half index 2 out + t C + c, neighbouring channels paired through shared memory.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "wkv_io.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint N = 64;
layout(constant_id = 1) const bool OUT16 = false;
layout(std430, set = 0, binding = 0) buffer ScratchWords { uint act_u[]; };
shared float out_sh[N];

void main() {
  uint c = gl_WorkGroupID.x * N + gl_LocalInvocationID.x;
  uint o = gl_WorkGroupID.y * pc.C + c;
  float y = act[dbg_at(DBG_WKV, o)], r = act[pc.r + o], kmod = act[dbg_at(DBG_KMOD, o)];
  float v = act[dbg_at(DBG_V, o)], g = act[pc.g + o];
  float rk_w = vecs[pc.r_k + c], lw = vecs[pc.lnx_w + c], lb = vecs[pc.lnx_b + c];
  vec2 red = wg_sum2(vec2(y, r * kmod * rk_w));  // sum of y, bonus
  float dy = y - red.x / float(N);
  float var = wg_sum(dy * dy) / float(N);
  float lnx = dy * inversesqrt(var + pc.gn_eps) * lw + lb + red.y * v;
  act[dbg_at(DBG_LNX, o)] = lnx;
  if (!OUT16) {
    act[pc.out_ + o] = lnx * g;
    return;
  }
  uint i = gl_LocalInvocationID.x;
  out_sh[i] = lnx * g;
  barrier();
  if (i < N / 2u) act_u[pc.out_ + (o - i) / 2u + i] = packHalf2x16(vec2(out_sh[2u * i], out_sh[2u * i + 1u]));
}
