// One-sequence decode of every layer in one persistent kernel (persistent.cu). Opt-in with
// RWKV_CUDA_PERSISTENT=1: on the H100 it is correct for every type but still slower than
// the per-op kernels (src/backend/cuda/NOTES.md, runs 15-22, say where its time goes).
//
// Why: a decode step launched as eight or nine kernels per layer spends most of each
// kernel in the dependent chain after its launch (read the producer's output, compute,
// store) while the memory idles (NOTES.md, runs 8-10). Here one block per SM lives for the
// whole step. A producer warp streams the block's weight tiles (and WKV state slices) into
// a ring of shared-memory slots with bulk async copies, in the order the block will use
// them, never waiting for activations; eight consumer warps compute each tile once its
// inputs exist (a tile goes to whichever warp claims it next). Stages of a layer are
// ordered by counters in global memory, so weight traffic for the next stages flows while
// a stage boundary is crossed, as far as the ring reaches.
//
// Stages per layer (g = 6 l + kind):
//   A  r, k, v and the first LoRA products of the lerped LayerNorm(h)
//   B  the second LoRA products (decay, a, g, nu)
//   C  WKV per head: value-residual mix, state update, group norm, bonus, gate -> xo
//   D  h += Wo xo; the att token-shift state takes LayerNorm(h) of this token
//   E  hidden = relu(Wk lerp(LayerNorm(h)))^2
//   F  h += Wv hidden; the ffn token-shift state takes LayerNorm(h) of this token
// A block waits for stage g - 1 only when it has work in g (always at A and E, whose
// LayerNorm every block needs).
#pragma once

#include <cstdint>

#include <vector_types.h>

#include "backend/cuda/ops.h"

namespace rwkv::cuda {

constexpr int kPersistentStages = 6;  // A..F above

enum class PIn : int32_t { lerp = 0, vec = 1 };  // lerp: ln + (shift - ln) * mix_w (see PLayer)
enum class POut : int32_t { store = 0, decay = 1, sigmoid = 2, relu_sq = 3, add_shift = 4 };

// One matrix product of a stage: y = W in(x), in rows the tiles cover.
struct PJob {
  PackedView W;  // planes in global memory
  PIn in = PIn::vec;
  InOp in_op = InOp::none;       // vec: transform of x before the product
  const float* x = nullptr;      // vec: W.cols floats
  const float* mix_w = nullptr;  // lerp: the lerp weights [W.cols]
  POut out = POut::store;
  float* y = nullptr;           // [W.rows]
  const float* bias = nullptr;  // decay / sigmoid
  int64_t shift_off = 0;        // add_shift: floats from the slot's state to the shift vector
};

// One tile: rows [row0, row0 + nr) of a job, or (job < 0) the WKV state slice of head
// row0 of layer `layer`. src: plane sources (for a WKV tile, byte offsets from the slot's
// state); bytes: copy sizes, multiples of 16, 0 for unused planes.
struct alignas(16) PTile {
  const uint8_t* src[kMaxPlanes];
  uint32_t bytes[kMaxPlanes];
  int32_t job, row0, nr, layer;
};

struct PLayer {
  const float *att_ln_w, *att_ln_b, *ffn_ln_w, *ffn_ln_b;
  const float *k_k, *k_a, *r_k, *lnx_w, *lnx_b;
  int64_t att_shift_off, ffn_shift_off;  // floats from the slot's state
  int32_t first;                         // layer 0: v_first := v
};

struct PersistentArgs {
  const PTile* tiles;          // block b's tiles in stage order, stage g at
  const int32_t* stage_begin;  // [blocks x (stages + 1)]: tiles[stage_begin[b * (G + 1) + g] ..]
  const int2* segs;            // runs of tiles of one job: {first tile, job}, block b's
  const int32_t* seg_begin;    // stage g at segs[seg_begin[b * (G + 1) + g] ..]
  const PJob* jobs;
  const PLayer* layers;
  int32_t blocks, stages, C, F, H, N;
  float ln_eps, gn_eps;
  float* h;  // residual [C]
  const float *r, *k, *a, *decay, *g, *nu;
  float *v, *v_first, *xo;
  float* states;            // slot s at states + s * state_floats
  const int32_t* seq_slot;  // [1]: the sequence's slot
  int64_t state_floats;
  uint32_t* sync;             // [stages], zero before the launch
  int32_t slots, slot_bytes;  // ring
  int32_t act_bytes;          // staged activations: max over jobs
  // RWKV_CUDA_PERSISTENT_TRACE=1: per block and stage, %globaltimer (ns) before the wait,
  // after the wait and LayerNorm, after the tiles and after the signal, then the time spent
  // waiting for tiles to arrive [blocks x stages x 5].
  uint64_t* trace;
};

// Shared memory the kernel needs for a ring of `slots` x `slot_bytes` (0 if over the
// device's limit is the caller's check).
size_t persistent_smem_bytes(const PersistentArgs& a);
// Largest dynamic shared memory per block on this device, and whether the kernel can run
// here (compute capability 9.0 or newer).
bool persistent_available(int* max_smem);
// Clears the counters and launches the kernel (one block per SM, all co-resident).
void persistent_decode(const PersistentArgs& a, Stream stream);

}  // namespace rwkv::cuda
