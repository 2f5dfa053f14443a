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

// How a type's copy is laid out: bits of one element of a row, units sharing a group's scales
// (0: none), and bytes an output row of the group planes and of the super-block (256 units)
// planes take.
struct Layout {
  size_t element_bits = 0;
  int64_t group = 0;
  size_t group_bytes = 0, super_bytes = 0;
};

Layout layout(TensorType type) {
  switch (type) {
    case TensorType::F32:
      return {32, 0, 0, 0};
    case TensorType::F16:
    case TensorType::BF16:
      return {16, 0, 0, 0};
    case TensorType::Q8_0:
      return {8, 32, 2, 0};
    case TensorType::Q4_K:
      return {4, 32, 2, 4};
    case TensorType::Q5_K:
      return {8, 32, 2, 4};
    case TensorType::Q6_K:
      return {8, 16, 1, 2};
    default:
      return {};
  }
}

// How one element of a row of the copy is read.
enum class Element { f32, f16, bf16, s8, u8, u4 };

// Units a chunk (see multiply): a fixed count, so that the sums do not depend on the thread
// count; small enough that 2.9B's ~1,200 non-zero units of a token spread evenly over 16
// threads.
constexpr size_t kUnitsPerChunk = 16;
// Output columns a thread adds up at a time: whole 64-byte lines of the float outputs.
constexpr int64_t kColumnGrain = 16;
// Products below this many multiply-adds run on the calling thread (as tensor/matmul.cpp).
constexpr double kSerialMultiplyAdds = 65536;

template <Element kElement>
float element(const uint8_t* row, int64_t i) {
  if constexpr (kElement == Element::f32) {
    float v;
    std::memcpy(&v, row + 4 * i, 4);
    return v;
  } else if constexpr (kElement == Element::s8) {
    return float(int8_t(row[i]));
  } else if constexpr (kElement == Element::u8) {
    return float(row[i]);
  } else if constexpr (kElement == Element::u4) {
    return float((row[i / 2] >> (4 * (i & 1))) & 0xF);  // element 2k low, 2k + 1 high nibble
  } else {
    uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    return kElement == Element::f16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

#if RWKV_SPARSE_AVX2
// Elements [i, i + 8) of a row as floats (i a multiple of 8).
template <Element kElement>
__m256 elements8(const uint8_t* row, int64_t i) {
  if constexpr (kElement == Element::f32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
  } else if constexpr (kElement == Element::f16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
  } else if constexpr (kElement == Element::bf16) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  } else if constexpr (kElement == Element::s8) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + i))));
  } else if constexpr (kElement == Element::u8) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + i))));
  } else {
    // Four bytes, each twice, then the low nibble of even lanes and the high one of odd.
    int32_t packed;
    std::memcpy(&packed, row + i / 2, 4);
    const __m128i twice = _mm_shuffle_epi8(_mm_cvtsi32_si128(packed),
                                           _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, -1, -1, -1, -1, -1, -1, -1, -1));
    const __m256i shifted = _mm256_srlv_epi32(_mm256_cvtepu8_epi32(twice), _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
    return _mm256_cvtepi32_ps(_mm256_and_si256(shifted, _mm256_set1_epi32(0xF)));
  }
}

__m256 f16x8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
__m256 u8x8(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
__m256 s8x8(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
#endif

// acc[0, n) += h * row[0, n), row in the copy's element type.
template <Element kElement>
void add_scaled_row(float h, const uint8_t* row, float* acc, int64_t n) {
  int64_t i = 0;
#if RWKV_SPARSE_AVX2
  const __m256 hv = _mm256_set1_ps(h);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(hv, elements8<kElement>(row, i), _mm256_loadu_ps(acc + i)));
#endif
  for (; i < n; ++i) acc[i] += h * element<kElement>(row, i);
}

// acc[0, n) += the sum of h[k] * row[k][0, n) over four rows: acc is loaded and stored once
// for four rows.
template <Element kElement>
void add_scaled_rows4(const float* h, const uint8_t* const* row, float* acc, int64_t n) {
  int64_t i = 0;
#if RWKV_SPARSE_AVX2
  const __m256 h0 = _mm256_set1_ps(h[0]), h1 = _mm256_set1_ps(h[1]), h2 = _mm256_set1_ps(h[2]),
               h3 = _mm256_set1_ps(h[3]);
  for (; i + 8 <= n; i += 8) {
    __m256 a = _mm256_fmadd_ps(h0, elements8<kElement>(row[0], i), _mm256_loadu_ps(acc + i));
    a = _mm256_fmadd_ps(h1, elements8<kElement>(row[1], i), a);
    a = _mm256_fmadd_ps(h2, elements8<kElement>(row[2], i), a);
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(h3, elements8<kElement>(row[3], i), a));
  }
#endif
  for (; i < n; ++i)
    acc[i] += h[0] * element<kElement>(row[0], i) + h[1] * element<kElement>(row[1], i) +
              h[2] * element<kElement>(row[2], i) + h[3] * element<kElement>(row[3], i);
}

}  // namespace

