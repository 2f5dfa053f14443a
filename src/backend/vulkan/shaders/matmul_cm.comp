#version 450
// Tiled matrix product on tensor cores (VK_NV_cooperative_matrix), for prefill on devices
// that have them: workgroup (x, y, z) computes the BM x BN tile (tokens n0 = BN x, rows
// m0 = BM y; tokens vary fastest, so the workgroups that share a W tile run together) of
// job z / splits over the K range of split z % splits.
//
// 256 invocations, 8 subgroups of 32 (the host checks the subgroup size) in a 2 (rows) x 4
// (tokens) grid: subgroup g multiplies rows 64 (g & 1) + [0, 64) by tokens 32 (g >> 1) +
// [0, 32) as 4 x 4 float16 16x8x16 fragments with float32 accumulators. K runs in slices of
// BK = 32; two slices live in shared memory as float16 rows of BK + 8 (80 bytes: the 16-byte
// pieces of 8 consecutive rows fall in distinct banks, for the fragment loads and for the
// stores), so one barrier per slice suffices: the next slice's global loads are issued into
// registers before the current slice's fragments multiply and stored into the other buffer
// after them. (Slices of 64 held once and tiles of 64 tokens, which trade those staging
// registers against workgroups per SM, measured slower: bench/RESULTS-vulkan.md.) A slice
// is 128 x 4 pieces of 8 elements per operand, two per invocation, each one 16-byte shared
// store: F16 weights as loaded (one 16-byte global load), other types dequantised
// (dequant.glsl) and rounded to float16 at load, x (float32, two 16-byte loads) multiplied
// by the job's x_scale and rounded, so large activations (relu^2) stay in float16 range; the
// result is divided by x_scale. Invocation i takes piece (i >> 3) & 3 of rows R and R + 64,
// R = (i & 7) | (i >> 5) 8: 8 consecutive invocations the same piece of 8 adjacent rows
// (tokens), a subgroup all 4 pieces of those rows (whole 64-byte runs of F16 weights,
// 128-byte runs of x). Loads are branch-free (addresses clamped, pieces past the K range
// replaced by zeros); rows and tokens past the ends are computed from clamped copies and
// never stored.
//
// Results: each subgroup stages one 64 x 8 column of fragments at a time in shared memory
// (float32, column stride LDC) and stores it with matrix_io.glsl's store() (bias,
// activation), 32 consecutive rows per store instruction.
//
// Float16 activations (built with X16, and Y16; prefill steps whose producers write them):
// with X16, x row t is float16 at half index 2 x_off + t x_stride (x_stride a multiple of
// 8), already multiplied by x_scale: one 16-byte load per piece instead of two, a third
// fewer bytes per slice from L2, where most of the loop's time goes (bench/RESULTS-vulkan.md,
// session 9). With Y16 the results go out as float16, multiplied by specialisation constant
// Y16_SCALE (the consumer's x_scale), at half index 2 y_base + t y_stride + (y_off - y_base
// + row): lane l stores rows 2l and 2l + 1 as one 32-bit pair. Separate modules, so that the
// float32 form keeps exactly its code.
//
// Split K (splits > 1, for grids too small to fill the GPU; the plan is the tiled matmul's,
// Kernels::matmul_plan): each workgroup stores its accumulators in the scratch buffer and
// counts itself done on the tile's counter; the last one loads the splits' partials back as
// fragments, adds them in split order (deterministic, no float atomics), resets the counter
// for the next dispatch and stores the sums as an unsplit workgroup does. (Adding them per
// output in the store loop, one dependent load per split, made the last workgroup of every
// tile a long tail: 2.9B F16 pp512 ~9,900 -> ~11,700 tok/s without it.)
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "common.glsl"
#include "dequant.glsl"
#include "matrix_io.glsl"

layout(local_size_x = 256) in;
#if defined(Y16)
layout(constant_id = 0) const float Y16_SCALE = 1.0;
#endif
#define BM 128u
#define BN 128u
#define BK 32u
#define LDS 5u           // row stride of the shared tiles in uvec4 (8 float16): BK + 8 float16
#define TILE (BM * LDS)  // uvec4 per operand and slice (BM == BN)
#define RSTEP 64u        // rows (tokens) between an invocation's two pieces
#define LDC 17u          // column stride of the staged results in uvec4 (68 floats: no bank conflicts)
#define PART 16384u      // floats of one workgroup's partial tile (BM x BN)

// sa[(buf BM + m) LDS + k / 8] holds W[m0 + m][k0 + k .. +8] of slice buffer buf as float16,
// sb likewise x[n0 + n][k0 + k .. +8] (read as the K x N operand it is column-major). After
// the loop, sa stages the results (8 blocks of 8 LDC uvec4: 1088 of its 1280) and sb[0].x
// passes the split-K "last one" flag.
shared uvec4 sa[2u * TILE];
shared uvec4 sb[2u * TILE];

