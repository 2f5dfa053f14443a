// Op parity of the CUDA kernels against the reference ops (src/backend/cpu/ref_ops.h) on
// the same encoded bytes: every kernel x every weight type, odd shapes, one and several
// rows, several sequences. Outputs live between guard regions and start poisoned (NaN),
// so an out-of-bounds write or an unwritten element fails. Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/ref_ops.h"
#include "backend/cuda/ops.h"
#include "common/error.h"
#include "common/half.h"
#include "tensor/blocks.h"
#include "tensor/quant.h"
#include "testing/cuda_ops.h"

namespace rwkv::cuda {
namespace {

using namespace test_util;

// Quantised weights take x as two int8 terms per 32 (relative error ~1e-5 per element).
double matvec_limit(TensorType t) { return is_float(t) ? 1e-11 : 1e-8; }

std::vector<float> ref_matmul(const Weight& w, const std::vector<float>& x, int T) {
  std::vector<float> y(size_t(T) * size_t(w.rows()));
  ref::matmul(w, x.data(), T, y.data());
  return y;
}

// Squared error of y = W x over the energy of its terms, sum_t,r,k (W[r][k] x[t][k])^2:
// unlike a plain normalised MSE it does not blow up where a row's terms cancel.
void expect_matvec_close(const std::vector<float>& got, const Weight& w, const std::vector<float>& x, int T,
                         double limit, const std::string& what) {
  const int64_t rows = w.rows(), cols = w.cols();
  const std::vector<float> want = ref_matmul(w, x, T);
  std::vector<float> wr(static_cast<size_t>(cols));
  double num = 0, den = 0;
  for (int64_t r = 0; r < rows; ++r) {
    ref::weight_row(w, r, wr.data());
    for (int t = 0; t < T; ++t) {
      const size_t i = size_t(t * rows + r);
      if (!std::isfinite(got[i])) {
        ADD_FAILURE() << what << ": non-finite output " << got[i] << " at row " << r << " t " << t;
        return;
      }
      num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
      for (int64_t k = 0; k < cols; ++k)
        den += double(wr[size_t(k)]) * x[size_t(t * cols + k)] * wr[size_t(k)] * x[size_t(t * cols + k)];
    }
  }
  EXPECT_LE(num / den, limit) << what << ": error energy " << num / den;
}

// y = W x for activation rows of `cols` and output rows of `rows` (dense strides).
MatvecJob plain_job(const DeviceMatrix& m, const float* x, float* y) {
  MatvecJob j;
  j.W = m.view();
  j.x = x;
  j.x_stride = m.layout.cols;
  j.y = y;
  j.y_stride = m.layout.rows;
  return j;
}

// Widths of one item per row up to multiples of 64 items (quantised rows over two warps:
// 2048 columns of 32-blocks, 4096 of 256-blocks).
std::vector<int64_t> test_cols(TensorType t) {
  if (type_info(t).block_size == 256) return {256, 512, 768, 4096};
  if (is_float(t)) return {16, 40, 96, 100, 768, 2560};
  return {32, 96, 544, 2048, 2560};
}

// ---- packing and dequantisation -----------------------------------------------------------

TEST(CudaPack, LayoutKeepsEveryByte) {
  for (TensorType t : kAllTypes) {
    for (int64_t cols : test_cols(t)) {
      const PackedLayout L = packed_layout(t, 3, cols);
      size_t plane_bytes = 0;
      for (int p = 0; p < L.n_planes; ++p) {
        plane_bytes += L.plane_stride[p] * 3;
        EXPECT_EQ(L.plane_offset[p] % 256, 0u);
        if (p == 0) {
          EXPECT_EQ(L.plane_stride[p] % 16, 0u) << type_name(t) << " cols " << cols;
        }
      }
      // Q4_K and Q5_K headers unpack 12 bytes of scales into 16 (packed.h).
      const bool k45 = t == TensorType::Q4_K || t == TensorType::Q5_K;
      const size_t want = (row_bytes(t, cols) + (k45 ? size_t(cols) / 256 * 4 : 0)) * 3;
      EXPECT_GE(plane_bytes, want) << type_name(t);
      EXPECT_LT(plane_bytes, want + 3 * 32) << type_name(t);
      EXPECT_EQ(L.items * L.item_elems >= cols, true);
    }
  }
  EXPECT_THROW(packed_layout(TensorType::Q8_0, 2, 48), Error);
  EXPECT_THROW(packed_layout(TensorType::Q2_K, 2, 256), Error);
}

// The split planes (packed.h): a Q8_0 row of three blocks holds the first halves of the
// blocks' quants, then the second halves; the scales plane keeps block order.
TEST(CudaPack, Q8_0QuantsSplitInHalves) {
  const PackedLayout L = packed_layout(TensorType::Q8_0, 1, 96);
  std::vector<BlockQ8_0> row(3);
  for (int b = 0; b < 3; ++b) {
    row[size_t(b)].d = uint16_t(0x3C00 + b);
    for (int k = 0; k < 32; ++k) row[size_t(b)].qs[k] = int8_t(32 * b + k);
  }
  std::vector<uint8_t> packed(L.bytes, 0xEE);
  pack_rows(L, reinterpret_cast<const uint8_t*>(row.data()), 0, 1, packed.data());
  const uint8_t* q = packed.data() + L.plane_offset[0];
  for (int b = 0; b < 3; ++b) {
    for (int k = 0; k < 16; ++k) {
      EXPECT_EQ(q[16 * b + k], uint8_t(32 * b + k)) << "block " << b << " first half, quant " << k;
      EXPECT_EQ(q[16 * (3 + b) + k], uint8_t(32 * b + 16 + k)) << "block " << b << " second half, quant " << k;
    }
    uint16_t d;
    std::memcpy(&d, packed.data() + L.plane_offset[1] + 2 * b, 2);
    EXPECT_EQ(d, uint16_t(0x3C00 + b));
  }
}

TEST(CudaOps, DequantToF16MatchesReference) {
  REQUIRE_GPU();
  for (TensorType t : kAllTypes) {
    for (int64_t cols : test_cols(t)) {
      const int64_t rows = 7;
      HostWeight h = make_weight(t, rows, cols, 0.5f);
      DeviceMatrix m = upload_matrix(t, rows, cols, h.bytes.data());
      DeviceBuffer out(size_t(rows * cols) * 2 + 64);
      out.fill(0xFF);
      dequant_to_f16(m.view(), out.data(), cols, nullptr);
      std::vector<uint16_t> got16(size_t(rows * cols) + 32);
      out.download(got16.data(), got16.size() * 2);
      for (size_t i = size_t(rows * cols); i < got16.size(); ++i) ASSERT_EQ(got16[i], 0xFFFF) << "write past the end";
      std::vector<float> got(size_t(rows * cols)), want(size_t(rows * cols));
      for (size_t i = 0; i < got.size(); ++i) got[i] = f16_to_f32(got16[i]);
      for (int64_t r = 0; r < rows; ++r) ref::weight_row(h.w, r, want.data() + r * cols);
      expect_close(got, want, 1e-6, std::string(type_name(t)) + " cols " + std::to_string(cols));
    }
  }
}

// ---- matrix-vector products ---------------------------------------------------------------

TEST(CudaOps, MatvecEveryTypeAndRowCount) {
  REQUIRE_GPU();
  for (TensorType t : kAllTypes) {
    for (int64_t cols : test_cols(t)) {
      for (int64_t rows : {int64_t(1), int64_t(67), int64_t(300)}) {
        HostWeight h = make_weight(t, rows, cols);
        DeviceMatrix m = upload_matrix(t, rows, cols, h.bytes.data());
        for (int T : {1, 2, 5, 8}) {  // 5 and 8: two groups of rows along the grid
          const std::vector<float> x = randn(size_t(T * cols));
          Guarded dx(x), dy(size_t(T * rows));
          const MatvecJob j = plain_job(m, dx.data(), dy.data());
          matvec(&j, 1, T, nullptr);
          expect_matvec_close(dy.read(), h.w, x, T, matvec_limit(t),
                              std::string(type_name(t)) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                                  " T=" + std::to_string(T));
        }
      }
    }
  }
}

// Launches of many blocks (two waves of 256-thread blocks or more) run 128-thread blocks:
// matrices of 9,000 rows, one and four activation rows, x staged in shared memory by the
// block (quantised by the quantised types, tanh first for F16).
TEST(CudaOps, MatvecManyBlocks) {
  REQUIRE_GPU();
  const int64_t rows = 9000, cols = 2560;
  for (TensorType t : {TensorType::Q8_0, TensorType::Q4_K, TensorType::F16}) {
    HostWeight h = make_weight(t, rows, cols);
    DeviceMatrix m = upload_matrix(t, rows, cols, h.bytes.data());
    for (int T : {1, 4}) {
      const std::vector<float> x = randn(size_t(T * cols));
      Guarded dx(x), dy(size_t(T * rows));
      MatvecJob j = plain_job(m, dx.data(), dy.data());
      std::vector<float> x_in = x;  // what the product sees
      if (t == TensorType::F16) {
        j.in_op = InOp::tanh;
        for (float& v : x_in) v = std::tanh(v);
      }
      matvec(&j, 1, T, nullptr);
      expect_matvec_close(dy.read(), h.w, x_in, T, matvec_limit(t),
                          std::string(type_name(t)) + " many blocks T=" + std::to_string(T));
    }
  }
}

// One-row launches of 16-bit float weights that the four-block kernel would run in more than
// one wave of blocks take the wide kernel (ten items a thread, matvec.cu: wide_launch): the
// 2.9B W_o shape on an H100, alone and beside an F32 job (the LoRA rows' path).
TEST(CudaOps, MatvecWideOneRow) {
  REQUIRE_GPU();
  const int64_t rows = 2560, cols = 2560, f32_rows = 64;
  HostWeight f32 = make_weight(TensorType::F32, f32_rows, cols);
  DeviceMatrix m32 = upload_matrix(TensorType::F32, f32_rows, cols, f32.bytes.data());
  for (TensorType t : {TensorType::F16, TensorType::BF16}) {
    HostWeight h = make_weight(t, rows, cols);
    DeviceMatrix m = upload_matrix(t, rows, cols, h.bytes.data());
    for (bool with_f32 : {false, true}) {
      const std::vector<float> x = randn(size_t(cols));
      Guarded dx(x), dy{size_t(rows)}, dy32{size_t(f32_rows)};
      const MatvecJob jobs[2] = {plain_job(m, dx.data(), dy.data()), plain_job(m32, dx.data(), dy32.data())};
      matvec(jobs, with_f32 ? 2 : 1, 1, nullptr);
      const std::string what = std::string(type_name(t)) + (with_f32 ? " with an F32 job" : "");
      expect_matvec_close(dy.read(), h.w, x, 1, matvec_limit(t), what);
      if (with_f32) expect_matvec_close(dy32.read(), f32.w, x, 1, matvec_limit(TensorType::F32), what + ": F32 rows");
    }
  }
}

// Which widths take f16 x (host logic only, no GPU needed): rows that fill a thread's rounds.
TEST(CudaPack, F16InputWidths) {
  const auto reads = [](TensorType t, int64_t cols) {
    return matvec_reads_f16(packed_view(packed_layout(t, 64, cols), nullptr));
  };
  for (TensorType t : {TensorType::F16, TensorType::BF16}) {
    EXPECT_TRUE(reads(t, 2560)) << "2.9B: 320 items, 64 threads x 5";
    EXPECT_TRUE(reads(t, 640)) << "80 items, 16 threads x 5 (CudaModel.F16InputPath)";
    EXPECT_FALSE(reads(t, 768)) << "0.1B: 96 items, 32 threads x 3 of 5";
  }
  EXPECT_FALSE(reads(TensorType::Q8_0, 2560)) << "quantised weights take QuantX";
  EXPECT_FALSE(reads(TensorType::F32, 2560)) << "F32 weights only beside 16-bit ones";
}

// One-row products of 16-bit weights (and F32 rows beside them) with f16 x (MatvecJob::x16)
// in the four-block and the wide kernel. Every x holds values exact in f16, so either path
// gives the reference's answer; where the product reads x16 (matvec_reads_f16: rows whose
// items fill a thread's rounds, as every 2,560-column row) its fp32 x is NaN, so reading x
// instead fails. The 16-bit product's outputs are also written as f16 (y16).
TEST(CudaOps, MatvecOneRowF16Input) {
  REQUIRE_GPU();
  const int64_t f32_rows = 72;
  for (TensorType t : {TensorType::F16, TensorType::BF16}) {
    for (int64_t cols : {16, 40, 96, 768, 2560}) {
      for (int64_t rows : {int64_t(100), int64_t(2560)}) {  // 2,560 x 2,560: the wide kernel on an H100
        HostWeight h = make_weight(t, rows, cols), f32 = make_weight(TensorType::F32, f32_rows, cols);
        DeviceMatrix m = upload_matrix(t, rows, cols, h.bytes.data());
        DeviceMatrix m32 = upload_matrix(TensorType::F32, f32_rows, cols, f32.bytes.data());
        const bool reads_f16 = matvec_reads_f16(m.view());
        if (cols == 2560) {
          ASSERT_TRUE(reads_f16) << "a 2,560-column row fills its rounds";
        }
        const std::vector<float> x16 = pack_f16(randn(size_t(cols)));
        const std::vector<float> x = unpack_f16(x16, size_t(cols));  // exact in f16
        Guarded dx = reads_f16 ? Guarded{size_t(cols)} : Guarded(x), dx32(x), dx16(x16), dy{size_t(rows)},
                dy16{size_t(rows + 1) / 2}, dy32{size_t(f32_rows)};
        MatvecJob jobs[2] = {plain_job(m, dx.data(), dy.data()), plain_job(m32, dx32.data(), dy32.data())};
        for (MatvecJob& j : jobs) j.x16 = reinterpret_cast<const uint16_t*>(dx16.data());
        jobs[0].y16 = reinterpret_cast<uint16_t*>(dy16.data());
        matvec(jobs, 2, 1, nullptr);
        const std::string what = std::string(type_name(t)) + " " + std::to_string(rows) + "x" + std::to_string(cols);
        const std::vector<float> y = dy.read();
        expect_matvec_close(y, h.w, x, 1, matvec_limit(t), what);
        expect_matvec_close(dy32.read(), f32.w, x, 1, matvec_limit(TensorType::F32), what + ": F32 rows");
        expect_f16_copy(dy16.read(), y, what + ": f16 outputs");
      }
    }
  }
}

// A C x F value matrix of `type` in the sparse product's layout on the device, with the
// product's scratch (zeroed).
struct DeviceSparseFfn {
  HostWeight hw;
  DeviceBuffer w, scratch;
  SparseFfn view;
  DeviceSparseFfn(TensorType type, int64_t C, int64_t F)
      : hw(make_weight(type, C, F)), scratch(sparse_ffn_scratch_floats(C, F) * sizeof(float)) {
    std::vector<uint8_t> packed(sparse_ffn_bytes(type, C, F));
    sparse_ffn_pack(type, C, F, hw.bytes.data(), packed.data());
    w = DeviceBuffer(packed.size());
    w.upload(packed.data(), packed.size());
    view = sparse_ffn_view(type, C, F, w.data());
    scratch.fill(0);
  }
};

// The ReLU^2-sparse FFN value product: zero hidden units (single, whole blocks of 32, all)
// are skipped, the rest must match y += W h; two runs give the same bits.
TEST(CudaOps, SparseFfnValueMatchesDense) {
  REQUIRE_GPU();
  for (TensorType t :
       {TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K, TensorType::F16, TensorType::BF16}) {
    for (auto [C, F0] : {std::pair<int64_t, int64_t>{48, 96}, {768, 3072}, {1040, 544}}) {
      const int64_t F = type_info(t).block_size == 256 ? (F0 + 255) / 256 * 256 : F0;  // whole super-blocks
      ASSERT_TRUE(sparse_ffn_supported(t, C));
      const DeviceSparseFfn sparse(t, C, F);
      const SparseFfn& W = sparse.view;
      const HostWeight& hw = sparse.hw;
      for (int pattern = 0; pattern < 3; ++pattern) {
        std::vector<float> h = randn(size_t(F));
        for (int64_t j = 0; j < F; ++j) {
          const bool zero = pattern == 2 || (pattern == 0 ? h[size_t(j)] < 0.f : (j / 32) % 2 == 1);
          h[size_t(j)] = zero ? 0.f : h[size_t(j)] * h[size_t(j)];
        }
        const std::vector<float> y0 = randn(size_t(C));
        std::vector<float> want = ref_matmul(hw.w, h, 1);
        for (int64_t i = 0; i < C; ++i) want[size_t(i)] += y0[size_t(i)];
        Guarded dh(h), dy(y0), dy2(y0);
        ffn_value_sparse(W, dh.data(), dy.data(), sparse.scratch.as<float>(), nullptr);
        ffn_value_sparse(W, dh.data(), dy2.data(), sparse.scratch.as<float>(), nullptr);
        const std::vector<float> got = dy.read();
        const std::string what = std::string(type_name(t)) + " " + std::to_string(C) + "x" + std::to_string(F) +
                                 " pattern " + std::to_string(pattern);
        expect_close(got, want, 1e-11, what);
        EXPECT_EQ(got, dy2.read()) << what << ": not deterministic";
      }
    }
  }
}

// The ShiftLerpArgs fields both LayerNorm + lerp tests share: the batch's rows from h, the
// LayerNorm (eps 1e-5), n_mix lerps with one fp32 output each (made in outs), the shift
// vector at offset C of each state slot of `stride` floats.
ShiftLerpArgs lerp_args(const DeviceBatch& batch, float* h, int C, Guarded& ln_w, Guarded& ln_b, Guarded& mix,
                        int n_mix, Guarded& state, size_t stride, std::vector<std::unique_ptr<Guarded>>& outs) {
  ShiftLerpArgs a;
  a.batch = batch.bd;
  a.h = h;
  a.C = C;
  a.ln_w = ln_w.data();
  a.ln_b = ln_b.data();
  a.eps = 1e-5f;
  a.mix = mix.data();
  a.n_mix = n_mix;
  for (int m = 0; m < n_mix; ++m) {
    outs.push_back(std::make_unique<Guarded>(size_t(batch.bd.R) * C));
    a.out[m] = outs.back()->data();
  }
  a.shift = state.data() + C;
  a.state_stride = stride;
  return a;
}

// The sparse product's sum with the next layer's LayerNorm, token shift and lerps in the same
// launch (one cluster: 6 blocks of 32 channels at 192, 8 of 96 at 768, 8 of 320 at 2560):
// y, the LayerNorm, all six lerps (two also quantised) and the shift state of the row's slot
// against the CPU reference, also for a row whose mean is 20 times its spread.
TEST(CudaOps, SparseFfnSumWithLayerNorm) {
  REQUIRE_GPU();
  if (!sparse_sum_ln_supported(192)) GTEST_SKIP() << "thread-block clusters need compute capability 9.0";
  for (const auto& [C, mean] : {std::pair<int, float>{192, 0.5f}, {768, 0.5f}, {2560, 0.5f}, {2560, 40.f}}) {
    const int64_t F = 2 * C;
    const DeviceSparseFfn sparse(TensorType::Q8_0, C, F);
    std::vector<float> h = randn(size_t(F));
    for (float& v : h) v = v < 0.f ? 0.f : v * v;
    const std::vector<float> y0 = randn(size_t(C), 2.f, mean), w = randn(size_t(C), 0.3f, 1.f),
                             b = randn(size_t(C), 0.1f), mix = uniform(size_t(6 * C), 0.f, 1.f);
    const int slot = 1;
    const size_t stride = 2 * size_t(C);  // a state slot holds more than the shift vector
    const std::vector<float> state = randn(stride * 3);
    DeviceBatch batch({1}, {slot});
    Guarded dh(h), dy(y0), dw_ln(w), db(b), dmix(mix), dstate(state), xln(static_cast<size_t>(C));
    std::vector<std::unique_ptr<Guarded>> outs;
    DeviceQuantX q0(1, C), q3(1, C);
    Guarded out16_1{size_t(C) / 2}, out16_5{size_t(C) / 2};  // f16 copies of lerps 1 and 5
    ShiftLerpArgs a = lerp_args(batch, dy.data(), C, dw_ln, db, dmix, 6, dstate, stride, outs);
    a.xln = xln.data();
    a.out_q[0] = q0.q;
    a.out_q[3] = q3.q;
    a.out16[1] = out16_1.data();
    a.out16[5] = out16_5.data();
    ffn_value_sparse(sparse.view, dh.data(), dy.data(), sparse.scratch.as<float>(), nullptr, false, &a);

    std::vector<float> want_y = ref_matmul(sparse.hw.w, h, 1);
    for (int i = 0; i < C; ++i) want_y[size_t(i)] += y0[size_t(i)];
    std::vector<float> x(static_cast<size_t>(C)), want_state = state;
    ref::layer_norm(want_y.data(), w.data(), b.data(), 1, C, 1e-5f, x.data());
    float* shift = want_state.data() + slot * stride + C;
    const std::string what = "C " + std::to_string(C) + " mean " + std::to_string(mean);
    expect_close(dy.read(), want_y, 1e-11, what + " y");
    expect_close(xln.read(), x, 1e-10, what + " LayerNorm");
    for (int m = 0; m < 6; ++m) {
      std::vector<float> want(static_cast<size_t>(C));
      ref::token_shift_lerp(x.data(), shift, mix.data() + size_t(m) * C, 1, C, want.data());
      expect_close(outs[size_t(m)]->read(), want, 1e-10, what + " lerp " + std::to_string(m));
      if (m == 0) expect_close(q0.read(), want, 1e-9, what + " lerp 0 quantised");
      if (m == 3) expect_close(q3.read(), want, 1e-9, what + " lerp 3 quantised");
    }
    expect_f16_copy(out16_1.read(), outs[1]->read(), what + " lerp 1");
    expect_f16_copy(out16_5.read(), outs[5]->read(), what + " lerp 5");
    std::memcpy(shift, x.data(), size_t(C) * sizeof(float));
    expect_close(dstate.read(), want_state, 1e-10, what + " shift states (and the rest of each slot)");
  }
}

// QuantX rows of a multiple of 64 in split order (ops.h): a permutation of the row that keeps
// each 16-value piece together and puts piece k of consecutive quarters of 64 next to each
// other; other rows, and rows not split, in column order.
TEST(CudaQuantX, SplitOrderIsAPermutation) {
  for (int64_t cols : {32, 96, 64, 768, 2560}) {
    for (bool split : {false, true}) {
      std::vector<int> seen(size_t(cols), 0);
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t at = quant_x_offset(c, split, cols);
        ASSERT_TRUE(at >= 0 && at < cols) << cols << " " << c;
        ++seen[size_t(at)];
        if (c % 16 != 0) {
          EXPECT_EQ(at, quant_x_offset(c - 1, split, cols) + 1) << "piece broken at " << c;
        } else {
          EXPECT_EQ(at, (c >> 4 & 3) * quant_x_piece_a(split, cols) + (c >> 6) * quant_x_piece_b(split, cols));
        }
        if (!split || cols % 64 != 0) {
          EXPECT_EQ(at, c) << "column order";
        }
      }
      EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), cols) << cols;
    }
    if (cols % 64 == 0 && cols >= 128) {
      EXPECT_EQ(quant_x_offset(16, true, cols), cols / 4) << "a quarter's second piece: in the row's second quarter";
      EXPECT_EQ(quant_x_offset(64, true, cols), 16) << "quarter 1 right after quarter 0";
    }
  }
  EXPECT_TRUE(quant_x_split_reader(TensorType::Q4_K));
  EXPECT_FALSE(quant_x_split_reader(TensorType::Q8_0));
}

