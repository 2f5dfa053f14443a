// GGUF reader: maps a file read-only and validates every header field before anything else
// looks at it (spec §4.1). Choices beyond ggml's own checks, all rejected with Error(format):
// dimensions of 0 (ggml accepts empty tensors; no RWKV tensor is empty), n_dims 0, empty keys
// and tensor names, tensor data overlapping another tensor, and arrays nested more than
// kMaxArrayDepth deep. Tensor data need not be consecutive in tensor-info order.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "gguf/cursor.h"
#include "gguf/gguf.h"

namespace rwkv::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxValueType = uint32_t(ValueType::f64);
constexpr int kMaxArrayDepth = 8;                          // bounds recursion on hostile input
constexpr size_t kMaxTensorName = 63;                      // ggml's GGML_MAX_NAME (64) less the terminator
constexpr size_t kMinKvBytes = 8 + 4 + 1;                  // empty key length, value type, one-byte value
constexpr size_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // name length, n_dims, ne[0], type, offset
constexpr const char* kAlignmentKey = "general.alignment";

// A name as it appears in messages: non-printable bytes escaped, long names cut short.
std::string quoted(std::string_view name) {
  constexpr size_t kMaxShown = 80;
  std::string out = "'";
  for (size_t i = 0; i < name.size() && i < kMaxShown; ++i) {
    const unsigned char ch = static_cast<unsigned char>(name[i]);
    if (ch >= 0x20 && ch < 0x7f) {
      out += char(ch);
    } else {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    }
  }
  if (name.size() > kMaxShown) out += "...";
  return out + "'";
}

bool is_integer_type(ValueType t) {
  switch (t) {
    case ValueType::u8:
    case ValueType::i8:
    case ValueType::u16:
    case ValueType::i16:
    case ValueType::u32:
    case ValueType::i32:
    case ValueType::u64:
    case ValueType::i64:
    case ValueType::boolean:
      return true;
    default:
      return false;
  }
}

// The fewest bytes a value of type t occupies (a string its length field; an array its
// element type and count), used to reject counts that cannot fit in the bytes left.
size_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::u8:
    case ValueType::i8:
    case ValueType::boolean:
      return 1;
    case ValueType::u16:
    case ValueType::i16:
      return 2;
    case ValueType::u32:
    case ValueType::i32:
    case ValueType::f32:
      return 4;
    case ValueType::u64:
    case ValueType::i64:
    case ValueType::f64:
    case ValueType::string:
      return 8;
    case ValueType::array:
      return 12;
  }
  return 1;
}

ValueType read_value_type(Cursor& c, std::string_view what) {
  const size_t at = c.pos();
  const uint32_t raw = c.read<uint32_t>(what);
  if (raw > kMaxValueType) c.fail_at(at, what, "unknown value type " + std::to_string(raw));
  return ValueType(raw);
}

int64_t read_integer(Cursor& c, ValueType t, std::string_view what) {
  const size_t at = c.pos();
  switch (t) {
    case ValueType::u8:
      return c.read<uint8_t>(what);
    case ValueType::i8:
      return c.read<int8_t>(what);
    case ValueType::u16:
      return c.read<uint16_t>(what);
    case ValueType::i16:
      return c.read<int16_t>(what);
    case ValueType::u32:
      return c.read<uint32_t>(what);
    case ValueType::i32:
      return c.read<int32_t>(what);
    case ValueType::i64:
      return c.read<int64_t>(what);
    case ValueType::u64: {
      const uint64_t v = c.read<uint64_t>(what);
      if (v > uint64_t(std::numeric_limits<int64_t>::max())) {
        c.fail_at(at, what, "u64 value " + std::to_string(v) + " exceeds INT64_MAX");
      }
      return int64_t(v);
    }
    case ValueType::boolean: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) c.fail_at(at, what, "bool byte is " + std::to_string(b) + ", must be 0 or 1");
      return b;
    }
    default:
      c.fail_at(at, what, "internal: not an integer type");
  }
}

double read_real(Cursor& c, ValueType t, std::string_view what) {
  if (t == ValueType::f32) return c.read<float>(what);
  return c.read<double>(what);
}

