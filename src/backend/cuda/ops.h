// The CUDA backend's operators, callable from host C++ without CUDA headers (the backend
// and tests/test_cuda_ops.cpp use them). All pointers are device pointers unless named
// host_*; every launcher is asynchronous on `stream` (nullptr = the legacy default stream).
// Activations are fp32, row-major, one row per token; shapes are [rows x width].
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "backend/cuda/packed.h"
#include "common/half.h"  // RWKV_HD

struct CUstream_st;

namespace rwkv::cuda {

using Stream = CUstream_st*;

// Number of usable CUDA devices; 0 with a one-line reason when there is none.
int device_count(std::string* reason);
// Streaming multiprocessors of the current device.
int device_sms();
// Whether host memory at p is page-locked (CudaBackend::alloc_host gives such memory).
bool host_page_locked(const void* p);

// Owns device memory (cudaMalloc). Copies are synchronous.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }
  void upload(const void* host, size_t bytes, size_t offset = 0);
  void download(void* host, size_t bytes, size_t offset = 0) const;
  void fill(uint8_t byte);

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Repacks a GGUF-layout matrix (rows x cols of `type` at host_bytes) and uploads it.
struct DeviceMatrix {
  PackedLayout layout;
  DeviceBuffer buffer;
  PackedView view() const { return packed_view(layout, buffer.data()); }
};
DeviceMatrix upload_matrix(TensorType type, int64_t rows, int64_t cols, const uint8_t* host_bytes);

// ---- matrix-vector products for few rows (decode) ------------------------------------------

enum class InOp : int { none = 0, tanh = 1, sigmoid = 2, relu_sq = 3 };  // applied to x before the product
enum class OutOp : int {
  store = 0,    // y = W x
  add = 1,      // y += W x (residual); y_raw (if set) = W x
  decay = 2,    // y = exp(-e^-0.5 sigmoid(bias + W x))
  sigmoid = 3,  // y = sigmoid(bias + W x)
  relu_sq = 4,  // y = max(W x, 0)^2
  tanh = 5,     // y = tanh(bias + W x)
};

// Activations quantised per block of 32 as two int8 terms, x ~= d0 q0 + d1 q1 (q1 holds
// the rounding residual of q0; relative error ~1e-5): what quantised weights consume.
// Row t: q0/q1 at t * cols, in column order or, with `split`, in the order of
// quant_x_offset; block b of row t: d0/d1/s0/s1 at t * cols / 32 + b (s = sum of the quants of
// the block). cols is a multiple of 32.
struct QuantX {
  int8_t* q0 = nullptr;
  int8_t* q1 = nullptr;
  float* d0 = nullptr;
  float* d1 = nullptr;
  int32_t* s0 = nullptr;
  int32_t* s1 = nullptr;
  int64_t cols = 0;
  bool split = false;  // rows in split order: only for readers that are k-quant matrices (quant_x_split)
};
// The split order of a QuantX row of `cols` (a multiple of 64; other widths stay in column
// order): 16-value piece p (values 16p .. 16p+15) at byte (p % 4) * cols / 4 + (p / 4) * 16,
// so that the lanes of a warp reading piece k of consecutive k-quant items (quarters of 64
// values) read one run of 16-byte pieces; in column order each such load touched four times
// the sectors it used. H100 decode, 2.9B Q4_K_M +15% (NOTES.md run 146). The readers of
// blocks of 32 (Q8_0, the 4- and 5-bit types) keep column order: split for every reader,
// 2.9B Q8_0 lost 3% and 0.1B Q8_0 7% (run 145). Written as (p % 4) * a + (p / 4) * b.
RWKV_HD constexpr bool quant_x_split(bool split, int64_t cols) { return split && cols % 64 == 0; }
RWKV_HD constexpr int64_t quant_x_piece_a(bool split, int64_t cols) {
  return quant_x_split(split, cols) ? cols / 4 : 16;
}
RWKV_HD constexpr int64_t quant_x_piece_b(bool split, int64_t cols) { return quant_x_split(split, cols) ? 16 : 64; }
// Whether matrices of `type` read QuantX rows in split order (the k-quants; the others read
// column order only).
constexpr bool quant_x_split_reader(TensorType type) {
  return type == TensorType::Q4_K || type == TensorType::Q5_K || type == TensorType::Q6_K;
}
// The byte offset in a row of value c.
RWKV_HD constexpr int64_t quant_x_offset(int64_t c, bool split, int64_t cols) {
  return quant_x_split(split, cols) ? (c >> 4 & 3) * (cols / 4) + (c >> 6) * 16 + (c & 15) : c;
}
// QuantX view of `bytes` at `base` for rows x cols (rows * cols * 2.5 bytes).
QuantX quant_x_view(void* base, int rows, int64_t cols);
size_t quant_x_bytes(int rows, int64_t cols);
// out = the QuantX of op(x) for `rows` rows of `cols` (x row stride x_stride).
void quantize_rows(const float* x, int64_t x_stride, int rows, int64_t cols, InOp op, const QuantX& out, Stream stream);

struct MatvecJob {
  PackedView W;
  QuantX xq;                 // quantised weights: x already quantised (else the kernel quantises x itself)
  const float* x = nullptr;  // T rows of W.cols floats, row t at x + t * x_stride
  int64_t x_stride = 0;
  // T rows of W.rows floats, row t at y + t * y_stride. OutOp::add reads y before the PDL
  // wait: the kernel launched just before must not write it.
  float* y = nullptr;
  int64_t y_stride = 0;
  float* y_raw = nullptr;       // OutOp::add only, may be null
  const float* bias = nullptr;  // OutOp::decay / sigmoid: [W.rows]
  InOp in_op = InOp::none;
  OutOp out_op = OutOp::store;
  // One-row launches of 16-bit weights (F16, BF16; the F32 rows beside them too) with x rows
  // 16-byte aligned: x as f16 (16-byte aligned, the same values rounded), read instead of x
  // where set. Half the bytes and registers of fp32 x, so that a thread requests every
  // item's x at once after the PDL wait (NOTES.md run 134). Ignored by other launches.
  const uint16_t* x16 = nullptr;
  // Where set (with in_op none), the outputs also as f16 (row t at y16 + t * y_stride): the
  // x16 of a product that follows.
  uint16_t* y16 = nullptr;
};
constexpr int kMatvecMaxJobs = 8;
constexpr int kMatvecMaxRows = 8;
// Runs up to kMatvecMaxJobs products in one launch, each for the same T <= kMatvecMaxRows
// activation rows. A block takes up to four rows (more rows: groups of four along the grid's
// y, sharing weight bytes through L2); quantised weights take int8-quantised x (per 32,
// like Q8_0), float weights fp32 x.
void matvec(const MatvecJob* jobs, int n_jobs, int T, Stream stream);
// Whether a one-row product of W (F16 or BF16) alone would read MatvecJob::x16 (its rounds are
// full): the producers of its x write an f16 copy only then.
bool matvec_reads_f16(const PackedView& W);

// ---- ReLU^2-sparse FFN value product (decode, one row; ffn_sparse.cu) ------------------------

// The FFN value matrix (C outputs x F hidden units) transposed at upload: row j holds the
// weights of hidden unit j for every output, so a unit that is exactly zero is skipped.
// Lossless: Q8_0 keeps its int8 quants (w [F x C]) and f16 scales (scale of output i for
// hidden block j/32 at scales[(j/32) * C + i]); Q4_K its 4-bit quants (w [F x C/2], output
// i in the low nibble of byte i/2 when even) with each sub-block's d * scale and dmin * min
// as exact floats (dm, pairs [F/32 x C]); Q5_K the same with 5-bit quants as bytes (w [F x C]);
// Q6_K its quants as int8 q - 32 (w [F x C]) with each group's d * scale (dm, [F/16 x C]; all:
// tensor/transpose.h); F16/BF16 their 16-bit values.
struct SparseFfn {
  TensorType type = TensorType::F32;
  int64_t C = 0, F = 0;
  const uint8_t* w = nullptr;
  const uint16_t* scales = nullptr;  // Q8_0 only
  const float* dm = nullptr;         // Q4_K, Q5_K, Q6_K
};
// Q8_0, Q4_K, Q5_K, Q6_K, F16 and BF16 with C a multiple of 16.
bool sparse_ffn_supported(TensorType type, int64_t C);
size_t sparse_ffn_bytes(TensorType type, int64_t C, int64_t F);
// True when the sparse kernel's grid for a C x F matrix has a block for each of `sms` SMs.
bool sparse_ffn_fills(int64_t C, int64_t F, int sms);
// Host: the transposed layout of the GGUF matrix `gguf` (C rows of F) into dst
// (sparse_ffn_bytes long).
void sparse_ffn_pack(TensorType type, int64_t C, int64_t F, const uint8_t* gguf, uint8_t* dst);
SparseFfn sparse_ffn_view(TensorType type, int64_t C, int64_t F, const void* base);
// Device scratch ffn_value_sparse needs (floats): its blocks' partial sums.
size_t sparse_ffn_scratch_floats(int64_t C, int64_t F);
struct ShiftLerpArgs;
// y[i] += sum_j W[i][j] h[j] over the j with h[j] != 0 (one row: h [F], y [C]). Two launches
// (the product, then the sum of its partials). Deterministic: partial sums are added in a
// fixed order. early_trigger: the sum lets the next kernel launch at its start (as
// ShiftLerpArgs::early_trigger). next_ln (one row, where sparse_sum_ln_supported(C)): the
// sum's launch also does ln_shift_lerp(*next_ln) on the new y (next_ln->h == y); its
// early_trigger then applies instead.
void ffn_value_sparse(const SparseFfn& W, const float* h, float* y, float* scratch, Stream stream,
                      bool early_trigger = false, const ShiftLerpArgs* next_ln = nullptr);
// Whether the device and the width C allow ffn_value_sparse's next_ln (thread-block clusters).
bool sparse_sum_ln_supported(int C);

// ---- dequantisation and f16 conversion (prefill GEMM path) ----------------------------------

// W (rows x cols) -> f16 row-major with leading dimension ld (>= cols).
void dequant_to_f16(const PackedView& W, void* dst, int64_t ld, Stream stream);
// dst[r][c] = f16(op(x[r * x_stride + c])) for r < rows, c < cols; dst row stride = cols.
void to_f16(const float* x, int64_t x_stride, int rows, int64_t cols, InOp op, void* dst, Stream stream);
// dst[r * stride + c] = op(src[r * stride + c] (+ bias[c])) for the store/decay/sigmoid/
// relu_sq ops; for OutOp::add: dst += src.
void epilogue(OutOp op, const float* src, float* dst, const float* bias, int rows, int64_t cols, int64_t stride,
              Stream stream);

// cuBLAS for f16 weights: Y[R x rows] (ld ldy, fp32) = X16[R x cols] W16^T (+ beta Y).
// W16 is rows x cols, row stride ldw elements.
class Blas {
 public:
  static constexpr size_t kWorkspaceBytes = 32u << 20;  // fixed, so GEMMs can be graph-captured
  Blas();
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  void gemm_f16(const void* W16, int64_t ldw, int64_t rows, int64_t cols, const void* X16, int R, float* Y, int64_t ldy,
                float beta, Stream stream);
  // `count` such products in one launch: problem p uses W16 + p * w_step, X16 + p * x_step
  // (f16 elements) and Y + p * y_step (floats); X16 rows are cols apart.
  void gemm_f16_strided(const void* W16, int64_t ldw, int64_t w_step, int64_t rows, int64_t cols, const void* X16,
                        int64_t x_step, int R, float* Y, int64_t ldy, int64_t y_step, int count, Stream stream);

