#version 450
// Tiled matrix product for prefill (T > a few): workgroup (x, y, job) computes a tile of
// BM output rows x BN tokens. Each step dequantises a BM x BK slice of W and loads a
// BN x BK slice of x into shared memory; each invocation accumulates a 4 x 4 sub-tile.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "dequant.glsl"
#include "matrix_io.glsl"

layout(local_size_x = 256) in;
#define BM 64u
#define BN 64u
#define BK 32u

shared float ws[BK * BM];  // ws[k * BM + m]
shared float xs[BK * BN];  // xs[k * BN + n]

void main() {
  Job jb = jobs[pc.job_base + gl_WorkGroupID.z];
  uint m0 = gl_WorkGroupID.x * BM;
  uint n0 = gl_WorkGroupID.y * BN;
  if (m0 >= jb.rows || n0 >= pc.n_tok) return;
  uint tid = gl_LocalInvocationID.x;
  uint tm = tid & 15u, tn = tid >> 4;

  // This invocation's share of the loads: 8 weights of row wm, and two 4-float pieces of x.
  uint wm = tid >> 2, wk = (tid & 3u) * 8u;
  bool w_ok = m0 + wm < jb.rows;
  uint wrb = jb.w_off + min(m0 + wm, jb.rows - 1u) * jb.row_bytes;
  uint xn[2], xk[2], xb[2];
  bool x_ok[2];
  for (uint q = 0u; q < 2u; ++q) {
    uint idx = tid + 256u * q;
    xn[q] = idx >> 3;
    xk[q] = (idx & 7u) * 4u;
    x_ok[q] = n0 + xn[q] < pc.n_tok;
    xb[q] = x_row(jb, min(n0 + xn[q], pc.n_tok - 1u));
  }

  float acc[16];
  for (uint i = 0u; i < 16u; ++i) acc[i] = 0.0;
  for (uint k0 = 0u; k0 < jb.cols; k0 += BK) {
    vec4 lo = vec4(0.0), hi = vec4(0.0);
    if (w_ok && k0 + wk < jb.cols) DQ8(jb, wrb, k0 + wk, lo, hi);
    for (uint i = 0u; i < 4u; ++i) {
      ws[(wk + i) * BM + wm] = lo[i];
      ws[(wk + 4u + i) * BM + wm] = hi[i];
    }
    for (uint q = 0u; q < 2u; ++q) {
      vec4 v = (x_ok[q] && k0 + xk[q] < jb.cols) ? x4[xb[q] + ((k0 + xk[q]) >> 2)] : vec4(0.0);
      for (uint i = 0u; i < 4u; ++i) xs[(xk[q] + i) * BN + xn[q]] = v[i];
    }
    barrier();
    for (uint k = 0u; k < BK; ++k) {
      vec4 a = vec4(ws[k * BM + tm], ws[k * BM + tm + 16u], ws[k * BM + tm + 32u], ws[k * BM + tm + 48u]);
      vec4 b = vec4(xs[k * BN + tn], xs[k * BN + tn + 16u], xs[k * BN + tn + 32u], xs[k * BN + tn + 48u]);
      for (uint i = 0u; i < 4u; ++i) {
        for (uint j = 0u; j < 4u; ++j) acc[i * 4u + j] += a[i] * b[j];
      }
    }
    barrier();
  }
  for (uint i = 0u; i < 4u; ++i) {
    for (uint j = 0u; j < 4u; ++j) {
      uint m = m0 + tm + 16u * i, n = n0 + tn + 16u * j;
      if (m < jb.rows && n < pc.n_tok) store(jb, n, m, acc[i * 4u + j]);
    }
  }
}
