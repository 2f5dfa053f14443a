// Helpers shared by the CUDA kernel tests (test_cuda_ops.cpp, test_cuda_wkv.cpp): random
// inputs and encoded weights, device buffers with guard regions, the normalised error, and
// a batch of sequences on the device.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/ops.h"
#include "common/half.h"
#include "model/model.h"
#include "tensor/quant.h"
#include "tensor/types.h"

namespace rwkv::cuda::test_util {

#define REQUIRE_GPU()                                 \
  do {                                                \
    std::string why;                                  \
    if (device_count(&why) == 0) GTEST_SKIP() << why; \
  } while (0)

inline const TensorType kAllTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q8_0,
                                       TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,
                                       TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

inline bool is_float(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }

inline std::mt19937_64& rng() {
  static std::mt19937_64 r(std::random_device{}());
  return r;
}

inline std::vector<float> randn(size_t n, float scale = 1.f, float mean = 0.f) {
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng());
  return v;
}
inline std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng());
  return v;
}

// A rows x cols weight in GGUF layout on the host.
struct HostWeight {
  std::vector<uint8_t> bytes;
  Weight w;
};
inline HostWeight make_weight(TensorType type, int64_t rows, int64_t cols, float scale = 0.1f) {
  EXPECT_TRUE(can_quantize(type)) << type_name(type);
  HostWeight h;
  const std::vector<float> v = randn(size_t(rows * cols), scale);
  const size_t rb = row_bytes(type, cols);
  h.bytes.resize(rb * size_t(rows));
  for (int64_t r = 0; r < rows; ++r) quantize_row(type, v.data() + r * cols, h.bytes.data() + size_t(r) * rb, cols);
  h.w.name = "test";
  h.w.type = type;
  h.w.ne[0] = cols;
  h.w.ne[1] = rows;
  h.w.data = h.bytes.data();
  h.w.nbytes = h.bytes.size();
  return h;
}

// Device floats with guard regions on both sides; contents start as NaN (0xFF bytes).
class Guarded {
 public:
  static constexpr size_t kGuard = 64;
  explicit Guarded(size_t n) : n_(n), buf_((n + 2 * kGuard) * sizeof(float)) { buf_.fill(0xFF); }
  explicit Guarded(const std::vector<float>& init) : Guarded(init.size()) {
    buf_.upload(init.data(), init.size() * sizeof(float), kGuard * sizeof(float));
  }
  float* data() { return buf_.as<float>() + kGuard; }
  // The contents; fails the test if a guard byte changed.
  std::vector<float> read() const {
    std::vector<uint32_t> all(n_ + 2 * kGuard);
    buf_.download(all.data(), all.size() * 4);
    for (size_t i = 0; i < kGuard; ++i) {
      EXPECT_EQ(all[i], 0xFFFFFFFFu) << "write before the buffer at -" << (kGuard - i);
      EXPECT_EQ(all[kGuard + n_ + i], 0xFFFFFFFFu) << "write past the buffer at +" << i;
    }
    std::vector<float> out(n_);
    std::memcpy(out.data(), all.data() + kGuard, n_ * sizeof(float));
    return out;
  }

 private:
  size_t n_;
  DeviceBuffer buf_;
};

// f16 bits of v, two to a float (Guarded holds floats), and back.
inline std::vector<float> pack_f16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size() + v.size() % 2);
  for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_f16(v[i]);
  std::vector<float> packed(h.size() / 2);
  std::memcpy(packed.data(), h.data(), h.size() * 2);
  return packed;
}
inline std::vector<float> unpack_f16(const std::vector<float>& packed, size_t n) {
  std::vector<uint16_t> h(packed.size() * 2);
  std::memcpy(h.data(), packed.data(), packed.size() * 4);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = f16_to_f32(h[i]);
  return v;
}

