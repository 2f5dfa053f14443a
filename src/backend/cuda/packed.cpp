#include "backend/cuda/packed.h"

#include <cstring>
#include <string>

#include "common/error.h"
#include "tensor/blocks.h"
#include "tensor/quant_k.h"

namespace rwkv::cuda {
namespace {

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// A Q4_K/Q5_K super-block's header as kernels read it: d and dmin, then for each quarter k
// (sub-blocks 2k, 2k+1) the word (scale 2k, scale 2k+1, min 2k, min 2k+1), one byte each.
void pack_k_header(uint16_t d, uint16_t dmin, const uint8_t packed[12], uint8_t* dst) {
  uint8_t sm[16];  // scales 0..7, mins 0..7
  quant_detail::unpack_k_scales(packed, sm);
  memcpy(dst, &d, 2);
  memcpy(dst + 2, &dmin, 2);
  for (int k = 0; k < 4; ++k) {
    const uint8_t word[4] = {sm[2 * k], sm[2 * k + 1], sm[8 + 2 * k], sm[8 + 2 * k + 1]};
    memcpy(dst + 4 + 4 * k, word, 4);
  }
}

}  // namespace

bool packable(TensorType type) {
  switch (type) {
    case TensorType::F32:
    case TensorType::F16:
    case TensorType::BF16:
    case TensorType::Q8_0:
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q5_0:
    case TensorType::Q5_1:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K:
      return true;
    default:
      return false;
  }
}

PackedLayout packed_layout(TensorType type, int64_t rows, int64_t cols) {
  if (!packable(type))
    fail(ErrorCode::unsupported, "cuda: tensor type " + std::string(type_name(type)) + " is not supported");
  const int block = type_info(type).block_size;
  if (cols <= 0 || rows <= 0 || cols % block != 0)
    fail(ErrorCode::model, "cuda: a " + std::string(type_name(type)) + " matrix of " + std::to_string(rows) + " x " +
                               std::to_string(cols) + " cannot be packed (columns must be a positive multiple of " +
                               std::to_string(block) + ")");
  PackedLayout L;
  L.type = type;
  L.rows = rows;
  L.cols = cols;
  const size_t nb = size_t(cols) / 32, nk = size_t(cols) / 256;
  size_t strides[kMaxPlanes] = {};
  int n = 0;
  switch (type) {
    case TensorType::F32:
      L.item_elems = 8;
      strides[n++] = round_up(size_t(cols) * 4, 32);
      break;
    case TensorType::F16:
    case TensorType::BF16:
      L.item_elems = 8;
      strides[n++] = round_up(size_t(cols) * 2, 32);
      break;
    case TensorType::Q8_0:
      L.item_elems = 32;
      strides[n++] = size_t(cols);
      strides[n++] = nb * 2;
      break;
    case TensorType::Q4_0:
      L.item_elems = 32;
      strides[n++] = nb * 16;
      strides[n++] = nb * 2;
      break;
    case TensorType::Q4_1:
      L.item_elems = 32;
      strides[n++] = nb * 16;
      strides[n++] = nb * 4;
      break;
    case TensorType::Q5_0:
      L.item_elems = 32;
      strides[n++] = nb * 16;
      strides[n++] = nb * 4;
      strides[n++] = nb * 2;
      break;
    case TensorType::Q5_1:
      L.item_elems = 32;
      strides[n++] = nb * 16;
      strides[n++] = nb * 4;
      strides[n++] = nb * 4;
      break;
    case TensorType::Q4_K:
      L.item_elems = 64;
      strides[n++] = nk * 128;
      strides[n++] = nk * kKHeaderBytes;
      break;
    case TensorType::Q5_K:
      L.item_elems = 64;
      strides[n++] = nk * 128;
      strides[n++] = nk * kKHeaderBytes;
      strides[n++] = nk * 32;
      break;
    case TensorType::Q6_K:
      L.item_elems = 64;
      strides[n++] = nk * 128;
      strides[n++] = nk * 64;
      strides[n++] = nk * 16;
      strides[n++] = nk * 2;
      break;
    default:
      break;
  }
  L.items = (cols + L.item_elems - 1) / L.item_elems;
  L.n_planes = n;
  size_t off = 0;
  for (int p = 0; p < n; ++p) {
    L.plane_offset[p] = off;
    L.plane_stride[p] = strides[p];
    off = round_up(off + strides[p] * size_t(rows), 256);
  }
  L.bytes = off;
  return L;
}

namespace {

// Item `item` of `items` 32-byte items of a row (`src`, 32 bytes) into the split layout of
// packed.h: its first half at 16 * item, its second at 16 * (items + item).
void split_item(uint8_t* row, int64_t item, int64_t items, const uint8_t* src) {
  memcpy(row + 16 * item, src, 16);
  memcpy(row + 16 * (items + item), src + 16, 16);
}

}  // namespace

void pack_rows(const PackedLayout& L, const uint8_t* src, int64_t row_begin, int64_t row_end, uint8_t* dst) {
  const size_t src_stride = row_bytes(L.type, L.cols);
  const int64_t nb = L.cols / 32, nk = L.cols / 256;
  auto plane = [&](int p, int64_t r) { return dst + L.plane_offset[p] + L.plane_stride[p] * size_t(r); };
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* s = src + src_stride * size_t(r);
    switch (L.type) {
      case TensorType::F32:
      case TensorType::F16:
      case TensorType::BF16:
        memcpy(plane(0, r), s, src_stride);
        break;
      case TensorType::Q8_0:
        for (int64_t b = 0; b < nb; ++b) {
          const auto* blk = reinterpret_cast<const BlockQ8_0*>(s) + b;
          split_item(plane(0, r), b, nb, reinterpret_cast<const uint8_t*>(blk->qs));
          memcpy(plane(1, r) + 2 * b, &blk->d, 2);
        }
        break;
      case TensorType::Q4_0:
        for (int64_t b = 0; b < nb; ++b) {
          const auto* blk = reinterpret_cast<const BlockQ4_0*>(s) + b;
          memcpy(plane(0, r) + 16 * b, blk->qs, 16);
          memcpy(plane(1, r) + 2 * b, &blk->d, 2);
        }
        break;
      case TensorType::Q4_1:
        for (int64_t b = 0; b < nb; ++b) {
          const auto* blk = reinterpret_cast<const BlockQ4_1*>(s) + b;
          memcpy(plane(0, r) + 16 * b, blk->qs, 16);
          memcpy(plane(1, r) + 4 * b, &blk->d, 2);
          memcpy(plane(1, r) + 4 * b + 2, &blk->m, 2);
        }
        break;
      case TensorType::Q5_0:
        for (int64_t b = 0; b < nb; ++b) {
          const auto* blk = reinterpret_cast<const BlockQ5_0*>(s) + b;
          memcpy(plane(0, r) + 16 * b, blk->qs, 16);
          memcpy(plane(1, r) + 4 * b, blk->qh, 4);
          memcpy(plane(2, r) + 2 * b, &blk->d, 2);
        }
        break;
      case TensorType::Q5_1:
        for (int64_t b = 0; b < nb; ++b) {
          const auto* blk = reinterpret_cast<const BlockQ5_1*>(s) + b;
          memcpy(plane(0, r) + 16 * b, blk->qs, 16);
          memcpy(plane(1, r) + 4 * b, blk->qh, 4);
          memcpy(plane(2, r) + 4 * b, &blk->d, 2);
          memcpy(plane(2, r) + 4 * b + 2, &blk->m, 2);
        }
        break;
      case TensorType::Q4_K:
        for (int64_t b = 0; b < nk; ++b) {
          const auto* blk = reinterpret_cast<const BlockQ4_K*>(s) + b;
          for (int k = 0; k < 4; ++k) split_item(plane(0, r), 4 * b + k, 4 * nk, blk->qs + 32 * k);
          pack_k_header(blk->d, blk->dmin, blk->scales, plane(1, r) + kKHeaderBytes * b);
        }
        break;
      case TensorType::Q5_K:
        for (int64_t b = 0; b < nk; ++b) {
          const auto* blk = reinterpret_cast<const BlockQ5_K*>(s) + b;
          for (int k = 0; k < 4; ++k) split_item(plane(0, r), 4 * b + k, 4 * nk, blk->qs + 32 * k);
          pack_k_header(blk->d, blk->dmin, blk->scales, plane(1, r) + kKHeaderBytes * b);
          memcpy(plane(2, r) + 32 * b, blk->qh, 32);
        }
        break;
      case TensorType::Q6_K:
        for (int64_t b = 0; b < nk; ++b) {
          const auto* blk = reinterpret_cast<const BlockQ6_K*>(s) + b;
          for (int k = 0; k < 4; ++k) {  // item 4b + 2n + u: ql[64n + 16u ..] and ql[64n + 32 + 16u ..]
            uint8_t item[32];
            memcpy(item, blk->ql + 64 * (k >> 1) + 16 * (k & 1), 16);
            memcpy(item + 16, blk->ql + 64 * (k >> 1) + 32 + 16 * (k & 1), 16);
            split_item(plane(0, r), 4 * b + k, 4 * nk, item);
          }
          memcpy(plane(1, r) + 64 * b, blk->qh, 64);
          memcpy(plane(2, r) + 16 * b, blk->scales, 16);
          memcpy(plane(3, r) + 2 * b, &blk->d, 2);
        }
        break;
      default:
        fail(ErrorCode::unsupported, "cuda: cannot pack type " + std::string(type_name(L.type)));
    }
  }
}

PackedView packed_view(const PackedLayout& L, const void* base) {
  PackedView v;
  v.type = L.type;
  v.rows = L.rows;
  v.cols = L.cols;
  v.items = L.items;
  for (int p = 0; p < L.n_planes; ++p) {
    v.plane[p] = static_cast<const uint8_t*>(base) + L.plane_offset[p];
    v.stride[p] = L.plane_stride[p];
  }
  return v;
}

}  // namespace rwkv::cuda