bool SparseFfnValue::supports(TensorType type, int64_t C) {
  return layout(type).element_bits != 0 && (type != TensorType::Q4_K || C % 2 == 0);
}

size_t SparseFfnValue::copy_bytes(TensorType type, int64_t C, int64_t F) {
  const Layout lay = layout(type);
  size_t bytes = size_t(F) * size_t(C) * lay.element_bits / 8;
  if (lay.group) bytes += size_t(F / lay.group) * size_t(C) * lay.group_bytes;
  return bytes + size_t(F / 256) * size_t(C) * lay.super_bytes;
}

SparseFfnValue::SparseFfnValue(const Weight& W) : type_(W.type), C_(W.rows()), F_(W.cols()), dense_bytes_(W.nbytes) {
  if (!supports(type_, C_))
    fail(ErrorCode::unsupported,
         "sparse FFN value product: no transposed layout for " + W.name + " (" + std::string(type_name(type_)) + ")");
  const Layout lay = layout(type_);
  const uint64_t C = uint64_t(C_);
  const uint32_t F = uint32_t(F_);
  quants_.resize(size_t(F_) * size_t(C_) * lay.element_bits / 8);
  switch (type_) {
    case TensorType::Q8_0:
      group_d_.resize(size_t(F / 32) * C);
      q8_0_transpose_quants(W.data, C, F, 0, F, quants_.data());
      q8_0_transpose_scales(W.data, C, F, 0, F / 32, reinterpret_cast<uint8_t*>(group_d_.data()));
      break;
    case TensorType::Q4_K:
    case TensorType::Q5_K:
      super_d_.resize(size_t(F / 256) * C);
      super_dmin_.resize(super_d_.size());
      group_scales_.resize(size_t(F / 32) * C);
      group_mins_.resize(group_scales_.size());
      (type_ == TensorType::Q4_K ? q4_k_transpose_compact : q5_k_transpose_compact)(
          W.data, C, F, quants_.data(), super_d_.data(), super_dmin_.data(), group_scales_.data(), group_mins_.data());
      break;
    case TensorType::Q6_K:
      super_d_.resize(size_t(F / 256) * C);
      group_scales_.resize(size_t(F / 16) * C);
      q6_k_transpose_compact(W.data, C, F, reinterpret_cast<int8_t*>(quants_.data()), super_d_.data(),
                             reinterpret_cast<int8_t*>(group_scales_.data()));
      break;
    default:
      transpose_elements(W.data, C, F, lay.element_bits / 8, 0, F, quants_.data());
  }
}

