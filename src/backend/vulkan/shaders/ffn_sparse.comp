#version 450
// ReLU^2-sparse FFN value product for one activation row (decode, T = 1):
//   y[i] = sum over the hidden units j with h[j] != 0 of WT[j][i] h[j],   i < C, j < F,
// WT [F x C]: the value matrix transposed at upload (WeightStore::add_transposed), one row
// of C 16-bit weights (F16 or BF16, -DTYPE_<type>) per hidden unit, so a unit that ReLU^2
// zeroed costs no weight bytes. Lossless: the same products as the dense matvec, summed in
// another (fixed) order.
//
// Grid: x = slices of 8 LANES outputs, y = groups of UNITS hidden units. A workgroup
//  1. compacts its group's non-zero units (index, value) into shared memory: a prefix sum
//     of per-invocation counts over subgroup adds (only the basic and arithmetic subgroup
//     operations the backend already requires; no ballot);
//  2. deals them out to teams of LANES invocations (unit k of the list to team k % TEAMS);
//     an invocation holds 8 consecutive outputs, one 16-byte load per unit, IN_FLIGHT
//     units' loads issued before their first use;
//  3. adds its teams' sums in team order and stores them as the group's partial sums;
//  4. counts itself done on its slice's counter; the last workgroup of the slice adds the
//     groups' partial sums in group order into y and resets the counter for the next
//     dispatch. Deterministic (fixed orders, no float atomics), and no second dispatch.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#define WG 256u
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint LANES = 16;   // invocations per team: 8, 16 or 32
layout(constant_id = 1) const uint UNITS = 256;  // hidden units per workgroup: 64 .. 1024
const uint TEAMS = WG / LANES;
const uint SLICE = 8u * LANES;             // outputs per workgroup
const uint PER_INV = (UNITS + WG - 1u) / WG;  // hidden units per invocation in step 1 (<= 4)
#define IN_FLIGHT 8u

layout(std430, set = 0, binding = 0) readonly buffer Weights { uvec4 w4[]; };
layout(std430, set = 0, binding = 1) buffer Act { float act[]; };
// [0, slices): one counter per slice; from part_off: [groups x C] partial sums (float bits).
// Coherent: partial sums written by one workgroup are read by another.
layout(std430, set = 0, binding = 2) coherent buffer Partials { uint part[]; };

layout(push_constant) uniform Push {
  uint w_off;         // WT's first element, in 16-byte units of binding 0
  uint C, F;          // outputs (a multiple of 8), hidden units
  uint h_off, y_off;  // h [F] and y [C] in act (floats)
  uint part_off;      // where the partial sums start in binding 2 (uints)
} pc;

// Step 1-2: the compacted units, [0, UNITS) indices and [UNITS, 2 UNITS) values (bits);
// step 3 reuses it as [TEAMS][8][LANES] team sums (8 WG = 2048 words, UNITS <= 1024).
shared uint sh[8u * WG];
shared uint sg_count[RED_MAX];
shared bool last_group;

// 8 weights of one 16-byte load, in element order.
void unpack8(uvec4 q, out vec4 lo, out vec4 hi) {
#if defined(TYPE_BF16)
  lo = uintBitsToFloat(uvec4(q.x << 16, q.x & 0xFFFF0000u, q.y << 16, q.y & 0xFFFF0000u));
  hi = uintBitsToFloat(uvec4(q.z << 16, q.z & 0xFFFF0000u, q.w << 16, q.w & 0xFFFF0000u));
#elif defined(TYPE_F16)
  lo = vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y));
  hi = vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w));
#else
#error "ffn_sparse.comp: build with -DTYPE_F16 or -DTYPE_BF16"
#endif
}

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint slice = gl_WorkGroupID.x, group = gl_WorkGroupID.y, groups = gl_NumWorkGroups.y;

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
  for (uint k = 0u; k < PER_INV; ++k) {
    if (hv[k] != 0.0) {
      sh[at] = j0 + k;
      sh[UNITS + at] = floatBitsToUint(hv[k]);
      ++at;
    }
  }
  barrier();

  // 2. Team `team` takes list entries team, team + TEAMS, ...; lane `lane` outputs
  // [i0, i0 + 8), all in range or all out (C % 8 == 0).
  uint team = tid / LANES, lane = tid % LANES;
  uint i0 = slice * SLICE + 8u * lane;
  bool in_c = i0 < pc.C;
  vec4 acc_lo = vec4(0.0), acc_hi = vec4(0.0);
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
      acc_lo += hj[k] * lo;
      acc_hi += hj[k] * hi;
    }
  }
  barrier();  // every team is done with the list: sh becomes the team sums

  // 3. Team sums at [team][e][lane]; invocation tid < SLICE adds entry tid of every team,
  // which is output 8 (tid % LANES) + tid / LANES of the slice.
  for (uint e = 0u; e < 4u; ++e) {
    sh[(team * 8u + e) * LANES + lane] = floatBitsToUint(acc_lo[e]);
    sh[(team * 8u + 4u + e) * LANES + lane] = floatBitsToUint(acc_hi[e]);
  }
  barrier();
  uint i = slice * SLICE + 8u * (tid % LANES) + tid / LANES;
  bool mine = tid < SLICE && i < pc.C;
  if (mine) {
    float v = 0.0;
    for (uint t = 0u; t < TEAMS; ++t) v += uintBitsToFloat(sh[t * SLICE + tid]);
    part[pc.part_off + group * pc.C + i] = floatBitsToUint(v);
  }

  // 4. The partial sums are visible device-wide before this workgroup counts itself done.
  memoryBarrierBuffer();
  barrier();
  if (tid == 0u) last_group = atomicAdd(part[slice], 1u) == groups - 1u;
  barrier();
  if (!last_group) return;
  memoryBarrierBuffer();
  if (mine) {
    // Groups in order, eight loads in flight at a time (past the last group: + 0.0, exact).
    float v = 0.0;
    for (uint g0 = 0u; g0 < groups; g0 += 8u) {
      float p[8];
      for (uint g = 0u; g < 8u; ++g) {
        p[g] = 0.0;
        if (g0 + g < groups) p[g] = uintBitsToFloat(part[pc.part_off + (g0 + g) * pc.C + i]);
      }
      for (uint g = 0u; g < 8u; ++g) v += p[g];
    }
    act[pc.y_off + i] = v;
  }
  if (tid == 0u) part[slice] = 0u;
}
