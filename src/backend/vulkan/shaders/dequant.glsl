// Reading the stored weight bytes of the tensor types (compile with -DTYPE_<type>). The
// block layouts come from blocks.glsl, generated from src/tensor/blocks.h at build time.
// Weights are bound as arrays of 32-bit words (binding 0, four buffers: the jobs of one
// dispatch may live in different device buffers). Blocks are only 2-byte aligned (Q5_0 is
// 22 bytes), so 32-bit fields are read from two words where needed; Q8_0, Q4_0, Q4_1, Q5_0,
// Q5_1, Q4_K, Q5_K and Q6_K are regrouped at upload for aligned loads (see dq8_q8_0,
// dq8_legacy, dq8_k4, dq8_q6_k).
#include "blocks.glsl"

layout(std430, set = 0, binding = 0) readonly buffer WeightWords { uint w[]; } wq[4];
layout(std430, set = 0, binding = 0) readonly buffer WeightPairs { uvec2 w[]; } wq2[4];
layout(std430, set = 0, binding = 0) readonly buffer WeightQuads { uvec4 w[]; } wq4[4];

// Byte `off` (any alignment), a 16-bit field at an even offset.
uint ld8(uint b, uint off) { return (wq[b].w[off >> 2] >> ((off & 3u) * 8u)) & 0xFFu; }
uint ld16(uint b, uint off) { return (wq[b].w[off >> 2] >> ((off & 2u) * 8u)) & 0xFFFFu; }
float f16(uint bits) { return unpackHalf2x16(bits).x; }
// The four bytes of q as unsigned values, lowest byte first, without int-to-float
// conversions (quarter rate on NVIDIA GPUs): byte q in the low mantissa bits of 2^23 is the
// float 2^23 + q exactly.
vec4 u8x4_bits(uint q) {
  uvec4 m = (uvec4(q) >> uvec4(0u, 8u, 16u, 24u)) & 0xFFu;
  return uintBitsToFloat(m | 0x4B000000u) - 8388608.0;
}
// The four bytes of q sign-extended, lowest byte first.
vec4 i8x4(uint q) {
  int s = int(q);
  return vec4(bitfieldExtract(s, 0, 8), bitfieldExtract(s, 8, 8), bitfieldExtract(s, 16, 8), bitfieldExtract(s, 24, 8));
}

