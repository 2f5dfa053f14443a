// Per-type device access to packed weights (layout: packed.h). Item<T> holds one work
// item's raw bytes in registers and offers:
//   load(W, row, item)      streaming 16-byte loads of the item (plus its scales)
//   dot(x, t, item)         quantised types: dot product with activation row t, int8 in
//                           shared memory (XQ), with __dp4a
//   dot_f(x, cols, item)    float types: dot product with an fp32 activation row
//                           (dot_f<true>: x rows 16-byte aligned, cols a multiple of 8)
//   dot_x(xv)               float types: the same with the item's 8 values of x given
//   values(v)               the item's weights as floats, v[k] for k < kElems
//   col(item, k)            the column of value k
// kElems is the item's weight count, kUnroll the items a matvec thread requests at once.
// Which quantised types read QuantX rows in split order: ops.h, quant_x_split_reader.
#pragma once

#include "backend/cuda/common.cuh"
#include "backend/cuda/packed.h"
#include "common/half.h"

namespace rwkv::cuda {

// Activations in shared memory for quantised weights, per block of 32 as two int8 terms:
// x ~= d0 q0 + d1 q1, where q1 quantises the rounding residual of q0 (relative error
// ~1e-5 instead of ~5e-3 for one int8 term; both dot products use __dp4a). XQ is one term:
// row t has q[t*cols ..], block b has scale d[t*nb + b] and sum of quants s[t*nb + b]. The
// readers of blocks of 32 take the rows in column order (block), the k-quants in either
// order (piece: 16-value piece p at (p % 4) * pa + (p / 4) * pb, ops.h: quant_x_offset).
struct XQ {
  const int8_t* q;
  const float* d;
  const int* s;
  int cols, nb;
  int pa, pb;
  __device__ __forceinline__ const int4* block(int t, int64_t b) const {
    return reinterpret_cast<const int4*>(q + size_t(t) * cols + 32 * b);
  }
  __device__ __forceinline__ int4 piece(int t, int64_t p) const {
    return *reinterpret_cast<const int4*>(q + size_t(t) * cols + (p & 3) * pa + (p >> 2) * pb);
  }
  __device__ __forceinline__ float scale(int t, int64_t b) const { return d[t * nb + b]; }
  __device__ __forceinline__ int sum(int t, int64_t b) const { return s[t * nb + b]; }
  // Blocks b .. b+1 (b even) or b .. b+3 (b a multiple of 4) in one load: the k-quants'
  // rows have a multiple of 8 blocks, so these are aligned in the QuantX buffers and in the
  // staged copy (ops.h, matvec_kernel.cuh: stage_quant).
  __device__ __forceinline__ float2 scale2(int t, int64_t b) const {
    return *reinterpret_cast<const float2*>(d + t * nb + b);
  }
  __device__ __forceinline__ int2 sum2(int t, int64_t b) const {
    return *reinterpret_cast<const int2*>(s + t * nb + b);
  }
  __device__ __forceinline__ float4 scale4(int t, int64_t b) const {
    return *reinterpret_cast<const float4*>(d + t * nb + b);
  }
};

__device__ __forceinline__ float h2f(uint32_t bits16) { return __half2float(__ushort_as_half(uint16_t(bits16))); }
// float(v) for |v| < 2^22 by its bits: v added to the bits of 1.5 * 2^23, whose ulp is 1,
// gives 1.5 * 2^23 + v exactly; one integer and one float addition. The Q8_0 item's sums (at
// most 2^19 in magnitude: 32 int8 x int8 terms) take it: +1.1% at 2.9B Q8_0 over the
// I2FP.F32.S32 conversion ptxas emits (NOTES.md run 158); in the k-quant items it lost 0.7%.
__device__ __forceinline__ float small_int_to_float(int v) { return __int_as_float(0x4B400000 + v) - 12582912.0f; }

__device__ __forceinline__ int dot8(const int (&w)[8], int4 a, int4 b) {
  int s = __dp4a(w[0], a.x, 0);
  s = __dp4a(w[1], a.y, s);
  s = __dp4a(w[2], a.z, s);
  s = __dp4a(w[3], a.w, s);
  s = __dp4a(w[4], b.x, s);
  s = __dp4a(w[5], b.y, s);
  s = __dp4a(w[6], b.z, s);
  return __dp4a(w[7], b.w, s);
}
__device__ __forceinline__ void unpack4(int4 v, int* out) {
  out[0] = v.x;
  out[1] = v.y;
  out[2] = v.z;
  out[3] = v.w;
}
// Bits 0..3 of b moved to bit 4 of bytes 0..3 (the fifth bit of four 5-bit quants). The
// multiply adds copies of the four bits shifted by 0, 7, 14 and 21, which never overlap, so
// bit i of copy i lands on bit 8i: four instructions instead of eleven.
__device__ __forceinline__ int spread_bit4(uint32_t b) { return int((((b & 0xFu) * 0x00204081u) & 0x01010101u) << 4); }
__device__ __forceinline__ float i8_byte(int word, int k) { return float(int8_t(uint32_t(word) >> (8 * k))); }

template <TensorType T>
struct Item;

// ---- float types -------------------------------------------------------------------------

// Reads E floats of x (global or shared memory) from column c0, zero beyond cols. kAligned:
// the caller knows that x + c0 is 16-byte aligned and c0 + E <= cols (no checks).
template <int E, bool kAligned = false>
__device__ __forceinline__ void load_x(const float* x, int64_t cols, int64_t c0, float (&xv)[E]) {
  if (kAligned || (c0 + E <= cols && (reinterpret_cast<uintptr_t>(x + c0) & 15) == 0)) {
#pragma unroll
    for (int k = 0; k < E; k += 4) {
      const float4 f = *reinterpret_cast<const float4*>(x + c0 + k);
      xv[k] = f.x;
      xv[k + 1] = f.y;
      xv[k + 2] = f.z;
      xv[k + 3] = f.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < E; ++k) xv[k] = c0 + k < cols ? x[c0 + k] : 0.f;
  }
}

template <>
struct Item<TensorType::F32> {
  static constexpr int kElems = 8, kUnroll = 8;
  static constexpr bool kQuant = false;
  int4 w0, w1;
  __device__ void load(const PackedView& W, int64_t row, int64_t it) {
    const uint8_t* p = W.plane[0] + W.stride[0] * row + 32 * it;
    w0 = ld_stream16(p);
    w1 = ld_stream16(p + 16);
  }
  __device__ void values(float* v) const {
    int w[8];
    unpack4(w0, w);
    unpack4(w1, w + 4);
    for (int k = 0; k < 8; ++k) v[k] = __int_as_float(w[k]);
  }
  __device__ float dot_x(const float (&xv)[8]) const {
    float v[8];
    values(v);
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) s = fmaf(v[k], xv[k], s);
    return s;
  }
  template <bool kAligned = false>
  __device__ float dot_f(const float* x, int64_t cols, int64_t it) const {
    float xv[8];
    load_x<8, kAligned>(x, cols, 8 * it, xv);
    return dot_x(xv);
  }
  static __device__ int64_t col(int64_t it, int k) { return 8 * it + k; }
};

