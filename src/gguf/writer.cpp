// GGUF v3 writer (spec §4.1). Metadata is serialised as it is added; tensor offsets are
// assigned when the file is emitted, each tensor padded to the alignment. Invalid input
// (duplicate or empty names, bad shapes, sizes that do not match the type) throws
// Error(argument) so that every written file is one the reader accepts.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "common/error.h"
#include "gguf/gguf.h"

namespace rwkv::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr const char* kAlignmentKey = "general.alignment";
constexpr size_t kMaxTensorName = 63;  // ggml's GGML_MAX_NAME less the terminator

template <typename T>
void put(std::vector<uint8_t>& out, T value) {
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

[[noreturn]] void bad_argument(const std::string& message) { fail(ErrorCode::argument, "gguf writer: " + message); }

// Appends one integer element of type t, checking that the value fits it.
void put_integer(std::vector<uint8_t>& out, ValueType t, int64_t v, const std::string& key) {
  auto check = [&](int64_t lo, int64_t hi) {
    if (v < lo || v > hi) {
      bad_argument("key '" + key + "': " + std::to_string(v) + " does not fit a " + std::string(value_type_name(t)));
    }
  };
  switch (t) {
    case ValueType::u8:
      check(0, 255);
      return put<uint8_t>(out, uint8_t(v));
    case ValueType::i8:
      check(-128, 127);
      return put<int8_t>(out, int8_t(v));
    case ValueType::u16:
      check(0, 65535);
      return put<uint16_t>(out, uint16_t(v));
    case ValueType::i16:
      check(-32768, 32767);
      return put<int16_t>(out, int16_t(v));
    case ValueType::u32:
      check(0, std::numeric_limits<uint32_t>::max());
      return put<uint32_t>(out, uint32_t(v));
    case ValueType::i32:
      check(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
      return put<int32_t>(out, int32_t(v));
    case ValueType::u64:
      check(0, std::numeric_limits<int64_t>::max());
      return put<uint64_t>(out, uint64_t(v));
    case ValueType::i64:
      return put<int64_t>(out, v);
    case ValueType::boolean:
      check(0, 1);
      return put<uint8_t>(out, uint8_t(v));
    default:
      bad_argument("key '" + key + "': " + std::string(value_type_name(t)) + " is not an integer type");
  }
}

void put_real(std::vector<uint8_t>& out, ValueType t, double v) {
  if (t == ValueType::f32) {
    put<float>(out, float(v));
  } else {
    put<double>(out, v);
  }
}

size_t align_up(size_t n, size_t alignment) { return (n + alignment - 1) / alignment * alignment; }

}  // namespace

void Writer::begin_kv(const std::string& key, ValueType type) {
  if (key.empty()) bad_argument("empty key");
  if (!keys_.insert(key).second) bad_argument("duplicate key '" + key + "'");
  put_string(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, uint32_t(type));
  ++kv_count_;
}

void Writer::set_u32(const std::string& key, uint32_t v) {
  const bool is_alignment = key == kAlignmentKey;
  if (is_alignment && (v == 0 || (v & (v - 1)) != 0)) {
    bad_argument("alignment " + std::to_string(v) + " is not a non-zero power of two");
  }
  begin_kv(key, ValueType::u32);
  put<uint32_t>(kv_bytes_, v);
  if (is_alignment) alignment_ = v;
}

void Writer::set_i32(const std::string& key, int32_t v) {
  begin_kv(key, ValueType::i32);
  put<int32_t>(kv_bytes_, v);
}

void Writer::set_u64(const std::string& key, uint64_t v) {
  begin_kv(key, ValueType::u64);
  put<uint64_t>(kv_bytes_, v);
}

void Writer::set_f32(const std::string& key, float v) {
  begin_kv(key, ValueType::f32);
  put<float>(kv_bytes_, v);
}

void Writer::set_bool(const std::string& key, bool v) {
  begin_kv(key, ValueType::boolean);
  put<uint8_t>(kv_bytes_, v ? 1 : 0);
}

void Writer::set_string(const std::string& key, const std::string& v) {
  begin_kv(key, ValueType::string);
  put_string(kv_bytes_, v);
}

void Writer::set_string_array(const std::string& key, const std::vector<std::string>& v) {
  begin_kv(key, ValueType::array);
  put<uint32_t>(kv_bytes_, uint32_t(ValueType::string));
  put<uint64_t>(kv_bytes_, v.size());
  for (const std::string& s : v) put_string(kv_bytes_, s);
}

void Writer::set_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  begin_kv(key, ValueType::array);
  put<uint32_t>(kv_bytes_, uint32_t(ValueType::i32));
  put<uint64_t>(kv_bytes_, v.size());
  for (int32_t x : v) put<int32_t>(kv_bytes_, x);
}

void Writer::set_alignment(uint32_t alignment) { set_u32(kAlignmentKey, alignment); }

