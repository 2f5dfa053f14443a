#version 450
// ReLU^2-sparse FFN value product for one activation row (decode, T = 1):
//   y[i] = sum over the hidden units j with h[j] != 0 of WT[j][i] h[j],   i < C, j < F,
// WT [F x C]: the value matrix transposed at upload (WeightStore::add_transposed), one row
// of C weights per hidden unit (-DTYPE_<type>), so a unit that ReLU^2 zeroed costs no weight
// bytes: F16 or BF16 rows of 16-bit weights, or Q8_0: rows of C int8 quants followed by the
// scale plane [F/32 x C] float16 (output i, hidden block b at b C + i). Lossless: the same
// products as the dense matvec, summed in another (fixed) order.
//
// Grid: x = slices of PER_LANE x LANES outputs, y = groups of UNITS hidden units. A workgroup
//  1. compacts its group's non-zero units (index, value) into shared memory: a prefix sum
//     of per-invocation counts over subgroup adds (only the basic and arithmetic subgroup
//     operations the backend already requires; no ballot);
//  2. deals them out to teams of LANES invocations; an invocation holds PER_LANE
//     consecutive outputs, one load per unit, IN_FLIGHT units' loads issued before their
//     first use. F16, BF16: unit k of the list to team k % TEAMS, 8 outputs per
//     invocation (one 16-byte load). Q8_0: team t takes the units of hidden block t of the
//     group (32 units sharing one scale per output: a contiguous range of the list), 8
//     outputs per invocation (one 8-byte load); it sums the unscaled products and applies
//     the block's scales, loaded before step 1 (they do not depend on h), once at the end;
//  3. adds its teams' sums in team order and stores them as the group's partial sums;
//  4. counts itself done on its slice's counter; the last workgroup of the slice adds the
//     groups' partial sums into y (in group order within each of PARTS ranges of groups,
//     then the ranges in order) and resets the counter for the next dispatch.
// Deterministic (fixed orders, no float atomics), and no second dispatch.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

#define WG 256u
layout(local_size_x = 256) in;
#if defined(TYPE_Q8_0)
// Teams of 16 invocations, one per hidden block of 32 units (the host passes the
// specialisation constants 16 and 512, which this variant does not read). Slices of 128
// outputs, as F16's on wide models: with 512 (16 outputs a lane) a 2.9B layer had 200
// workgroups and each slice's last workgroup added 40 partial sums of 512 outputs in three
// rounds of loads, and the product cost more than the dense one even at a trained model's
// sparsity (bench/RESULTS-vulkan.md, session 19).
const uint LANES = 16u;
const uint UNITS = 2u * WG;  // 16 blocks of 32: team t owns block t of the group
const uint PER_LANE = 8u;    // outputs per invocation: 8 int8 quants per 8-byte load
#define IN_FLIGHT 16u        // half a block's units per round
#else
layout(constant_id = 0) const uint LANES = 16;   // invocations per team: 8, 16 or 32
layout(constant_id = 1) const uint UNITS = 256;  // hidden units per workgroup: 64 .. 1024
const uint PER_LANE = 8u;   // outputs per invocation: 8 16-bit weights per 16-byte load
#define IN_FLIGHT 8u
#endif
const uint TEAMS = WG / LANES;
const uint SLICE = PER_LANE * LANES;          // outputs per workgroup
const uint PER_INV = (UNITS + WG - 1u) / WG;  // hidden units per invocation in step 1 (<= 4)

layout(std430, set = 0, binding = 0) readonly buffer Weights { uvec4 w4[]; };
layout(std430, set = 0, binding = 0) readonly buffer Weights2 { uvec2 w2[]; };  // Q8_0 quants
layout(std430, set = 0, binding = 1) buffer Act { float act[]; };
// [0, slices): one counter per slice; from part_off: [groups x C] partial sums (float bits).
// Coherent: partial sums written by one workgroup are read by another.
layout(std430, set = 0, binding = 2) coherent buffer Partials { uint part[]; };
// The same as quads (part_off and C are multiples of 4): the last workgroup's loads.
layout(std430, set = 0, binding = 2) coherent buffer Partials4 { vec4 part4[]; };

layout(push_constant) uniform Push {
  uint w_off;         // WT's first element, in 16-byte units of binding 0
  uint s_off;         // Q8_0: the scale plane's first element, in 16-byte units of binding 0
  uint C, F;          // outputs (a multiple of PER_LANE), hidden units (Q8_0: of 32)
  uint h_off, y_off;  // h [F] and y [C] in act (floats)
  uint part_off;      // where the partial sums start in binding 2 (uints)
} pc;

// Step 1-2: the compacted units, [0, UNITS) indices and [UNITS, 2 UNITS) values (bits),
// Q8_0 also [2 UNITS, 2 UNITS + TEAMS) where each block's units start in the list; step 3
// reuses it as [TEAMS][8][LANES] team sums (8 WG = 2048 words, UNITS <= 1024).
shared uint sh[8u * WG];
shared uint sg_count[RED_MAX];
shared bool last_group;

