// The CUDA backend's private state: device weights, state slots, per-step scratch and
// the decode graphs. backend.cpp holds the Backend interface; forward.cpp encodes a step.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/ops.h"

namespace rwkv::cuda {

// A weight matrix on the device: packed for the matvec kernels, and as f16 row-major for
// cuBLAS (the F16 weight itself, a persistent shadow copy, or null: dequantised on use).
struct Mat {
  DeviceMatrix packed;
  const void* f16 = nullptr;
  int64_t ld16 = 0;  // elements between rows of f16
  PackedView view() const { return packed.view(); }
  int64_t rows() const { return packed.layout.rows; }
  int64_t cols() const { return packed.layout.cols; }
};

struct LayerDev {
  // fp32 vectors, pointers into CudaBackend::vectors_
  const float *att_ln_w, *att_ln_b, *ffn_ln_w, *ffn_ln_b, *att_mix, *ffn_mix;
  const float *w0, *a0, *v0, *k_k, *k_a, *r_k, *lnx_w, *lnx_b;
  Mat w1, w2, a1, a2, v1, v2, g1, g2, wr, wk, wv, wo, ffn_key, ffn_value;
  SparseFfn ffn_value_t;  // transposed copy for one-row decode (w null: not kept)
  // The LoRA matrices in f16 for the batched GEMMs (ops.h: LoraArgs), problems (w, a, g, v)
  // padded to the largest rank D with zeros: down [4][D][C], up [4][C][D]. Null where the
  // f16 copies did not fit.
  const void *lora_down16 = nullptr, *lora_up16 = nullptr;
};

// Activation buffers for up to `rows` tokens (fp32 unless noted), sized once per capacity.
struct Scratch {
  int rows = 0;
  DeviceBuffer buffer;
  float *h, *xln, *mix[6], *r, *k, *v, *decay, *a, *g, *nu, *v_first;
  float *w_lo, *a_lo, *g_lo, *v_lo, *kk, *kmod, *y, *lnx, *xo, *raw, *hidden, *head_x, *logits;
  void* x16;  // f16 GEMM input, rows x max(C, F, Dmax)
  // f16 copies of mix[0..5] written by ln_shift_lerp for the GEMM path, mix16_step halves
  // apart in the order w, a, g, v, r, k (mix16[1], [4], [5], [3], [0], [2]): the LoRA
  // inputs (w, a, g, v) and the projections' (v, r, k) are each equally spaced. So are the
  // outputs v, r, k and decay, a, g, nu.
  void* mix16[6];
  int64_t mix16_step;
  void* lora_mid16;  // [4][rows][D] f16: the LoRA up-projections' inputs
  QuantX qx[4];      // quantised activations (matvec path): xr / xk / xv (or ffn xk, head x), xo
  QuantX qx_hidden;
  int32_t* ints;  // tokens [rows], row_seq [rows], seq_start [rows+1], seq_slot [rows], out_rows [rows]
};

// The rows of one encoded step (a chunk of the caller's batch).
struct ChunkPlan {
  int R = 0, B = 0, n_out = 0;
  int max_tokens = 0;  // longest sequence piece
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& options);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  std::string device_name() const override { return device_name_; }
  void load(std::shared_ptr<const Model> model, const ProgressFn& progress) override;
  void set_slots(int n) override;
  int slots() const override { return n_slots_; }
  void reset_slot(int slot) override;
  void get_state(int slot, std::span<float> out) override;
  void set_state(int slot, std::span<const float> in) override;
  void step(std::span<const SeqTokens> batch, float* logits) override;
  HostFloats alloc_host(size_t n) override;
  double measure_bandwidth() override;
  size_t memory_bytes() const override;

 private:
  // backend.cpp
  void upload_weights(const ProgressFn& progress);
  void upload_sparse_ffn();
  void prepare_gemm();
  void ensure_scratch(int rows);
  void run_chunk(const ChunkPlan& plan, float* logits);
  void check_slot(int slot, const char* what) const;
  void clear_graphs();

  // forward.cpp: enqueues every kernel of one step on stream_.
  void encode(const ChunkPlan& plan);
  // att_ln_done: layer l's attention LayerNorm and lerps were done by layer l - 1's last
  // kernel. channel_mix returns whether it did layer l + 1's that way.
  void time_mix(int l, const ChunkPlan& plan, const BatchDev& bd, bool att_ln_done);
  bool channel_mix(int l, const ChunkPlan& plan, const BatchDev& bd);
  // The attention LayerNorm + token shift + lerps of layer l (the r, w, k, v, a, g inputs).
  ShiftLerpArgs att_lerp_args(int l, int R, const BatchDev& bd);
  // y = W op(x) for R rows, by matvec (R <= 8; with x pre-quantised in `xq` if set) or
  // cuBLAS (x already in f16 at `x16` if set, else converted first); epilogue `out` with
  // `bias`.
  void matmul(const Mat& W, const float* x, int64_t x_stride, int R, InOp in, float* y, int64_t y_stride, OutOp out,
              const float* bias, float* y_raw, const QuantX* xq = nullptr, const void* x16 = nullptr);
  void lora_products(const LayerDev& L, int R, bool with_v);
  void emit(int layer, const char* name, const float* data, int rows, int width);

  std::string device_name_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Blas> blas_;
  std::shared_ptr<const Model> model_;
  Hparams hp_;
  int d_max_ = 0;  // largest LoRA rank

  Mat tok_embd_, head_;
  std::vector<LayerDev> layers_;
  DeviceBuffer vectors_;  // every fp32 vector
  const float *ln0_w_ = nullptr, *ln0_b_ = nullptr, *ln_out_w_ = nullptr, *ln_out_b_ = nullptr;
  bool gemm_ready_ = false;
  DeviceBuffer f16_shadow_;   // f16 copies of non-F16 matrices for cuBLAS (when memory allows)
  DeviceBuffer lora16_;       // LayerDev::lora_down16 / lora_up16 (with the shadows)
  DeviceBuffer w16_scratch_;  // else: one matrix dequantised on use
  DeviceBuffer sparse_ffn_;   // every layer's SparseFfn copy, then ffn_value_sparse's scratch
  float* sparse_scratch_ = nullptr;
  bool sum_ln_fusion_ = true;  // the sparse sum does the next layer's attention LayerNorm
  size_t max_matrix_elems_ = 0;

  int n_slots_ = 0;
  DeviceBuffer states_;  // n_slots x state_floats

  Scratch scratch_;
  int32_t* host_ints_ = nullptr;  // pinned staging for Scratch::ints
  size_t host_ints_count_ = 0;

  // Decode graphs by sequence count and logits row count, and where the head writes: the
  // caller's page-locked buffer (HostSpans) or nullptr for scratch_.logits.
  std::map<std::pair<int, const float*>, cudaGraphExec_t> graphs_;
  // The page-locked buffers alloc_host gave out and not yet freed: a step whose logits lie
  // in one lets the head product write them directly (no download after the graph).
  struct HostSpans {
    std::mutex mutex;
    std::map<const float*, size_t> spans;  // start -> floats
    bool holds(const float* p, size_t n);
  };
  std::shared_ptr<HostSpans> host_spans_ = std::make_shared<HostSpans>();
  float* head_out_ = nullptr;  // encode(): the head's output, scratch_.logits unless set
  bool use_graphs_ = true;
  bool verbose_ = false;
};

}  // namespace rwkv::cuda