// F16 and BF16 share the loads; only the conversion differs. One item is 16 bytes, so the
// lanes of a row read consecutive 16-byte pieces (every sector a warp touches is used whole).
template <bool kBF16>
struct ItemHalf {
  static constexpr int kElems = 8, kUnroll = 10;
  static constexpr bool kQuant = false;
  int4 w0;
  __device__ void load(const PackedView& W, int64_t row, int64_t it) {
    w0 = ld_stream16(W.plane[0] + W.stride[0] * row + 16 * it);
  }
  static __device__ __forceinline__ float2 pair(int w) {
    if constexpr (kBF16) {
      return make_float2(__uint_as_float(uint32_t(w) << 16), __uint_as_float(uint32_t(w) & 0xffff0000u));
    } else {
      return __half22float2(*reinterpret_cast<const __half2*>(&w));
    }
  }
  __device__ void values(float* v) const {
    int w[4];
    unpack4(w0, w);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = pair(w[k]);
      v[2 * k] = f.x;
      v[2 * k + 1] = f.y;
    }
  }
  __device__ float dot_x(const float (&xv)[8]) const {
    float v[8];
    values(v);
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k += 2) {
      s0 = fmaf(v[k], xv[k], s0);
      s1 = fmaf(v[k + 1], xv[k + 1], s1);
    }
    return s0 + s1;
  }
  template <bool kAligned = false>
  __device__ float dot_f(const float* x, int64_t cols, int64_t it) const {
    float xv[8];
    load_x<8, kAligned>(x, cols, 8 * it, xv);
    return dot_x(xv);
  }
  static __device__ int64_t col(int64_t it, int k) { return 8 * it + k; }
};
template <>
struct Item<TensorType::F16> : ItemHalf<false> {};
template <>
struct Item<TensorType::BF16> : ItemHalf<true> {};

