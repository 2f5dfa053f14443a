// The GGUF type table (spec §4.2). Block byte sizes come from the block structs in
// blocks.h so the table and the kernels cannot disagree.
#include "tensor/types.h"

#include <array>
#include <string>

#include "common/error.h"
#include "tensor/blocks.h"

namespace rwkv {
namespace {

struct TypeEntry {
  TensorType type;
  TypeInfo info;
};

// Every type this engine knows. model_type marks the types model weights may be stored in;
// Q8_1 and Q8_K are activation formats and Q2_K/Q3_K are too lossy for these models.
constexpr std::array<TypeEntry, 15> kTypes = {{
    {TensorType::F32, {"f32", 1, 4, true}},
    {TensorType::F16, {"f16", 1, 2, true}},
    {TensorType::Q4_0, {"q4_0", QK4_0, int(sizeof(BlockQ4_0)), true}},
    {TensorType::Q4_1, {"q4_1", QK4_0, int(sizeof(BlockQ4_1)), true}},
    {TensorType::Q5_0, {"q5_0", QK4_0, int(sizeof(BlockQ5_0)), true}},
    {TensorType::Q5_1, {"q5_1", QK4_0, int(sizeof(BlockQ5_1)), true}},
    {TensorType::Q8_0, {"q8_0", QK4_0, int(sizeof(BlockQ8_0)), true}},
    {TensorType::Q8_1, {"q8_1", QK4_0, int(sizeof(BlockQ8_1)), false}},
    {TensorType::Q2_K, {"q2_K", QK_K, int(sizeof(BlockQ2_K)), false}},
    {TensorType::Q3_K, {"q3_K", QK_K, int(sizeof(BlockQ3_K)), false}},
    {TensorType::Q4_K, {"q4_K", QK_K, int(sizeof(BlockQ4_K)), true}},
    {TensorType::Q5_K, {"q5_K", QK_K, int(sizeof(BlockQ5_K)), true}},
    {TensorType::Q6_K, {"q6_K", QK_K, int(sizeof(BlockQ6_K)), true}},
    {TensorType::Q8_K, {"q8_K", QK_K, int(sizeof(BlockQ8_K)), false}},
    {TensorType::BF16, {"bf16", 1, 2, true}},
}};

const TypeEntry* find_entry(uint32_t id) {
  for (const TypeEntry& e : kTypes) {
    if (uint32_t(e.type) == id) return &e;
  }
  return nullptr;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

}  // namespace

std::optional<TypeInfo> type_info(uint32_t ggml_type) {
  const TypeEntry* e = find_entry(ggml_type);
  if (e == nullptr) return std::nullopt;
  return e->info;
}

const TypeInfo& type_info(TensorType type) {
  const TypeEntry* e = find_entry(uint32_t(type));
  if (e == nullptr) fail(ErrorCode::argument, "unknown tensor type id " + std::to_string(uint32_t(type)));
  return e->info;
}

std::string_view type_name(TensorType type) { return type_info(type).name; }

std::optional<TensorType> parse_type(std::string_view name) {
  for (const TypeEntry& e : kTypes) {
    if (iequals(name, e.info.name)) return e.type;
  }
  // llama.cpp's mix names ("Q4_K_M", "Q3_K_L", "Q5_K_S") name a k-quant plus a size suffix;
  // their main type is the k-quant.
  if (name.size() > 2 && name[name.size() - 2] == '_') {
    const char size = lower(name.back());
    if (size == 's' || size == 'm' || size == 'l') {
      std::optional<TensorType> base = parse_type(name.substr(0, name.size() - 2));
      if (base && type_info(*base).block_size == QK_K) return base;
    }
  }
  return std::nullopt;
}

uint32_t llama_file_type(TensorType main) {
  switch (main) {
    case TensorType::F32:
      return 0;
    case TensorType::F16:
      return 1;
    case TensorType::Q4_0:
      return 2;
    case TensorType::Q4_1:
      return 3;
    case TensorType::Q8_0:
      return 7;
    case TensorType::Q5_0:
      return 8;
    case TensorType::Q5_1:
      return 9;
    case TensorType::Q2_K:
      return 10;
    case TensorType::Q3_K:
      return 12;
    case TensorType::Q4_K:
      return 15;
    case TensorType::Q5_K:
      return 17;
    case TensorType::Q6_K:
      return 18;
    case TensorType::BF16:
      return 32;
    default:
      return 0;
  }
}

}  // namespace rwkv
