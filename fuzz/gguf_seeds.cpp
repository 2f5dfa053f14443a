// Writes a few small valid GGUF files into the folder named on the command line, as the
// fuzzer's seed corpus: every value type the Writer emits, several tensor types, a custom
// alignment and a version 2 header.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "gguf/gguf.h"

namespace {

using rwkv::TensorType;
using rwkv::gguf::Value;
using rwkv::gguf::ValueType;
using rwkv::gguf::Writer;

Writer sample(uint32_t alignment) {
  Writer w;
  if (alignment != 32) w.set_alignment(alignment);
  w.set_string("general.architecture", "rwkv7");
  w.set_u32("rwkv7.block_count", 1);
  w.set_i32("i32", -1);
  w.set_u64("u64", 1);
  w.set_f32("rwkv7.attention.layer_norm_epsilon", 1e-5f);
  w.set_bool("flag", true);
  w.set_string_array("tokenizer.ggml.tokens", {"<s>", "a", "bc"});
  w.set_i32_array("tokenizer.ggml.token_type", {3, 1, 1});
  Value reals;
  reals.type = ValueType::array;
  reals.array_type = ValueType::f64;
  reals.array_size = 2;
  reals.reals = {0.5, -1};
  w.copy_value("reals", reals);
  const std::vector<uint8_t> bytes(2 * 34, 0x3c);
  w.add_tensor("token_embd.weight", TensorType::Q8_0, {32, 2}, bytes.data(), bytes.size());
  w.add_tensor("norm.weight", TensorType::F32, {4}, bytes.data(), 16);
  w.add_tensor("x.weight", TensorType::F16, {2, 3}, bytes.data(), 12);
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  try {
    sample(32).write(dir + "/seed_v3.gguf");
    sample(8).write(dir + "/seed_align8.gguf");
    std::vector<uint8_t> v2 = sample(32).to_bytes();
    v2[4] = 2;  // version 2 has the same layout
    FILE* f = fopen((dir + "/seed_v2.gguf").c_str(), "wb");
    if (f == nullptr || fwrite(v2.data(), 1, v2.size(), f) != v2.size() || fclose(f) != 0) {
      fprintf(stderr, "%s/seed_v2.gguf: cannot write\n", dir.c_str());
      return 1;
    }
  } catch (const rwkv::Error& e) {
    fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
