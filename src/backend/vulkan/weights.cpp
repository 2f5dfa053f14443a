#include "backend/vulkan/weights.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>

#include "backend/vulkan/grouped_layout.h"
#include "backend/vulkan/kernels.h"
#include "common/error.h"
#include "tensor/blocks.h"
#include "tensor/quant.h"
#include "tensor/quant_k.h"
#include "tensor/transpose.h"

namespace rwkv::vk {
namespace {

constexpr uint64_t kAlign = 256;  // tensor start alignment inside an arena
// Bytes after an arena's last tensor: the shaders read whole 32-bit words (and 16-byte
// quads), so a tensor ending inside a word needs that word in the buffer.
constexpr uint64_t kTailPad = 16;
constexpr uint64_t kStagingBytes = 64ull << 20;  // one upload slice

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// The row loop every grouping shares: `rows` rows of `blocks` stored blocks of `in_block`
// bytes each into rows of `out_bytes` (zeroed first), block b going to group b / 8 (of
// `group_bytes`) as place(block bytes, group start, b % 8).
template <class Place>
void regroup_rows(const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t blocks, size_t in_block, uint32_t out_bytes,
                  size_t group_bytes, Place place) {
  for (uint64_t r = 0; r < rows; ++r) {
    const uint8_t* in = src + r * blocks * in_block;
    uint8_t* out = dst + r * out_bytes;
    std::memset(out, 0, out_bytes);
    for (uint32_t b = 0; b < blocks; ++b) place(in + size_t(b) * in_block, out + size_t(b / 8) * group_bytes, b % 8);
  }
}

}  // namespace

uint32_t q8_0_grouped_row_bytes(uint32_t cols) {
  const uint32_t blocks = cols / 32, full = blocks / kQ8GroupBlocks, rest = blocks % kQ8GroupBlocks;
  return full * kQ8GroupBytes + (rest > 0 ? kQ8GroupScaleBytes + rest * 32 : 0);
}

void q8_0_to_grouped(const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t cols) {
  static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_0::qs) == 32 && kQ8GroupBlocks == 8);
  regroup_rows(src, dst, rows, cols / 32, sizeof(BlockQ8_0), q8_0_grouped_row_bytes(cols), kQ8GroupBytes,
               [](const uint8_t* block, uint8_t* group, uint32_t j) {
                 std::memcpy(group + 2 * j, block + offsetof(BlockQ8_0, d), 2);
                 std::memcpy(group + kQ8GroupScaleBytes + 32 * j, block + offsetof(BlockQ8_0, qs), 32);
               });
}

uint32_t legacy_grouped_row_bytes(TensorType type, uint32_t cols) {
  const uint32_t qs_off = legacy_group(type).qs_off;
  const uint32_t blocks = cols / 32, full = blocks / 8, rest = blocks % 8;
  return full * (qs_off + 128) + (rest > 0 ? qs_off + rest * 16 : 0);
}

namespace {

// The stored block's field offsets: {m, qh, qs}; d is at 0 in every legacy block.
template <class Block>
constexpr std::array<size_t, 3> legacy_fields() {
  size_t m = 0, qh = 0;
  if constexpr (requires(Block b) { b.m; }) m = offsetof(Block, m);
  if constexpr (requires(Block b) { b.qh; }) qh = offsetof(Block, qh);
  return {m, qh, offsetof(Block, qs)};
}

}  // namespace

void legacy_to_grouped(TensorType type, const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t cols) {
  const LegacyGroup g = legacy_group(type);
  const std::array<size_t, 3> f = type == TensorType::Q4_0   ? legacy_fields<BlockQ4_0>()
                                  : type == TensorType::Q4_1 ? legacy_fields<BlockQ4_1>()
                                  : type == TensorType::Q5_0 ? legacy_fields<BlockQ5_0>()
                                                             : legacy_fields<BlockQ5_1>();
  regroup_rows(src, dst, rows, cols / 32, type_info(type).block_bytes, legacy_grouped_row_bytes(type, cols),
               g.qs_off + 128, [&](const uint8_t* block, uint8_t* group, uint32_t j) {
                 std::memcpy(group + 2 * j, block, 2);  // d
                 if (g.m_off) std::memcpy(group + g.m_off + 2 * j, block + f[0], 2);
                 if (g.qh_off) std::memcpy(group + g.qh_off + 4 * j, block + f[1], 4);
                 std::memcpy(group + g.qs_off + 16 * j, block + f[2], 16);
               });
}