// Whether the f16 copy (packed two to a float) of fp32 outputs `got` holds each value rounded
// to nearest.
inline void expect_f16_copy(const std::vector<float>& packed, const std::vector<float>& got, const std::string& what) {
  const std::vector<float> h = unpack_f16(packed, got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(h[i], f16_to_f32(f32_to_f16(got[i]))) << what << ": f16 copy at " << i;
  }
}

// A QuantX on the device, and its host reading: x ~= d0 q0 + d1 q1 per block of 32.
struct DeviceQuantX {
  DeviceBuffer buf;
  QuantX q;
  int rows;
  int64_t cols;
  DeviceQuantX(int rows_, int64_t cols_, bool split = false)
      : buf(quant_x_bytes(rows_, cols_)), rows(rows_), cols(cols_) {
    buf.fill(0xFF);
    q = quant_x_view(buf.data(), rows, cols);
    q.split = split;
  }
  // Dequantised values; checks each block's sums of quants.
  std::vector<float> read() const {
    std::vector<uint8_t> h(buf.size());
    buf.download(h.data(), h.size());
    auto at = [&](const void* p) { return h.data() + (static_cast<const uint8_t*>(p) - buf.as<uint8_t>()); };
    const auto* q0 = reinterpret_cast<const int8_t*>(at(q.q0));
    const auto* q1 = reinterpret_cast<const int8_t*>(at(q.q1));
    const auto* d0 = reinterpret_cast<const float*>(at(q.d0));
    const auto* d1 = reinterpret_cast<const float*>(at(q.d1));
    const auto* s0 = reinterpret_cast<const int32_t*>(at(q.s0));
    const auto* s1 = reinterpret_cast<const int32_t*>(at(q.s1));
    std::vector<float> x(size_t(rows) * size_t(cols));
    for (size_t b = 0; b < x.size() / 32; ++b) {
      int sum0 = 0, sum1 = 0;
      for (size_t e = 32 * b; e < 32 * b + 32; ++e) {
        const size_t row = e / size_t(cols) * size_t(cols);  // values in the split order of ops.h
        const size_t at = row + size_t(quant_x_offset(int64_t(e - row), q.split, cols));
        x[e] = d0[b] * q0[at] + d1[b] * q1[at];
        sum0 += q0[at];
        sum1 += q1[at];
      }
      EXPECT_EQ(sum0, s0[b]) << "block " << b;
      EXPECT_EQ(sum1, s1[b]) << "block " << b;
    }
    return x;
  }
};

// Normalised mean squared error sum((a-b)^2) / sum(b^2); +inf on NaN/Inf in a.
inline double nmse(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den > 0 ? num / den : num;
}

inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, double limit,
                         const std::string& what) {
  const double e = nmse(got, want);
  EXPECT_LE(e, limit) << what << ": normalised MSE " << e;
}

// Sequences of lengths `lens` in state slots `slots`, on the device.
struct DeviceBatch {
  std::vector<int32_t> row_seq, seq_start, seq_slot;
  DeviceBuffer buf;
  BatchDev bd;
  DeviceBatch(const std::vector<int>& lens, const std::vector<int>& slots) {
    int R = 0;
    for (size_t s = 0; s < lens.size(); ++s) {
      seq_start.push_back(R);
      seq_slot.push_back(slots[s]);
      for (int t = 0; t < lens[s]; ++t) row_seq.push_back(int32_t(s));
      R += lens[s];
    }
    seq_start.push_back(R);
    std::vector<int32_t> all = row_seq;
    all.insert(all.end(), seq_start.begin(), seq_start.end());
    all.insert(all.end(), seq_slot.begin(), seq_slot.end());
    buf = DeviceBuffer(all.size() * 4);
    buf.upload(all.data(), all.size() * 4);
    bd.row_seq = buf.as<int32_t>();
    bd.seq_start = bd.row_seq + row_seq.size();
    bd.seq_slot = bd.seq_start + seq_start.size();
    bd.R = R;
    bd.B = int(lens.size());
  }
};

}  // namespace rwkv::cuda::test_util
