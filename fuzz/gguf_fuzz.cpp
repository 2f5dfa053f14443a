// libFuzzer target for the GGUF reader. Any input must either parse or throw rwkv::Error;
// a crash, sanitizer report or other exception is a bug. An accepted file is also re-written
// with the Writer: the result must parse, and writing that again must give the same bytes.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/error.h"
#include "gguf/gguf.h"

namespace {

std::vector<uint8_t> rewrite(const rwkv::gguf::File& file) {
  rwkv::gguf::Writer writer;
  for (const rwkv::gguf::KeyValue& kv : file.metadata()) {
    // The reader keeps only the element count of arrays of arrays, so they cannot be copied.
    const bool nested =
        kv.value.type == rwkv::gguf::ValueType::array && kv.value.array_type == rwkv::gguf::ValueType::array;
    if (!nested) writer.copy_value(kv.key, kv.value);
  }
  for (const rwkv::gguf::TensorInfo& t : file.tensors()) {
    writer.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims), t.data, t.nbytes);
  }
  return writer.to_bytes();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<rwkv::gguf::File> file;
  try {
    file = rwkv::gguf::File::parse(data, size, "fuzz.gguf");
  } catch (const rwkv::Error&) {
    return 0;
  }
  const std::vector<uint8_t> once = rewrite(*file);
  const auto reparsed = rwkv::gguf::File::parse(once.data(), once.size(), "rewritten.gguf");
  if (rewrite(*reparsed) != once) abort();
  return 0;
}