TEST(CudaOps, QuantizeRowsIsNearlyExact) {
  REQUIRE_GPU();
  const int rows = 3;
  for (int64_t cols : {96, 128}) {
    for (bool split : {false, true}) {
      const int64_t stride = 100 + 32;
      std::vector<float> x = randn(size_t(rows * stride), 2.f);
      for (int64_t c = 0; c < 32; ++c) x[size_t(stride + c)] = 0.f;  // an all-zero block
      Guarded dx(x);
      DeviceQuantX q(rows, cols, split);
      quantize_rows(dx.data(), stride, rows, cols, InOp::none, q.q, nullptr);
      std::vector<float> want(size_t(rows * cols));
      for (int r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) want[size_t(r * cols + c)] = x[size_t(r * stride + c)];
      expect_close(q.read(), want, 1e-9,
                   "two-term int8 quantisation, cols " + std::to_string(cols) + (split ? " split" : ""));
    }
  }
}

// The production decode path: x quantised once (quantize_rows), read by the matvec.
TEST(CudaOps, MatvecWithQuantisedInput) {
  REQUIRE_GPU();
  for (TensorType t : kAllTypes) {
    if (is_float(t)) continue;
    // The k-quants read x in either order (ops.h), the readers of blocks of 32 in column order
    // only; 544 columns are never split, 640 and 768 are when asked.
    for (const int64_t cols :
         type_info(t).block_size == 256 ? std::vector<int64_t>{768} : std::vector<int64_t>{544, 640}) {
      const int64_t rows = 300;
      HostWeight h = make_weight(t, rows, cols);
      DeviceMatrix m = upload_matrix(t, rows, cols, h.bytes.data());
      for (int T : {1, 3, 8}) {
        for (bool split : {false, true}) {
          const std::vector<float> x = randn(size_t(T * cols));
          Guarded dx(x), dy(size_t(T * rows));
          DeviceQuantX q(T, cols, split);
          quantize_rows(dx.data(), cols, T, cols, InOp::none, q.q, nullptr);
          MatvecJob j = plain_job(m, dx.data(), dy.data());
          j.xq = q.q;
          const std::string what = std::string(type_name(t)) + " cols " + std::to_string(cols) +
                                   " T=" + std::to_string(T) + (split ? " split" : "");
          if (split && !quant_x_split_reader(t)) {
            EXPECT_THROW(matvec(&j, 1, T, nullptr), Error) << what;
            continue;
          }
          matvec(&j, 1, T, nullptr);
          expect_matvec_close(dy.read(), h.w, x, T, matvec_limit(t), what);
        }
      }
    }
  }
}

