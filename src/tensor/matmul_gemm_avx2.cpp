// Blocked outer-product kernel for float weights (F32, F16, BF16) when many tokens share
// them (prefill). Dot-product tiles are load-bound there; instead the inputs are
// transposed once per call into blocks of kBlockTokens tokens ([column][token] floats,
// zero-padded past T), each thread converts a slab of weight rows at a time to float,
// and a register-blocked micro-kernel accumulates kPanelRows rows x kBlockTokens tokens
// over all columns: per column one broadcast weight per row and one load per vector of
// tokens (zmm: 6 broadcasts + 4 loads feed 24 FMAs).

#include "tensor/matmul_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <cstring>
#include <type_traits>
#include <vector>

#include "tensor/matmul_avx2.h"

namespace rwkv::matmul_detail {
namespace {

using P = Wide;
constexpr int kVecs = kVectorRegisters == 32 ? 4 : 3;       // token vectors per block
constexpr int kBlockTokens = kVecs * P::kFloats;            // 64 (zmm), 24 (ymm)
constexpr int kPanelRows = kVectorRegisters == 32 ? 6 : 4;  // weight rows per micro-kernel

int64_t token_blocks(int64_t T) { return (T + kBlockTokens - 1) / kBlockTokens; }

// Cache blocking, as in matmul_gemm_int8_avx2.cpp: each slab of rows (about kSlabBytes as
// floats, converted once) meets a chunk of token blocks (about kChunkBytes, at least one
// block) panel by panel while the chunk stays in L2.
constexpr size_t kChunkBytes = 512 * 1024, kSlabBytes = 256 * 1024;
// Rows longer than this (one token block of them is kChunkBytes) run in column ranges of it,
// each range meeting a slab of many panels (about kSplitSlabBytes of rows) while it is in L2.
constexpr int64_t kSplitColumns = int64_t(kChunkBytes) / (kBlockTokens * int64_t(sizeof(float)));
constexpr size_t kSplitSlabBytes = 2048 * 1024;

size_t gemm_act_bytes(int64_t cols, int64_t T) { return size_t(token_blocks(T) * cols * kBlockTokens) * sizeof(float); }

// Writes the 8 x 8 floats src[i * src_stride + j] to dst[j * dst_stride + i].
inline void transpose8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m256 r[8], t[8], s[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);  // per 128-bit half: a0 b0 a1 b1
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);  // columns 0 and 4 of rows i..i+3
    s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * dst_stride, _mm256_permute2f128_ps(s[j], s[j + 4], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * dst_stride, _mm256_permute2f128_ps(s[j], s[j + 4], 0x31));
  }
}

// Token t, column c goes to block t / kBlockTokens at [c][t % kBlockTokens]. Whoever
// prepares the last token also zeroes the padding tokens of the last block.
void gemm_prepare(const float* x, int64_t cols, int64_t T, int64_t t0, int64_t t1, uint8_t* act) {
  float* xt = reinterpret_cast<float*>(act);
  const auto block_of = [&](int64_t t) { return xt + (t / kBlockTokens) * cols * kBlockTokens + t % kBlockTokens; };
  int64_t t = t0;
  // Groups of 8 tokens that stay within one block (t0 is a multiple of 8, and so is
  // kBlockTokens): 8 x 8 transposes, then the leftover columns one by one.
  for (; t + 8 <= t1 && t % 8 == 0; t += 8) {
    float* dst = block_of(t);
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) transpose8x8(x + t * cols + c, cols, dst + c * kBlockTokens, kBlockTokens);
    for (; c < cols; ++c)
      for (int i = 0; i < 8; ++i) dst[c * kBlockTokens + i] = x[(t + i) * cols + c];
  }
  const int64_t end = t1 == T ? token_blocks(T) * kBlockTokens : t1;
  for (; t < end; ++t) {
    float* dst = block_of(t);
    for (int64_t c = 0; c < cols; ++c) dst[c * kBlockTokens] = t < T ? x[t * cols + c] : 0.0f;
  }
}