uint32_t k4_grouped_row_bytes(TensorType type, uint32_t cols) {
  const uint32_t blocks = cols / 256, full = blocks / kK4GroupBlocks, rest = blocks % kK4GroupBlocks;
  const uint32_t sb = k4_block_bytes(type);
  return full * (kK4GroupHeaderBytes + kK4GroupBlocks * sb) + (rest > 0 ? kK4GroupHeaderBytes + rest * sb : 0);
}

void k4_to_grouped(TensorType type, const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t cols) {
  static_assert(offsetof(BlockQ4_K, dmin) == 2 && offsetof(BlockQ5_K, dmin) == 2 && kK4GroupBlocks == 8 &&
                kK4GroupHeaderBytes == kK4GroupBlocks * kK4HeaderBytes);
  const bool five = type == TensorType::Q5_K;
  const size_t scales = five ? offsetof(BlockQ5_K, scales) : offsetof(BlockQ4_K, scales);
  const size_t qs = five ? offsetof(BlockQ5_K, qs) : offsetof(BlockQ4_K, qs);
  const uint32_t sb = k4_block_bytes(type);
  regroup_rows(src, dst, rows, cols / 256, type_info(type).block_bytes, k4_grouped_row_bytes(type, cols),
               kK4GroupHeaderBytes + kK4GroupBlocks * sb, [&](const uint8_t* block, uint8_t* group, uint32_t j) {
                 uint8_t* header = group + kK4HeaderBytes * j;
                 std::memcpy(header, block, 4);  // d, dmin
                 uint8_t sm[16];                 // scales 0..7, mins 0..7
                 quant_detail::unpack_k_scales(block + scales, sm);
                 for (int i = 0; i < 8; ++i) {
                   header[4 + 2 * i] = sm[i];
                   header[5 + 2 * i] = sm[8 + i];
                 }
                 uint8_t* quants = group + kK4GroupHeaderBytes + sb * j;
                 std::memcpy(quants, block + qs, 128);
                 if (five) std::memcpy(quants + 128, block + offsetof(BlockQ5_K, qh), 32);
               });
}

uint32_t q6_k_grouped_row_bytes(uint32_t cols) {
  const uint32_t blocks = cols / 256, full = blocks / kQ6GroupBlocks, rest = blocks % kQ6GroupBlocks;
  return full * kQ6GroupBytes + (rest > 0 ? kQ6GroupScaleBytes + rest * kQ6GroupBlockBytes : 0);
}

void q6_k_to_grouped(const uint8_t* src, uint8_t* dst, uint64_t rows, uint32_t cols) {
  static_assert(sizeof(BlockQ6_K) == 210 && offsetof(BlockQ6_K, d) == kQ6GroupBlockBytes && kQ6GroupBlocks == 8);
  regroup_rows(src, dst, rows, cols / 256, sizeof(BlockQ6_K), q6_k_grouped_row_bytes(cols), kQ6GroupBytes,
               [](const uint8_t* block, uint8_t* group, uint32_t j) {
                 std::memcpy(group + 2 * j, block + offsetof(BlockQ6_K, d), 2);
                 // ql, qh, scales as stored
                 std::memcpy(group + kQ6GroupScaleBytes + kQ6GroupBlockBytes * j, block, kQ6GroupBlockBytes);
               });
}

uint32_t grouped_row_bytes(TensorType type, uint32_t cols) {
  switch (type) {
    case TensorType::Q8_0:
      return q8_0_grouped_row_bytes(cols);
    case TensorType::Q6_K:
      return q6_k_grouped_row_bytes(cols);
    case TensorType::Q4_K:
    case TensorType::Q5_K:
      return k4_grouped_row_bytes(type, cols);
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q5_0:
    case TensorType::Q5_1:
      return legacy_grouped_row_bytes(type, cols);
    default:
      return 0;
  }
}