float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }
float apply_in(InOp op, float v) {
  switch (op) {
    case InOp::tanh:
      return std::tanh(v);
    case InOp::sigmoid:
      return sigmoid(v);
    case InOp::relu_sq:
      return std::max(v, 0.f) * std::max(v, 0.f);
    default:
      return v;
  }
}

// Several matrices of different types in one launch, with every input transform and
// epilogue, strided activations and outputs, for T activation rows.
void check_multi_job(int T) {
  struct Case {
    TensorType type;
    int64_t rows, cols;
    InOp in;
    OutOp out;
  };
  const Case cases[] = {
      {TensorType::F32, 192, 96, InOp::tanh, OutOp::decay},     {TensorType::F16, 192, 64, InOp::none, OutOp::sigmoid},
      {TensorType::F16, 192, 40, InOp::sigmoid, OutOp::store},  {TensorType::Q8_0, 256, 192, InOp::none, OutOp::add},
      {TensorType::Q4_K, 512, 256, InOp::none, OutOp::relu_sq}, {TensorType::Q6_K, 100, 512, InOp::sigmoid, OutOp::add},
      {TensorType::Q5_0, 64, 64, InOp::tanh, OutOp::store},     {TensorType::F16, 64, 96, InOp::relu_sq, OutOp::tanh}};
  constexpr int n = sizeof(cases) / sizeof(cases[0]);
  std::vector<HostWeight> hw;
  std::vector<DeviceMatrix> dm;
  std::vector<std::unique_ptr<Guarded>> xs, ys, raws, biases;
  std::vector<std::vector<float>> x_host, y_init, bias_host;
  MatvecJob jobs[n];
  for (int i = 0; i < n; ++i) {
    const Case& c = cases[i];
    hw.push_back(make_weight(c.type, c.rows, c.cols));
    dm.push_back(upload_matrix(c.type, c.rows, c.cols, hw.back().bytes.data()));
    const int64_t xs_stride = c.cols + 8, ys_stride = c.rows + 5;  // strided rows
    x_host.push_back(randn(size_t(T * xs_stride)));
    y_init.push_back(randn(size_t(T * ys_stride)));
    bias_host.push_back(randn(size_t(c.rows)));
    xs.push_back(std::make_unique<Guarded>(x_host.back()));
    ys.push_back(std::make_unique<Guarded>(y_init.back()));
    raws.push_back(std::make_unique<Guarded>(y_init.back()));
    biases.push_back(std::make_unique<Guarded>(bias_host.back()));
    MatvecJob& j = jobs[i];
    j.W = dm.back().view();
    j.x = xs.back()->data();
    j.x_stride = xs_stride;
    j.y = ys.back()->data();
    j.y_stride = ys_stride;
    j.y_raw = c.out == OutOp::add ? raws.back()->data() : nullptr;
    j.bias = biases.back()->data();
    j.in_op = c.in;
    j.out_op = c.out;
  }
  matvec(jobs, n, T, nullptr);
  for (int i = 0; i < n; ++i) {
    const Case& c = cases[i];
    const int64_t xs_stride = c.cols + 8, ys_stride = c.rows + 5;
    std::vector<float> xin(size_t(T * c.cols));
    for (int t = 0; t < T; ++t)
      for (int64_t k = 0; k < c.cols; ++k) {
        const float v = x_host[i][size_t(t * xs_stride + k)];
        xin[size_t(t * c.cols + k)] = apply_in(c.in, v);
      }
    const std::vector<float> prod = ref_matmul(hw[i].w, xin, T);
    std::vector<float> want = y_init[i], want_raw = y_init[i];
    for (int t = 0; t < T; ++t)
      for (int64_t r = 0; r < c.rows; ++r) {
        const float p = prod[size_t(t * c.rows + r)];
        float& y = want[size_t(t * ys_stride + r)];
        switch (c.out) {
          case OutOp::store:
            y = p;
            break;
          case OutOp::add:
            y += p;
            want_raw[size_t(t * ys_stride + r)] = p;
            break;
          case OutOp::decay:
            y = std::exp(-0.6065306597126334f * sigmoid(bias_host[i][size_t(r)] + p));
            break;
          case OutOp::sigmoid:
            y = sigmoid(bias_host[i][size_t(r)] + p);
            break;
          case OutOp::relu_sq:
            y = std::max(p, 0.f) * std::max(p, 0.f);
            break;
          case OutOp::tanh:
            y = std::tanh(bias_host[i][size_t(r)] + p);
            break;
        }
      }
    const std::string what = "job " + std::to_string(i) + " " + std::string(type_name(c.type));
    expect_close(ys[size_t(i)]->read(), want, matvec_limit(c.type), what);
    if (c.out == OutOp::add) expect_close(raws[size_t(i)]->read(), want_raw, matvec_limit(c.type), what + " raw");
  }
}

