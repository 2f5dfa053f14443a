// Build-time generator of blocks.glsl: the byte size of every quant block and the byte
// offset of each of its fields, read from the C++ structs in src/tensor/blocks.h, and the
// grouped layouts of backend/vulkan/grouped_layout.h, so the shaders can never disagree
// with the headers. Usage: gen_blocks_glsl OUTPUT
#include <cstddef>
#include <cstdio>
#include <utility>

#include "backend/vulkan/grouped_layout.h"
#include "tensor/blocks.h"

#define FIELD(out, block, field, prefix) \
  std::fprintf(out, "#define %s_%s %zu\n", prefix, #field, offsetof(rwkv::block, field))
#define SIZE(out, block, prefix) std::fprintf(out, "#define %s_BYTES %zu\n", prefix, sizeof(rwkv::block))

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT\n", argv[0]);
    return 2;
  }
  FILE* out = std::fopen(argv[1], "w");
  if (out == nullptr) {
    std::perror(argv[1]);
    return 1;
  }
  std::fprintf(out, "// Generated from src/tensor/blocks.h by gen_blocks_glsl.cpp: do not edit.\n");
  std::fprintf(out, "#define QK4_0 %d\n#define QK_K %d\n", rwkv::QK4_0, rwkv::QK_K);
  SIZE(out, BlockQ4_0, "Q4_0");
  FIELD(out, BlockQ4_0, d, "Q4_0");
  FIELD(out, BlockQ4_0, qs, "Q4_0");
  SIZE(out, BlockQ4_1, "Q4_1");
  FIELD(out, BlockQ4_1, d, "Q4_1");
  FIELD(out, BlockQ4_1, m, "Q4_1");
  FIELD(out, BlockQ4_1, qs, "Q4_1");
  SIZE(out, BlockQ5_0, "Q5_0");
  FIELD(out, BlockQ5_0, d, "Q5_0");
  FIELD(out, BlockQ5_0, qh, "Q5_0");
  FIELD(out, BlockQ5_0, qs, "Q5_0");
  SIZE(out, BlockQ5_1, "Q5_1");
  FIELD(out, BlockQ5_1, d, "Q5_1");
  FIELD(out, BlockQ5_1, m, "Q5_1");
  FIELD(out, BlockQ5_1, qh, "Q5_1");
  FIELD(out, BlockQ5_1, qs, "Q5_1");
  SIZE(out, BlockQ8_0, "Q8_0");
  FIELD(out, BlockQ8_0, d, "Q8_0");
  FIELD(out, BlockQ8_0, qs, "Q8_0");
  // The grouped Q8_0 rows of the device (backend/vulkan/grouped_layout.h).
  std::fprintf(out, "#define Q8G_BYTES %u\n#define Q8G_QS %u\n", rwkv::vk::kQ8GroupBytes, rwkv::vk::kQ8GroupScaleBytes);
  // The grouped Q4_0 / Q4_1 / Q5_0 / Q5_1 rows of the device (backend/vulkan/grouped_layout.h).
  const std::pair<rwkv::TensorType, const char*> legacy[] = {{rwkv::TensorType::Q4_0, "Q4_0"},
                                                             {rwkv::TensorType::Q4_1, "Q4_1"},
                                                             {rwkv::TensorType::Q5_0, "Q5_0"},
                                                             {rwkv::TensorType::Q5_1, "Q5_1"}};
  for (const auto& [type, name] : legacy) {
    const rwkv::vk::LegacyGroup g = rwkv::vk::legacy_group(type);
    std::fprintf(out, "#define %sG_BYTES %u\n#define %sG_QS %u\n", name, g.qs_off + 128, name, g.qs_off);
    if (g.m_off) std::fprintf(out, "#define %sG_M %u\n", name, g.m_off);
    if (g.qh_off) std::fprintf(out, "#define %sG_QH %u\n", name, g.qh_off);
  }
  // The grouped Q4_K / Q5_K rows of the device (backend/vulkan/grouped_layout.h).
  std::fprintf(out, "#define K4G_HDR %u\n#define K4G_HDR_BYTES %u\n#define Q4_KG_SB %u\n#define Q5_KG_SB %u\n",
               rwkv::vk::kK4HeaderBytes, rwkv::vk::kK4GroupHeaderBytes,
               rwkv::vk::k4_block_bytes(rwkv::TensorType::Q4_K), rwkv::vk::k4_block_bytes(rwkv::TensorType::Q5_K));
  // The grouped Q6_K rows of the device (backend/vulkan/grouped_layout.h).
  std::fprintf(out, "#define Q6G_BYTES %u\n#define Q6G_D %u\n#define Q6G_BLOCK %u\n", rwkv::vk::kQ6GroupBytes,
               rwkv::vk::kQ6GroupScaleBytes, rwkv::vk::kQ6GroupBlockBytes);
  SIZE(out, BlockQ6_K, "Q6_K");
  FIELD(out, BlockQ6_K, ql, "Q6_K");
  FIELD(out, BlockQ6_K, qh, "Q6_K");
  FIELD(out, BlockQ6_K, scales, "Q6_K");
  FIELD(out, BlockQ6_K, d, "Q6_K");
  if (std::fclose(out) != 0) {
    std::perror(argv[1]);
    return 1;
  }
  return 0;
}
