#version 450
// Tiled matrix product on tensor cores (VK_NV_cooperative_matrix), for prefill on devices
// that have them: workgroup (x, y, job) computes BM output rows x BN tokens. Each step
// dequantises a BM x BK slice of W and loads a BN x BK slice of x into shared memory as
// float16, and each of the four subgroups multiplies a 32 x 32 quarter with 16x8x16
// fragments, accumulating in float32. x is scaled by the job's x_scale before rounding to
// float16 (and the result divided by it), so large activations (relu^2) stay in range.
#extension GL_GOOGLE_include_directive : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "common.glsl"
#include "dequant.glsl"
#include "matrix_io.glsl"

layout(local_size_x = 128) in;  // four subgroups of 32 (the host checks the subgroup size)
#define BM 64u
#define BN 64u
#define BK 32u
#define LDS 40u  // float16 row stride of the W and x tiles: BK + 8 keeps rows 16-byte aligned
#define LDC 68u  // float32 row stride of the result tile

shared float16_t sa[BM * LDS];  // sa[m * LDS + k]: W, row-major (the A operand, M x K)
shared float16_t sb[BN * LDS];  // sb[n * LDS + k]: x; read as B (K x N) it is column-major
shared float sc[BN * LDC];      // sc[n * LDC + m]: the result, column-major (C, M x N)

#define FragA fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define FragB fcoopmatNV<16, gl_ScopeSubgroup, 16, 8>
#define FragC fcoopmatNV<32, gl_ScopeSubgroup, 16, 8>

void main() {
  Job jb = jobs[pc.job_base + gl_WorkGroupID.z];
  // Tokens vary fastest across workgroups, so the ones that share a W tile run together.
  uint n0 = gl_WorkGroupID.x * BN;
  uint m0 = gl_WorkGroupID.y * BM;
  if (m0 >= jb.rows || n0 >= pc.n_tok) return;
  uint tid = gl_LocalInvocationID.x;
  uint sm = (gl_SubgroupID & 1u) * 32u, sn = (gl_SubgroupID >> 1) * 32u;

  FragC acc[2][4];
  for (uint i = 0u; i < 2u; ++i) {
    for (uint j = 0u; j < 4u; ++j) acc[i][j] = FragC(0.0);
  }
  for (uint k0 = 0u; k0 < jb.cols; k0 += BK) {
    // W: 64 rows x 32 = 256 pieces of 8, two per invocation.
    for (uint q = 0u; q < 2u; ++q) {
      uint u = tid + 128u * q;
      uint m = u >> 2, k = (u & 3u) * 8u;
      vec4 lo = vec4(0.0), hi = vec4(0.0);
      if (m0 + m < jb.rows && k0 + k < jb.cols) DQ8(jb, jb.w_off + (m0 + m) * jb.row_bytes, k0 + k, lo, hi);
      for (uint i = 0u; i < 4u; ++i) {
        sa[m * LDS + k + i] = float16_t(lo[i]);
        sa[m * LDS + k + 4u + i] = float16_t(hi[i]);
      }
    }
    // x: 64 tokens x 32 = 512 pieces of 4, four per invocation.
    for (uint q = 0u; q < 4u; ++q) {
      uint u = tid + 128u * q;
      uint n = u >> 3, k = (u & 7u) * 4u;
      vec4 v = vec4(0.0);
      if (n0 + n < pc.n_tok && k0 + k < jb.cols) v = x4[x_row(jb, n0 + n) + ((k0 + k) >> 2)] * jb.x_scale;
      for (uint i = 0u; i < 4u; ++i) sb[n * LDS + k + i] = float16_t(v[i]);
    }
    barrier();
    for (uint kk = 0u; kk < BK; kk += 16u) {
      FragA a[2];
      FragB b[4];
      for (uint i = 0u; i < 2u; ++i) coopMatLoadNV(a[i], sa, (sm + 16u * i) * LDS + kk, LDS, false);
      for (uint j = 0u; j < 4u; ++j) coopMatLoadNV(b[j], sb, (sn + 8u * j) * LDS + kk, LDS, true);
      for (uint i = 0u; i < 2u; ++i) {
        for (uint j = 0u; j < 4u; ++j) acc[i][j] = coopMatMulAddNV(a[i], b[j], acc[i][j]);
      }
    }
    barrier();
  }
  for (uint i = 0u; i < 2u; ++i) {
    for (uint j = 0u; j < 4u; ++j) coopMatStoreNV(acc[i][j], sc, (sn + 8u * j) * LDC + sm + 16u * i, LDC, true);
  }
  barrier();
  float unscale = 1.0 / jb.x_scale;
  for (uint q = 0u; q < 32u; ++q) {
    uint u = tid + 128u * q;
    uint m = u & 63u, n = u >> 6;
    if (m0 + m < jb.rows && n0 + n < pc.n_tok) store(jb, n0 + n, m0 + m, sc[n * LDC + m] * unscale);
  }
}