TEST(CudaOps, MatvecMultiJobWithTransformsAndEpilogues) {
  REQUIRE_GPU();
  for (const int T : {1, 3, 7}) check_multi_job(T);  // 1: the one-row kernels
}

// ---- elementwise ----------------------------------------------------------------------------

TEST(CudaOps, EpilogueAndF16Conversion) {
  REQUIRE_GPU();
  const int rows = 5;
  const int64_t cols = 77, stride = 80;
  const std::vector<float> src = randn(size_t(rows * stride)), bias = randn(size_t(cols));
  for (OutOp op : {OutOp::store, OutOp::add, OutOp::decay, OutOp::sigmoid, OutOp::relu_sq, OutOp::tanh}) {
    const std::vector<float> init = randn(size_t(rows * stride));
    Guarded dsrc(src), ddst(init), dbias(bias);
    epilogue(op, dsrc.data(), ddst.data(), dbias.data(), rows, cols, stride, nullptr);
    std::vector<float> want = init;
    for (int r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float v = src[size_t(r * stride + c)];
        float& y = want[size_t(r * stride + c)];
        switch (op) {
          case OutOp::store:
            y = v;
            break;
          case OutOp::add:
            y += v;
            break;
          case OutOp::decay:
            y = std::exp(-0.6065306597126334f * sigmoid(bias[size_t(c)] + v));
            break;
          case OutOp::sigmoid:
            y = sigmoid(bias[size_t(c)] + v);
            break;
          case OutOp::relu_sq:
            y = std::max(v, 0.f) * std::max(v, 0.f);
            break;
          case OutOp::tanh:
            y = std::tanh(bias[size_t(c)] + v);
            break;
        }
      }
    expect_close(ddst.read(), want, 1e-12, "epilogue " + std::to_string(int(op)));
  }
  for (InOp op : {InOp::none, InOp::tanh, InOp::sigmoid, InOp::relu_sq}) {
    Guarded dsrc(src);
    DeviceBuffer out(size_t(rows * cols) * 2);
    to_f16(dsrc.data(), stride, rows, cols, op, out.data(), nullptr);
    std::vector<uint16_t> h(size_t(rows * cols));
    out.download(h.data(), h.size() * 2);
    std::vector<float> got(h.size()), want(h.size());
    for (int r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float v = src[size_t(r * stride + c)];
        want[size_t(r * cols + c)] = apply_in(op, v);
        got[size_t(r * cols + c)] = f16_to_f32(h[size_t(r * cols + c)]);
      }
    expect_close(got, want, 1e-6, "to_f16 " + std::to_string(int(op)));
  }
}

