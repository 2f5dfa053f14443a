// Runs single kernels of the Vulkan backend on host data: the op parity tests compare them
// with the reference ops (backend/cpu/ref_ops.h). Every region a kernel may touch sits in
// one scratch buffer between guard words, and outputs start as a NaN pattern, so a kernel
// that writes out of bounds trips guards_broken() and one that leaves an output element
// unwritten shows a NaN.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backend/vulkan/context.h"
#include "backend/vulkan/kernels.h"
#include "model/model.h"

namespace rwkv::vk {

class WeightStore;

// One sequence of a multi-sequence op: `rows` consecutive activation rows using state slot `slot`.
struct OpSeq {
  int slot = 0;
  int rows = 1;
};

class OpRunner {
 public:
  // Opens the best Vulkan device, CPU-type ones (lavapipe) included. Throws Error(backend).
  OpRunner();
  ~OpRunner();
  Context& context() { return *ctx_; }
  const Kernels& kernels() const { return *kernels_; }

  // y [T x W.rows()] = act(W x + bias), x [T x W.cols()]. `arena_limit` > 0 splits W by rows
  // over buffers of at most that many bytes (at most 4). With `gather`, y row t is computed
  // from x row gather[t] (and T = gather.size()). x_scale: see MatJob. splits: a tiled
  // matmul's K splits (0: the backend's choice). A product with K split runs twice in one
  // command buffer into two outputs (the second relies on the counters the first left at
  // zero); returns the first, and runs_differ() tells whether the second differs in any bit
  // (a float comparison: NaN outputs differ too). f16 (tensor-core path only): x goes in as
  // float16 times x_scale (as ln_mix, wkv_post or a Y16 product writes it), y comes out of
  // float16 divided by f16.y_scale.
  std::vector<float> matrix(const Weight& W, std::span<const float> x, int T, MatPath path, uint32_t act = kActNone,
                            std::span<const float> bias = {}, uint64_t arena_limit = 0,
                            std::span<const uint32_t> gather = {}, float x_scale = 1.0f, uint32_t splits = 0,
                            MatF16 f16 = {});
  bool runs_differ() const { return runs_differ_; }

  // The sparse FFN value product (ffn_sparse.comp) for one row: y [C] = W h, with W [C x F]
  // (F16, BF16 or Q8_0) uploaded transposed and h [F]. Dispatched twice in one command buffer (the
  // second run relies on the counters the first one left at zero); returns both results.
  // lanes, units: the work split (SparseFfnShape; 0: the backend's choice).
  std::array<std::vector<float>, 2> ffn_sparse(const Weight& W, std::span<const float> h, uint32_t lanes = 0,
                                               uint32_t units = 0);

  // Embedding rows of `tokens` (emb) and their LayerNorm (h), both [T x C].
  void embed(const Weight& table, std::span<const int32_t> tokens, std::span<const float> ln_w,
             std::span<const float> ln_b, float eps, std::vector<float>& emb, std::vector<float>& h);

  struct LnMixIo {
    // inputs
    std::vector<float> h_in, delta;  // [T x C]; delta may be empty
    std::vector<float> ln_w, ln_b;   // [C]
    std::vector<float> mu;           // [nmix x C]
    std::vector<float> state;        // [slots x slot_stride]: shift read at shift_off, commit at commit_off
    std::vector<float> commit_src;   // [T x C] or empty
    uint32_t slot_stride = 0, shift_off = 0, commit_off = 0;
    float eps = 1e-5f;
    // outputs
    std::vector<float> h_out, xln, mix;  // mix [nmix x T x C]
  };
  // mix16: the mixes written as float16 (read back as float).
  void ln_mix(LnMixIo& io, int C, int nmix, std::span<const OpSeq> seqs, bool mix16 = false);

  struct WkvIo {
    // inputs [T x C]; nu empty on layer 0 (then v_first is an output)
    std::vector<float> r, k, v, a, decay, g, nu, v_first, xa;
    std::vector<float> k_k, k_a, r_k, lnx_w, lnx_b;  // [C]
    std::vector<float> state;                        // [slots x (2C + C*N)] per-layer layout
    float gn_eps = 64e-5f;
    // outputs [T x C]: out, and the debug intermediates
    std::vector<float> out, kk, k_mod, v_mixed, wkv, lnx;
  };
  // The fused kernel, or with `prefill` the three-dispatch form with the scan split `shape`
  // (zeros: the backend's choice) and, with out16, `out` written as float16 (read back as float).
  void wkv(WkvIo& io, int C, int N, std::span<const OpSeq> seqs, bool prefill = false, WkvScanShape shape = {},
           bool out16 = false);

  struct LoraIo {
    // The down projections' outputs [T x D] (tanh / sigmoid applied); v_mid empty on layer 0.
    std::vector<float> w_mid, a_mid, g_mid, v_mid;
    // The up matrices [C x D] (F32, F16, BF16 or Q8_0); on layer 0, V2 only specialises the shader
    // (its type and rank; it is not read).
    const Weight *w2 = nullptr, *a2 = nullptr, *g2 = nullptr, *v2 = nullptr;
    std::vector<float> w0, a0, v0;  // biases [C]; v0 empty on layer 0
  };
  // The fused kernel with the LoRA up-projections folded in (Kernels::wkv_lora): as wkv(),
  // with io's a, decay, g and nu computed from `lora` instead (not read); layer 0 when
  // lora.v_mid is empty. invocations: per workgroup (0: the backend's default).
  void wkv_lora(WkvIo& io, const LoraIo& lora, int C, int N, std::span<const OpSeq> seqs, uint32_t invocations = 0);

  // Guard words overwritten by the last op (0 when every kernel stayed in bounds).
  size_t guards_broken() const { return guards_broken_; }

 private:
  class Scratch;
  // Uploads `scratch`, records `body`, runs, reads the scratch and state back.
  template <class F>
  void run(Scratch& scratch, const std::vector<uint32_t>& meta, F&& body);
  // A WKV run (either form): adds the per-channel vectors to `store` and uploads it, adds the
  // regions both forms use to `s` (the caller's own are there already), calls
  // dispatch(cmd, scratch, state, meta, push) with the push's common fields set, and reads
  // the outputs back into io.
  template <class F>
  void run_wkv(WkvIo& io, WeightStore& store, Scratch& s, int C, int N, std::span<const OpSeq> seqs, bool layer0,
               F&& dispatch);

  std::unique_ptr<Context> ctx_;
  std::unique_ptr<Kernels> kernels_;
  size_t guards_broken_ = 0;
  bool runs_differ_ = false;
};

}  // namespace rwkv::vk
