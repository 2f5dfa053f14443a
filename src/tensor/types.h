// Tensor element types as numbered in GGUF (ggml_type), and their block geometry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace rwkv {

enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

struct TypeInfo {
  std::string_view name;  // as llama.cpp prints it: "f32", "q4_K", ...
  int block_size;         // elements per block
  int block_bytes;        // bytes per block
  bool model_type;        // a type the engine runs model weights in
};

// Geometry of a GGUF type id; nullopt for ids this engine does not know.
std::optional<TypeInfo> type_info(uint32_t ggml_type);
const TypeInfo& type_info(TensorType type);  // for a known type
std::string_view type_name(TensorType type);
// Parses "f16", "Q8_0", "q4_k", "Q4_K_M" (a mix name: its main type) ... case-insensitively.
std::optional<TensorType> parse_type(std::string_view name);

// llama.cpp's llama_ftype number for a file whose large matrices are `main` (the mostly-X
// number; k-quants give their _M mix), written to general.file_type.
uint32_t llama_file_type(TensorType main);

// Bytes of a row of n elements; n must be a multiple of the block size.
inline size_t row_bytes(TensorType type, int64_t n) {
  const TypeInfo& t = type_info(type);
  return size_t(n / t.block_size) * size_t(t.block_bytes);
}

}  // namespace rwkv