bool SparseFfnValue::multiply(ThreadPool& pool, const float* hidden, int64_t T, float* y) const {
  // The non-zero units of every token (in unit order), and the bytes reading them costs:
  // their rows, and the scale rows of the groups and super-blocks they touch. Gathering stops
  // as soon as that passes the dense product's share (prefill of a long prompt, random
  // weights).
  const Layout lay = layout(type_);
  const size_t C = size_t(C_), row_bytes = C * lay.element_bits / 8;
  const int64_t group = lay.group ? lay.group : F_;
  const double byte_limit = kSparseShare * double(dense_bytes_);
  std::vector<Unit> units;
  std::vector<size_t> first(size_t(T) + 1, 0);
  size_t touched_groups = 0, touched_supers = 0;
  for (int64_t t = 0; t < T; ++t) {
    int64_t last_group = -1, last_super = -1;
    for (int64_t j = 0; j < F_; ++j) {
      const float h = hidden[t * F_ + j];
      if (h == 0.0f) continue;
      units.push_back({uint32_t(j), h});
      if (j / group != last_group) ++touched_groups, last_group = j / group;
      if (j / 256 != last_super) ++touched_supers, last_super = j / 256;
    }
    first[size_t(t) + 1] = units.size();
    const size_t bytes =
        units.size() * row_bytes + touched_groups * C * lay.group_bytes + touched_supers * C * lay.super_bytes;
    if (double(bytes) > byte_limit) return false;
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
        add_scaled_row<Element::f32>(1.0f, reinterpret_cast<const uint8_t*>(partials + k * size_t(C_) + c0), out,
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

// out[0, C) = the sum over units [begin, end) of value x column of W.
void SparseFfnValue::sum_units(const Unit* begin, const Unit* end, float* out) const {
  const Layout lay = layout(type_);
  const int64_t n = C_;
  const size_t row_bytes = size_t(C_) * lay.element_bits / 8;
  const auto row = [&](const Unit& unit) { return quants_.data() + unit.index * row_bytes; };
  std::fill(out, out + n, 0.0f);
  // acc += the units [first, last), four at a time.
  const auto add_rows = [&]<Element kElement>(float* acc, const Unit* first, const Unit* last) {
    const Unit* u = first;
    for (; last - u >= 4; u += 4) {
      const float h[4] = {u[0].value, u[1].value, u[2].value, u[3].value};
      const uint8_t* rows[4] = {row(u[0]), row(u[1]), row(u[2]), row(u[3])};
      add_scaled_rows4<kElement>(h, rows, acc, n);
    }
    for (; u < last; ++u) add_scaled_row<kElement>(u->value, row(*u), acc, n);
  };
  switch (type_) {
    case TensorType::F32:
      return add_rows.operator()<Element::f32>(out, begin, end);
    case TensorType::F16:
      return add_rows.operator()<Element::f16>(out, begin, end);
    case TensorType::BF16:
      return add_rows.operator()<Element::bf16>(out, begin, end);
    default:
      break;
  }
  // Quantised types: the units of one group share its scales, applied once to their sums.
  thread_local std::vector<float> group_sums;
  group_sums.resize(size_t(n));
  for (const Unit* u = begin; u < end;) {
    const int64_t g = u->index / lay.group;
    const Unit* group_end = u;
    float h_sum = 0.0f;
    for (; group_end < end && group_end->index / lay.group == g; ++group_end) h_sum += group_end->value;
    std::fill(group_sums.begin(), group_sums.end(), 0.0f);
    switch (type_) {
      case TensorType::Q4_K:
        add_rows.operator()<Element::u4>(group_sums.data(), u, group_end);
        break;
      case TensorType::Q5_K:
        add_rows.operator()<Element::u8>(group_sums.data(), u, group_end);
        break;
      default:  // Q8_0, Q6_K
        add_rows.operator()<Element::s8>(group_sums.data(), u, group_end);
    }
    add_group(g, group_sums.data(), h_sum, out);
    u = group_end;
  }
}

// Per output row c: Q8_0 out += d sums; Q6_K out += d scale sums; Q4_K, Q5_K out += d scale
// sums - dmin min h_sum (the dequantisers' weights, spec §4, summed over the group's units).
void SparseFfnValue::add_group(int64_t g, const float* sums, float h_sum, float* out) const {
  const size_t C = size_t(C_), at = size_t(g) * C;
  int64_t c = 0;
  switch (type_) {
    case TensorType::Q8_0: {
      const uint16_t* d = group_d_.data() + at;
#if RWKV_SPARSE_AVX2
      for (; c + 8 <= C_; c += 8)
        _mm256_storeu_ps(out + c, _mm256_fmadd_ps(f16x8(d + c), _mm256_loadu_ps(sums + c), _mm256_loadu_ps(out + c)));
#endif
      for (; c < C_; ++c) out[c] += f16_to_f32(d[c]) * sums[c];
      break;
    }
    case TensorType::Q6_K: {
      const uint16_t* d = super_d_.data() + size_t(g / 16) * C;
      const uint8_t* scale = group_scales_.data() + at;
#if RWKV_SPARSE_AVX2
      for (; c + 8 <= C_; c += 8) {
        const __m256 ds = _mm256_mul_ps(f16x8(d + c), s8x8(scale + c));
        _mm256_storeu_ps(out + c, _mm256_fmadd_ps(ds, _mm256_loadu_ps(sums + c), _mm256_loadu_ps(out + c)));
      }
#endif
      for (; c < C_; ++c) out[c] += f16_to_f32(d[c]) * float(int8_t(scale[c])) * sums[c];
      break;
    }
    default: {  // Q4_K, Q5_K
      const uint16_t* d = super_d_.data() + size_t(g / 8) * C;
      const uint16_t* dmin = super_dmin_.data() + size_t(g / 8) * C;
      const uint8_t* scale = group_scales_.data() + at;
      const uint8_t* min = group_mins_.data() + at;
#if RWKV_SPARSE_AVX2
      const __m256 hv = _mm256_set1_ps(h_sum);
      for (; c + 8 <= C_; c += 8) {
        const __m256 ds = _mm256_mul_ps(f16x8(d + c), u8x8(scale + c));
        const __m256 mins = _mm256_mul_ps(_mm256_mul_ps(f16x8(dmin + c), u8x8(min + c)), hv);
        const __m256 sum = _mm256_fmadd_ps(ds, _mm256_loadu_ps(sums + c), _mm256_loadu_ps(out + c));
        _mm256_storeu_ps(out + c, _mm256_sub_ps(sum, mins));
      }
#endif
      for (; c < C_; ++c)
        out[c] += f16_to_f32(d[c]) * float(scale[c]) * sums[c] - f16_to_f32(dmin[c]) * float(min[c]) * h_sum;
    }
  }
}

}  // namespace rwkv