#if defined(TYPE_Q8_0)
// 4 int8 quants of a word x = q ^ 0x80808080 (each byte the quant + 128) as floats, without
// int-to-float conversions (quarter rate on NVIDIA): byte b as the low mantissa of 2^23 is
// exactly 2^23 + b, and 2^23 + b - (2^23 + 128) is the quant.
vec4 quants4(uint x) {
  uvec4 b = uvec4(x & 0xFFu, (x >> 8) & 0xFFu, (x >> 16) & 0xFFu, x >> 24);
  return uintBitsToFloat(b | 0x4B000000u) - 8388736.0;
}
#else
// 8 weights of one 16-byte load, in element order.
void unpack8(uvec4 q, out vec4 lo, out vec4 hi) {
#if defined(TYPE_BF16)
  lo = uintBitsToFloat(uvec4(q.x << 16, q.x & 0xFFFF0000u, q.y << 16, q.y & 0xFFFF0000u));
  hi = uintBitsToFloat(uvec4(q.z << 16, q.z & 0xFFFF0000u, q.w << 16, q.w & 0xFFFF0000u));
#elif defined(TYPE_F16)
  lo = vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y));
  hi = vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w));
#else
#error "ffn_sparse.comp: build with -DTYPE_F16, -DTYPE_BF16 or -DTYPE_Q8_0"
#endif
}
#endif

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint slice = gl_WorkGroupID.x, group = gl_WorkGroupID.y, groups = gl_NumWorkGroups.y;
  // Lane `lane` of team `team` holds outputs [i0, i0 + PER_LANE), all in range or all out
  // (C % PER_LANE == 0).
  uint team = tid / LANES, lane = tid % LANES;
  uint i0 = slice * SLICE + PER_LANE * lane;
  bool in_c = i0 < pc.C;
#if defined(TYPE_Q8_0)
  // The 8 float16 scales of outputs [i0, i0 + 8) for the team's hidden block (16 bytes,
  // 16-byte aligned: C % 16 == 0), issued before the compaction.
  uint blk = group * TEAMS + team;
  uvec4 d8 = uvec4(0u);
  if (in_c && blk * 32u < pc.F) d8 = w4[pc.s_off + ((blk * pc.C + i0) >> 3)];
#endif

  // 1. This invocation's units [tid PER_INV, + PER_INV) of the group, then its place in
  // the list: the counts of earlier subgroups plus those of earlier invocations of its own.
  uint j0 = group * UNITS + tid * PER_INV;
  float hv[4];
  uint n = 0u;
  for (uint k = 0u; k < PER_INV; ++k) {
    hv[k] = 0.0;
    if (tid * PER_INV + k < UNITS && j0 + k < pc.F) hv[k] = act[pc.h_off + j0 + k];
    n += hv[k] != 0.0 ? 1u : 0u;
  }
  uint at = subgroupExclusiveAdd(n);
  uint sg_total = subgroupAdd(n);
  if (subgroupElect()) sg_count[gl_SubgroupID] = sg_total;
  barrier();
  uint count = 0u;
  for (uint i = 0u; i < gl_NumSubgroups; ++i) {
    at += i < gl_SubgroupID ? sg_count[i] : 0u;
    count += sg_count[i];
  }
#if defined(TYPE_Q8_0)
  if (lane == 0u) sh[2u * UNITS + team] = at;  // PER_INV = 2: invocation 16 t holds unit 32 t first
#endif
  for (uint k = 0u; k < PER_INV; ++k) {
    if (hv[k] != 0.0) {
      sh[at] = j0 + k;
      sh[UNITS + at] = floatBitsToUint(hv[k]);
      ++at;
    }
  }
  barrier();

  // 2. acc0, acc1: outputs i0 + [0, 4), [4, 8).
  vec4 acc0 = vec4(0.0), acc1 = vec4(0.0);
#if defined(TYPE_Q8_0)
  // The team's block: list entries [begin, end), in unit order.
  uint begin = sh[2u * UNITS + team];
  uint end = team + 1u < TEAMS ? sh[2u * UNITS + team + 1u] : count;
  for (uint e = begin; e < end; e += IN_FLIGHT) {
    uvec2 q[IN_FLIGHT];
    float hj[IN_FLIGHT];
    for (uint k = 0u; k < IN_FLIGHT; ++k) {
      uint u = e + k;
      hj[k] = 0.0;
      q[k] = uvec2(0u);
      if (in_c && u < end) {
        hj[k] = uintBitsToFloat(sh[UNITS + u]);
        q[k] = w2[2u * pc.w_off + ((sh[u] * pc.C + i0) >> 3)];
      }
    }
    for (uint k = 0u; k < IN_FLIGHT; ++k) {
      uvec2 x = q[k] ^ uvec2(0x80808080u);
      acc0 += hj[k] * quants4(x.x);
      acc1 += hj[k] * quants4(x.y);
    }
  }
  acc0 *= vec4(unpackHalf2x16(d8.x), unpackHalf2x16(d8.y));
  acc1 *= vec4(unpackHalf2x16(d8.z), unpackHalf2x16(d8.w));