 private:
  void* handle_ = nullptr;
  void* workspace_ = nullptr;
};

// ---- the four LoRA products of a time-mix layer as batched GEMMs (GEMM path) ------------------
//
// Problems p = 0 .. n-1 are (w, a, g, v) (layer 0: no v, n = 3). Between the down-projections
// (lo = x W1^T, rank rank[p] padded to D) and the up-projections (out = mid W2^T), mid =
// f16(mid_op[p](lo)), zero past rank[p]; afterwards out = out_op[p](bias[p] + out).
struct LoraArgs {
  int R = 0, D = 0, C = 0, n = 0;  // rows, padded rank, width, problems
  int rank[4] = {};
  InOp mid_op[4] = {};
  OutOp out_op[4] = {};
  const float* bias[4] = {};
  const float* lo = nullptr;  // [n][R][D] fp32, problem p at lo + p * lo_step
  int64_t lo_step = 0;
  void* mid = nullptr;  // [n][R][D] f16, problem p at p * mid_step halves
  int64_t mid_step = 0;
  float* out = nullptr;  // [n][R][C] fp32, problem p at out + p * out_step
  int64_t out_step = 0;
};
void lora_mid(const LoraArgs& args, Stream stream);
void lora_epilogue(const LoraArgs& args, Stream stream);

// ---- per-token layer ops ----------------------------------------------------------------------

// Which rows belong to which sequence, on the device. Rows of a sequence are consecutive.
struct BatchDev {
  const int32_t* row_seq = nullptr;    // [R] sequence index of each row
  const int32_t* seq_start = nullptr;  // [B+1] first row of each sequence; seq_start[B] = R
  const int32_t* seq_slot = nullptr;   // [B] state slot of each sequence
  int R = 0, B = 0;
};

// Embedding row of each token (dequantised), then LayerNorm (ln0) into h [R x C]
// (C <= 4096 here and in layer_norm_rows).
// raw (may be null) receives the embedding rows before the norm.
void embed_ln(const PackedView& emb, const int32_t* tokens, int R, const float* ln_w, const float* ln_b, float eps,
              float* raw, float* h, Stream stream);

// x = LayerNorm(h[r]); prev = the previous token's x (from `shift` for a sequence's first
// row); out_s[r] = x + (prev - x) * mix[s] for s < n_mix; xln[r] = x. Afterwards `shift`
// holds x of each sequence's last row. shift of slot s: shift + s * state_stride.
struct ShiftLerpArgs {
  BatchDev batch;
  const float* h = nullptr;
  int C = 0;
  const float* ln_w = nullptr;
  const float* ln_b = nullptr;
  float eps = 1e-5f;
  const float* mix = nullptr;  // [n_mix x C]
  int n_mix = 0;
  float* out[6] = {};    // where null, lerp s is not written in fp32 (out16 only)
  float* xln = nullptr;  // may be null
  float* shift = nullptr;
  size_t state_stride = 0;
  QuantX out_q[6];  // where q0 is set, out[s] is also written quantised
  // Where set, out[s] is also written as f16: the GEMM path's input, and one-row products'
  // MatvecJob::x16.
  void* out16[6] = {};
  // Lets the next kernel launch at this one's start instead of after its PDL wait, so that
  // its weight loads start while this one waits (the next kernel's own wait still orders it).
  bool early_trigger = false;
};
// C must be a multiple of 32 and at most 4096.
void ln_shift_lerp(const ShiftLerpArgs& args, Stream stream);

// y[i] = LayerNorm(x[rows[i]]) for i < n (rows may be null: row i itself); with `yq`
// (n rows of C) also quantised there, as quantize_rows would (the head's input: one launch
// fewer per decode step).
void layer_norm_rows(const float* x, const int32_t* rows, int n, int C, const float* w, const float* b, float eps,
                     float* y, const QuantX* yq, Stream stream);

// The time-mix core after the projections (spec §2.2 steps 6, 9-13, §2.3), per head:
// value-residual mix (layer 0: v_first := v; else v += nu (v_first - v), written back to v),
// kk = normalise(k k_k), k_mod, the WKV7 state update and read-out y, group norm, bonus,
// and xo = (group-norm output + bonus) * g. State of slot s, head h:
// state + s * state_stride + h * N * N, [i][j] (value row i, key column j); state and
// state_stride must be 16-byte aligned (multiples of 4 floats). N is 32, 64 or 128.
struct WkvArgs {
  BatchDev batch;
  int H = 0, N = 0;
  bool first_layer = false;
  const float *r = nullptr, *decay = nullptr, *k = nullptr, *a = nullptr, *g = nullptr, *nu = nullptr;
  float* v = nullptr;
  float* v_first = nullptr;
  const float *k_k = nullptr, *k_a = nullptr, *r_k = nullptr, *lnx_w = nullptr, *lnx_b = nullptr;
  float gn_eps = 64e-5f;
  float* state = nullptr;
  size_t state_stride = 0;
  float* xo = nullptr;
  QuantX xo_q;               // wkv_fused: where q0 is set, xo is also written quantised
  uint16_t* xo16 = nullptr;  // wkv_fused: where set, xo is also written as f16 (MatvecJob::x16)
  // Intermediates [R x C]: kk, k_mod, y (WKV read-out), lnx (group norm + bonus). The fused
  // kernel writes those that are set; the prefill kernels need kk, k_mod and y as scratch.
  float *kk = nullptr, *kmod = nullptr, *y = nullptr, *lnx = nullptr;
};
// One kernel, sequential over each sequence's tokens: for decode (few tokens per sequence).
void wkv_fused(const WkvArgs& args, Stream stream);
// Three kernels (per-token prep, sequential scan, per-token group norm): for prefill.
void wkv_prefill(const WkvArgs& args, Stream stream);

// Sets whether launches use programmatic dependent launch (default on, where supported).
void set_pdl(bool enabled);

}  // namespace rwkv::cuda