WeightStore::WeightStore(Context& ctx, uint64_t arena_limit) : ctx_(ctx) {
  const uint64_t device_limit = std::min<uint64_t>(ctx.limits().max_storage_range, 1ull << 30);
  arena_limit_ = arena_limit == 0 ? device_limit : std::min(arena_limit, device_limit);
  arena_limit_ = (arena_limit_ - kTailPad) / kAlign * kAlign;
}

DeviceMatrix WeightStore::add_matrix(const Weight& w) {
  if (!shader_supports(w.type)) {
    fail(ErrorCode::unsupported, "vulkan: tensor '" + w.name + "' has type " + std::string(type_name(w.type)) +
                                     ", which the Vulkan shaders do not read");
  }
  if (w.cols() % 8 != 0 || w.cols() <= 0 || w.rows() <= 0) {
    fail(ErrorCode::unsupported, "vulkan: tensor '" + w.name + "' has " + std::to_string(w.cols()) +
                                     " columns; the Vulkan matrix shaders need a positive multiple of 8");
  }
  DeviceMatrix m;
  m.type = w.type;
  m.rows = uint32_t(w.rows());
  m.cols = uint32_t(w.cols());
  const uint64_t src_row_bytes = w.row_stride();
  const uint32_t grouped_bytes = grouped_row_bytes(w.type, m.cols);
  const bool grouped = grouped_bytes != 0;
  m.row_bytes = grouped ? grouped_bytes : uint32_t(src_row_bytes);
  if (uint64_t(m.row_bytes) > arena_limit_) {
    fail(ErrorCode::unsupported, "vulkan: one row of tensor '" + w.name + "' exceeds the device's buffer range");
  }
  if (w.nbytes < src_row_bytes * m.rows) {
    fail(ErrorCode::model, "vulkan: tensor '" + w.name + "' holds fewer bytes than its shape needs");
  }
  uint32_t row = 0;
  while (row < m.rows) {
    if (arena_sizes_.empty()) arena_sizes_.push_back(0);
    uint64_t start = align_up(arena_sizes_.back(), kAlign);
    uint64_t fit = start >= arena_limit_ ? 0 : (arena_limit_ - start) / m.row_bytes;
    const uint32_t left = m.rows - row;
    // A matrix that would fit whole in a fresh arena is not split across two.
    if (fit < left && (fit == 0 || uint64_t(left) * m.row_bytes <= arena_limit_) && arena_sizes_.back() > 0) {
      arena_sizes_.push_back(0);
      continue;
    }
    const uint32_t n = uint32_t(std::min<uint64_t>(fit, left));
    DeviceMatrix::Piece p;
    p.arena = uint32_t(arena_sizes_.size() - 1);
    p.offset = uint32_t(start);
    p.row_begin = row;
    p.rows = n;
    m.pieces.push_back(p);
    pending_.push_back({w.data + uint64_t(row) * src_row_bytes, p.arena, p.offset, uint64_t(n) * m.row_bytes,
                        grouped ? Form::grouped : Form::stored, w.type, n, m.cols});
    arena_sizes_.back() = start + uint64_t(n) * m.row_bytes;
    row += n;
  }
  return m;
}

uint64_t WeightStore::transposed_bytes(TensorType type, uint64_t rows, uint64_t cols) {
  return type == TensorType::Q8_0 ? rows * cols + rows * (cols / 32) * 2 : rows * cols * 2;
}

