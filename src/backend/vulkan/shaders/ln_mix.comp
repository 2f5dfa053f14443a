#version 450
// Residual add + LayerNorm + token shift + lerps (spec §2.2 steps 1-2, §2.4 step 1, §2.6),
// one dispatch for all rows of a step: workgroup (x, t) handles channels [256x, 256x+256)
// of row t. With h = h_in + delta (delta optional):
//   h_out[t] = h,  xln[t] = LN(h[t]),  prev = LN(h[t-1]) or, on a sequence's first row, the
//   stored shift state,  mix[s][t] = xln + (prev - xln) * mu[s]  for s < nmix.
// Every workgroup recomputes the statistics of rows t and t-1 (cheap; no extra dispatch).
// On a sequence's last row it may also commit commit_src[t] into the shift state of the
// previous sub-block (an older state nobody reads in this dispatch).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;
#define CACHE 16u  // elements per invocation kept in registers
layout(std430, set = 0, binding = 0) buffer Scratch { float act[]; };
layout(std430, set = 0, binding = 1) readonly buffer Vectors { float vecs[]; };
layout(std430, set = 0, binding = 2) readonly buffer StateIn { float state_in[]; };
layout(std430, set = 0, binding = 3) buffer StateCommit { float state_commit[]; };
layout(std430, set = 0, binding = 4) readonly buffer Meta { uint meta[]; };

layout(push_constant) uniform Push {
  uint C;
  uint h_in, delta, h_out;  // delta, h_out may be NONE
  uint xln;
  uint mix, mix_stride, nmix, mu;  // mix slot s at mix + s * mix_stride; mu slot s at mu + s * C (vecs)
  uint ln_w, ln_b;
  float eps;
  uint slot_stride;   // floats of one slot in a state buffer
  uint shift_off;     // where the shift vector read by first rows sits in a slot (NONE: no mixes)
  uint commit_src;    // NONE or [T x C] source of the committed shift
  uint commit_off;    // where it goes in a slot of state_commit
  uint row_slot, row_flags;  // per-row slot and flags (1: first of its sequence, 2: last) in meta
} pc;

float h_at(uint t, uint c) {
  float v = act[pc.h_in + t * pc.C + c];
  if (pc.delta != NONE) v += act[pc.delta + t * pc.C + c];
  return v;
}

void main() {
  uint t = gl_WorkGroupID.y;
  uint tid = gl_LocalInvocationID.x;
  uint c = gl_WorkGroupID.x * 256u + tid;
  uint flags = meta[pc.row_flags + t];
  uint slot = meta[pc.row_slot + t];
  bool first = (flags & 1u) != 0u;
  bool need_prev = !first && pc.nmix > 0u;

  // Two-pass statistics of row t (x) and, when its LN feeds the shift, row t-1 (y). Each
  // invocation keeps the elements it reads in registers (rows up to CACHE * 256 channels),
  // so the second pass and the output need no second trip to memory.
  vec2 cache[CACHE];
  vec2 s = vec2(0.0);
  for (uint k = 0u; k < CACHE; ++k) {
    uint i = tid + 256u * k;
    cache[k] = i < pc.C ? vec2(h_at(t, i), need_prev ? h_at(t - 1u, i) : 0.0) : vec2(0.0);
    s += cache[k];
  }
  for (uint i = tid + 256u * CACHE; i < pc.C; i += 256u) s += vec2(h_at(t, i), need_prev ? h_at(t - 1u, i) : 0.0);
  vec2 mean = wg_sum2(s) / float(pc.C);
  vec2 q = vec2(0.0);
  for (uint k = 0u; k < CACHE; ++k) {
    vec2 d = tid + 256u * k < pc.C ? cache[k] - mean : vec2(0.0);
    q += d * d;
  }
  for (uint i = tid + 256u * CACHE; i < pc.C; i += 256u) {
    vec2 d = vec2(h_at(t, i), need_prev ? h_at(t - 1u, i) : 0.0) - mean;
    q += d * d;
  }
  vec2 rstd = inversesqrt(wg_sum2(q) / float(pc.C) + pc.eps);
  if (c >= pc.C) return;

  float w = vecs[pc.ln_w + c], b = vecs[pc.ln_b + c];
  // This invocation's channel c = 256 x + tid is its cached element x (when cached); the
  // loop keeps the cache indices constant, so it can stay in registers.
  vec2 hc = vec2(0.0);
  for (uint k = 0u; k < CACHE; ++k) {
    if (k == gl_WorkGroupID.x) hc = cache[k];
  }
  if (gl_WorkGroupID.x >= CACHE) hc = vec2(h_at(t, c), need_prev ? h_at(t - 1u, c) : 0.0);
  float h = hc.x;
  float cur = (h - mean.x) * rstd.x * w + b;
  uint o = t * pc.C + c;
  if (pc.h_out != NONE) act[pc.h_out + o] = h;
  act[pc.xln + o] = cur;
  if (pc.nmix > 0u) {
    float prev = first ? state_in[slot * pc.slot_stride + pc.shift_off + c] : (hc.y - mean.y) * rstd.y * w + b;
    for (uint m = 0u; m < pc.nmix; ++m) {
      act[pc.mix + m * pc.mix_stride + o] = cur + (prev - cur) * vecs[pc.mu + m * pc.C + c];
    }
  }
  if (pc.commit_src != NONE && (flags & 2u) != 0u) {
    state_commit[slot * pc.slot_stride + pc.commit_off + c] = act[pc.commit_src + o];
  }
}