// dq8_<type>: elements [e, e+8) of the row whose bytes start at `rb` in buffer b, e % 8 == 0.
// Eight consecutive elements always share one block and one scale (sub-blocks are 16 or 32).
// A TYPE_<type> build defines dq8 as that type's reader.
#if defined(TYPE_F32)
void dq8_f32(uint b, uint rb, uint e, out vec4 lo, out vec4 hi) {
  uint i = (rb + e * 4u) >> 4;
  lo = uintBitsToFloat(wq4[b].w[i]);
  hi = uintBitsToFloat(wq4[b].w[i + 1u]);
}
#endif
#if defined(TYPE_F16)
void dq8_f16(uint b, uint rb, uint e, out vec4 lo, out vec4 hi) {
  uvec4 q = wq4[b].w[(rb + e * 2u) >> 4];
  lo = vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y));
  hi = vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w));
}
#endif
#if defined(TYPE_BF16)
vec2 bf16x2(uint q) { return uintBitsToFloat(uvec2(q << 16, q & 0xFFFF0000u)); }
void dq8_bf16(uint b, uint rb, uint e, out vec4 lo, out vec4 hi) {
  uvec4 q = wq4[b].w[(rb + e * 2u) >> 4];
  lo = vec4(bf16x2(q.x), bf16x2(q.y));
  hi = vec4(bf16x2(q.z), bf16x2(q.w));
}
#endif
#if defined(TYPE_Q8_0)
// Q8_0 rows are grouped at upload (backend/vulkan/grouped_layout.h): group e / 256 of the row,
// the scale of its block (e / 32) % 8 at byte 2 * that, the quants at Q8G_QS + e % 256, so the
// 8 quants are one aligned 8-byte load (rows start 16-byte aligned).
void dq8_q8_0(uint b, uint rb, uint e, out vec4 lo, out vec4 hi) {
  uint gb = rb + (e >> 8) * Q8G_BYTES;
  float d = f16(ld16(b, gb + ((e >> 4) & 14u)));
  uvec2 q = wq2[b].w[(gb + Q8G_QS + (e & 255u)) >> 3];
  lo = i8x4(q.x) * d;
  hi = i8x4(q.y) * d;
}
#endif
#if defined(TYPE_Q4_0) || defined(TYPE_Q4_1) || defined(TYPE_Q5_0) || defined(TYPE_Q5_1)
// Q4_0, Q4_1, Q5_0 and Q5_1 rows are grouped at upload (backend/vulkan/grouped_layout.h): group
// e / 256 of the row holds its 8 blocks' fields as arrays, d at byte 2j for block j, m at
// LG_M + 2j, qh at LG_QH + 4j, the 16 quant bytes at LG_QS + 16j (16-byte aligned). In a block,
// low nibbles of qs[0..16) are elements 0..15, high nibbles 16..31, bit i of qh the fifth bit
// of element i; y = q d + m (Q4_0: m = -8d, Q5_0: m = -16d).
#if defined(TYPE_Q4_0)
#define LG_BYTES Q4_0G_BYTES
#define LG_QS Q4_0G_QS
#elif defined(TYPE_Q4_1)
#define LG_BYTES Q4_1G_BYTES
#define LG_QS Q4_1G_QS
#define LG_M Q4_1G_M
#elif defined(TYPE_Q5_0)
#define LG_BYTES Q5_0G_BYTES
#define LG_QS Q5_0G_QS
#define LG_QH Q5_0G_QH
#else
#define LG_BYTES Q5_1G_BYTES
#define LG_QS Q5_1G_QS
#define LG_M Q5_1G_M
#define LG_QH Q5_1G_QH
#endif
// Bits 0..3 of h moved to bit 4 of bytes 0..3 (the fifth bits of four quants).
// The multiply adds copies of the four bits shifted by 0, 7, 14 and 21, which never overlap,
// so bit i of copy i lands on bit 8i.
uint spread_bit4(uint h) { return (((h & 0xFu) * 0x00204081u) & 0x01010101u) << 4; }
// Scale d and offset m of the block of element e, the byte offset of its quants, and the
// fifth bits of its elements from e % 32 on (0 for the 4-bit types).
uint legacy_block(uint b, uint rb, uint e, out float d, out float m, out uint hbits) {
  uint gb = rb + (e >> 8) * LG_BYTES;
  uint j = (e >> 5) & 7u;
  d = f16(ld16(b, gb + 2u * j));
#if defined(LG_M)
  m = f16(ld16(b, gb + LG_M + 2u * j));
#elif defined(LG_QH)
  m = -16.0 * d;
#else
  m = -8.0 * d;
#endif
#if defined(LG_QH)
  hbits = wq[b].w[(gb + LG_QH + 4u * j) >> 2] >> (e & 31u);
#else
  hbits = 0u;
#endif
  return gb + LG_QS + 16u * j;
}
void dq8_legacy(uint b, uint rb, uint e, out vec4 lo, out vec4 hi) {
  float d, m;
  uint hbits;
  uint qs = legacy_block(b, rb, e, d, m, hbits);
  uvec2 q = (wq2[b].w[(qs + (e & 15u)) >> 3] >> (((e >> 4) & 1u) * 4u)) & 0x0F0F0F0Fu;
  lo = u8x4_bits(q.x | spread_bit4(hbits)) * d + m;
  hi = u8x4_bits(q.y | spread_bit4(hbits >> 4)) * d + m;
}
#endif
#if defined(TYPE_Q4_K) || defined(TYPE_Q5_K)
// Q4_K and Q5_K rows are grouped at upload (backend/vulkan/grouped_layout.h): super-block
// e / 256 is super-block j = (e / 256) % 8 of group e / 2048, whose header sits at K4G_HDR j
// of the group (d, dmin, then the bytes (scale i, min i) of sub-block i at 4 + 2i: unpacked
// at upload) and whose quants at K4G_HDR_BYTES + sb_bytes j: qs[128], for Q5_K then qh[32].
// In chunk c (64 elements) sub-block 2c takes the low nibbles of qs[32c..32c+32), 2c+1 the
// high ones; qh[l] bit i is the fifth bit of element l of sub-block i (spec §4.3).
// Returns the byte offset of element e's super-block quants, with d * scale and dmin * min
// of its sub-block.
uint k4_locate(uint b, uint rb, uint e, uint sb_bytes, out float d, out float m) {
  uint gb = rb + (e >> 11) * (K4G_HDR_BYTES + 8u * sb_bytes);
  uint j = (e >> 8) & 7u;
  uint hb = gb + K4G_HDR * j;  // a multiple of 4
  vec2 dm = unpackHalf2x16(wq[b].w[hb >> 2]);
  uint sm = ld16(b, hb + 4u + 2u * ((e & 255u) >> 5));
  d = dm.x * float(sm & 0xFFu);
  m = dm.y * float(sm >> 8);
  return gb + K4G_HDR_BYTES + sb_bytes * j;
}
// Elements [e, e+8): one 8-byte load of quants (and of fifth bits).
void dq8_k4(uint b, uint rb, uint e, uint sb_bytes, bool five, out vec4 lo, out vec4 hi) {
  float d, m;
  uint qb = k4_locate(b, rb, e, sb_bytes, d, m);
  uint p = e & 255u, c = p >> 6, high = (p >> 5) & 1u, l = p & 31u;
  uvec2 q = (wq2[b].w[(qb + 32u * c + l) >> 3] >> (4u * high)) & 0x0F0F0F0Fu;
  if (five) q |= ((wq2[b].w[(qb + 128u + l) >> 3] >> (2u * c + high)) & 0x01010101u) << 4;
  lo = u8x4_bits(q.x) * d - m;
  hi = u8x4_bits(q.y) * d - m;
}
// Elements [e, e+16): one 16-byte load of quants (and of fifth bits).
void dq16_k4(uint b, uint rb, uint e, uint sb_bytes, bool five, out vec4 v0, out vec4 v1, out vec4 v2, out vec4 v3) {
  float d, m;
  uint qb = k4_locate(b, rb, e, sb_bytes, d, m);
  uint p = e & 255u, c = p >> 6, high = (p >> 5) & 1u, l = p & 31u;  // l: 0 or 16
  uvec4 q = (wq4[b].w[(qb + 32u * c + l) >> 4] >> (4u * high)) & 0x0F0F0F0Fu;
  if (five) q |= ((wq4[b].w[(qb + 128u + l) >> 4] >> (2u * c + high)) & 0x01010101u) << 4;
  v0 = u8x4_bits(q.x) * d - m;
  v1 = u8x4_bits(q.y) * d - m;
  v2 = u8x4_bits(q.z) * d - m;
  v3 = u8x4_bits(q.w) * d - m;
}
#endif
#if defined(TYPE_Q4_K)
void dq8_q4_k(uint b, uint rb, uint e, out vec4 lo, out vec4 hi) { dq8_k4(b, rb, e, Q4_KG_SB, false, lo, hi); }
#endif
#if defined(TYPE_Q5_K)
void dq8_q5_k(uint b, uint rb, uint e, out vec4 lo, out vec4 hi) { dq8_k4(b, rb, e, Q5_KG_SB, true, lo, hi); }
#endif
#if defined(TYPE_Q6_K)
// Q6_K rows are grouped at upload (backend/vulkan/grouped_layout.h): super-block e / 256 is
// super-block s = (e / 256) % 8 of group e / 2048, whose d is at byte 2s of the group and
// whose ql, qh and scales (as stored) start at Q6G_D + Q6G_BLOCK s, 16-byte aligned. In each
// half n of 128 elements, quarter q of 32 takes ql[64n + 32(q&1) + l] (low nibble for q < 2,
// high for q >= 2), qh[32n + l] bits 2q..2q+1 and int8 scale [8n + l/16 + 2q] (spec §4.3).
// Returns d * scale of element e's run of 16; ql / qh: byte offsets of element e's quants.
float q6_k_locate(uint b, uint rb, uint e, out uint ql, out uint qh, out uint shift, out uint hshift) {
  uint sb = e >> 8;
  uint gb = rb + (sb >> 3) * Q6G_BYTES;
  uint blk = gb + Q6G_D + (sb & 7u) * Q6G_BLOCK;
  uint p = e & 255u;
  uint n = p >> 7;
  uint q = (p >> 5) & 3u;
  uint l = p & 31u;
  ql = blk + Q6_K_ql + 64u * n + 32u * (q & 1u) + l;
  qh = blk + Q6_K_qh + 32u * n + l;
  shift = 4u * (q >> 1);
  hshift = 2u * q;
  float sc = float(bitfieldExtract(int(ld8(b, blk + Q6_K_scales + 8u * n + (l >> 4) + 2u * q)), 0, 8));
  return f16(ld16(b, gb + 2u * (sb & 7u))) * sc;
}
// Four 6-bit quants (unsigned, 0..63) as bytes from a word of ql and one of qh.
uint q6_k_bytes(uint lo, uint hi, uint shift, uint hshift) {
  return ((lo >> shift) & 0x0F0F0F0Fu) | (((hi >> hshift) & 0x03030303u) << 4);
}
// The four signed quants (q - 32) of q6_k_bytes as floats without int-to-float conversions:
// byte q in the low mantissa bits of 2^23 is the float 2^23 + q exactly.
vec4 q6_k_bits4(uint q) {
  uvec4 m = (uvec4(q) >> uvec4(0u, 8u, 16u, 24u)) & 0xFFu;
  return uintBitsToFloat(m | 0x4B000000u) - 8388640.0;  // 2^23 + 32
}
void dq8_q6_k(uint b, uint rb, uint e, out vec4 lo, out vec4 hi) {
  uint ql, qh, shift, hshift;
  float d = q6_k_locate(b, rb, e, ql, qh, shift, hshift);
  uvec2 l = wq2[b].w[ql >> 3];
  uvec2 h = wq2[b].w[qh >> 3];
  lo = q6_k_bits4(q6_k_bytes(l.x, h.x, shift, hshift)) * d;
  hi = q6_k_bits4(q6_k_bytes(l.y, h.y, shift, hshift)) * d;
}
#endif