#else
  // Team `team` takes list entries team, team + TEAMS, ...
  for (uint e = team; e < count; e += IN_FLIGHT * TEAMS) {
    uvec4 q[IN_FLIGHT];
    float hj[IN_FLIGHT];
    for (uint k = 0u; k < IN_FLIGHT; ++k) {
      uint u = e + k * TEAMS;
      hj[k] = 0.0;
      q[k] = uvec4(0u);
      if (in_c && u < count) {
        hj[k] = uintBitsToFloat(sh[UNITS + u]);
        q[k] = w4[pc.w_off + ((sh[u] * pc.C + i0) >> 3)];
      }
    }
    for (uint k = 0u; k < IN_FLIGHT; ++k) {
      vec4 lo, hi;
      unpack8(q[k], lo, hi);
      acc0 += hj[k] * lo;
      acc1 += hj[k] * hi;
    }
  }
#endif
  barrier();  // every team is done with the list: sh becomes the team sums

  // 3. Team sums at [team][e][lane] (outputs i0 + e, e < 8); invocation tid < 8 LANES adds
  // entry tid of every team, which is output PER_LANE (tid % LANES) + tid / LANES of the slice.
  for (uint e = 0u; e < 4u; ++e) {
    sh[(team * 8u + e) * LANES + lane] = floatBitsToUint(acc0[e]);
    sh[(team * 8u + 4u + e) * LANES + lane] = floatBitsToUint(acc1[e]);
  }
  barrier();
  uint i = slice * SLICE + PER_LANE * (tid % LANES) + tid / LANES;
  if (tid < 8u * LANES && i < pc.C) {
    float v = 0.0;
    for (uint t = 0u; t < TEAMS; ++t) v += uintBitsToFloat(sh[t * 8u * LANES + tid]);
    part[pc.part_off + group * pc.C + i] = floatBitsToUint(v);
  }

  // 4. The partial sums are visible device-wide before this workgroup counts itself done.
  memoryBarrierBuffer();
  barrier();
  if (tid == 0u) last_group = atomicAdd(part[slice], 1u) == groups - 1u;
  barrier();
  if (!last_group) return;
  memoryBarrierBuffer();
  // Invocation tid adds output quad `quad` of the slice over range `prt` of PARTS ranges of
  // groups, in group order, one 16-byte load per group (past the range: clamped, + 0.0);
  // then the ranges' sums are added in range order. On the H100 this tail's time grew with
  // its coherent loads per invocation: 2.9B Q8_0 (40 groups) as 80 scalar loads per
  // invocation took ~7 us a layer, as 20 quad loads (groups / PARTS) mat.value fell from
  // 0.88 to 0.64 ms a token.
  const uint QUADS = SLICE / 4u, PARTS = WG / QUADS;
  uint quad = tid % QUADS, prt = tid / QUADS;
  uint iq = slice * SLICE + 4u * quad;
  uint per = (groups + PARTS - 1u) / PARTS;
  uint g_begin = prt * per, g_end = min(g_begin + per, groups);
  uint qc = pc.part_off + min(iq, pc.C - 4u);
  vec4 v = vec4(0.0);
  for (uint g0 = g_begin; g0 < g_end; g0 += 8u) {
    vec4 pg[8];
    [[unroll]] for (uint g = 0u; g < 8u; ++g) {
      vec4 x = part4[(min(g0 + g, g_end - 1u) * pc.C + qc) >> 2];
      pg[g] = g0 + g < g_end ? x : vec4(0.0);
    }
    [[unroll]] for (uint g = 0u; g < 8u; ++g) v += pg[g];
  }
  // The ranges' sums in range order (sh: [PARTS][QUADS] quads).
  for (uint c = 0u; c < 4u; ++c) sh[(prt * QUADS + quad) * 4u + c] = floatBitsToUint(v[c]);
  barrier();
  if (tid < QUADS && iq < pc.C) {
    vec4 y = vec4(0.0);
    for (uint r = 0u; r < PARTS; ++r) {
      uint at = (r * QUADS + tid) * 4u;
      y += uintBitsToFloat(uvec4(sh[at], sh[at + 1u], sh[at + 2u], sh[at + 3u]));
    }
    for (uint c = 0u; c < 4u; ++c) act[pc.y_off + iq + c] = y[c];
  }
  if (tid == 0u) part[slice] = 0u;
}