struct LoadF32 {
  static P::F vec(const float* p) { return P::load(p); }
  static float scalar(const float* p) { return *p; }
};
struct LoadF16 {
  static P::F vec(const uint16_t* p) { return P::load_f16(p); }
  static float scalar(const uint16_t* p) { return f16_scalar(*p); }
};
struct LoadBF16 {
  static P::F vec(const uint16_t* p) { return P::load_bf16(p); }
  static float scalar(const uint16_t* p) {
    const uint32_t bits = uint32_t(*p) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
  }
};

template <class Elem, class Load>
struct FloatGemm {
  // out[i * kBlockTokens + k] (+)= sum_c w[i][c] * xt[c * kBlockTokens + k], for rows i < R
  // and the first V vectors of tokens k; `add` adds to what out holds.
  template <int R, int V>
  static void micro(const float* const* w, const float* xt, int64_t cols, float* out, bool add) {
    P::F acc[R][V];
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < V; ++v) acc[i][v] = add ? P::load(out + i * kBlockTokens + v * P::kFloats) : P::fzero();
    for (int64_t c = 0; c < cols; ++c) {
      P::F xv[V];
      for (int v = 0; v < V; ++v) xv[v] = P::load(xt + c * kBlockTokens + v * P::kFloats);
      for (int i = 0; i < R; ++i) {
        const P::F wb = P::set1(w[i][c]);
        for (int v = 0; v < V; ++v) acc[i][v] = P::fma(wb, xv[v], acc[i][v]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < V; ++v) P::store(out + i * kBlockTokens + v * P::kFloats, acc[i][v]);
  }

  static void run(const Operands& op, int64_t r0, int64_t r1, int64_t T) {
    static constexpr auto table = micro_table<FloatGemm, kPanelRows, kVecs>();
    const int64_t cols = op.cols, blocks = token_blocks(T);
    const auto* xt = reinterpret_cast<const float*>(op.act);
    // Slab rows and chunk blocks: multiples of the micro-kernel's, at least one of them.
    const int64_t row_bytes = cols * int64_t(sizeof(float));
    const int64_t slab_bytes = int64_t(cols > kSplitColumns ? kSplitSlabBytes : kSlabBytes);
    const int64_t slab_rows = std::max<int64_t>(1, slab_bytes / row_bytes / kPanelRows) * kPanelRows;
    const int64_t chunk_blocks = std::max<int64_t>(1, int64_t(kChunkBytes) / (row_bytes * kBlockTokens));
    thread_local std::vector<float> slab;  // converted weight rows (16-bit types)
    if constexpr (!std::is_same_v<Elem, float>) slab.resize(size_t(std::min(slab_rows, r1 - r0) * cols));
    alignas(64) float out[kPanelRows * kBlockTokens];
    for (int64_t s0 = r0; s0 < r1; s0 += slab_rows) {
      const int64_t s1 = std::min(r1, s0 + slab_rows);
      if constexpr (!std::is_same_v<Elem, float>) {
        for (int64_t r = s0; r < s1; ++r) {
          const auto* src = reinterpret_cast<const Elem*>(op.w + size_t(r) * op.w_stride);
          float* dst = slab.data() + (r - s0) * cols;
          int64_t c = 0;
          for (; c + P::kFloats <= cols; c += P::kFloats) P::store(dst + c, Load::vec(src + c));
          for (; c < cols; ++c) dst[c] = Load::scalar(src + c);
        }
      }
      if (cols > kSplitColumns) {
        split_columns(op, s0, s1, T, slab.data());
        continue;
      }
      for (int64_t b0 = 0; b0 < blocks; b0 += chunk_blocks) {
        const int64_t b1 = std::min(blocks, b0 + chunk_blocks);
        for (int64_t r = s0; r < s1; r += kPanelRows) {
          const int R = int(std::min<int64_t>(kPanelRows, s1 - r));
          const float* w[kPanelRows];
          panel_rows(op, r, R, s0, slab.data(), w);
          for (int64_t block = b0; block < b1; ++block) {
            const int64_t t0 = block * kBlockTokens, n = std::min<int64_t>(kBlockTokens, T - t0);
            const int V = int((n + P::kFloats - 1) / P::kFloats);
            table[size_t(R - 1)][size_t(V - 1)](w, xt + block * cols * kBlockTokens, cols, out, false);
            scatter(op, out, r, R, t0, n);
          }
        }
      }
    }
  }

  // Row pointers of the panel of R rows from r (the slab starts at row s0).
  static void panel_rows(const Operands& op, int64_t r, int R, int64_t s0, const float* slab, const float** w) {
    for (int i = 0; i < R; ++i) {
      if constexpr (std::is_same_v<Elem, float>)
        w[i] = reinterpret_cast<const float*>(op.w + size_t(r + i) * op.w_stride);
      else
        w[i] = slab + (r - s0 + i) * op.cols;
    }
  }

  // Token-major: each token's R outputs are adjacent in y.
  static void scatter(const Operands& op, const float* out, int64_t r, int R, int64_t t0, int64_t n) {
    for (int64_t k = 0; k < n; ++k) {
      float* yk = op.y + size_t(t0 + k) * size_t(op.rows) + size_t(r);
      for (int i = 0; i < R; ++i) yk[i] = out[i * kBlockTokens + k];
    }
  }

  // Rows [s0, s1) when one token block of all columns would not stay in L2: each block runs
  // kSplitColumns columns at a time past every panel of the slab, adding to the panels' sums.
  static void split_columns(const Operands& op, int64_t s0, int64_t s1, int64_t T, const float* slab) {
    static constexpr auto table = micro_table<FloatGemm, kPanelRows, kVecs>();
    const int64_t cols = op.cols;
    const auto* xt = reinterpret_cast<const float*>(op.act);
    thread_local std::vector<float> sums;  // [slab rows][kBlockTokens]
    sums.resize(size_t((s1 - s0 + kPanelRows) * kBlockTokens));
    for (int64_t block = 0; block < token_blocks(T); ++block) {
      const int64_t t0 = block * kBlockTokens, n = std::min<int64_t>(kBlockTokens, T - t0);
      const int V = int((n + P::kFloats - 1) / P::kFloats);
      for (int64_t c0 = 0; c0 < cols; c0 += kSplitColumns) {
        const int64_t c1 = std::min(cols, c0 + kSplitColumns);
        for (int64_t r = s0; r < s1; r += kPanelRows) {
          const int R = int(std::min<int64_t>(kPanelRows, s1 - r));
          const float* w[kPanelRows];
          panel_rows(op, r, R, s0, slab, w);
          for (int i = 0; i < R; ++i) w[i] += c0;
          table[size_t(R - 1)][size_t(V - 1)](w, xt + (block * cols + c0) * kBlockTokens, c1 - c0,
                                              sums.data() + (r - s0) * kBlockTokens, c0 > 0);
        }
      }
      for (int64_t r = s0; r < s1; r += kPanelRows)
        scatter(op, sums.data() + (r - s0) * kBlockTokens, r, int(std::min<int64_t>(kPanelRows, s1 - r)), t0, n);
    }
  }
};

template <class Gemm>
constexpr Kernel gemm_kernel{&gemm_act_bytes, &gemm_prepare, &Gemm::run, kPanelRows, 0};

}  // namespace

const Kernel* simd_kernel_gemm(TensorType type) {
  switch (type) {
    case TensorType::F32:
      return &gemm_kernel<FloatGemm<float, LoadF32>>;
    case TensorType::F16:
      return &gemm_kernel<FloatGemm<uint16_t, LoadF16>>;
    case TensorType::BF16:
      return &gemm_kernel<FloatGemm<uint16_t, LoadBF16>>;
    default:
      return nullptr;
  }
}

}  // namespace rwkv::matmul_detail

#endif  // __AVX2__ && __FMA__ && __F16C__
