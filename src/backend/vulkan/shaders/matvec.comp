#version 450
// Matrix x few vectors (decode: T small). Workgroup (x, job) computes ROWS output rows for
// TOK tokens at a time. Built per weight type, and once for all types (TYPE_ANY: each job
// names its type) so that independent products of different types share one dispatch; its invocations stride over the row in units of 8 elements, so each
// weight byte is read from memory once per TOK tokens; partial sums meet through subgroup
// adds and one shared-memory step.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "dequant.glsl"
#include "matrix_io.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
layout(constant_id = 1) const uint ROWS = 2;
layout(constant_id = 2) const uint TOK = 1;

shared float part[ROWS * TOK * RED_MAX];

void main() {
  Job jb = jobs[pc.job_base + gl_WorkGroupID.y];
  uint row0 = gl_WorkGroupID.x * ROWS;
  if (row0 >= jb.rows) return;  // the whole workgroup leaves together
  uint tid = gl_LocalInvocationID.x;
  uint units = jb.cols >> 3;
  uint rb[ROWS];
  for (uint r = 0u; r < ROWS; ++r) rb[r] = jb.w_off + min(row0 + r, jb.rows - 1u) * jb.row_bytes;

  for (uint t0 = 0u; t0 < pc.n_tok; t0 += TOK) {
    uint xb[TOK];
    for (uint j = 0u; j < TOK; ++j) xb[j] = x_row(jb, min(t0 + j, pc.n_tok - 1u));
    float acc[ROWS * TOK];
    for (uint k = 0u; k < ROWS * TOK; ++k) acc[k] = 0.0;
    for (uint u = tid; u < units; u += WG) {
      vec4 xl[TOK], xh[TOK];
      for (uint j = 0u; j < TOK; ++j) {
        xl[j] = x4[xb[j] + 2u * u];
        xh[j] = x4[xb[j] + 2u * u + 1u];
      }
      for (uint r = 0u; r < ROWS; ++r) {
        vec4 lo, hi;
        DQ8(jb, rb[r], 8u * u, lo, hi);
        for (uint j = 0u; j < TOK; ++j) acc[r * TOK + j] += dot(lo, xl[j]) + dot(hi, xh[j]);
      }
    }
    for (uint k = 0u; k < ROWS * TOK; ++k) {
      float s = subgroupAdd(acc[k]);
      if (subgroupElect()) part[k * RED_MAX + gl_SubgroupID] = s;
    }
    barrier();
    if (tid < ROWS * TOK) {
      uint r = tid / TOK, j = tid % TOK;
      float s = 0.0;
      for (uint i = 0u; i < gl_NumSubgroups; ++i) s += part[tid * RED_MAX + i];
      if (row0 + r < jb.rows && t0 + j < pc.n_tok) store(jb, t0 + j, row0 + r, s);
    }
    barrier();
  }
}