// Split-K scratch (splits > 1): one counter per tile from word count_off; from float
// 4 part_off, [tile][split][subgroup 8][fragment 16][token 8][row 16] partial sums. Tile
// (tile_base + y) gl_NumWorkGroups.x + x, where tile_base counts the row tiles of the
// dispatch's earlier jobs. Coherent: partials written by one workgroup are read by another.
layout(std430, set = 0, binding = 6) coherent buffer Partials { float part[]; };
layout(std430, set = 0, binding = 6) coherent buffer Counters { uint counter[]; };
// The activations as float16: aliases of bindings 2 and 3.
#if defined(X16)
layout(std430, set = 0, binding = 2) readonly buffer X16s { uvec4 x16[]; };
#endif
#if defined(Y16)
layout(std430, set = 0, binding = 3) writeonly buffer Y16s { uint y16[]; };
#endif

#define FragA fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define FragB fcoopmatNV<16, gl_ScopeSubgroup, 16, 8>
#define FragC fcoopmatNV<32, gl_ScopeSubgroup, 16, 8>

Job jb;
uint kb, ke;      // this split's K range [kb, ke), multiples of 8
uint pr, pk;      // the invocation's pieces q = 0, 1: rows (tokens) pr + q RSTEP, elements [8 pk, +8)
uint mr;          // m0 + pr
uint xb[2];       // piece q's x row (vec4 index; X16: uvec4 index of its float16 row)
uvec4 wraw[2];    // the loaded slice of W as float16, on its way to shared memory
#if defined(X16)
uvec4 xh[2];
#else
vec4 xlo[2], xhi[2];
#endif

uvec4 pack8(vec4 lo, vec4 hi) {
  return uvec4(packHalf2x16(lo.xy), packHalf2x16(lo.zw), packHalf2x16(hi.xy), packHalf2x16(hi.zw));
}

// Issues the global loads of the slice at k0 (pieces at or past ke read as zeros).
void load_slice(uint k0) {
  uint k = k0 + 8u * pk;
  uint kc = min(k, jb.cols - 8u);
  bool ok = k < ke;
  [[unroll]] for (uint q = 0u; q < 2u; ++q) {
    uint rb = jb.w_off + min(mr + q * RSTEP, jb.rows - 1u) * jb.row_bytes;  // piece q's weight row (bytes)
#if defined(TYPE_F16)
    wraw[q] = mix(uvec4(0u), wq4[jb.wbind].w[(rb + kc * 2u) >> 4], bvec4(ok));
#else
    vec4 lo, hi;
    DQ8(jb, rb, kc, lo, hi);
    wraw[q] = mix(uvec4(0u), pack8(lo, hi), bvec4(ok));
#endif
#if defined(X16)
    xh[q] = mix(uvec4(0u), x16[xb[q] + (kc >> 3)], bvec4(ok));
#else
    uint e = xb[q] + (kc >> 2);
    vec4 a = x4[e], b = x4[e + 1u];
    xlo[q] = mix(vec4(0.0), a, bvec4(ok));
    xhi[q] = mix(vec4(0.0), b, bvec4(ok));
#endif
  }
}

// Stores the loaded slice into shared buffer `buf` as float16.
void stash(uint buf) {
  [[unroll]] for (uint q = 0u; q < 2u; ++q) {
    uint e = buf * TILE + (pr + q * RSTEP) * LDS + pk;
    sa[e] = wraw[q];
#if defined(X16)
    sb[e] = xh[q];
#else
    sb[e] = pack8(xlo[q] * jb.x_scale, xhi[q] * jb.x_scale);
#endif
  }
}

