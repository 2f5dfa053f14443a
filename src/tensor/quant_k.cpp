// Reference conversions of the k-quant super-block types (spec §4.3, §4.4). Quantisers fit
// each sub-block's scale (and min) by a small search that minimises the squared error,
// then quantise those per-sub-block parameters against the super-block's f16 scales.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/half.h"
#include "tensor/blocks.h"
#include "tensor/quant_k.h"

namespace rwkv::quant_detail {
namespace {

// ---------------------------------------------------------------- dequantisation

// Q2_K and Q3_K share a walk: two halves of 128 outputs reading 32 qs bytes each; in a
// half, shifts 0, 2, 4, 6 each emit 16 values from qs[0..16) then 16 from qs[16..32), and
// every run of 16 takes the next scale. `value(is, half, shift, l)` gives one output.
template <class Value>
void walk_two_bit_halves(float* y, Value value) {
  int is = 0;
  for (int half = 0; half < 2; ++half) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int run = 0; run < 2; ++run, ++is) {
        for (int l = 16 * run; l < 16 * run + 16; ++l) *y++ = value(is, half, shift, l);
      }
    }
  }
}

}  // namespace

void dequantize_q2_k(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ2_K*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK_K) {
    const BlockQ2_K& blk = blocks[b];
    const float d = f16_to_f32(blk.d), dmin = f16_to_f32(blk.dmin);
    walk_two_bit_halves(y, [&](int is, int half, int shift, int l) {
      const int q = (blk.qs[32 * half + l] >> shift) & 3;
      return d * float(blk.scales[is] & 0xF) * float(q) - dmin * float(blk.scales[is] >> 4);
    });
  }
}

void dequantize_q3_k(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ3_K*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK_K) {
    const BlockQ3_K& blk = blocks[b];
    const float d = f16_to_f32(blk.d);
    // 16 six-bit scales: low nibbles from words A0/A1, top two bits from A2 (spec §4.3).
    uint32_t a[3];
    memcpy(a, blk.scales, 12);
    const uint32_t low4 = 0x0f0f0f0fu, low2 = 0x03030303u;
    const uint32_t words[4] = {(a[0] & low4) | ((a[2] & low2) << 4), (a[1] & low4) | (((a[2] >> 2) & low2) << 4),
                               ((a[0] >> 4) & low4) | (((a[2] >> 4) & low2) << 4),
                               ((a[1] >> 4) & low4) | (((a[2] >> 6) & low2) << 4)};
    uint8_t scales[16];
    memcpy(scales, words, 16);
    walk_two_bit_halves(y, [&](int is, int half, int shift, int l) {
      const int q = (blk.qs[32 * half + l] >> shift) & 3;
      const int high_bit = 4 * half + shift / 2;
      const int value = q - ((blk.hmask[l] >> high_bit) & 1 ? 0 : 4);
      return d * float(int(scales[is]) - 32) * float(value);
    });
  }
}

void dequantize_q4_k(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ4_K*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK_K) {
    const BlockQ4_K& blk = blocks[b];
    const float d = f16_to_f32(blk.d), dmin = f16_to_f32(blk.dmin);
    uint8_t sm[16];
    unpack_k_scales(blk.scales, sm);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* qs = blk.qs + 32 * c;
      for (int l = 0; l < 32; ++l) {
        y[64 * c + l] = d * float(sm[2 * c]) * float(qs[l] & 0xF) - dmin * float(sm[8 + 2 * c]);
        y[64 * c + 32 + l] = d * float(sm[2 * c + 1]) * float(qs[l] >> 4) - dmin * float(sm[8 + 2 * c + 1]);
      }
    }
  }
}

