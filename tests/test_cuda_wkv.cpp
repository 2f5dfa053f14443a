// WKV kernels of the CUDA backend against the reference ops (spec §2.2 steps 6, 9-13): the
// fused decode kernel and the prefill kernels, several sequences in scattered state slots,
// layer 0 and later layers.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backend/cpu/ref_ops.h"
#include "backend/cuda/ops.h"
#include "testing/cuda_ops.h"

namespace rwkv::cuda {
namespace {

using namespace test_util;

struct WkvCase {
  int H, N;
  std::vector<int> lens, slots;
  bool first_layer;
};

void run_wkv_case(const WkvCase& c, bool fused) {
  const int H = c.H, N = c.N, C = H * N, n_slots = 4;
  DeviceBatch batch(c.lens, c.slots);
  const int R = batch.bd.R;
  const size_t RC = size_t(R) * C, stride = size_t(C) * N + 4;  // slots apart by more than a state
  const std::vector<float> r = randn(RC), decay = uniform(RC, 0.55f, 1.f), k = randn(RC), a = uniform(RC, 0.f, 1.f),
                           g = randn(RC), nu = uniform(RC, 0.f, 1.f), v0 = randn(RC), vfirst0 = randn(RC),
                           k_k = randn(size_t(C), 0.5f, 1.f), k_a = uniform(size_t(C), 0.f, 1.f),
                           r_k = randn(size_t(C), 0.5f), lnx_w = randn(size_t(C), 0.3f, 1.f),
                           lnx_b = randn(size_t(C), 0.1f), state0 = randn(stride * n_slots, 0.3f);
  DeviceQuantX xo_q(R, C);
  Guarded dr(r), dd(decay), dk(k), da(a), dg(g), dnu(nu), dv(v0), dvf(vfirst0), dkk_k(k_k), dk_a(k_a), dr_k(r_k),
      dlw(lnx_w), dlb(lnx_b), dstate(state0), xo(RC), kk(RC), kmod(RC), y(RC), lnx(RC), xo16((RC + 1) / 2);
  WkvArgs w;
  w.batch = batch.bd;
  w.H = H;
  w.N = N;
  w.first_layer = c.first_layer;
  w.r = dr.data();
  w.decay = dd.data();
  w.k = dk.data();
  w.a = da.data();
  w.g = dg.data();
  w.nu = dnu.data();
  w.v = dv.data();
  w.v_first = dvf.data();
  w.k_k = dkk_k.data();
  w.k_a = dk_a.data();
  w.r_k = dr_k.data();
  w.lnx_w = dlw.data();
  w.lnx_b = dlb.data();
  w.gn_eps = 64e-5f;
  w.state = dstate.data();
  w.state_stride = stride;
  w.xo = xo.data();
  w.kk = kk.data();
  w.kmod = kmod.data();
  w.y = y.data();
  w.lnx = lnx.data();
  if (fused) w.xo_q = xo_q.q;
  if (fused) w.xo16 = reinterpret_cast<uint16_t*>(xo16.data());
  if (fused)
    wkv_fused(w, nullptr);
  else
    wkv_prefill(w, nullptr);

  // Reference: spec §2.2 steps 6, 9-13 with the reference ops, sequence by sequence.
  std::vector<float> v = v0, vfirst = vfirst0, state = state0;
  std::vector<float> want_kk(RC), want_kmod(RC), want_y(RC), want_lnx(RC), want_xo(RC), kraw(RC), alpha(RC), beta(RC);
  for (size_t i = 0; i < RC; ++i) {
    const size_t ch = i % size_t(C);
    if (c.first_layer)
      vfirst[i] = v[i];
    else
      v[i] += nu[i] * (vfirst[i] - v[i]);
    kraw[i] = k[i] * k_k[ch];
    want_kmod[i] = k[i] * (1.f + (a[i] - 1.f) * k_a[ch]);
  }
  ref::l2_normalize_heads(kraw.data(), R, C, N, 1e-12f, want_kk.data());
  for (size_t i = 0; i < RC; ++i) {
    alpha[i] = -want_kk[i];
    beta[i] = want_kk[i] * a[i];
  }
  for (size_t s = 0; s < c.lens.size(); ++s) {
    const size_t o = size_t(batch.seq_start[s]) * C;
    ref::wkv7(state.data() + size_t(c.slots[s]) * stride, r.data() + o, decay.data() + o, want_kmod.data() + o,
              v.data() + o, alpha.data() + o, beta.data() + o, c.lens[s], H, N, want_y.data() + o);
  }
  ref::group_norm(want_y.data(), lnx_w.data(), lnx_b.data(), R, C, N, 64e-5f, want_lnx.data());
  for (int row = 0; row < R; ++row)
    for (int h = 0; h < H; ++h) {
      const size_t o = size_t(row) * C + size_t(h) * N;
      double bonus = 0;
      for (int n = 0; n < N; ++n) bonus += double(r[o + n]) * want_kmod[o + n] * r_k[size_t(h * N + n)];
      for (int n = 0; n < N; ++n) {
        want_lnx[o + n] += float(bonus) * v[o + n];
        want_xo[o + n] = want_lnx[o + n] * g[o + n];
      }
    }
  const std::string what = std::string(fused ? "fused" : "prefill") + " H=" + std::to_string(H) +
                           " N=" + std::to_string(N) + (c.first_layer ? " layer 0" : "");
  expect_close(xo.read(), want_xo, 1e-9, what + " xo");
  if (fused) expect_close(xo_q.read(), want_xo, 1e-8, what + " xo quantised");
  if (fused) expect_f16_copy(xo16.read(), xo.read(), what + " xo");
  expect_close(dstate.read(), state, 1e-10, what + " state");
  expect_close(dv.read(), v, 1e-12, what + " v");
  expect_close(dvf.read(), vfirst, 1e-12, what + " v_first");
  expect_close(kk.read(), want_kk, 1e-11, what + " kk");
  expect_close(kmod.read(), want_kmod, 1e-11, what + " k_mod");
  expect_close(y.read(), want_y, 1e-9, what + " y");
  expect_close(lnx.read(), want_lnx, 1e-9, what + " lnx");
}

TEST(CudaOps, WkvFusedAndPrefillMatchReference) {
  REQUIRE_GPU();
  const WkvCase cases[] = {{3, 64, {1, 3, 7}, {2, 0, 3}, false},
                           {3, 64, {1, 1}, {1, 3}, true},
                           {2, 32, {5, 1, 20}, {0, 1, 2}, false},
                           {2, 128, {2, 9}, {3, 1}, true},
                           {1, 64, {40}, {1}, false},
                           // Several staged chunks, partial last ones; a few heads (16-row
                           // scan blocks) and many (32-row blocks).
                           {2, 128, {37, 3}, {0, 2}, false},
                           {60, 64, {45}, {3}, false}};
  for (const WkvCase& c : cases) {
    run_wkv_case(c, true);
    run_wkv_case(c, false);
  }
}

}  // namespace
}  // namespace rwkv::cuda