// ---- legacy 32-element blocks --------------------------------------------------------------

// Q8_0: one block per item (32 quants in two 16-byte loads and the scale). Five items a
// round: a 2.9B row of 2,560 (16 threads) or 10,240 (64 threads) columns in one round, and no
// register spill at the one-row kernel's 128 (six spilled: NOTES.md run 50).
template <>
struct Item<TensorType::Q8_0> {
  static constexpr int kElems = 32, kUnroll = 5;
  static constexpr bool kQuant = true;
  int4 q0, q1;
  uint32_t d;
  __device__ void load(const PackedView& W, int64_t row, int64_t it) {
    const uint8_t* p = W.plane[0] + W.stride[0] * row;  // split halves (packed.h)
    q0 = ld_stream16(p + 16 * it);
    q1 = ld_stream16(p + 16 * (W.items + it));
    d = ld_stream2(W.plane[1] + W.stride[1] * row + 2 * it);
  }
  __device__ float dot(const XQ& x, int t, int64_t it) const {
    const int4* xb = x.block(t, it);
    int w[8];
    unpack4(q0, w);
    unpack4(q1, w + 4);
    return h2f(d) * x.scale(t, it) * small_int_to_float(dot8(w, xb[0], xb[1]));
  }
  __device__ void values(float* v) const {
    int w[8];
    unpack4(q0, w);
    unpack4(q1, w + 4);
    const float dd = h2f(d);
    for (int k = 0; k < 32; ++k) v[k] = dd * i8_byte(w[k / 4], k % 4);
  }
  static __device__ int64_t col(int64_t it, int k) { return 32 * it + k; }
};