void dequantize_q5_k(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ5_K*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK_K) {
    const BlockQ5_K& blk = blocks[b];
    const float d = f16_to_f32(blk.d), dmin = f16_to_f32(blk.dmin);
    uint8_t sm[16];
    unpack_k_scales(blk.scales, sm);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* qs = blk.qs + 32 * c;
      for (int l = 0; l < 32; ++l) {
        const int q_lo = (qs[l] & 0xF) | ((blk.qh[l] >> (2 * c)) & 1) << 4;
        const int q_hi = (qs[l] >> 4) | ((blk.qh[l] >> (2 * c + 1)) & 1) << 4;
        y[64 * c + l] = d * float(sm[2 * c]) * float(q_lo) - dmin * float(sm[8 + 2 * c]);
        y[64 * c + 32 + l] = d * float(sm[2 * c + 1]) * float(q_hi) - dmin * float(sm[8 + 2 * c + 1]);
      }
    }
  }
}

void dequantize_q6_k(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ6_K*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK_K) {
    const BlockQ6_K& blk = blocks[b];
    const float d = f16_to_f32(blk.d);
    for (int n = 0; n < 2; ++n) {
      const uint8_t* ql = blk.ql + 64 * n;
      const uint8_t* qh = blk.qh + 32 * n;
      const int8_t* sc = blk.scales + 8 * n;
      float* out = y + 128 * n;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
        const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
        const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
        out[l] = d * float(sc[is]) * float(q1);
        out[l + 32] = d * float(sc[is + 2]) * float(q2);
        out[l + 64] = d * float(sc[is + 4]) * float(q3);
        out[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
    }
  }
}

void dequantize_q8_k(const void* src, float* y, int64_t nblocks) {
  const auto* blocks = static_cast<const BlockQ8_K*>(src);
  for (int64_t b = 0; b < nblocks; ++b, y += QK_K)
    for (int j = 0; j < QK_K; ++j) y[j] = blocks[b].d * float(blocks[b].qs[j]);
}