DeviceMatrix WeightStore::add_transposed(const Weight& w) {
  const bool q8 = w.type == TensorType::Q8_0;
  if (!q8 && w.type != TensorType::F16 && w.type != TensorType::BF16) {
    fail(ErrorCode::unsupported, "vulkan: tensor '" + w.name + "' has type " + std::string(type_name(w.type)) +
                                     "; only F16, BF16 and Q8_0 matrices are stored transposed");
  }
  if (w.rows() <= 0 || w.cols() <= 0 || w.nbytes < w.row_stride() * uint64_t(w.rows())) {
    fail(ErrorCode::model, "vulkan: tensor '" + w.name + "' holds fewer bytes than its shape needs");
  }
  const uint64_t rows = uint64_t(w.rows()), cols = uint64_t(w.cols()), bytes = transposed_bytes(w.type, rows, cols);
  if (q8 && (rows % 16 != 0 || cols % 32 != 0)) {
    fail(ErrorCode::unsupported, "vulkan: tensor '" + w.name + "' has " + std::to_string(rows) + " rows and " +
                                     std::to_string(cols) +
                                     " columns; its transposed Q8_0 copy needs rows % 16 == 0 (aligned loads)");
  }
  if (!fits_one_arena(bytes)) {
    fail(ErrorCode::unsupported,
         "vulkan: the transposed copy of tensor '" + w.name + "' exceeds the device's buffer range");
  }
  if (arena_sizes_.empty()) arena_sizes_.push_back(0);
  uint64_t start = align_up(arena_sizes_.back(), kAlign);
  if (start + bytes > arena_limit_) {
    arena_sizes_.push_back(0);
    start = 0;
  }
  DeviceMatrix m;
  m.type = w.type;
  m.rows = uint32_t(cols);
  m.cols = uint32_t(rows);
  m.row_bytes = uint32_t(q8 ? rows : rows * 2);
  DeviceMatrix::Piece p;
  p.arena = uint32_t(arena_sizes_.size() - 1);
  p.offset = uint32_t(start);
  p.rows = m.rows;
  m.pieces.push_back(p);
  pending_.push_back({w.data, p.arena, p.offset, bytes, Form::transposed, w.type, uint32_t(rows), uint32_t(cols)});
  arena_sizes_.back() = start + bytes;
  return m;
}

uint64_t WeightStore::planned_bytes() const {
  uint64_t total = 0;
  for (uint64_t size : arena_sizes_) total += align_up(size, kTailPad) + kTailPad;
  return total;
}

uint32_t WeightStore::add_floats(const float* data, size_t n) {
  // Each vector starts on a 16-byte boundary.
  while (host_vectors_.size() % 4 != 0) host_vectors_.push_back(0.0f);
  const size_t off = host_vectors_.size();
  host_vectors_.insert(host_vectors_.end(), data, data + n);
  return uint32_t(off);
}

uint32_t WeightStore::add_vector(const Weight& w) {
  const int64_t n = w.n_elements();
  std::vector<float> f(size_t(n), 0.0f);
  if (w.type == TensorType::F32) {
    std::memcpy(f.data(), w.data, size_t(n) * 4);
  } else {
    if (w.ne[0] % type_info(w.type).block_size != 0) {
      fail(ErrorCode::model, "vulkan: tensor '" + w.name + "' has a row length that is not a whole number of blocks");
    }
    dequantize_row(w.type, w.data, f.data(), n);
  }
  return add_floats(f.data(), f.size());
}

