#version 450
// Probe shader (bench/probes/vk_sync_probe.cpp): a chain of dependent one-token matrix
// products y = W x, Q8_0-like weights (int8 quants, a float16 scale a block of 32), x the
// first `cols` values of the previous stage's y. Built twice:
//   (default)   the backend's form (shaders/matvec.comp): two rows a workgroup of WG
//               invocations, x read through L1, one stage a dispatch, pipeline barriers.
//   PERSISTENT  a fixed grid: each workgroup stages x into shared memory, then each subgroup
//               takes groups of SG_ROWS rows in turn (a lane holds all its units' loads of
//               the group's rows at once, and with AHEAD the next group's too while it
//               multiplies); one dispatch runs `stages` stages with a grid barrier between
//               them, or one stage with the host's pipeline barriers.
// Quants of stage s, row r: 16-byte words (slot * rows + r) * cols / 16 on; its scales the
// float16 values (slot * rows + r) * cols / 32 on.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "vk_probe.glsl"

const uint MAX_COLS = 2560;  // the 2.9B model's width

// Byte q's four int8 values as floats from their bits (dequant.glsl's q8_bits4).
vec4 q8_bits4(uint q) {
  uvec4 m = (uvec4(q ^ 0x80808080u) >> uvec4(0u, 8u, 16u, 24u)) & 0xFFu;
  return uintBitsToFloat(m | 0x4B000000u) - 8388736.0;
}
float scale_of(uint index) { return unpackHalf2x16(scales[index >> 1u] >> ((index & 1u) * 16u)).x; }
float dot16(uvec4 q, vec4 x0, vec4 x1, vec4 x2, vec4 x3) {
  vec4 s = fma(q8_bits4(q.w), x3, fma(q8_bits4(q.z), x2, fma(q8_bits4(q.y), x1, q8_bits4(q.x) * x0)));
  return (s.x + s.y) + (s.z + s.w);
}
// Values [4 i, 4 i + 4) of stage s's x.
vec4 x4_at(uint s, uint i) { return (s & 1u) == 0u ? a4[i] : b4[i]; }
void y_store(uint s, uint i, float v) {
  if ((s & 1u) == 0u) b[i] = v;
  else a[i] = v;
}

#if defined(PERSISTENT)
layout(constant_id = 1) const uint SG_ROWS = 2;     // rows a subgroup multiplies at once
layout(constant_id = 2) const uint LANE_UNITS = 5;  // cols / 16 / subgroup size: a lane's units of a row
layout(constant_id = 3) const uint AHEAD = 0;       // 1: the next group's loads before this group's products
shared vec4 xs[MAX_COLS / 4];

// Two sets of a lane's quants and scales of one row group (arrays sized by specialisation
// constants cannot be copied or passed, so each set has its own functions).
uvec4 qa[SG_ROWS * LANE_UNITS], qb[SG_ROWS * LANE_UNITS];
float da[SG_ROWS * LANE_UNITS], db[SG_ROWS * LANE_UNITS];

// This lane's quants and scales of row group g of stage s into set Q, D (rows past the end
// repeat the last).
#define LOAD_GROUP(NAME, Q, D)                                                    \
  void NAME(uint s, uint g) {                                                     \
    uint units = pc.cols >> 4, slot_row = (s % pc.slots) * pc.rows;               \
    for (uint r = 0u; r < SG_ROWS; ++r) {                                         \
      uint row = slot_row + min(SG_ROWS * g + r, pc.rows - 1u);                   \
      for (uint k = 0u; k < LANE_UNITS; ++k) {                                    \
        uint u = min(gl_SubgroupInvocationID + gl_SubgroupSize * k, units - 1u); \
        Q[r * LANE_UNITS + k] = w[row * units + u];                               \
        D[r * LANE_UNITS + k] = scale_of((row * units + u) >> 1u);                \
      }                                                                           \
    }                                                                             \
  }
LOAD_GROUP(load_a, qa, da)
LOAD_GROUP(load_b, qb, db)