// The elementwise steps around the batched LoRA GEMMs: ranks below the padded width, all
// four problems, odd sizes.
TEST(CudaOps, LoraMidAndEpilogue) {
  REQUIRE_GPU();
  const int R = 5, D = 40, C = 72, n = 4;
  const std::vector<float> lo = randn(size_t(n * R * D)), out0 = randn(size_t(n * R * C)), w0 = randn(size_t(C)),
                           a0 = randn(size_t(C)), v0 = randn(size_t(C));
  Guarded dlo(lo), dout(out0), dw0(w0), da0(a0), dv0(v0);
  DeviceBuffer mid(size_t(n * R * D) * 2);
  LoraArgs a;
  a.R = R;
  a.D = D;
  a.C = C;
  a.n = n;
  const int ranks[4] = {40, 24, 8, 33};
  const InOp mid_ops[4] = {InOp::tanh, InOp::none, InOp::sigmoid, InOp::none};
  const OutOp out_ops[4] = {OutOp::decay, OutOp::sigmoid, OutOp::store, OutOp::sigmoid};
  const float* biases[4] = {dw0.data(), da0.data(), nullptr, dv0.data()};
  for (int p = 0; p < n; ++p) {
    a.rank[p] = ranks[p];
    a.mid_op[p] = mid_ops[p];
    a.out_op[p] = out_ops[p];
    a.bias[p] = biases[p];
  }
  a.lo = dlo.data();
  a.lo_step = R * D;
  a.mid = mid.data();
  a.mid_step = R * D;
  a.out = dout.data();
  a.out_step = R * C;
  lora_mid(a, nullptr);
  lora_epilogue(a, nullptr);
  std::vector<uint16_t> bits(size_t(n * R * D));
  mid.download(bits.data(), bits.size() * 2);
  std::vector<float> got_mid(bits.size()), want_mid(bits.size()), want_out = out0;
  const std::vector<const float*> host_bias = {w0.data(), a0.data(), nullptr, v0.data()};
  for (int p = 0; p < n; ++p)
    for (int r = 0; r < R; ++r) {
      for (int j = 0; j < D; ++j) {
        const size_t at = size_t((p * R + r) * D + j);
        got_mid[at] = f16_to_f32(bits[at]);
        want_mid[at] = j < ranks[p] ? apply_in(mid_ops[p], lo[at]) : 0.f;
      }
      for (int c = 0; c < C; ++c) {
        float& y = want_out[size_t((p * R + r) * C + c)];
        if (out_ops[p] == OutOp::decay) y = std::exp(-0.6065306597126334f * sigmoid(host_bias[p][c] + y));
        if (out_ops[p] == OutOp::sigmoid) y = sigmoid(host_bias[p][c] + y);
      }
    }
  expect_close(got_mid, want_mid, 1e-6, "lora_mid");
  expect_close(dout.read(), want_out, 1e-12, "lora_epilogue");
}

