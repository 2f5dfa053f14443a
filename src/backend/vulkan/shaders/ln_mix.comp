#version 450
// Residual add + LayerNorm + token shift + lerps (spec §2.2 steps 1-2, §2.4 step 1, §2.6),
// one dispatch for all rows of a step: workgroup (x, t) handles channels [256x, 256x+256)
// of row t (ceil(C / 256) x T workgroups). With h = h_in + delta (delta optional):
//   h_out[t] = h,  xln[t] = LN(h[t]),  prev = LN(h[t-1]) or, on a sequence's first row, the
//   stored shift state,  mix[s][t] = xln + (prev - xln) * mu[s]  for s < nmix <= MAX_MIX.
// Every workgroup recomputes the statistics of rows t and t-1 (no extra dispatch); for many
// rows (ROW) one workgroup takes a whole row and computes them once.
// On a sequence's last row it may also commit commit_src[t] into the shift state of the
// previous sub-block (an older state nobody reads in this dispatch), each workgroup its own
// channels.
// Decode runs this with T = 1: a few workgroups whose time is a chain of memory round trips.
// So every load is issued before the first loaded value is used (rows, weights, mu, the
// shift state, the committed value), and the chain is: loads, two reductions, stores.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;
// Row elements per invocation kept in registers: the host passes ceil(C / 256) up to 16;
// wider rows read the rest again.
layout(constant_id = 0) const uint CACHE = 16;
// MIX16: the mixes go out as float16 (the tensor-core matmul's input, kernels.h MatF16): mix
// slot s of row t at half index 2 (mix + s mix_stride) + t C + c. Neighbouring channels meet
// in shared memory so that each store is a 32-bit pair.
layout(constant_id = 1) const bool MIX16 = false;
// ROW: one workgroup per row (dispatch 1 x T, C <= 256 CACHE), which computes the row's
// statistics once instead of once per 256 channels (prefill: the C/256 workgroups of a row
// each read rows t and t-1 whole, ten times the row's bytes at C = 2560).
layout(constant_id = 2) const bool ROW = false;
#define MAX_MIX 6u
layout(std430, set = 0, binding = 0) buffer Scratch { float act[]; };
layout(std430, set = 0, binding = 0) buffer ScratchWords { uint act_u[]; };
shared float mix_sh[MAX_MIX * 256u];
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

// Per invocation: elements tid + 256 k, k < CACHE, of row t (x) and row t-1 (y, or 0).
vec2 cache[CACHE];

// Fills the cache (row t-1 with `prev`). Past the row's end the index is clamped (those
// elements are masked out of the sums): no branch between the loads, so they are all in
// flight together.
void load_rows(uint t, uint tid, bool prev) {
  for (uint k = 0u; k < CACHE; ++k) cache[k] = vec2(act[pc.h_in + t * pc.C + min(tid + 256u * k, pc.C - 1u)], 0.0);
  if (pc.delta != NONE) {
    for (uint k = 0u; k < CACHE; ++k) cache[k].x += act[pc.delta + t * pc.C + min(tid + 256u * k, pc.C - 1u)];
  }
  if (!prev) return;
  for (uint k = 0u; k < CACHE; ++k) cache[k].y = act[pc.h_in + (t - 1u) * pc.C + min(tid + 256u * k, pc.C - 1u)];
  if (pc.delta != NONE) {
    for (uint k = 0u; k < CACHE; ++k) {
      cache[k].y += act[pc.delta + (t - 1u) * pc.C + min(tid + 256u * k, pc.C - 1u)];
    }
  }
}

// What a channel's outputs need besides the rows: its LayerNorm weights, lerp factors, the
// shift state a first row reads and the value a last row commits.
struct Channel {
  float w, b, mu[MAX_MIX], shift, committed;
};

// Channel c (clamped into the row) of row t in state slot `slot`.
Channel load_channel(uint c, uint t, uint slot, bool first, bool commit) {
  Channel ch;
  ch.w = vecs[pc.ln_w + c];
  ch.b = vecs[pc.ln_b + c];
  for (uint m = 0u; m < MAX_MIX; ++m) ch.mu[m] = m < pc.nmix ? vecs[pc.mu + m * pc.C + c] : 0.0;
  ch.shift = first && pc.nmix > 0u ? state_in[slot * pc.slot_stride + pc.shift_off + c] : 0.0;
  ch.committed = commit ? act[pc.commit_src + t * pc.C + c] : 0.0;
  return ch;
}