// Reads the body of an array value (element type, count, elements). `out` receives the
// elements, or is null for a nested array, which is validated and dropped.
void read_array(Cursor& c, std::string_view what, int depth, Value* out) {
  const ValueType elem = read_value_type(c, what);
  const size_t count_at = c.pos();
  const uint64_t count = c.read<uint64_t>(what);
  if (count > c.remaining() / min_value_bytes(elem)) {
    c.fail_at(count_at, what,
              "array of " + std::to_string(count) + " " + std::string(value_type_name(elem)) +
                  " elements cannot fit in the " + std::to_string(c.remaining()) + " bytes left");
  }
  if (elem == ValueType::array && depth >= kMaxArrayDepth) {
    c.fail_at(count_at, what, "arrays nested more than " + std::to_string(kMaxArrayDepth) + " deep");
  }
  if (out != nullptr) {
    out->array_type = elem;
    out->array_size = count;
    if (elem == ValueType::string) out->strings.reserve(size_t(count));
    if (is_integer_type(elem)) out->integers.reserve(size_t(count));
    if (elem == ValueType::f32 || elem == ValueType::f64) out->reals.reserve(size_t(count));
  }
  for (uint64_t i = 0; i < count; ++i) {
    if (elem == ValueType::array) {
      read_array(c, what, depth + 1, nullptr);
    } else if (elem == ValueType::string) {
      std::string s = c.read_string(what);
      if (out != nullptr) out->strings.push_back(std::move(s));
    } else if (is_integer_type(elem)) {
      const int64_t v = read_integer(c, elem, what);
      if (out != nullptr) out->integers.push_back(v);
    } else {
      const double v = read_real(c, elem, what);
      if (out != nullptr) out->reals.push_back(v);
    }
  }
}

void read_value(Cursor& c, Value& v, std::string_view what) {
  if (v.type == ValueType::array) {
    read_array(c, what, 1, &v);
  } else if (v.type == ValueType::string) {
    v.string = c.read_string(what);
  } else if (is_integer_type(v.type)) {
    v.integer = read_integer(c, v.type, what);
  } else {
    v.real = read_real(c, v.type, what);
  }
}

}  // namespace

std::string_view value_type_name(ValueType t) {
  switch (t) {
    case ValueType::u8:
      return "u8";
    case ValueType::i8:
      return "i8";
    case ValueType::u16:
      return "u16";
    case ValueType::i16:
      return "i16";
    case ValueType::u32:
      return "u32";
    case ValueType::i32:
      return "i32";
    case ValueType::f32:
      return "f32";
    case ValueType::boolean:
      return "bool";
    case ValueType::string:
      return "string";
    case ValueType::array:
      return "array";
    case ValueType::u64:
      return "u64";
    case ValueType::i64:
      return "i64";
    case ValueType::f64:
      return "f64";
  }
  return "invalid";
}

bool Value::is_integer() const { return is_integer_type(type); }

std::shared_ptr<File> File::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::io, path + ": cannot open: " + strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(ErrorCode::io, path + ": cannot stat: " + strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorCode::io, path + ": not a regular file");
  }
  std::shared_ptr<File> file(new File());
  file->path_ = path;
  file->size_ = size_t(st.st_size);
  if (file->size_ > 0) {  // mmap rejects length 0; an empty file then fails on its magic
    void* mapping = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail(ErrorCode::io, path + ": cannot map " + std::to_string(file->size_) + " bytes: " + strerror(err));
    }
    file->mapping_ = mapping;
    file->base_ = static_cast<const uint8_t*>(mapping);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  file->parse_all();
  return file;
}

std::shared_ptr<File> File::parse(const uint8_t* data, size_t size, std::string name) {
  std::shared_ptr<File> file(new File());
  file->path_ = std::move(name);
  file->base_ = data;
  file->size_ = size;
  file->parse_all();
  return file;
}

File::~File() {
  if (mapping_ != nullptr) munmap(mapping_, size_);
}