#if defined(TYPE_Q8_0)
// Elements [e, e+16) unscaled, e % 16 == 0: the 16 quants are one aligned 16-byte load, made
// floats without int-to-float conversion instructions (quarter rate on NVIDIA GPUs: one per
// weight byte): byte q ^ 0x80 = q + 128 in the low mantissa bits of 2^23 is the float
// 2^23 + q + 128 exactly, and one subtraction leaves q. Returns the block scale, which the
// caller applies once per 16 elements.
vec4 q8_bits4(uint q) {
  uint b = q ^ 0x80808080u;
  uvec4 m = (uvec4(b) >> uvec4(0u, 8u, 16u, 24u)) & 0xFFu;
  return uintBitsToFloat(m | 0x4B000000u) - 8388736.0;  // 2^23 + 128
}
float dq16_q8_0_unscaled(uint b, uint rb, uint e, out vec4 v0, out vec4 v1, out vec4 v2, out vec4 v3) {
  uint gb = rb + (e >> 8) * Q8G_BYTES;
  uvec4 q = wq4[b].w[(gb + Q8G_QS + (e & 255u)) >> 4];
  v0 = q8_bits4(q.x);
  v1 = q8_bits4(q.y);
  v2 = q8_bits4(q.z);
  v3 = q8_bits4(q.w);
  return f16(ld16(b, gb + ((e >> 4) & 14u)));
}
#endif

