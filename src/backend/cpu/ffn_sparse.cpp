#include "backend/cpu/ffn_sparse.h"

#include <algorithm>
#include <cstring>
#include <string>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define RWKV_SPARSE_AVX2 1
#endif

#include "common/error.h"
#include "common/half.h"
#include "tensor/transpose.h"

namespace rwkv {

namespace {

// Bytes of one element of a row of the copy (Q8_0: one int8 quant).
size_t element_bytes(TensorType type) {
  switch (type) {
    case TensorType::F32:
      return 4;
    case TensorType::F16:
    case TensorType::BF16:
      return 2;
    case TensorType::Q8_0:
      return 1;
    default:
      return 0;
  }
}

// Units a chunk (see multiply): a fixed count, so that the sums do not depend on the thread
// count; small enough that 2.9B's ~1,200 non-zero units of a token spread evenly over 16
// threads.
constexpr size_t kUnitsPerChunk = 16;
// Output columns a thread adds up at a time: whole 64-byte lines of the float outputs.
constexpr int64_t kColumnGrain = 16;
// Products below this many multiply-adds run on the calling thread (as tensor/matmul.cpp).
constexpr double kSerialMultiplyAdds = 65536;

template <TensorType kType>
float element(const uint8_t* row, int64_t i) {
  if constexpr (kType == TensorType::F32) {
    float v;
    std::memcpy(&v, row + 4 * i, 4);
    return v;
  } else if constexpr (kType == TensorType::Q8_0) {
    return float(int8_t(row[i]));
  } else {
    uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    return kType == TensorType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

#if RWKV_SPARSE_AVX2
// Elements [i, i + 8) of a row as floats.
template <TensorType kType>
__m256 elements8(const uint8_t* row, int64_t i) {
  if constexpr (kType == TensorType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
  } else if constexpr (kType == TensorType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  } else if constexpr (kType == TensorType::BF16) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  } else {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + i))));
  }
}
#endif

// acc[0, n) += h * row[0, n), row in the copy's element type.
template <TensorType kType>
void add_scaled_row(float h, const uint8_t* row, float* acc, int64_t n) {
  int64_t i = 0;
#if RWKV_SPARSE_AVX2
  const __m256 hv = _mm256_set1_ps(h);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(hv, elements8<kType>(row, i), _mm256_loadu_ps(acc + i)));
#endif
  for (; i < n; ++i) acc[i] += h * element<kType>(row, i);
}

// y[0, n) += d[0, n) * sums[0, n), d float16 (a Q8_0 block's scales of n output rows).
void add_scaled_sums(const uint16_t* d, const float* sums, float* y, int64_t n) {
  int64_t i = 0;
#if RWKV_SPARSE_AVX2
  for (; i + 8 <= n; i += 8) {
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(dv, _mm256_loadu_ps(sums + i), _mm256_loadu_ps(y + i)));
  }
#endif
  for (; i < n; ++i) y[i] += f16_to_f32(d[i]) * sums[i];
}

// dst [cols x rows] = src [rows x cols] for elements of `bytes` bytes, in tiles of 32 source
// rows so that the rows read stay in cache while each output row gets its run.
void transpose_elements(const uint8_t* src, int64_t rows, int64_t cols, size_t bytes, uint8_t* dst) {
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = std::min(r0 + kTile, rows);
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t r = r0; r < r1; ++r)
        std::memcpy(dst + (size_t(c) * size_t(rows) + size_t(r)) * bytes,
                    src + (size_t(r) * size_t(cols) + size_t(c)) * bytes, bytes);
  }
}

}  // namespace

bool SparseFfnValue::supports(TensorType type) { return element_bytes(type) != 0; }

size_t SparseFfnValue::copy_bytes(TensorType type, int64_t C, int64_t F) {
  const size_t elements = size_t(C) * size_t(F) * element_bytes(type);
  return type == TensorType::Q8_0 ? elements + size_t(F / 32) * size_t(C) * sizeof(uint16_t) : elements;
}

SparseFfnValue::SparseFfnValue(const Weight& W) : type_(W.type), C_(W.rows()), F_(W.cols()), dense_bytes_(W.nbytes) {
  if (!supports(type_))
    fail(ErrorCode::unsupported,
         "sparse FFN value product: no transposed layout for " + W.name + " (" + std::string(type_name(type_)) + ")");
  elements_.resize(size_t(C_) * size_t(F_) * element_bytes(type_));
  if (type_ == TensorType::Q8_0) {
    scales_.resize(size_t(F_ / 32) * size_t(C_));
    q8_0_transpose_quants(W.data, uint64_t(C_), uint32_t(F_), 0, uint64_t(F_), elements_.data());
    q8_0_transpose_scales(W.data, uint64_t(C_), uint32_t(F_), 0, uint64_t(F_ / 32),
                          reinterpret_cast<uint8_t*>(scales_.data()));
  } else {
    transpose_elements(W.data, C_, F_, element_bytes(type_), elements_.data());
  }
}