void File::parse_all() {
  Cursor c(base_, size_, path_);

  const uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kMagic) {
    std::string found;
    for (int i = 0; i < 4; ++i) {
      if (i > 0) found += ' ';
      found += std::to_string(base_[i]);
    }
    c.fail_at(0, "magic", "not a GGUF file (expected bytes 71 71 85 70 \"GGUF\", found " + found + ")");
  }
  version_ = c.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped == 2 || swapped == 3) c.fail_at(4, "version", "big-endian GGUF files are not supported");
    c.fail_at(4, "version", "unsupported GGUF version " + std::to_string(version_) + " (versions 2 and 3 are read)");
  }

  // Both counts are checked against the bytes left before anything is allocated.
  const uint64_t tensor_count = c.read<uint64_t>("tensor count");
  const uint64_t kv_count = c.read<uint64_t>("key/value count");
  const size_t left = c.remaining();
  if (tensor_count > left / kMinTensorInfoBytes) {
    c.fail_at(8, "tensor count",
              std::to_string(tensor_count) + " tensors cannot fit in the " + std::to_string(left) + " bytes left");
  }
  if (kv_count > left / kMinKvBytes) {
    c.fail_at(16, "key/value count",
              std::to_string(kv_count) + " key/value pairs cannot fit in the " + std::to_string(left) + " bytes left");
  }
  if (tensor_count * kMinTensorInfoBytes + kv_count * kMinKvBytes > left) {
    c.fail_at(8, "tensor count",
              std::to_string(tensor_count) + " tensors and " + std::to_string(kv_count) +
                  " key/value pairs cannot fit in the " + std::to_string(left) + " bytes left");
  }

  std::vector<size_t> key_offsets;  // byte offset of each key, for messages
  kvs_.reserve(size_t(kv_count));
  for (uint64_t i = 0; i < kv_count; ++i) {
    const size_t key_at = c.pos();
    const std::string index_what = "key #" + std::to_string(i);
    std::string key = c.read_string(index_what);
    if (key.empty()) c.fail_at(key_at, index_what, "empty key");
    const std::string what = "key " + quoted(key);
    const auto [it, inserted] = key_index_.emplace(key, kvs_.size());
    if (!inserted) {
      c.fail_at(key_at, what, "duplicate key (first at byte " + std::to_string(key_offsets[it->second]) + ")");
    }
    Value value;
    value.type = read_value_type(c, what + " value type");
    read_value(c, value, what + " value");
    key_offsets.push_back(key_at);
    kvs_.push_back({std::move(key), std::move(value)});
  }

  if (const auto it = key_index_.find(kAlignmentKey); it != key_index_.end()) {
    const Value& v = kvs_[it->second].value;
    const std::string what = "key " + quoted(kAlignmentKey);
    if (v.type != ValueType::u32) {
      c.fail_at(key_offsets[it->second], what, "must be a u32, found " + std::string(value_type_name(v.type)));
    }
    if (v.integer == 0 || (v.integer & (v.integer - 1)) != 0) {
      c.fail_at(key_offsets[it->second], what,
                "alignment " + std::to_string(v.integer) + " is not a non-zero power of two");
    }
    alignment_ = size_t(v.integer);
  }

  std::vector<size_t> offset_fields;  // byte offset of each tensor's offset field
  tensors_.reserve(size_t(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    const size_t name_at = c.pos();
    const std::string index_what = "tensor #" + std::to_string(i) + " name";
    std::string name = c.read_string(index_what);
    if (name.empty()) c.fail_at(name_at, index_what, "empty tensor name");
    const std::string what = "tensor " + quoted(name);
    if (name.size() > kMaxTensorName) {
      c.fail_at(name_at, what,
                "name is " + std::to_string(name.size()) + " bytes; ggml limits tensor names to " +
                    std::to_string(kMaxTensorName));
    }
    const auto [it, inserted] = tensor_index_.emplace(name, tensors_.size());
    if (!inserted) {
      c.fail_at(name_at, what, "duplicate tensor name (first is tensor #" + std::to_string(it->second) + ")");
    }

    TensorInfo t;
    t.name = std::move(name);
    const size_t dims_at = c.pos();
    t.n_dims = c.read<uint32_t>(what + " n_dims");
    if (t.n_dims < 1 || t.n_dims > 4) {
      c.fail_at(dims_at, what + " n_dims", "n_dims is " + std::to_string(t.n_dims) + ", must be 1 to 4");
    }
    uint64_t elements = 1;
    for (uint32_t d = 0; d < t.n_dims; ++d) {
      const size_t ne_at = c.pos();
      const std::string ne_what = what + " dimension " + std::to_string(d);
      const uint64_t ne = c.read<uint64_t>(ne_what);
      if (ne == 0) c.fail_at(ne_at, ne_what, "size 0 (empty tensors are rejected)");
      if (__builtin_mul_overflow(elements, ne, &elements) || elements > uint64_t(std::numeric_limits<int64_t>::max())) {
        c.fail_at(ne_at, ne_what, "size " + std::to_string(ne) + " makes the element count overflow int64");
      }
      t.ne[d] = int64_t(ne);
    }

    const size_t type_at = c.pos();
    const uint32_t type_id = c.read<uint32_t>(what + " type");
    const std::optional<TypeInfo> info = type_info(type_id);
    if (!info) c.fail_at(type_at, what + " type", "unknown tensor type id " + std::to_string(type_id));
    t.type = TensorType(type_id);
    if (t.ne[0] % info->block_size != 0) {
      c.fail_at(type_at, what + " type",
                "dimension 0 (" + std::to_string(t.ne[0]) + ") is not a multiple of the " + std::string(info->name) +
                    " block size " + std::to_string(info->block_size));
    }
    const uint64_t blocks = elements / uint64_t(info->block_size);
    if (__builtin_mul_overflow(blocks, uint64_t(info->block_bytes), &t.nbytes)) {
      c.fail_at(type_at, what + " type", "byte size overflows u64");
    }

    const size_t offset_at = c.pos();
    t.offset = c.read<uint64_t>(what + " offset");
    if (t.offset % alignment_ != 0) {
      c.fail_at(
          offset_at, what + " offset",
          "offset " + std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(alignment_));
    }
    offset_fields.push_back(offset_at);
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment. A file without tensors
  // may end before it.
  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_bytes = data_offset_ <= size_ ? size_ - data_offset_ : 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    TensorInfo& t = tensors_[i];
    if (data_offset_ > size_ || t.offset > data_bytes || t.nbytes > data_bytes - t.offset) {
      c.fail_at(offset_fields[i], "tensor " + quoted(t.name) + " offset",
                std::to_string(t.nbytes) + " bytes at data offset " + std::to_string(t.offset) +
                    " extend past the end of the file (the data section holds " + std::to_string(data_bytes) +
                    " bytes)");
    }
    t.data = base_ + data_offset_ + t.offset;
  }

  std::vector<size_t> by_offset(tensors_.size());
  for (size_t i = 0; i < by_offset.size(); ++i) by_offset[i] = i;
  std::sort(by_offset.begin(), by_offset.end(),
            [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const TensorInfo& prev = tensors_[by_offset[k - 1]];
    const TensorInfo& next = tensors_[by_offset[k]];
    if (prev.offset + prev.nbytes > next.offset) {
      c.fail_at(offset_fields[by_offset[k]], "tensor " + quoted(next.name) + " offset",
                "data at " + std::to_string(next.offset) + " overlaps tensor " + quoted(prev.name) + " (bytes " +
                    std::to_string(prev.offset) + " to " + std::to_string(prev.offset + prev.nbytes) + ")");
    }
  }
}

const Value* File::find(std::string_view key) const {
  const auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &kvs_[it->second].value;
}

const TensorInfo* File::tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

[[noreturn]] void wrong_type(const std::string& file, std::string_view key, const Value& v, const char* expected) {
  fail(ErrorCode::format,
       file + ": key " + quoted(key) + " is " + std::string(value_type_name(v.type)) + ", expected " + expected);
}

[[noreturn]] void missing(const std::string& file, std::string_view key) {
  fail(ErrorCode::model, file + ": missing key " + quoted(key));
}

}  // namespace

int64_t File::get_int(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) missing(path_, key);
  if (!v->is_integer()) wrong_type(path_, key, *v, "an integer");
  return v->integer;
}

int64_t File::get_int_or(std::string_view key, int64_t fallback) const {
  return find(key) == nullptr ? fallback : get_int(key);
}

// Integers are accepted where a real is asked for: they convert exactly for any value a
// model hyperparameter takes.
double File::get_real_or(std::string_view key, double fallback) const {
  const Value* v = find(key);
  if (v == nullptr) return fallback;
  if (v->is_real()) return v->real;
  if (v->is_integer()) return double(v->integer);
  wrong_type(path_, key, *v, "a real number");
}

std::string File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) missing(path_, key);
  if (v->type != ValueType::string) wrong_type(path_, key, *v, "a string");
  return v->string;
}

std::string File::get_string_or(std::string_view key, std::string fallback) const {
  return find(key) == nullptr ? fallback : get_string(key);
}

}  // namespace rwkv::gguf