void main() {
  uint splits = pc.splits;
  uint job = gl_WorkGroupID.z / splits, split = gl_WorkGroupID.z % splits;
  jb = jobs[pc.job_base + job];
  uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
  if (m0 >= jb.rows || n0 >= pc.n_tok) return;
  uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
  uint sm = (sg & 1u) * 64u, sn = (sg >> 1) * 32u;

  // The split's K range: equal shares rounded up to whole slices (the last ones may be short
  // or empty).
  uint share = ((jb.cols + splits - 1u) / splits + BK - 1u) / BK * BK;
  kb = min(jb.cols, split * share);
  ke = min(jb.cols, kb + share);
  pr = (tid & 7u) | ((tid >> 5) << 3);
  pk = (tid >> 3) & 3u;
  mr = m0 + pr;
  [[unroll]] for (uint q = 0u; q < 2u; ++q) {
    uint t = min(n0 + pr + q * RSTEP, pc.n_tok - 1u);
#if defined(X16)
    xb[q] = (2u * jb.x_off + t * jb.x_stride) >> 3;
#else
    xb[q] = x_row(jb, t);
#endif
  }

  FragC acc[4][4];  // acc[i][j]: rows 16 i, tokens 8 j of the subgroup's 64 x 32
  [[unroll]] for (uint i = 0u; i < 4u; ++i) {
    [[unroll]] for (uint j = 0u; j < 4u; ++j) acc[i][j] = FragC(0.0);
  }
  uint slices = (ke - kb + BK - 1u) / BK;
  load_slice(kb);
  stash(0u);
  barrier();
  for (uint s = 0u; s < slices; ++s) {
    load_slice(kb + (s + 1u) * BK);  // past the range after the last slice: zeros, unused
    uint buf = (s & 1u) * TILE;
    [[unroll]] for (uint kk = 0u; kk < BK / 8u; kk += 2u) {  // two K steps of 16 (2 uvec4)
      FragA a[4];
      FragB b[4];
      [[unroll]] for (uint i = 0u; i < 4u; ++i) coopMatLoadNV(a[i], sa, buf + (sm + 16u * i) * LDS + kk, LDS, false);
      [[unroll]] for (uint j = 0u; j < 4u; ++j) coopMatLoadNV(b[j], sb, buf + (sn + 8u * j) * LDS + kk, LDS, true);
      [[unroll]] for (uint i = 0u; i < 4u; ++i) {
        [[unroll]] for (uint j = 0u; j < 4u; ++j) acc[i][j] = coopMatMulAddNV(a[i], b[j], acc[i][j]);
      }
    }
    stash((s + 1u) & 1u);
    barrier();
  }

  if (splits > 1u) {
    // The partials go out as fragments; the last workgroup of the tile reads them back with
    // 16 independent fragment loads per split.
    uint tile = (jb.tile_base + gl_WorkGroupID.y) * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint base = 4u * pc.part_off + tile * splits * PART + sg * (PART / 8u);
    [[unroll]] for (uint i = 0u; i < 4u; ++i) {
      [[unroll]] for (uint j = 0u; j < 4u; ++j) {
        coopMatStoreNV(acc[i][j], part, base + split * PART + (4u * i + j) * 128u, 16u, true);
      }
    }
    // The partials are visible device-wide before this workgroup counts itself done.
    memoryBarrierBuffer();
    barrier();
    if (tid == 0u) sb[0].x = atomicAdd(counter[pc.count_off + tile], 1u) == splits - 1u ? 1u : 0u;
    barrier();
    if (sb[0].x == 0u) return;
    memoryBarrierBuffer();
    if (tid == 0u) counter[pc.count_off + tile] = 0u;
    [[unroll]] for (uint i = 0u; i < 4u; ++i) {
      [[unroll]] for (uint j = 0u; j < 4u; ++j) acc[i][j] = FragC(0.0);
    }
    for (uint s = 0u; s < splits; ++s) {
      [[unroll]] for (uint i = 0u; i < 4u; ++i) {
        [[unroll]] for (uint j = 0u; j < 4u; ++j) {
          FragC p;
          coopMatLoadNV(p, part, base + s * PART + (4u * i + j) * 128u, 16u, true);
          acc[i][j] = acc[i][j] + p;
        }
      }
    }
  }

  // Per column j of fragments: lane `lane` stores rows lane and lane + 32 of the subgroup's
  // 64 (Y16: rows 2 lane and 2 lane + 1), tokens 8 j + [0, 8).
  float unscale = 1.0 / jb.x_scale;
  uint stage = sg * 8u * LDC;  // the subgroup's 64 x 8 staging block in sa (uvec4)
  [[unroll]] for (uint j = 0u; j < 4u; ++j) {
    [[unroll]] for (uint i = 0u; i < 4u; ++i) coopMatStoreNV(acc[i][j], sa, stage + 4u * i, LDC, true);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    [[unroll]] for (uint c = 0u; c < 8u; ++c) {
      uint n = n0 + sn + 8u * j + c;
#if defined(Y16)
      uint r = 2u * lane;  // rows r, r + 1 of the subgroup's 64
      uvec4 q = sa[stage + c * LDC + (r >> 2)];
      vec2 v = uintBitsToFloat((r & 3u) == 0u ? q.xy : q.zw);
      uint m = m0 + sm + r;
      if (m < jb.rows && n < pc.n_tok) {
        bool pair = m + 1u < jb.rows;
        vec2 bias = vec2(0.0);
        if (jb.bias_off != NONE) bias = vec2(vecs[jb.bias_off + m], pair ? vecs[jb.bias_off + m + 1u] : 0.0);
        uint act = jb.flags & 0xFFu;
        vec2 o = vec2(activate(v.x * unscale + bias.x, act), activate(v.y * unscale + bias.y, act)) * Y16_SCALE;
        y16[(2u * jb.y_base + n * jb.y_stride + (jb.y_off - jb.y_base) + m) >> 1] = packHalf2x16(vec2(o.x, pair ? o.y : 0.0));
      }
#else
      [[unroll]] for (uint h = 0u; h < 2u; ++h) {
        uint r = lane + 32u * h;  // row of the subgroup's 64
        float v = uintBitsToFloat(sa[stage + c * LDC + (r >> 2)][r & 3u]);
        uint m = m0 + sm + r;
        if (m < jb.rows && n < pc.n_tok) store(jb, n, m, v * unscale);
      }
#endif
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
  }
}