#if defined(TYPE_F32)
#define dq8 dq8_f32
#elif defined(TYPE_F16)
#define dq8 dq8_f16
#elif defined(TYPE_BF16)
#define dq8 dq8_bf16
#elif defined(TYPE_Q8_0)
#define dq8 dq8_q8_0
#elif defined(TYPE_Q4_0)
#define dq8 dq8_legacy
#elif defined(TYPE_Q4_1)
#define dq8 dq8_legacy
#elif defined(TYPE_Q5_0)
#define dq8 dq8_legacy
#elif defined(TYPE_Q5_1)
#define dq8 dq8_legacy
#elif defined(TYPE_Q4_K)
#define dq8 dq8_q4_k
#elif defined(TYPE_Q5_K)
#define dq8 dq8_q5_k
#elif defined(TYPE_Q6_K)
#define dq8 dq8_q6_k
#else
#error "define one TYPE_<type>"
#endif

// dq16: elements [e, e+16) of a row, e % 16 == 0, into v0..v3 (the matvec's unit): two dq8
// reads, or the 16-byte loads of the grouped layouts (dq16_k4 for Q4_K / Q5_K). Q8_0
// units are read by dq16_q8_0_unscaled.
#if defined(TYPE_Q4_K)
void dq16(uint b, uint rb, uint e, out vec4 v0, out vec4 v1, out vec4 v2, out vec4 v3) {
  dq16_k4(b, rb, e, Q4_KG_SB, false, v0, v1, v2, v3);
}
#elif defined(TYPE_Q5_K)
void dq16(uint b, uint rb, uint e, out vec4 v0, out vec4 v1, out vec4 v2, out vec4 v3) {
  dq16_k4(b, rb, e, Q5_KG_SB, true, v0, v1, v2, v3);
}
#elif defined(TYPE_Q4_0) || defined(TYPE_Q4_1) || defined(TYPE_Q5_0) || defined(TYPE_Q5_1)
// One 16-byte load of the block's quants, low or high nibbles by e % 32.
void dq16(uint b, uint rb, uint e, out vec4 v0, out vec4 v1, out vec4 v2, out vec4 v3) {
  float d, m;
  uint hbits;
  uint qs = legacy_block(b, rb, e, d, m, hbits);
  uvec4 q = (wq4[b].w[qs >> 4] >> (((e >> 4) & 1u) * 4u)) & 0x0F0F0F0Fu;
  v0 = u8x4_bits(q.x | spread_bit4(hbits)) * d + m;
  v1 = u8x4_bits(q.y | spread_bit4(hbits >> 4)) * d + m;
  v2 = u8x4_bits(q.z | spread_bit4(hbits >> 8)) * d + m;
  v3 = u8x4_bits(q.w | spread_bit4(hbits >> 12)) * d + m;
}
#elif defined(TYPE_Q6_K)
// One 16-byte load each of ql and qh (a unit never crosses a run of 16, which shares a scale).
void dq16(uint b, uint rb, uint e, out vec4 v0, out vec4 v1, out vec4 v2, out vec4 v3) {
  uint ql, qh, shift, hshift;
  float d = q6_k_locate(b, rb, e, ql, qh, shift, hshift);
  uvec4 l = wq4[b].w[ql >> 4];
  uvec4 h = wq4[b].w[qh >> 4];
  v0 = q6_k_bits4(q6_k_bytes(l.x, h.x, shift, hshift)) * d;
  v1 = q6_k_bits4(q6_k_bytes(l.y, h.y, shift, hshift)) * d;
  v2 = q6_k_bits4(q6_k_bytes(l.z, h.z, shift, hshift)) * d;
  v3 = q6_k_bits4(q6_k_bytes(l.w, h.w, shift, hshift)) * d;
}
#elif !defined(TYPE_Q8_0)
void dq16(uint b, uint rb, uint e, out vec4 v0, out vec4 v1, out vec4 v2, out vec4 v3) {
  dq8(b, rb, e, v0, v1);
  dq8(b, rb, e + 8u, v2, v3);
}
#endif
