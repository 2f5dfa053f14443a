// Device copies of the model's weights. Matrices keep their stored GGUF bytes (the shaders
// read the blocks as stored), except Q8_0 and Q6_K, which are regrouped (grouped_layout.h) so
// that their quants are aligned for wide loads; they are packed into device buffers ("arenas") no larger than
// the device's maxStorageBufferRange, and a matrix too large for one is split by rows.
// 1-D weights (norms, biases, lerp factors, ...) are converted to float32 into one buffer.
// An F16, BF16 or Q8_0 matrix may also be stored transposed (add_transposed: the sparse FFN
// value product's copy). Uploads go through a host-visible staging buffer in slices, reporting
// progress.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/vulkan/context.h"
#include "model/model.h"

namespace rwkv::vk {

// A matrix on the device: `rows` x `cols` elements of `type`, in one or more row ranges.
struct DeviceMatrix {
  TensorType type = TensorType::F32;
  // row_bytes: on the device (Q8_0: grouped; transposed Q8_0: the int8 quants, with the scale
  // plane after the rows, grouped_layout.h)
  uint32_t rows = 0, cols = 0, row_bytes = 0;
  struct Piece {
    uint32_t arena = 0;      // index in WeightStore's arenas
    uint32_t offset = 0;     // byte offset of the piece's first row in its arena
    uint32_t row_begin = 0;  // first row of the matrix in this piece
    uint32_t rows = 0;
  };
  std::vector<Piece> pieces;
};

class WeightStore {
 public:
  // arena_limit: the most bytes one arena may hold (0: the device's limit, capped at 1 GiB).
  explicit WeightStore(Context& ctx, uint64_t arena_limit = 0);

  // Plans a matrix's placement; its bytes are copied by upload(). The Weight's bytes must
  // stay valid until then. Throws Error(unsupported) for types or shapes the shaders lack.
  DeviceMatrix add_matrix(const Weight& w);
  // Plans a copy of F16, BF16 or Q8_0 matrix `w` (rows x cols) transposed: cols rows of rows
  // values (Q8_0: of rows int8 quants, then the scale plane: grouped_layout.h; rows % 16 ==
  // 0), whole in one arena (one piece). Throws Error(unsupported) for other types or shapes
  // or when the copy is larger than one arena (check fits_one_arena first).
  DeviceMatrix add_transposed(const Weight& w);
  // Device bytes of that copy of a `type` matrix of rows x cols.
  static uint64_t transposed_bytes(TensorType type, uint64_t rows, uint64_t cols);
  bool fits_one_arena(uint64_t bytes) const { return bytes <= arena_limit_; }
  // Device bytes of the arenas planned so far.
  uint64_t planned_bytes() const;
  // Appends a 1-D weight (or its slots) as float32; returns its offset in floats.
  uint32_t add_vector(const Weight& w);
  uint32_t add_floats(const float* data, size_t n);

  // Allocates the arenas and copies every planned matrix and the vectors to the device.
  void upload(const ProgressFn& progress);

  VkBuffer arena(uint32_t index) const { return arenas_[index].handle(); }
  VkBuffer vectors() const { return vectors_.handle(); }

 private:
  enum class Form { stored, grouped, transposed };
  struct Pending {
    const uint8_t* src;
    uint32_t arena;
    uint32_t offset;
    uint64_t bytes;  // on the device
    Form form;
    TensorType type;  // of the source
    // grouped: the piece's rows and their columns (grouped_layout.h); transposed: the
    // source's shape
    uint32_t rows, cols;
  };
  Context& ctx_;
  uint64_t arena_limit_;
  std::vector<uint64_t> arena_sizes_;  // planned bytes per arena
  std::vector<Buffer> arenas_;
  std::vector<Pending> pending_;
  std::vector<float> host_vectors_;
  Buffer vectors_;
};

// Copies host bytes into a device buffer through a staging buffer (one slice at a time).
void upload_bytes(Context& ctx, VkBuffer dst, uint64_t dst_offset, const void* src, uint64_t bytes);

}  // namespace rwkv::vk