// Row group g's products from set Q, D, stored by lane 0.
#define MULTIPLY_GROUP(NAME, Q, D)                                                                        \
  void NAME(uint s, uint g) {                                                                             \
    uint units = pc.cols >> 4;                                                                            \
    float acc[SG_ROWS];                                                                                   \
    for (uint r = 0u; r < SG_ROWS; ++r) acc[r] = 0.0;                                                     \
    for (uint k = 0u; k < LANE_UNITS; ++k) {                                                              \
      uint u = gl_SubgroupInvocationID + gl_SubgroupSize * k;                                             \
      if (u < units) {                                                                                    \
        vec4 x0 = xs[4u * u], x1 = xs[4u * u + 1u], x2 = xs[4u * u + 2u], x3 = xs[4u * u + 3u];           \
        for (uint r = 0u; r < SG_ROWS; ++r)                                                               \
          acc[r] = fma(D[r * LANE_UNITS + k], dot16(Q[r * LANE_UNITS + k], x0, x1, x2, x3), acc[r]);      \
      }                                                                                                   \
    }                                                                                                     \
    for (uint r = 0u; r < SG_ROWS; ++r) {                                                                 \
      float t = subgroupAdd(acc[r]);                                                                      \
      if (gl_SubgroupInvocationID == 0u && SG_ROWS * g + r < pc.rows) y_store(s, SG_ROWS * g + r, t);     \
    }                                                                                                     \
  }
MULTIPLY_GROUP(multiply_a, qa, da)
MULTIPLY_GROUP(multiply_b, qb, db)

void stage_rows(uint s) {
  for (uint i = gl_LocalInvocationID.x; i < pc.cols / 4u; i += WG) xs[i] = x4_at(s, i);
  barrier();
  uint n_sg = gl_NumWorkGroups.x * gl_NumSubgroups, n_groups = (pc.rows + SG_ROWS - 1u) / SG_ROWS;
  uint g = gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID;
  if (AHEAD == 0u) {
    for (; g < n_groups; g += n_sg) {
      load_a(s, g);
      multiply_a(s, g);
    }
    return;
  }
  // Two sets in turn: the next group's loads are requested before this group's products.
  if (g < n_groups) load_a(s, g);
  while (g < n_groups) {
    if (g + n_sg < n_groups) load_b(s, g + n_sg);
    multiply_a(s, g);
    g += n_sg;
    if (g >= n_groups) break;
    if (g + n_sg < n_groups) load_a(s, g + n_sg);
    multiply_b(s, g);
    g += n_sg;
  }
}

void main() {
  for (uint s = 0u; s < pc.stages; ++s) {
    if (s > 0u) grid_barrier(s * gl_NumWorkGroups.x);
    stage_rows(pc.stage + s);
  }
}
#else
shared float part[2u * 64u];

void main() {
  uint s = pc.stage, units = pc.cols >> 4, slot_row = (s % pc.slots) * pc.rows;
  uint r0 = 2u * gl_WorkGroupID.x, r1 = min(r0 + 1u, pc.rows - 1u);
  float acc0 = 0.0, acc1 = 0.0;
  for (uint u = gl_LocalInvocationID.x; u < units; u += WG) {
    vec4 x0 = x4_at(s, 4u * u), x1 = x4_at(s, 4u * u + 1u), x2 = x4_at(s, 4u * u + 2u), x3 = x4_at(s, 4u * u + 3u);
    acc0 = fma(scale_of(((slot_row + r0) * units + u) >> 1u), dot16(w[(slot_row + r0) * units + u], x0, x1, x2, x3), acc0);
    acc1 = fma(scale_of(((slot_row + r1) * units + u) >> 1u), dot16(w[(slot_row + r1) * units + u], x0, x1, x2, x3), acc1);
  }
  acc0 = subgroupAdd(acc0);
  acc1 = subgroupAdd(acc1);
  if (subgroupElect()) {
    part[gl_SubgroupID] = acc0;
    part[64u + gl_SubgroupID] = acc1;
  }
  barrier();
  if (gl_LocalInvocationID.x < 2u) {
    float t = 0.0;
    for (uint i = 0u; i < gl_NumSubgroups; ++i) t += part[64u * gl_LocalInvocationID.x + i];
    uint r = r0 + gl_LocalInvocationID.x;
    if (r < pc.rows) y_store(s, r, t);
  }
}
#endif