// Q4_0, Q4_1, Q5_0, Q5_1: 16 bytes of nibbles (low: elements 0..15, high: 16..31),
// optional fifth bits and a minimum.
template <bool kFive, bool kMin>
struct ItemLegacy4 {
  static constexpr int kElems = 32, kUnroll = 8;
  static constexpr bool kQuant = true;
  int4 qs;
  uint32_t qh;  // fifth bits (Q5 only)
  uint32_t dm;  // d in the low half, m in the high half (m for Q4_1/Q5_1 only)
  __device__ void load(const PackedView& W, int64_t row, int64_t it) {
    qs = ld_stream16(W.plane[0] + W.stride[0] * row + 16 * it);
    const int meta = kFive ? 2 : 1;
    if constexpr (kFive) qh = ld_stream4(W.plane[1] + W.stride[1] * row + 4 * it);
    if constexpr (kMin) {
      dm = ld_stream4(W.plane[meta] + W.stride[meta] * row + 4 * it);
    } else {
      dm = ld_stream2(W.plane[meta] + W.stride[meta] * row + 2 * it);
    }
  }
  // quants as bytes: w[0..3] elements 0..15, w[4..7] elements 16..31 (unsigned 0..15 / 0..31)
  __device__ __forceinline__ void quants(int (&w)[8]) const {
    int v[4];
    unpack4(qs, v);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[i] = v[i] & 0x0F0F0F0F;
      w[4 + i] = (v[i] >> 4) & 0x0F0F0F0F;
      if constexpr (kFive) {
        w[i] |= spread_bit4(qh >> (4 * i));
        w[4 + i] |= spread_bit4(qh >> (16 + 4 * i));
      }
    }
  }
  __device__ float dot(const XQ& x, int t, int64_t it) const {
    int w[8];
    quants(w);
    const int4* xb = x.block(t, it);
    const int sumi = dot8(w, xb[0], xb[1]);
    const float dx = x.scale(t, it);
    const float d = h2f(dm & 0xffff);
    if constexpr (kMin) {
      return d * dx * float(sumi) + h2f(dm >> 16) * dx * float(x.sum(t, it));
    } else {
      const int offset = kFive ? 16 : 8;
      return d * dx * float(sumi - offset * x.sum(t, it));
    }
  }
  __device__ void values(float* v) const {
    int w[8];
    quants(w);
    const float d = h2f(dm & 0xffff);
    const float m = kMin ? h2f(dm >> 16) : -d * (kFive ? 16.f : 8.f);
    for (int k = 0; k < 32; ++k) v[k] = d * float((uint32_t(w[k / 4]) >> (8 * (k % 4))) & 0xff) + m;
  }
  static __device__ int64_t col(int64_t it, int k) { return 32 * it + k; }
};
template <>
struct Item<TensorType::Q4_0> : ItemLegacy4<false, false> {};
template <>
struct Item<TensorType::Q4_1> : ItemLegacy4<false, true> {};
template <>
struct Item<TensorType::Q5_0> : ItemLegacy4<true, false> {};
template <>
struct Item<TensorType::Q5_1> : ItemLegacy4<true, true> {};

// ---- k-quants ----------------------------------------------------------------------------

// Q4_K / Q5_K: item k (0..3) of super-block sb = sub-blocks 2k (low nibbles of qs[32k..32k+32))
// and 2k+1 (high nibbles), elements 64k .. 64k+63 of the super-block.
// The header plane (packed.h) gives the item d and dmin (one word) and its quarter's two
// scales and two mins as bytes (one word).
template <bool kFive>
struct ItemK45 {
  static constexpr int kElems = 64, kUnroll = kFive ? 2 : 3;
  static constexpr bool kQuant = true;
  int4 q0, q1;     // 32 bytes of qs
  uint32_t dd;     // d, dmin (f16)
  uint32_t scmin;  // scale 2k, scale 2k+1, min 2k, min 2k+1 (bytes)
  int4 h0, h1;     // qh[32] (Q5_K)
  __device__ void load(const PackedView& W, int64_t row, int64_t it) {
    const int64_t sb = it >> 2, k = it & 3;
    const uint8_t* p = W.plane[0] + W.stride[0] * row;  // split halves (packed.h)
    q0 = ld_stream16(p + 16 * it);
    q1 = ld_stream16(p + 16 * (W.items + it));
    const uint8_t* h = W.plane[1] + W.stride[1] * row + kKHeaderBytes * sb;
    dd = ld_stream4(h);
    scmin = ld_stream4(h + 4 + 4 * k);
    if constexpr (kFive) {
      const uint8_t* qh = W.plane[2] + W.stride[2] * row + 32 * sb;
      h0 = ld_stream16(qh);
      h1 = ld_stream16(qh + 16);
    }
  }
  // lo: sub-block 2k, hi: sub-block 2k+1, 32 unsigned quants each as bytes
  __device__ __forceinline__ void quants(int k, int (&lo)[8], int (&hi)[8]) const {
    int v[8];
    unpack4(q0, v);
    unpack4(q1, v + 4);
    int h[8];
    if constexpr (kFive) {
      unpack4(h0, h);
      unpack4(h1, h + 4);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      lo[i] = v[i] & 0x0F0F0F0F;
      hi[i] = (v[i] >> 4) & 0x0F0F0F0F;
      if constexpr (kFive) {
        lo[i] |= ((h[i] >> (2 * k)) & 0x01010101) << 4;
        hi[i] |= ((h[i] >> (2 * k + 1)) & 0x01010101) << 4;
      }
    }
  }
  __device__ __forceinline__ void scales(float& d0, float& m0, float& d1, float& m1) const {
    const float d = h2f(dd & 0xffff), dmin = h2f(dd >> 16);
    d0 = d * float(scmin & 0xff);
    d1 = d * float((scmin >> 8) & 0xff);
    m0 = dmin * float((scmin >> 16) & 0xff);
    m1 = dmin * float(scmin >> 24);
  }
  __device__ float dot(const XQ& x, int t, int64_t it) const {
    const int k = int(it & 3);
    int lo[8], hi[8];
    quants(k, lo, hi);
    float d0, m0, d1, m1;
    scales(d0, m0, d1, m1);
    const int64_t xb = 2 * it;  // x blocks of 32: sub-block 2k of super-block sb is block 8sb+2k
    const float2 dx = x.scale2(t, xb);
    const int2 sx = x.sum2(t, xb);
    return dx.x * (d0 * float(dot8(lo, x.piece(t, 4 * it), x.piece(t, 4 * it + 1))) - m0 * float(sx.x)) +
           dx.y * (d1 * float(dot8(hi, x.piece(t, 4 * it + 2), x.piece(t, 4 * it + 3))) - m1 * float(sx.y));
  }
  static __device__ int64_t col(int64_t it, int k) { return 64 * it + k; }
};

