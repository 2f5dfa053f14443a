#version 450
// Tiled matrix product for prefill (T > 16), any weight type: workgroup (x, y, z) computes
// the BM x BN tile (rows m0 = BM x, tokens n0 = BN y) of job z / splits over the K range of
// split z % splits. NT = 256 invocations give BN = 128 tokens, NT = 128 give BN = 64.
//
// Per K slice of BK elements, the weights (dequantised, 8 elements per piece) and x go into
// shared memory k-major; each invocation accumulates an 8 x 8 block in registers: rows
// 4 tm + {0..3} and 64 + 4 tm + {0..3}, tokens 4 tn + {0..3} and BN/2 + 4 tn + {0..3}, so a
// k step reads two vec4 of W and two of x for 64 FMAs. Of 32 consecutive invocations, 8 take
// adjacent tm and 4 adjacent tn: their W reads cover 128 contiguous bytes (no bank
// conflicts) and their x reads 4 broadcast vec4. Shared memory holds two slices: the next
// slice's global loads are issued into registers before the current slice's FMAs and
// stored into the other half after them, one barrier per slice. The loads are branch-free
// (addresses clamped, out-of-range pieces replaced by zeros) so they can be scheduled ahead.
//
// Split K (splits > 1, for grids too small to fill the GPU): each workgroup stores its
// partial tile in the scratch buffer and counts itself done on the tile's counter; the last
// one adds the splits' partials in split order (deterministic, no float atomics), applies
// bias and activation, stores y and resets the counter for the next dispatch.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "dequant.glsl"
#include "matrix_io.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint NT = 256;  // 256 or 128
#define BM 128u
#define BK 16u
const uint BN = NT / 2u;             // tokens per tile: BM x BN = 64 outputs per invocation
const uint WPT = BM * BK / 8u / NT;  // weight pieces per invocation and slice: 1 or 2

// Two slices: ws[(buf BK + k) BM/4 + m/4] holds W[m0 + m][k0 + k], xs likewise x[n0 + n][k0 + k].
shared vec4 ws[2u * BK * BM / 4u];
shared vec4 xs[2u * BK * BN / 4u];

// Split-K scratch (splits > 1): one counter per tile from word count_off, [tile][split][16][NT]
// vec4 partial sums from vec4 part_off. Tile (tile_base + x) gl_NumWorkGroups.y + y, where
// tile_base counts the row tiles of the dispatch's earlier jobs. Coherent: partials written
// by one workgroup are read by another.
layout(std430, set = 0, binding = 6) coherent buffer Partials { vec4 part4[]; };
layout(std430, set = 0, binding = 6) coherent buffer Counters { uint counter[]; };

Job jb;
uint kb, ke;                        // this split's K range [kb, ke), multiples of 8
uint wrb[WPT], wm[WPT], wk[WPT];    // weight piece q: bytes of row m0 + wm, elements [k0 + wk, +8)
uint xb, xn, xk;                    // x piece: vec4 index of token n0 + xn's row, elements [k0 + xk, +8)
vec4 wlo[WPT], whi[WPT], xlo, xhi;  // the loaded slice, on its way to shared memory
vec4 acc[16];  // acc[8 g + 2 i + h][j]: row m0 + 64 g + 4 tm + i, token n0 + BN/2 h + 4 tn + j

// Issues the global loads of the slice at k0 (pieces at or past ke read as zeros).
void load_slice(uint k0) {
  [[unroll]] for (uint q = 0u; q < WPT; ++q) {
    uint k = k0 + wk[q];
    vec4 lo, hi;
    DQ8(jb, wrb[q], min(k, jb.cols - 8u), lo, hi);
    bvec4 ok = bvec4(k < ke);
    wlo[q] = mix(vec4(0.0), lo, ok);
    whi[q] = mix(vec4(0.0), hi, ok);
  }
  uint k = k0 + xk;
  uint e = xb + (min(k, jb.cols - 8u) >> 2);
  bvec4 ok = bvec4(k < ke);
  xlo = mix(vec4(0.0), x4[e], ok);
  xhi = mix(vec4(0.0), x4[e + 1u], ok);
}

// Stores the loaded slice into shared half `buf`, transposed to k-major (scalar stores:
// consecutive invocations take consecutive rows / tokens, so they hit distinct banks).
void stash(uint buf) {
  [[unroll]] for (uint q = 0u; q < WPT; ++q) {
    [[unroll]] for (uint i = 0u; i < 4u; ++i) {
      uint e = (buf * BK + wk[q] + i) * BM + wm[q];
      ws[e >> 2][e & 3u] = wlo[q][i];
      e += 4u * BM;
      ws[e >> 2][e & 3u] = whi[q][i];
    }
  }
  [[unroll]] for (uint i = 0u; i < 4u; ++i) {
    uint e = (buf * BK + xk + i) * BN + xn;
    xs[e >> 2][e & 3u] = xlo[i];
    e += 4u * BN;
    xs[e >> 2][e & 3u] = xhi[i];
  }
}