// ---- row ops over several sequences (DeviceBatch: testing/cuda_ops.h) ---------------------

TEST(CudaOps, EmbedLayerNormEveryType) {
  REQUIRE_GPU();
  for (TensorType t : kAllTypes) {
    const int64_t C = type_info(t).block_size == 256 ? 512 : 96, V = 50;
    HostWeight emb = make_weight(t, V, C, 1.f);
    DeviceMatrix m = upload_matrix(t, V, C, emb.bytes.data());
    const std::vector<int32_t> tokens = {3, 49, 0, 17, 3};
    const int R = int(tokens.size());
    DeviceBuffer dtok(tokens.size() * 4);
    dtok.upload(tokens.data(), tokens.size() * 4);
    const std::vector<float> w = randn(size_t(C), 0.3f, 1.f), b = randn(size_t(C), 0.1f);
    Guarded dw(w), db(b), raw(size_t(R * C)), h(size_t(R * C));
    embed_ln(m.view(), dtok.as<int32_t>(), R, dw.data(), db.data(), 1e-5f, raw.data(), h.data(), nullptr);
    std::vector<float> want_raw(size_t(R * C)), want(size_t(R * C));
    for (int r = 0; r < R; ++r) ref::weight_row(emb.w, tokens[size_t(r)], want_raw.data() + r * C);
    ref::layer_norm(want_raw.data(), w.data(), b.data(), R, C, 1e-5f, want.data());
    expect_close(raw.read(), want_raw, 1e-12, std::string(type_name(t)) + " embedding rows");
    expect_close(h.read(), want, 1e-10, std::string(type_name(t)) + " ln0");
  }
}