template <bool kFive>
__device__ __forceinline__ void k45_values(const ItemK45<kFive>& item, int64_t it, float* v) {
  const int k = int(it & 3);
  int lo[8], hi[8];
  item.quants(k, lo, hi);
  float d0, m0, d1, m1;
  item.scales(d0, m0, d1, m1);
  for (int e = 0; e < 32; ++e) {
    v[e] = d0 * float((uint32_t(lo[e / 4]) >> (8 * (e % 4))) & 0xff) - m0;
    v[32 + e] = d1 * float((uint32_t(hi[e / 4]) >> (8 * (e % 4))) & 0xff) - m1;
  }
}

template <>
struct Item<TensorType::Q4_K> : ItemK45<false> {};
template <>
struct Item<TensorType::Q5_K> : ItemK45<true> {};

// Q6_K: item (n, u) of super-block sb, it = 4 sb + 2 n + u: bytes l in [16u, 16u+16) of the
// half n, giving elements 128n + 32q + l for q = 0..3 (four runs of 16).
template <>
struct Item<TensorType::Q6_K> {
  static constexpr int kElems = 64, kUnroll = 3;
  static constexpr bool kQuant = true;
  int4 l0, l1, h;       // ql'[16u..], ql'[32+16u..], qh'[16u..]
  uint32_t sc01, sc23;  // scales[8n .. 8n+8) (int8)
  uint32_t d;
  __device__ void load(const PackedView& W, int64_t row, int64_t it) {
    const int64_t sb = it >> 2;
    const int n = int(it >> 1) & 1, u = int(it & 1);
    const uint8_t* ql = W.plane[0] + W.stride[0] * row;  // split halves (packed.h)
    l0 = ld_stream16(ql + 16 * it);
    l1 = ld_stream16(ql + 16 * (W.items + it));
    h = ld_stream16(W.plane[1] + W.stride[1] * row + 64 * sb + 32 * n + 16 * u);
    const uint8_t* sc = W.plane[2] + W.stride[2] * row + 16 * sb + 8 * n;
    sc01 = ld_stream4(sc);
    sc23 = ld_stream4(sc + 4);
    d = ld_stream2(W.plane[3] + W.stride[3] * row + 2 * sb);
  }
  // signed quants (q - 32) of run q (0..3) as bytes, 16 values in w[0..4)
  __device__ __forceinline__ void run(int q, int (&w)[4]) const {
    int a[4], b[4], hh[4];
    unpack4(l0, a);
    unpack4(l1, b);
    unpack4(h, hh);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int src = (q & 1) ? b[i] : a[i];
      const int nib = (q & 2) ? (src >> 4) & 0x0F0F0F0F : src & 0x0F0F0F0F;
      const int hi = ((hh[i] >> (2 * q)) & 0x03030303) << 4;
      w[i] = int(__vsub4(uint32_t(nib | hi), 0x20202020u));
    }
  }
  __device__ __forceinline__ float scale(int q, int u) const {
    const int idx = u + 2 * q;  // scales[8n + u + 2q]
    const uint32_t word = idx < 4 ? sc01 : sc23;
    return float(int8_t(word >> (8 * (idx & 3))));
  }
  __device__ float dot(const XQ& x, int t, int64_t it) const {
    const int64_t sb = it >> 2;
    const int n = int(it >> 1) & 1, u = int(it & 1);
    const float4 dx4 = x.scale4(t, 8 * sb + 4 * n);  // the x scales of blocks 8sb+4n+q, q = 0..3
    const float dx[4] = {dx4.x, dx4.y, dx4.z, dx4.w};
    float s = 0.f;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      int w[4];
      run(q, w);
      const int64_t xb = 8 * sb + 4 * n + q;
      const int4 a = x.piece(t, 2 * xb + u);  // values 16u..16u+15 of block xb
      int si = __dp4a(w[0], a.x, 0);
      si = __dp4a(w[1], a.y, si);
      si = __dp4a(w[2], a.z, si);
      si = __dp4a(w[3], a.w, si);
      s += scale(q, u) * dx[q] * float(si);
    }
    return h2f(d) * s;
  }
  __device__ void values(int64_t it, float* v) const {
    const int u = int(it & 1);
    const float dd = h2f(d);
    for (int q = 0; q < 4; ++q) {
      int w[4];
      run(q, w);
      const float sc = dd * scale(q, u);
      for (int e = 0; e < 16; ++e) v[16 * q + e] = sc * i8_byte(w[e / 4], e % 4);
    }
  }
  static __device__ int64_t col(int64_t it, int k) {
    const int64_t sb = it >> 2;
    const int n = int(it >> 1) & 1, u = int(it & 1);
    return 256 * sb + 128 * n + 32 * (k / 16) + 16 * u + (k % 16);
  }
};