// The outputs of channels [c0, c0 + 256) of row t: this invocation's channel c0 + tid, with
// rows t and t-1 hc.
void emit(uint t, uint tid, uint c0, vec2 hc, vec2 mean, vec2 rstd, Channel ch, bool first, uint slot, bool commit) {
  bool has_c = c0 + tid < pc.C;
  uint c = min(c0 + tid, pc.C - 1u);
  float h = hc.x;
  float cur = (h - mean.x) * rstd.x * ch.w + ch.b;
  float prev = first ? ch.shift : (hc.y - mean.y) * rstd.y * ch.w + ch.b;
  uint o = t * pc.C + c;
  if (has_c) {
    if (pc.h_out != NONE) act[pc.h_out + o] = h;
    act[pc.xln + o] = cur;
    if (commit) state_commit[slot * pc.slot_stride + pc.commit_off + c] = ch.committed;
  }
  if (!MIX16) {
    for (uint m = 0u; m < MAX_MIX; ++m) {
      if (has_c && m < pc.nmix) act[pc.mix + m * pc.mix_stride + o] = cur + (prev - cur) * ch.mu[m];
    }
    return;
  }
  for (uint m = 0u; m < MAX_MIX; ++m) mix_sh[m * 256u + tid] = cur + (prev - cur) * ch.mu[m];
  barrier();
  // The block's 128 channel pairs per mix, three pairs per invocation.
  for (uint i = tid; i < MAX_MIX * 128u; i += 256u) {
    uint m = i / 128u, p = i % 128u;
    if (m < pc.nmix && c0 + 2u * p < pc.C) {
      vec2 pair = vec2(mix_sh[m * 256u + 2u * p], mix_sh[m * 256u + 2u * p + 1u]);
      act_u[pc.mix + m * pc.mix_stride + (t * pc.C + c0) / 2u + p] = packHalf2x16(pair);
    }
  }
  barrier();  // mix_sh is reused by the next block (ROW)
}

void main() {
  uint t = gl_WorkGroupID.y;
  uint tid = gl_LocalInvocationID.x;
  uint c = min(gl_WorkGroupID.x * 256u + tid, pc.C - 1u);  // clamped: loads stay in the row
  uint flags = meta[pc.row_flags + t];
  uint slot = meta[pc.row_slot + t];
  bool first = (flags & 1u) != 0u;
  bool need_prev = !first && pc.nmix > 0u;
  bool commit = pc.commit_src != NONE && (flags & 2u) != 0u;

  // Everything this invocation reads, before the first use: rows t and t-1 ...
  load_rows(t, tid, need_prev);
  // ... and (one block per workgroup) its channel's LayerNorm weights, lerp factors, shift
  // state and committed value.
  Channel ch;
  vec2 hc = vec2(0.0);
  if (!ROW) {
    ch = load_channel(c, t, slot, first, commit);
    // This invocation's channel c = 256 x + tid is its cached element x (rows up to CACHE *
    // 256 channels); the loop keeps the cache indices constant, so it can stay in registers.
    for (uint k = 0u; k < CACHE; ++k) {
      if (k == gl_WorkGroupID.x) hc = cache[k];
    }
    if (gl_WorkGroupID.x >= CACHE) hc = vec2(h_at(t, c), need_prev ? h_at(t - 1u, c) : 0.0);
  }

  // Two-pass statistics of row t (x) and, when its LN feeds the shift, row t-1 (y).
  vec2 s = vec2(0.0);
  for (uint k = 0u; k < CACHE; ++k) s += tid + 256u * k < pc.C ? cache[k] : vec2(0.0);
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

  if (!ROW) {
    emit(t, tid, gl_WorkGroupID.x * 256u, hc, mean, rstd, ch, first, slot, commit);
    return;
  }
  // The whole row (CACHE * 256 >= C), block after block from the cache.
  for (uint k = 0u; k < CACHE; ++k) {
    ch = load_channel(min(256u * k + tid, pc.C - 1u), t, slot, first, commit);
    emit(t, tid, 256u * k, cache[k], mean, rstd, ch, first, slot, commit);
  }
}
