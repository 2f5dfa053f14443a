// The CUDA backend's on-device weight layout. A matrix of `rows` x `cols` elements of a
// GGUF type is split into "planes" (quant bytes, scales, high bits ...), each row-major
// over rows, so that a thread can read its part of a row with aligned 16-byte loads. The
// repacking is lossless: plane bytes sum to the GGUF bytes plus padding (and, for Q4_K and
// Q5_K, 4 bytes more per super-block: see below).
//
// Work item = the weights one thread consumes at a time (elements per item by type):
//   F32 8 (32 B), F16/BF16 8 (16 B: lanes reading items it, it + 1, ... read consecutive
//   16-byte pieces), Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 32 (one block), Q4_K/Q5_K/Q6_K 64 (a quarter
//   super-block).
// Planes by type (nb = cols/32 blocks, nk = cols/256 super-blocks, bytes per row):
//   F32/F16/BF16  p0 values, row padded with zeros to a multiple of 32 B
//   Q8_0  p0 qs int8 [cols] split  p1 d f16 [nb]
//   Q4_0  p0 qs [nb x 16]        p1 d f16 [nb]
//   Q4_1  p0 qs [nb x 16]        p1 (d, m) f16 pairs [nb]
//   Q5_0  p0 qs [nb x 16]        p1 qh u32 [nb]     p2 d f16 [nb]
//   Q5_1  p0 qs [nb x 16]        p1 qh u32 [nb]     p2 (d, m) f16 pairs [nb]
//   Q4_K  p0 qs [nk x 128] split p1 header [nk x 20] = d, dmin, then per quarter k of the
//                                block the bytes (scale 2k, scale 2k+1, min 2k, min 2k+1)
//   Q5_K  p0 qs [nk x 128] split p1 header [nk x 20]   p2 qh [nk x 32]
//   Q6_K  p0 ql [nk x 128] split p1 qh [nk x 64]       p2 scales int8 [nk x 16]  p3 d f16 [nk]
// "split": the planes of 32-byte items (a Q8_0 block, a quarter of a Q4_K/Q5_K super-block's
// qs, a Q6_K item's two 16-byte runs of ql) hold every item's first 16 bytes, in item order,
// then every item's second 16 bytes, so that the lanes of a warp reading items it, it + 1, ...
// read consecutive 16-byte pieces in both loads (item after item, each 16-byte load of a warp
// touched twice the sectors it used). H100 decode: 2.9B Q8_0 +3.7%, Q4_K_M +1.1%, 0.1B Q8_0
// +2.3% (src/backend/cuda/NOTES.md run 144).
// The k-quant headers are the only planes that are not the GGUF bytes moved: the 12 bytes of
// packed 6-bit scales and mins become 16 bytes, one per value (lossless; the kernels then
// read a quarter's four values as one word instead of decoding them).
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/types.h"

namespace rwkv::cuda {

constexpr int kMaxPlanes = 4;
constexpr size_t kKHeaderBytes = 20;  // a Q4_K/Q5_K super-block's header plane bytes

// Where the planes of one packed matrix lie, relative to its base (host-side description).
struct PackedLayout {
  TensorType type = TensorType::F32;
  int64_t rows = 0, cols = 0;
  int item_elems = 0;  // weights per work item
  int64_t items = 0;   // work items per row: ceil(cols / item_elems)
  int n_planes = 0;
  size_t plane_offset[kMaxPlanes] = {};  // bytes from the base, 256-aligned
  size_t plane_stride[kMaxPlanes] = {};  // bytes per row within the plane
  size_t bytes = 0;                      // total bytes to allocate
};

// A packed matrix on the device, as kernels take it (passed by value).
struct PackedView {
  TensorType type = TensorType::F32;
  int64_t rows = 0, cols = 0, items = 0;
  const uint8_t* plane[kMaxPlanes] = {};
  size_t stride[kMaxPlanes] = {};
};

// True for the types this backend runs: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q4_K, Q5_K, Q6_K.
bool packable(TensorType type);
// Layout of a rows x cols matrix; throws Error(unsupported) for other types and
// Error(model) when cols is not a multiple of the type's block size.
PackedLayout packed_layout(TensorType type, int64_t rows, int64_t cols);
// Repacks rows [row_begin, row_end) of GGUF-layout bytes `src` (row r at
// src + r * row_bytes(type, cols)) into the packed buffer `dst` (layout.bytes long,
// padding bytes must be zero beforehand).
void pack_rows(const PackedLayout& layout, const uint8_t* src, int64_t row_begin, int64_t row_end, uint8_t* dst);
// The view of a packed buffer at device address `base`.
PackedView packed_view(const PackedLayout& layout, const void* base);

}  // namespace rwkv::cuda
