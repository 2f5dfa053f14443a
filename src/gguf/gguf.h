// GGUF container: a validating reader over a memory-mapped file and a writer (spec §4.1).
// Versions 2 and 3 are read; version 3 is written. Every validation failure throws
// rwkv::Error(ErrorCode::format) whose message names the file, the field and the byte
// offset, e.g. "model.gguf: tensor 'blk.0.attn_norm.weight' dimension 1 at byte 1234: ...".
// Besides ggml's checks the reader rejects dimensions of size 0, n_dims 0, empty keys and
// tensor names, overlapping tensor data and arrays nested more than 8 deep (reader.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/types.h"

namespace rwkv::gguf {

enum class ValueType : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};
std::string_view value_type_name(ValueType t);

// One metadata value. Scalars fill the field of their kind (every integer type and bool
// fill `integer`; f32/f64 fill `real`). Arrays fill `strings` (array of string),
// `integers` (array of any integer type or bool) or `reals` (array of f32/f64); arrays of
// arrays are read and validated but kept only as their element count in `array_size`.
struct Value {
  ValueType type = ValueType::u8;
  ValueType array_type = ValueType::u8;  // element type when type == array
  uint64_t array_size = 0;
  int64_t integer = 0;  // u64 values above INT64_MAX are rejected
  double real = 0;
  std::string string;
  std::vector<std::string> strings;
  std::vector<int64_t> integers;
  std::vector<double> reals;

  bool is_integer() const;  // any scalar integer type or bool
  bool is_real() const { return type == ValueType::f32 || type == ValueType::f64; }
};

struct KeyValue {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  uint32_t n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] innermost; unused dims are 1
  TensorType type = TensorType::F32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // points into the mapped file

  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

class File {
 public:
  // Maps `path` read-only and validates the whole header and every tensor's bounds.
  static std::shared_ptr<File> open(const std::string& path);
  // Parses a buffer that the caller keeps alive (fuzzing, tests). `name` appears in errors.
  static std::shared_ptr<File> parse(const uint8_t* data, size_t size, std::string name);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  size_t data_offset() const { return data_offset_; }
  size_t file_size() const { return size_; }

  const std::vector<KeyValue>& metadata() const { return kvs_; }
  const Value* find(std::string_view key) const;  // nullptr when absent
  // Typed getters: throw Error(format) naming the key when it is present with the wrong
  // type; `*_or` return the default when absent, the others throw Error(model) when absent.
  int64_t get_int(std::string_view key) const;
  int64_t get_int_or(std::string_view key, int64_t fallback) const;
  double get_real_or(std::string_view key, double fallback) const;
  std::string get_string(std::string_view key) const;
  std::string get_string_or(std::string_view key, std::string fallback) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* tensor(std::string_view name) const;  // nullptr when absent

 private:
  File() = default;
  void parse_all();

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  void* mapping_ = nullptr;  // non-null when this object owns an mmap
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<KeyValue> kvs_;
  std::vector<TensorInfo> tensors_;
  // Name -> index into kvs_ / tensors_ (std::less<> allows string_view lookups).
  std::map<std::string, size_t, std::less<>> key_index_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Builds a GGUF v3 file. Keys and tensors are written in the order added; tensor data is
// aligned to `general.alignment` (32 unless set_alignment is called).
class Writer {
 public:
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_u64(const std::string& key, uint64_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, const std::string& v);
  void set_string_array(const std::string& key, const std::vector<std::string>& v);
  void set_i32_array(const std::string& key, const std::vector<int32_t>& v);
  void set_alignment(uint32_t alignment);  // also writes general.alignment
  // Copies a key/value read from another file (used by quantize).
  void copy_value(const std::string& key, const Value& v);
  // ne has 1..4 entries, innermost first; data must hold row_bytes(type, ne[0]) * rest.
  void add_tensor(const std::string& name, TensorType type, const std::vector<int64_t>& ne, const void* data,
                  size_t nbytes);
  // Writes the file; throws Error(io) naming the path on failure.
  void write(const std::string& path) const;
  std::vector<uint8_t> to_bytes() const;

 private:
  struct PendingTensor {
    std::string name;
    TensorType type;
    std::vector<int64_t> ne;
    std::vector<uint8_t> data;
  };
  // Appends a key and its value type to kv_bytes_; rejects empty and duplicate keys.
  void begin_kv(const std::string& key, ValueType type);
  // Streams the whole file, in order, to `sink`.
  void emit(const std::function<void(const uint8_t*, size_t)>& sink) const;

  std::vector<uint8_t> kv_bytes_;
  uint64_t kv_count_ = 0;
  uint32_t alignment_ = 32;
  std::vector<PendingTensor> tensors_;
  std::set<std::string, std::less<>> keys_;
  std::set<std::string, std::less<>> tensor_names_;
};

}  // namespace rwkv::gguf