// The item's weights as floats in item order (value k belongs to column Item::col(it, k)).
template <TensorType T>
__device__ __forceinline__ void item_values(const Item<T>& item, int64_t it, float* v) {
  if constexpr (T == TensorType::Q4_K || T == TensorType::Q5_K) {
    k45_values(item, it, v);
  } else if constexpr (T == TensorType::Q6_K) {
    item.values(it, v);
  } else {
    item.values(v);
  }
}

// Expands MACRO(T) inside a switch over the packable types (case T: MACRO(T); break;).
#define RWKV_CUDA_TYPE_CASES(MACRO) \
  case TensorType::F32:             \
    MACRO(TensorType::F32);         \
    break;                          \
  case TensorType::F16:             \
    MACRO(TensorType::F16);         \
    break;                          \
  case TensorType::BF16:            \
    MACRO(TensorType::BF16);        \
    break;                          \
  case TensorType::Q8_0:            \
    MACRO(TensorType::Q8_0);        \
    break;                          \
  case TensorType::Q4_0:            \
    MACRO(TensorType::Q4_0);        \
    break;                          \
  case TensorType::Q4_1:            \
    MACRO(TensorType::Q4_1);        \
    break;                          \
  case TensorType::Q5_0:            \
    MACRO(TensorType::Q5_0);        \
    break;                          \
  case TensorType::Q5_1:            \
    MACRO(TensorType::Q5_1);        \
    break;                          \
  case TensorType::Q4_K:            \
    MACRO(TensorType::Q4_K);        \
    break;                          \
  case TensorType::Q5_K:            \
    MACRO(TensorType::Q5_K);        \
    break;                          \
  case TensorType::Q6_K:            \
    MACRO(TensorType::Q6_K);        \
    break;

}  // namespace rwkv::cuda