void multiply(uint buf, uint tm, uint tn) {
  [[unroll]] for (uint k = 0u; k < BK; ++k) {
    uint wr = (buf * BK + k) * (BM / 4u), xr = (buf * BK + k) * (BN / 4u);
    vec4 a0 = ws[wr + tm], a1 = ws[wr + 16u + tm];
    vec4 b0 = xs[xr + tn], b1 = xs[xr + BN / 8u + tn];
    [[unroll]] for (uint i = 0u; i < 4u; ++i) {
      acc[2u * i] += a0[i] * b0;
      acc[2u * i + 1u] += a0[i] * b1;
      acc[2u * i + 8u] += a1[i] * b0;
      acc[2u * i + 9u] += a1[i] * b1;
    }
  }
}

void main() {
  uint splits = pc.splits;
  uint job = gl_WorkGroupID.z / splits, split = gl_WorkGroupID.z % splits;
  jb = jobs[pc.job_base + job];
  uint m0 = gl_WorkGroupID.x * BM, n0 = gl_WorkGroupID.y * BN;
  if (m0 >= jb.rows || n0 >= pc.n_tok) return;
  uint tid = gl_LocalInvocationID.x;
  uint tm = (tid & 7u) | (((tid >> 5) & 1u) << 3);  // 0..15
  uint tn = ((tid >> 3) & 3u) | ((tid >> 6) << 2);  // 0..BN/8-1

  // The split's K range: equal shares rounded up to whole slices (the last ones may be short
  // or empty).
  uint share = ((jb.cols + splits - 1u) / splits + BK - 1u) / BK * BK;
  kb = min(jb.cols, split * share);
  ke = min(jb.cols, kb + share);
  [[unroll]] for (uint q = 0u; q < WPT; ++q) {
    uint p = tid + q * NT;
    wm[q] = p % BM;
    wk[q] = p / BM * 8u;
    wrb[q] = jb.w_off + min(m0 + wm[q], jb.rows - 1u) * jb.row_bytes;  // rows past the end: never stored
  }
  xn = tid % BN;
  xk = tid / BN * 8u;
  xb = x_row(jb, min(n0 + xn, pc.n_tok - 1u));

  [[unroll]] for (uint i = 0u; i < 16u; ++i) acc[i] = vec4(0.0);
  uint slices = (ke - kb + BK - 1u) / BK;
  load_slice(kb);
  stash(0u);
  barrier();
  for (uint s = 0u; s < slices; ++s) {
    load_slice(kb + (s + 1u) * BK);  // past the range after the last slice: zeros, unused
    multiply(s & 1u, tm, tn);
    stash((s + 1u) & 1u);
    barrier();
  }

  if (splits > 1u) {
    uint tile = (jb.tile_base + gl_WorkGroupID.x) * gl_NumWorkGroups.y + gl_WorkGroupID.y;
    uint base = pc.part_off + tile * splits * 16u * NT + tid;  // + (split 16 + i) NT
    [[unroll]] for (uint i = 0u; i < 16u; ++i) part4[base + (split * 16u + i) * NT] = acc[i];
    // The partials are visible device-wide before this workgroup counts itself done.
    memoryBarrierBuffer();
    barrier();
    // Whether this is the last split to finish, passed through ws (free after the loop; a
    // separate shared flag would not fit next to the slices in 32 KB).
    if (tid == 0u) ws[0].x = atomicAdd(counter[pc.count_off + tile], 1u) == splits - 1u ? 1.0 : 0.0;
    barrier();
    if (ws[0].x == 0.0) return;
    memoryBarrierBuffer();
    [[unroll]] for (uint i = 0u; i < 16u; ++i) acc[i] = vec4(0.0);
    for (uint s = 0u; s < splits; ++s) {
      [[unroll]] for (uint i = 0u; i < 16u; ++i) acc[i] += part4[base + (s * 16u + i) * NT];
    }
    if (tid == 0u) counter[pc.count_off + tile] = 0u;
  }

  [[unroll]] for (uint i = 0u; i < 8u; ++i) {
    uint m = m0 + 4u * tm + (i & 3u) + (i >> 2) * 64u;
    if (m >= jb.rows) continue;
    [[unroll]] for (uint h = 0u; h < 2u; ++h) {
      vec4 v = acc[2u * (i & 3u) + 8u * (i >> 2) + h];
      [[unroll]] for (uint j = 0u; j < 4u; ++j) {
        uint n = n0 + 4u * tn + h * (BN / 2u) + j;
        if (n < pc.n_tok) store(jb, n, m, v[j]);
      }
    }
  }
}