bool SparseFfnValue::multiply(ThreadPool& pool, const float* hidden, int64_t T, float* y) const {
  // The non-zero units of every token (in unit order), and the bytes reading them costs:
  // their rows, and for Q8_0 the scale rows of the blocks they touch. Gathering stops as
  // soon as that passes the dense product's share (prefill of a long prompt, random weights).
  const size_t row_bytes = size_t(C_) * element_bytes(type_);
  const size_t block_bytes = type_ == TensorType::Q8_0 ? size_t(C_) * sizeof(uint16_t) : 0;
  const double byte_limit = kSparseShare * double(dense_bytes_);
  std::vector<Unit> units;
  std::vector<size_t> first(size_t(T) + 1, 0);
  size_t touched_blocks = 0;
  for (int64_t t = 0; t < T; ++t) {
    int64_t last_block = -1;
    for (int64_t j = 0; j < F_; ++j) {
      const float h = hidden[t * F_ + j];
      if (h == 0.0f) continue;
      units.push_back({uint32_t(j), h});
      if (j / 32 != last_block) ++touched_blocks, last_block = j / 32;
    }
    first[size_t(t) + 1] = units.size();
    if (double(units.size() * row_bytes + touched_blocks * block_bytes) > byte_limit) return false;
  }

  // Chunks of kUnitsPerChunk units of one token, each summed over whole rows (contiguous
  // runs of C elements) into a partial of its own by one thread; then each token's partials
  // are added in chunk order.
  struct Chunk {
    size_t begin, end;
  };
  std::vector<Chunk> chunks;
  std::vector<size_t> token_chunks(size_t(T) + 1, 0);
  for (int64_t t = 0; t < T; ++t) {
    for (size_t b = first[size_t(t)]; b < first[size_t(t) + 1]; b += kUnitsPerChunk)
      chunks.push_back({b, std::min(b + kUnitsPerChunk, first[size_t(t) + 1])});
    token_chunks[size_t(t) + 1] = chunks.size();
  }
  thread_local std::vector<float> partial_sums;  // the calling thread's, reused between calls
  partial_sums.resize(chunks.size() * size_t(C_));
  float* partials = partial_sums.data();
  const auto sum_chunks = [&](int64_t k0, int64_t k1, int) {
    for (int64_t k = k0; k < k1; ++k)
      sum_units(units.data() + chunks[size_t(k)].begin, units.data() + chunks[size_t(k)].end,
                partials + size_t(k) * size_t(C_));
  };
  const auto add_partials = [&](int64_t c0, int64_t c1, int) {
    for (int64_t t = 0; t < T; ++t) {
      float* out = y + t * C_ + c0;
      std::fill(out, out + (c1 - c0), 0.0f);
      for (size_t k = token_chunks[size_t(t)]; k < token_chunks[size_t(t) + 1]; ++k)  // h = 1: a plain sum
        add_scaled_row<TensorType::F32>(1.0f, reinterpret_cast<const uint8_t*>(partials + k * size_t(C_) + c0), out,
                                        c1 - c0);
    }
  };
  if (double(units.size()) * double(C_) < kSerialMultiplyAdds) {
    sum_chunks(0, int64_t(chunks.size()), 0);
    add_partials(0, C_, 0);
  } else {
    pool.parallel_for(int64_t(chunks.size()), sum_chunks);
    pool.parallel_for(C_, add_partials, kColumnGrain);
  }
  return true;
}

// out[0, C) = the sum over units [begin, end) of value x row.
void SparseFfnValue::sum_units(const Unit* begin, const Unit* end, float* out) const {
  const int64_t n = C_;
  const size_t row_bytes = size_t(C_) * element_bytes(type_);
  const auto row = [&](const Unit& unit) { return elements_.data() + unit.index * row_bytes; };
  std::fill(out, out + n, 0.0f);
  switch (type_) {
    case TensorType::F32:
      for (const Unit* u = begin; u < end; ++u) add_scaled_row<TensorType::F32>(u->value, row(*u), out, n);
      break;
    case TensorType::F16:
      for (const Unit* u = begin; u < end; ++u) add_scaled_row<TensorType::F16>(u->value, row(*u), out, n);
      break;
    case TensorType::BF16:
      for (const Unit* u = begin; u < end; ++u) add_scaled_row<TensorType::BF16>(u->value, row(*u), out, n);
      break;
    default: {  // Q8_0: the units of one block of 32 share their scales
      thread_local std::vector<float> block_sums;
      block_sums.resize(size_t(n));
      for (const Unit* u = begin; u < end;) {
        const uint32_t block = u->index / 32;
        std::fill(block_sums.begin(), block_sums.end(), 0.0f);
        for (; u < end && u->index / 32 == block; ++u)
          add_scaled_row<TensorType::Q8_0>(u->value, row(*u), block_sums.data(), n);
        add_scaled_sums(scales_.data() + size_t(block) * size_t(C_), block_sums.data(), out, n);
      }
    }
  }
}

}  // namespace rwkv
