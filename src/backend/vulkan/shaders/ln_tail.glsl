// ln_mix.comp's work for a one-row step (T = 1, the row first and last of its sequence), run
// by the last workgroup of the matvec dispatch whose output it reads (matvec.comp built with
// LN_TAIL): the LayerNorm no longer needs a dispatch and a barrier interval of its own
// (bench/RESULTS-vulkan.md, session 11). With h = h_in + delta (delta: usually the
// dispatch's own output y, written by the other workgroups):
//   h_out = h,  xln = LN(h),  mix[s] = xln + (shift - xln) mu[s] for s < nmix,
// shift read from state_in, and commit_src copied into state_commit (ln_mix.comp's commit).
// The push block's `ln` fields are the host's LnMixPush (matrix_io.glsl).
layout(std430, set = 0, binding = 6) coherent buffer ActC { float actc[]; };
layout(std430, set = 0, binding = 7) readonly buffer LnStateIn { float state_in[]; };
layout(std430, set = 0, binding = 8) buffer LnStateCommit { float state_commit[]; };
// [0]: workgroups of this dispatch done; zero between dispatches (the last one resets it).
layout(std430, set = 0, binding = 9) coherent buffer LnCount { uint ln_count[]; };

// Row elements per invocation: the host folds only rows of C <= LN_MAX_PER x workgroup size.
#define LN_MAX_PER 32u

shared bool ln_last;

// Every invocation of every workgroup calls it, after its own products are stored.
void ln_tail(uint tid, uint wg_size) {
  // This workgroup's outputs are visible device-wide before it counts itself done.
  memoryBarrierBuffer();
  barrier();
  if (tid == 0u) ln_last = atomicAdd(ln_count[0], 1u) == gl_NumWorkGroups.x * gl_NumWorkGroups.y - 1u;
  barrier();
  if (!ln_last) return;
  memoryBarrierBuffer();

  uint C = pc.ln.C;
  // Every load of the row is issued before the first use.
  float h[LN_MAX_PER];
  for (uint k = 0u; k < LN_MAX_PER; ++k) {
    uint c = min(tid + wg_size * k, C - 1u);
    h[k] = actc[pc.ln.h_in + c];
  }
  if (pc.ln.delta != NONE) {
    for (uint k = 0u; k < LN_MAX_PER; ++k) h[k] += actc[pc.ln.delta + min(tid + wg_size * k, C - 1u)];
  }
  float s = 0.0;
  for (uint k = 0u; k < LN_MAX_PER; ++k) s += tid + wg_size * k < C ? h[k] : 0.0;
  float mean = wg_sum(s) / float(C);
  float q = 0.0;
  for (uint k = 0u; k < LN_MAX_PER; ++k) {
    float d = tid + wg_size * k < C ? h[k] - mean : 0.0;
    q += d * d;
  }
  float rstd = inversesqrt(wg_sum(q) / float(C) + pc.ln.eps);

  uint slot = meta[pc.ln.row_slot];
  bool commit = pc.ln.commit_src != NONE && (meta[pc.ln.row_flags] & 2u) != 0u;
  uint base = slot * pc.ln.slot_stride;
  for (uint k = 0u; k < LN_MAX_PER; ++k) {
    uint c = tid + wg_size * k;
    if (c >= C) break;
    float cur = (h[k] - mean) * rstd * vecs[pc.ln.ln_w + c] + vecs[pc.ln.ln_b + c];
    if (pc.ln.h_out != NONE) actc[pc.ln.h_out + c] = h[k];
    actc[pc.ln.xln + c] = cur;
    if (commit) state_commit[base + pc.ln.commit_off + c] = actc[pc.ln.commit_src + c];
    if (pc.ln.nmix > 0u) {
      float prev = state_in[base + pc.ln.shift_off + c];
      for (uint m = 0u; m < pc.ln.nmix; ++m) {
        actc[pc.ln.mix + m * pc.ln.mix_stride + c] = cur + (prev - cur) * vecs[pc.ln.mu + m * C + c];
      }
    }
  }
  if (tid == 0u) ln_count[0] = 0u;
}