void WeightStore::upload(const ProgressFn& progress) {
  for (size_t i = 0; i < arena_sizes_.size(); ++i) {
    arenas_.emplace_back(ctx_, align_up(arena_sizes_[i], kTailPad) + kTailPad, MemoryKind::device, "model weights");
  }
  if (host_vectors_.empty()) host_vectors_.assign(4, 0.0f);
  if (host_vectors_.size() * 4 > ctx_.limits().max_storage_range) {
    fail(ErrorCode::unsupported, "vulkan: the model's 1-D weights (" + std::to_string(host_vectors_.size() * 4) +
                                     " bytes) exceed the device's buffer range");
  }
  vectors_ = Buffer(ctx_, host_vectors_.size() * 4, MemoryKind::device, "model vectors");

  uint64_t total = host_vectors_.size() * 4;
  for (const Pending& p : pending_) total += p.bytes;
  const uint64_t staging_size = std::min<uint64_t>(kStagingBytes, std::max<uint64_t>(total, 16));
  Buffer staging(ctx_, staging_size, MemoryKind::staging, "weight upload staging");
  std::vector<std::pair<VkBuffer, VkBufferCopy>> copies;
  uint64_t fill = 0, done = 0;
  const auto flush = [&] {
    if (copies.empty()) return;
    ctx_.run([&](VkCommandBuffer cmd) {
      for (const auto& [dst, region] : copies) ctx_.fn().vkCmdCopyBuffer(cmd, staging.handle(), dst, 1, &region);
    });
    done += fill;
    copies.clear();
    fill = 0;
    if (progress) progress(done, total);
  };
  const auto stage = [&](VkBuffer dst, uint64_t dst_off, const uint8_t* src, uint64_t bytes) {
    while (bytes > 0) {
      if (fill == staging_size) flush();
      const uint64_t n = std::min(bytes, staging_size - fill);
      std::memcpy(staging.mapped() + fill, src, n);
      copies.push_back({dst, VkBufferCopy{fill, dst_off, n}});
      fill += n;
      dst_off += n;
      src += n;
      bytes -= n;
    }
  };
  // Rows of out_row bytes made by make(first row, rows, destination) a staging slice at a time.
  std::vector<uint8_t> rows_buf;
  const auto stage_rows = [&](VkBuffer dst, uint64_t dst_off, uint64_t out_row, uint64_t out_rows, const auto& make) {
    const uint64_t slice = std::max<uint64_t>(1, staging_size / out_row);
    for (uint64_t r = 0; r < out_rows; r += slice) {
      const uint64_t n = std::min(slice, out_rows - r);
      rows_buf.resize(n * out_row);
      make(r, n, rows_buf.data());
      stage(dst, dst_off + r * out_row, rows_buf.data(), n * out_row);
    }
  };
  for (const Pending& p : pending_) {
    const VkBuffer dst = arenas_[p.arena].handle();
    if (p.form == Form::stored) {
      stage(dst, p.offset, p.src, p.bytes);
    } else if (p.form == Form::transposed && p.type == TensorType::Q8_0) {
      // cols rows of `rows` quants, then cols / 32 rows of `rows` float16 scales
      stage_rows(dst, p.offset, p.rows, p.cols, [&](uint64_t r, uint64_t n, uint8_t* out) {
        q8_0_transpose_quants(p.src, p.rows, p.cols, r, n, out);
      });
      stage_rows(
          dst, p.offset + uint64_t(p.rows) * p.cols, uint64_t(p.rows) * 2, p.cols / 32,
          [&](uint64_t r, uint64_t n, uint8_t* out) { q8_0_transpose_scales(p.src, p.rows, p.cols, r, n, out); });
    } else if (p.form == Form::transposed) {
      stage_rows(dst, p.offset, uint64_t(p.rows) * 2, p.cols, [&](uint64_t r, uint64_t n, uint8_t* out) {
        transpose_elements(p.src, p.rows, p.cols, 2, r, n, out);
      });
    } else {
      const uint64_t in_row = row_bytes(p.type, p.cols);
      stage_rows(dst, p.offset, grouped_row_bytes(p.type, p.cols), p.rows, [&](uint64_t r, uint64_t n, uint8_t* out) {
        const uint8_t* in = p.src + r * in_row;
        if (p.type == TensorType::Q6_K) {
          q6_k_to_grouped(in, out, n, p.cols);
        } else if (p.type == TensorType::Q8_0) {
          q8_0_to_grouped(in, out, n, p.cols);
        } else if (p.type == TensorType::Q4_K || p.type == TensorType::Q5_K) {
          k4_to_grouped(p.type, in, out, n, p.cols);
        } else {
          legacy_to_grouped(p.type, in, out, n, p.cols);
        }
      });
    }
  }
  stage(vectors_.handle(), 0, reinterpret_cast<const uint8_t*>(host_vectors_.data()), host_vectors_.size() * 4);
  flush();
  pending_.clear();
  host_vectors_.clear();
  host_vectors_.shrink_to_fit();
}

void upload_bytes(Context& ctx, VkBuffer dst, uint64_t dst_offset, const void* src, uint64_t bytes) {
  const uint64_t slice = std::min<uint64_t>(kStagingBytes, std::max<uint64_t>(bytes, 16));
  Buffer staging(ctx, slice, MemoryKind::staging, "upload staging");
  const uint8_t* p = static_cast<const uint8_t*>(src);
  while (bytes > 0) {
    const uint64_t n = std::min(bytes, slice);
    std::memcpy(staging.mapped(), p, n);
    ctx.run([&](VkCommandBuffer cmd) {
      const VkBufferCopy region{0, dst_offset, n};
      ctx.fn().vkCmdCopyBuffer(cmd, staging.handle(), dst, 1, &region);
    });
    p += n;
    dst_offset += n;
    bytes -= n;
  }
}

}  // namespace rwkv::vk