void Writer::copy_value(const std::string& key, const Value& v) {
  if (key == kAlignmentKey) {  // it governs the layout, so it goes through set_u32's check
    if (v.type != ValueType::u32 || v.integer < 0 || v.integer > std::numeric_limits<uint32_t>::max()) {
      bad_argument("key '" + key + "' must be a u32");
    }
    return set_u32(key, uint32_t(v.integer));
  }
  // Validate before begin_kv so that a rejected value leaves the writer unchanged.
  std::vector<uint8_t> body;
  if (v.type == ValueType::array) {
    const ValueType elem = v.array_type;
    put<uint32_t>(body, uint32_t(elem));
    put<uint64_t>(body, v.array_size);
    if (elem == ValueType::array) {
      bad_argument("key '" + key + "': arrays of arrays are not kept by the reader and cannot be copied");
    }
    auto check_size = [&](size_t n) {
      if (n != v.array_size) {
        bad_argument("key '" + key + "': array_size " + std::to_string(v.array_size) + " but " + std::to_string(n) +
                     " elements");
      }
    };
    if (elem == ValueType::string) {
      check_size(v.strings.size());
      for (const std::string& s : v.strings) put_string(body, s);
    } else if (elem == ValueType::f32 || elem == ValueType::f64) {
      check_size(v.reals.size());
      for (double x : v.reals) put_real(body, elem, x);
    } else {
      check_size(v.integers.size());
      for (int64_t x : v.integers) put_integer(body, elem, x, key);
    }
  } else if (v.type == ValueType::string) {
    put_string(body, v.string);
  } else if (v.is_real()) {
    put_real(body, v.type, v.real);
  } else {
    put_integer(body, v.type, v.integer, key);
  }
  begin_kv(key, v.type);
  kv_bytes_.insert(kv_bytes_.end(), body.begin(), body.end());
}

void Writer::add_tensor(const std::string& name, TensorType type, const std::vector<int64_t>& ne, const void* data,
                        size_t nbytes) {
  const std::string what = "tensor '" + name + "'";
  if (name.empty()) bad_argument("empty tensor name");
  if (name.size() > kMaxTensorName) {
    bad_argument(what + ": name longer than " + std::to_string(kMaxTensorName) + " bytes");
  }
  if (tensor_names_.count(name) != 0) bad_argument("duplicate " + what);
  const std::optional<TypeInfo> info = type_info(uint32_t(type));
  if (!info) bad_argument(what + ": unknown type id " + std::to_string(uint32_t(type)));
  if (ne.empty() || ne.size() > 4)
    bad_argument(what + ": " + std::to_string(ne.size()) + " dimensions, must be 1 to 4");
  uint64_t elements = 1;
  for (int64_t n : ne) {
    if (n < 1) bad_argument(what + ": dimension of size " + std::to_string(n));
    if (__builtin_mul_overflow(elements, uint64_t(n), &elements) ||
        elements > uint64_t(std::numeric_limits<int64_t>::max())) {
      bad_argument(what + ": element count overflows int64");
    }
  }
  if (ne[0] % info->block_size != 0) {
    bad_argument(what + ": dimension 0 (" + std::to_string(ne[0]) + ") is not a multiple of the " +
                 std::string(info->name) + " block size " + std::to_string(info->block_size));
  }
  uint64_t expected = 0;
  if (__builtin_mul_overflow(elements / uint64_t(info->block_size), uint64_t(info->block_bytes), &expected) ||
      expected != nbytes) {
    bad_argument(what + ": " + std::to_string(nbytes) + " bytes of data, the shape needs " + std::to_string(expected));
  }
  const auto* bytes = static_cast<const uint8_t*>(data);
  tensors_.push_back({name, type, ne, std::vector<uint8_t>(bytes, bytes + nbytes)});
  tensor_names_.insert(name);
}

void Writer::emit(const std::function<void(const uint8_t*, size_t)>& sink) const {
  std::vector<uint8_t> header;
  put<uint32_t>(header, kMagic);
  put<uint32_t>(header, kVersion);
  put<uint64_t>(header, tensors_.size());
  put<uint64_t>(header, kv_count_);
  header.insert(header.end(), kv_bytes_.begin(), kv_bytes_.end());
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    put_string(header, t.name);
    put<uint32_t>(header, uint32_t(t.ne.size()));
    for (int64_t n : t.ne) put<uint64_t>(header, uint64_t(n));
    put<uint32_t>(header, uint32_t(t.type));
    put<uint64_t>(header, offset);
    offset += align_up(t.data.size(), alignment_);
  }
  sink(header.data(), header.size());
  // The data section exists only with tensors: a file without any ends after its header (as
  // the reader accepts), whatever its alignment. Padding comes from a small block of zeros,
  // so that a large alignment (any power of two up to 2^31) never allocates its size.
  if (tensors_.empty()) return;
  static constexpr uint8_t kZeros[4096] = {};
  const auto zeros = [&](size_t n) {
    while (n > 0) {
      const size_t k = std::min(n, sizeof(kZeros));
      sink(kZeros, k);
      n -= k;
    }
  };
  zeros(align_up(header.size(), alignment_) - header.size());
  for (const PendingTensor& t : tensors_) {
    sink(t.data.data(), t.data.size());
    zeros(align_up(t.data.size(), alignment_) - t.data.size());
  }
}

std::vector<uint8_t> Writer::to_bytes() const {
  std::vector<uint8_t> out;
  emit([&](const uint8_t* p, size_t n) { out.insert(out.end(), p, p + n); });
  return out;
}

void Writer::write(const std::string& path) const {
  // Written under a temporary name and renamed, so a failure never leaves a partial file
  // at `path`.
  const std::string tmp = path + ".tmp";
  FILE* f = fopen(tmp.c_str(), "wb");
  if (f == nullptr) fail(ErrorCode::io, path + ": cannot create " + tmp + ": " + strerror(errno));
  int err = 0;
  emit([&](const uint8_t* p, size_t n) {
    if (err == 0 && n > 0 && fwrite(p, 1, n, f) != n) err = errno != 0 ? errno : EIO;
  });
  if (fclose(f) != 0 && err == 0) err = errno != 0 ? errno : EIO;
  if (err == 0 && rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    remove(tmp.c_str());
    fail(ErrorCode::io, path + ": cannot write: " + strerror(err));
  }
}

}  // namespace rwkv::gguf
