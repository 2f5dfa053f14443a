#version 450
// Probe shader (bench/probes/vk_sync_probe.cpp): one stage of a chain of dependent stages.
// Each workgroup g streams `per_wg` 16-byte words of this stage's weight bytes, then reads
// x[(7 g) % G] written by the previous stage (another workgroup) and writes y[g] = that + 1.
// Built twice:
//   (default)   one stage per dispatch; the host records a pipeline barrier between stages.
//   PERSISTENT  every stage in one dispatch of co-resident workgroups; a software grid
//               barrier (one atomic a workgroup, a spin on the count) between stages, the
//               stage's weights streamed before it (as a dependent launch would).
#extension GL_GOOGLE_include_directive : require
#include "vk_probe.glsl"

shared uint red[WG];

// XOR of this workgroup's share of stage s's weights (kept so the loads are not removed).
uint stream(uint s) {
  uint base = (s % pc.slots) * pc.stage_words + gl_WorkGroupID.x * pc.per_wg;
  uint acc = 0u;
  uint i = gl_LocalInvocationID.x;
  for (; i + 3u * WG < pc.per_wg; i += 4u * WG) {
    uvec4 q0 = w[base + i], q1 = w[base + i + WG], q2 = w[base + i + 2u * WG], q3 = w[base + i + 3u * WG];
    acc ^= (q0.x ^ q0.w) ^ (q1.x ^ q1.w) ^ (q2.x ^ q2.w) ^ (q3.x ^ q3.w);
  }
  for (; i < pc.per_wg; i += WG) acc ^= w[base + i].x ^ w[base + i].w;
  return acc;
}

void step(uint s) {
  uint g = gl_WorkGroupID.x, n = gl_NumWorkGroups.x;
  if (gl_LocalInvocationID.x == 0u) {
    uint src = (7u * g) % n;
    if ((s & 1u) == 0u) b[g] = a[src] + 1.0;
    else a[g] = b[src] + 1.0;
  }
}

void main() {
  uint acc = 0u;
#if defined(PERSISTENT)
  for (uint s = 0u; s < pc.stages; ++s) {
    acc ^= stream(pc.stage + s);
    if (s > 0u) grid_barrier(s * gl_NumWorkGroups.x);
    step(pc.stage + s);
  }
#else
  acc = stream(pc.stage);
  step(pc.stage);
#endif
  red[gl_LocalInvocationID.x] = acc;
  barrier();
  if (gl_LocalInvocationID.x == 0u) {
    uint x = 0u;
    for (uint i = 0u; i < WG; ++i) x ^= red[i];
    if (x == 0x9E3779B9u) sy.sink = x;  // never in practice; keeps the streams
  }
}