// ---------------------------------------------------------------- quantisation
namespace {

// Candidate inverse scales are swept over (levels + step * k) / range, k in [-kSweep, kSweep].
constexpr int kSweep = 10;
constexpr float kSweepStep = 0.1f;

// Best x ≈ scale * q - min_sub with q in [0, qmax], scale >= 0, min_sub >= 0 (the level 0
// is never above zero, as the format's "- dmin * m" needs).
struct AffineFit {
  float scale = 0.0f, min_sub = 0.0f;
};

AffineFit fit_affine(const float* x, int n, int qmax) {
  const float lo = std::min(0.0f, *std::min_element(x, x + n));
  const float hi = *std::max_element(x, x + n);
  if (hi <= lo) return {0.0f, -lo};
  double sx = 0, sxx = 0;
  for (int i = 0; i < n; ++i) {
    sx += x[i];
    sxx += double(x[i]) * x[i];
  }
  AffineFit best;
  double best_err = std::numeric_limits<double>::infinity();
  for (int k = -kSweep; k <= kSweep; ++k) {
    const float inv = (float(qmax) + kSweepStep * float(k)) / (hi - lo);
    // Separate passes so the compiler can vectorise them: levels, integer sums, then the
    // float sum over four partial sums.
    int q[32];
    for (int i = 0; i < n; ++i) q[i] = round_clamped(inv * (x[i] - lo), 0, qmax);
    int isq = 0, isqq = 0;
    for (int i = 0; i < n; ++i) {
      isq += q[i];
      isqq += q[i] * q[i];
    }
    double part[4] = {};
    for (int i = 0; i < n; ++i) part[i % 4] += double(x[i]) * q[i];
    const double sq = isq, sqq = isqq, sxq = part[0] + part[1] + part[2] + part[3];
    // Least squares x ≈ a * q + b, with b forced to <= 0.
    // When every q is equal (det = 0) only the slope through the origin is determined.
    const double det = n * sqq - sq * sq;
    double a = det > 0 ? (n * sxq - sq * sx) / det : 0.0, b = det > 0 ? (sx - a * sq) / n : 1.0;
    if (b > 0) {
      b = 0;
      a = sqq > 0 ? sxq / sqq : 0.0;
    }
    // sum (a q + b - x)^2, expanded over the sums above
    const double err = a * a * sqq + 2 * a * b * sq + n * b * b - 2 * a * sxq - 2 * b * sx + sxx;
    if (err < best_err) {
      best_err = err;
      best = {float(a), float(-b)};
    }
  }
  return best;
}

// Best x ≈ scale * q with q in [-32, 31] (sign of scale free), for 16 values.
float fit_symmetric6(const float* x) {
  float xm = 0.0f;
  for (int i = 0; i < 16; ++i)
    if (std::fabs(x[i]) > std::fabs(xm)) xm = x[i];
  if (xm == 0.0f) return 0.0f;
  float best_scale = 0.0f;
  double best_gain = -1.0;
  // Map xm either onto level -32 (the longer side) or onto +31.
  for (const float levels : {-32.0f, 31.0f}) {
    for (int k = -kSweep; k <= kSweep; ++k) {
      const float inv = (levels + (levels < 0 ? -1.0f : 1.0f) * kSweepStep * float(k)) / xm;
      int q[16], isqq = 0;
      for (int i = 0; i < 16; ++i) q[i] = round_clamped(inv * x[i], -32, 31);
      for (int i = 0; i < 16; ++i) isqq += q[i] * q[i];
      double part[4] = {};
      for (int i = 0; i < 16; ++i) part[i % 4] += double(x[i]) * q[i];
      const double sqq = isqq, sxq = part[0] + part[1] + part[2] + part[3];
      if (sqq == 0) continue;
      // With the optimal scale sxq / sqq the squared error is sum(x^2) - sxq^2 / sqq:
      // the largest sxq^2 / sqq wins.
      const double gain = sxq * sxq / sqq;
      if (gain > best_gain) {
        best_gain = gain;
        best_scale = float(sxq / sqq);
      }
    }
  }
  return best_scale;
}

// Packs 8 scales and 8 mins (0..63 each) into the 12-byte Q4_K/Q5_K layout (inverse of
// unpack_k_scales).
void pack_k_scales(const int scale[8], const int min[8], uint8_t out[12]) {
  for (int j = 0; j < 4; ++j) {
    out[j] = uint8_t((scale[j] & 63) | ((scale[j + 4] >> 4) << 6));
    out[j + 4] = uint8_t((min[j] & 63) | ((min[j + 4] >> 4) << 6));
    out[j + 8] = uint8_t((scale[j + 4] & 0xF) | ((min[j + 4] & 0xF) << 4));
  }
}

// Shared by Q4_K (qmax 15) and Q5_K (qmax 31): fills d, dmin, the packed scales and the
// 256 levels q[] (element order), which the caller packs into its nibble/bit layout.
template <class Block>
void quantize_affine_k(const float* x, Block& out, int qmax, uint8_t q[QK_K]) {
  AffineFit fits[8];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    fits[j] = fit_affine(x + 32 * j, 32, qmax);
    max_scale = std::max(max_scale, fits[j].scale);
    max_min = std::max(max_min, fits[j].min_sub);
  }
  out.d = f32_to_f16(max_scale / 63.0f);
  out.dmin = f32_to_f16(max_min / 63.0f);
  const float d = f16_to_f32(out.d), dmin = f16_to_f32(out.dmin);
  int scale_q[8], min_q[8];
  for (int j = 0; j < 8; ++j) {
    scale_q[j] = d > 0.0f ? round_clamped(fits[j].scale / d, 0, 63) : 0;
    min_q[j] = dmin > 0.0f ? round_clamped(fits[j].min_sub / dmin, 0, 63) : 0;
    const float step = d * float(scale_q[j]), offset = dmin * float(min_q[j]);
    for (int i = 0; i < 32; ++i) {
      const float v = step > 0.0f ? (x[32 * j + i] + offset) / step : 0.0f;
      q[32 * j + i] = uint8_t(round_clamped(v, 0, qmax));
    }
  }
  pack_k_scales(scale_q, min_q, out.scales);
}

}  // namespace