// Up to 256 rows split each row over C / 256 blocks, more rows take one block per row. Lerp 1
// is also written in f16 (the GEMM path's input).
void run_ln_shift_lerp(int C, const std::vector<int>& lens, const std::vector<int>& slots) {
  const int n_slots = 4;
  const size_t stride = 3 * C;  // a state slot holds more than the shift vector
  DeviceBatch batch(lens, slots);
  const int R = batch.bd.R;
  for (int n_mix : {6, 1}) {
    const std::vector<float> h = randn(size_t(R * C), 2.f, 0.5f), w = randn(size_t(C), 0.3f, 1.f),
                             b = randn(size_t(C), 0.1f), mix = uniform(size_t(n_mix * C), 0.f, 1.f),
                             state = randn(stride * n_slots);
    Guarded dh(h), dw(w), db(b), dmix(mix), dstate(state), xln(size_t(R * C));
    std::vector<std::unique_ptr<Guarded>> outs;
    DeviceQuantX q0(R, C), q2(R, C);
    ShiftLerpArgs a = lerp_args(batch, dh.data(), C, dw, db, dmix, n_mix, dstate, stride, outs);
    // Lerp 1 of six only in f16, as the GEMM path asks; no xln with one lerp.
    if (n_mix > 1) a.out[1] = nullptr;
    a.xln = n_mix > 1 ? xln.data() : nullptr;
    a.out_q[0] = q0.q;
    if (n_mix > 2) a.out_q[2] = q2.q;
    DeviceBuffer out16(size_t(R) * C * 2);
    if (n_mix > 1) a.out16[1] = out16.data();
    ln_shift_lerp(a, nullptr);

    std::vector<float> x(size_t(R * C));
    ref::layer_norm(h.data(), w.data(), b.data(), R, C, 1e-5f, x.data());
    std::vector<float> want_state = state;
    std::vector<std::vector<float>> want(size_t(n_mix), std::vector<float>(size_t(R * C)));
    for (size_t s = 0; s < lens.size(); ++s) {
      const int r0 = batch.seq_start[s], T = lens[s];
      float* shift = want_state.data() + size_t(slots[s]) * stride + C;
      for (int m = 0; m < n_mix; ++m)
        ref::token_shift_lerp(x.data() + size_t(r0) * C, shift, mix.data() + size_t(m) * C, T, C,
                              want[size_t(m)].data() + size_t(r0) * C);
      std::memcpy(shift, x.data() + size_t(r0 + T - 1) * C, C * sizeof(float));
    }
    if (a.xln) expect_close(xln.read(), x, 1e-11, "xln");
    for (int m = 0; m < n_mix; ++m)
      if (a.out[m]) expect_close(outs[size_t(m)]->read(), want[size_t(m)], 1e-11, "lerp " + std::to_string(m));
    expect_close(q0.read(), want[0], 1e-9, "lerp 0 quantised");
    if (n_mix > 2) expect_close(q2.read(), want[2], 1e-9, "lerp 2 quantised");
    if (n_mix > 1) {
      std::vector<uint16_t> bits(size_t(R) * C);
      out16.download(bits.data(), bits.size() * 2);
      std::vector<float> got(bits.size());
      for (size_t i = 0; i < bits.size(); ++i) got[i] = f16_to_f32(bits[i]);
      expect_close(got, want[1], 1e-6, "lerp 1 in f16");
    }
    expect_close(dstate.read(), want_state, 1e-12, "shift states (and the untouched rest of each slot)");
  }
}

