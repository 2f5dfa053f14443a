#version 450
// Embedding lookup fused with ln0 (spec §2.1): one workgroup per token row. Writes the raw
// embedding row (the "embed" intermediate) and its LayerNorm (the residual stream h).
// The table may be split by rows over several device buffers: a dispatch covers the rows
// [piece_start, piece_start + piece_rows) and skips tokens outside them.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "dequant.glsl"

layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 1) readonly buffer Vectors { float vecs[]; };
layout(std430, set = 0, binding = 2) buffer Scratch { float act[]; };
layout(std430, set = 0, binding = 3) readonly buffer Meta { uint meta[]; };

layout(push_constant) uniform Push {
  uint w_off, row_bytes, piece_start, piece_rows;
  uint C;
  uint emb_off, h_off;  // outputs [T x C]
  uint ln_w, ln_b;      // in vecs
  float eps;
  uint tok_off;         // token ids in meta
} pc;

void main() {
  uint row = gl_WorkGroupID.x;
  uint tok = meta[pc.tok_off + row];
  if (tok < pc.piece_start || tok >= pc.piece_start + pc.piece_rows) return;
  uint tid = gl_LocalInvocationID.x;
  uint rb = pc.w_off + (tok - pc.piece_start) * pc.row_bytes;
  uint base = row * pc.C;
  float sum = 0.0;
  for (uint u = tid; u < pc.C / 8u; u += 256u) {
    vec4 lo, hi;
    dq8(0u, rb, 8u * u, lo, hi);
    for (uint i = 0u; i < 4u; ++i) {
      act[pc.emb_off + base + 8u * u + i] = lo[i];
      act[pc.emb_off + base + 8u * u + 4u + i] = hi[i];
    }
    sum += lo.x + lo.y + lo.z + lo.w + hi.x + hi.y + hi.z + hi.w;
  }
  float mean = wg_sum(sum) / float(pc.C);
  // Each invocation reads back only the elements it wrote itself.
  float sq = 0.0;
  for (uint u = tid; u < pc.C / 8u; u += 256u) {
    for (uint i = 0u; i < 8u; ++i) {
      float d = act[pc.emb_off + base + 8u * u + i] - mean;
      sq += d * d;
    }
  }
  float rstd = inversesqrt(wg_sum(sq) / float(pc.C) + pc.eps);
  for (uint u = tid; u < pc.C / 8u; u += 256u) {
    for (uint i = 0u; i < 8u; ++i) {
      uint c = 8u * u + i;
      act[pc.h_off + base + c] = (act[pc.emb_off + base + c] - mean) * rstd * vecs[pc.ln_w + c] + vecs[pc.ln_b + c];
    }
  }
}