void quantize_q4_k(const float* x, void* dst, int64_t nblocks) {
  auto* blocks = static_cast<BlockQ4_K*>(dst);
  for (int64_t b = 0; b < nblocks; ++b, x += QK_K) {
    uint8_t q[QK_K];
    quantize_affine_k(x, blocks[b], 15, q);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) blocks[b].qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void quantize_q5_k(const float* x, void* dst, int64_t nblocks) {
  auto* blocks = static_cast<BlockQ5_K*>(dst);
  for (int64_t b = 0; b < nblocks; ++b, x += QK_K) {
    BlockQ5_K& out = blocks[b];
    uint8_t q[QK_K];
    quantize_affine_k(x, out, 31, q);
    memset(out.qh, 0, sizeof(out.qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        out.qs[32 * c + l] = uint8_t((lo & 0xF) | ((hi & 0xF) << 4));
        out.qh[l] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

void quantize_q6_k(const float* x, void* dst, int64_t nblocks) {
  auto* blocks = static_cast<BlockQ6_K*>(dst);
  for (int64_t b = 0; b < nblocks; ++b, x += QK_K) {
    BlockQ6_K& out = blocks[b];
    float scales[16], max_abs = 0.0f;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_symmetric6(x + 16 * j);
      max_abs = std::max(max_abs, std::fabs(scales[j]));
    }
    out.d = f32_to_f16(max_abs / 127.0f);
    const float d = f16_to_f32(out.d);
    uint8_t q[QK_K];  // stored levels 0..63 (value + 32), element order
    for (int j = 0; j < 16; ++j) {
      const int sc = d > 0.0f ? round_clamped(scales[j] / d, -127, 127) : 0;
      out.scales[j] = int8_t(sc);
      const float step = d * float(sc);
      for (int i = 0; i < 16; ++i) {
        const float v = step != 0.0f ? x[16 * j + i] / step : 0.0f;
        q[16 * j + i] = uint8_t(round_clamped(v, -32, 31) + 32);
      }
    }
    // Spec §4.3 layout: per half n, element 128n + l + 32k takes ql nibble k / 2 of byte
    // l + 32 (k % 2) and qh bits 2k..2k+1 of byte l (l < 32, k < 4).
    for (int n = 0; n < 2; ++n) {
      const uint8_t* qn = q + 128 * n;
      for (int l = 0; l < 32; ++l) {
        out.ql[64 * n + l] = uint8_t((qn[l] & 0xF) | ((qn[l + 64] & 0xF) << 4));
        out.ql[64 * n + l + 32] = uint8_t((qn[l + 32] & 0xF) | ((qn[l + 96] & 0xF) << 4));
        out.qh[32 * n + l] =
            uint8_t((qn[l] >> 4) | ((qn[l + 32] >> 4) << 2) | ((qn[l + 64] >> 4) << 4) | ((qn[l + 96] >> 4) << 6));
      }
    }
  }
}

void quantize_q8_k(const float* x, void* dst, int64_t nblocks) {
  auto* blocks = static_cast<BlockQ8_K*>(dst);
  for (int64_t b = 0; b < nblocks; ++b, x += QK_K) {
    BlockQ8_K& out = blocks[b];
    float xm = 0.0f;
    for (int j = 0; j < QK_K; ++j)
      if (std::fabs(x[j]) > std::fabs(xm)) xm = x[j];
    if (xm == 0.0f) {
      memset(&out, 0, sizeof(out));
      continue;
    }
    // Spec §4.4: iscale = -127 / xm, round half to even, d = 1 / iscale (sign opposite xm).
    const float iscale = -127.0f / xm;
    for (int j = 0; j < QK_K; ++j) out.qs[j] = int8_t(round_clamped(iscale * x[j], -128, 127));
    for (int i = 0; i < QK_K / 16; ++i) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += out.qs[16 * i + j];
      out.bsums[i] = int16_t(sum);
    }
    out.d = 1.0f / iscale;
  }
}

}  // namespace rwkv::quant_detail
