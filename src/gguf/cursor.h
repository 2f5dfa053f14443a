// Bounds-checked little-endian reads over a GGUF buffer (internal to src/gguf). Every read
// names what it reads so that a failure says "<file>: <what> at byte <offset>: <why>".
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "common/error.h"

namespace rwkv::gguf {

static_assert(std::endian::native == std::endian::little, "GGUF fields are read as host-order integers");

class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& file) : data_(data), size_(size), file_(file) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail_at(size_t offset, std::string_view what, std::string_view why) const {
    fail(ErrorCode::format,
         file_ + ": " + std::string(what) + " at byte " + std::to_string(offset) + ": " + std::string(why));
  }

  // Consumes n bytes and returns a pointer to them.
  const uint8_t* take(size_t n, std::string_view what) {
    if (n > remaining()) {
      fail_at(
          pos_, what,
          "truncated: needs " + std::to_string(n) + " bytes, the file has " + std::to_string(remaining()) + " left");
    }
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }

  template <typename T>
  T read(std::string_view what) {
    T value;
    memcpy(&value, take(sizeof(T), what), sizeof(T));
    return value;
  }

  // A gguf_string: u64 byte length, then the bytes (no terminator).
  std::string read_string(std::string_view what) {
    const size_t at = pos_;
    const uint64_t length = read<uint64_t>(what);
    if (length > remaining()) {
      fail_at(at, what,
              "string length " + std::to_string(length) + " exceeds the " + std::to_string(remaining()) +
                  " bytes left in the file");
    }
    const uint8_t* bytes = take(size_t(length), what);
    return std::string(reinterpret_cast<const char*>(bytes), size_t(length));
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& file_;
};

}  // namespace rwkv::gguf
