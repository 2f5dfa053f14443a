#version 450
// Matrix x few vectors (decode: T small). Workgroup (x, job) computes ROWS output rows for
// TOK tokens at a time. Built per weight type (independent products of different types are
// separate dispatches of one stage). Its invocations stride over the row in units of 16
// elements (Q8_0: one 16-byte quant load), two units per loop trip so that each has the
// loads of both in flight; each weight byte is read from memory once per TOK tokens; partial
// sums meet through subgroup adds and one shared-memory step. Q8_0 units build their floats
// from the quant bits, without int-to-float conversion instructions, and apply the block
// scale once per unit (dequant.glsl, dq16_q8_0_unscaled).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "dequant.glsl"
#include "matrix_io.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
layout(constant_id = 1) const uint ROWS = 2;
layout(constant_id = 2) const uint TOK = 1;

shared float part[ROWS * TOK * RED_MAX];

// Per invocation: byte offsets of the workgroup's rows, vec4 indices of the current tokens'
// activation rows, partial sums [row][token].
uint rb[ROWS];
uint xb[TOK];
float acc[ROWS * TOK];

#if defined(TYPE_Q8_0)
// sum_i a_i . b_i over four vec4 pairs, as four independent FMA chains (Q8_0 units).
float dot16(vec4 a0, vec4 a1, vec4 a2, vec4 a3, vec4 b0, vec4 b1, vec4 b2, vec4 b3) {
  vec4 s = fma(a3, b3, fma(a2, b2, fma(a1, b1, a0 * b0)));
  return (s.x + s.y) + (s.z + s.w);
}
#endif

// Adds elements [16u, 16u + 16) of every row x token to acc.
void add_unit16(Job jb, uint u) {
  vec4 xv[4 * TOK];
  for (uint j = 0u; j < TOK; ++j) {
    for (uint i = 0u; i < 4u; ++i) xv[4u * j + i] = x4[xb[j] + 4u * u + i];
  }
#if defined(TYPE_Q8_0)
  for (uint r = 0u; r < ROWS; ++r) {
    vec4 w0, w1, w2, w3;
    float d = dq16_q8_0_unscaled(jb.wbind, rb[r], 16u * u, w0, w1, w2, w3);
    for (uint j = 0u; j < TOK; ++j) {
      acc[r * TOK + j] =
          fma(d, dot16(w0, w1, w2, w3, xv[4u * j], xv[4u * j + 1u], xv[4u * j + 2u], xv[4u * j + 3u]),
              acc[r * TOK + j]);
    }
  }
#else
  for (uint r = 0u; r < ROWS; ++r) {
    vec4 w0, w1, w2, w3;
    DQ16(jb, rb[r], 16u * u, w0, w1, w2, w3);
    for (uint j = 0u; j < TOK; ++j) {
      acc[r * TOK + j] += dot(w0, xv[4u * j]) + dot(w1, xv[4u * j + 1u]) + dot(w2, xv[4u * j + 2u]) +
                          dot(w3, xv[4u * j + 3u]);
    }
  }
#endif
}

// Adds elements [e, e + 8) of every row x token to acc (the end of a row of 8 mod 16).
void add_unit8(Job jb, uint e) {
  for (uint r = 0u; r < ROWS; ++r) {
    vec4 lo, hi;
    DQ8(jb, rb[r], e, lo, hi);
    for (uint j = 0u; j < TOK; ++j) {
      acc[r * TOK + j] += dot(lo, x4[xb[j] + (e >> 2)]) + dot(hi, x4[xb[j] + (e >> 2) + 1u]);
    }
  }
}

// The whole row in 16-element units, two per loop trip, so that each invocation has the
// loads of both in flight; then a last 8-element unit where cols % 16 == 8 (never for Q8_0).
void add_row16(Job jb, uint tid) {
  uint units = jb.cols >> 4;
  uint u = tid;
  for (; u + WG < units; u += 2u * WG) {
    add_unit16(jb, u);
    add_unit16(jb, u + WG);
  }
  if (u < units) add_unit16(jb, u);
  if ((jb.cols & 8u) != 0u && tid == 0u) add_unit8(jb, 16u * units);
}

void main() {
  Job jb = jobs[pc.job_base + gl_WorkGroupID.y];
  uint row0 = gl_WorkGroupID.x * ROWS;
  if (row0 >= jb.rows) return;  // the whole workgroup leaves together
  uint tid = gl_LocalInvocationID.x;
  for (uint r = 0u; r < ROWS; ++r) rb[r] = jb.w_off + min(row0 + r, jb.rows - 1u) * jb.row_bytes;

  for (uint t0 = 0u; t0 < pc.n_tok; t0 += TOK) {
    for (uint j = 0u; j < TOK; ++j) xb[j] = x_row(jb, min(t0 + j, pc.n_tok - 1u));
    for (uint k = 0u; k < ROWS * TOK; ++k) acc[k] = 0.0;
    add_row16(jb, tid);
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