TEST(CudaOps, LayerNormShiftLerpSeveralSequences) {
  REQUIRE_GPU();
  run_ln_shift_lerp(160, {1, 4, 2, 3}, {2, 0, 3, 1});  // 160: a multiple of 32, not of 256
  run_ln_shift_lerp(800, {1, 1, 2, 3}, {2, 0, 3, 1});  // 7 rows: split rows
  run_ln_shift_lerp(800, {1, 5}, {3, 1});
  run_ln_shift_lerp(160, {150, 120}, {0, 2});  // 270 rows: one block per row
}

TEST(CudaOps, LayerNormSelectedRows) {
  REQUIRE_GPU();
  const int C = 224, R = 6;
  const std::vector<float> x = randn(size_t(R * C), 3.f, 1.f), w = randn(size_t(C)), b = randn(size_t(C));
  const std::vector<int32_t> rows = {5, 0, 3};
  DeviceBuffer drows(rows.size() * 4);
  drows.upload(rows.data(), rows.size() * 4);
  Guarded dx(x), dw(w), db(b), y(rows.size() * C);
  DeviceQuantX yq(int(rows.size()), C);
  std::vector<float> want(rows.size() * C);
  for (size_t i = 0; i < rows.size(); ++i)
    ref::layer_norm(x.data() + size_t(rows[i]) * C, w.data(), b.data(), 1, C, 1e-5f, want.data() + i * C);
  layer_norm_rows(dx.data(), drows.as<int32_t>(), int(rows.size()), C, dw.data(), db.data(), 1e-5f, y.data(), nullptr,
                  nullptr);
  expect_close(y.read(), want, 1e-11, "layer_norm_rows");
  // With the quantised copy (the head's input at decode): the same fp32 rows, and two-term
  // int8 values within quantize_rows' tolerance.
  layer_norm_rows(dx.data(), drows.as<int32_t>(), int(rows.size()), C, dw.data(), db.data(), 1e-5f, y.data(), &yq.q,
                  nullptr);
  expect_close(y.read(), want, 1e-11, "layer_norm_rows with a quantised copy");
  expect_close(yq.read(), want, 1e-9, "layer_norm_rows quantised");
}

}  // namespace
}  // namespace rwkv::cuda
