// UTF-8 scanning shared by the vocabulary reader and the stream decoder (internal).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace rwkv::utf8 {

enum class Status {
  valid,      // `length` bytes form one well-formed character
  invalid,    // `length` bytes (>= 1) can never start a well-formed character
  truncated,  // a well-formed prefix runs to the end of the text
};

struct Unit {
  Status status;
  size_t length;
};

// Classifies the bytes at text[pos] (pos < text.size()) by the well-formed byte sequence
// table of Unicode 15 §3.9 (Table 3-7): no overlong forms, no surrogates, nothing above
// U+10FFFF. An invalid unit covers the lead byte and the continuation bytes accepted so far.
inline Unit scan(std::string_view text, size_t pos) {
  auto b0 = uint8_t(text[pos]);
  size_t need;  // continuation bytes after the lead byte
  uint8_t second_lo = 0x80, second_hi = 0xBF;
  if (b0 < 0x80) return {Status::valid, 1};
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) second_lo = 0xA0;  // overlong below U+0800
    if (b0 == 0xED) second_hi = 0x9F;  // surrogates U+D800..DFFF
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) second_lo = 0x90;  // overlong below U+10000
    if (b0 == 0xF4) second_hi = 0x8F;  // above U+10FFFF
  } else {
    return {Status::invalid, 1};  // stray continuation byte, C0, C1 or F5..FF
  }
  for (size_t k = 1; k <= need; ++k) {
    if (pos + k == text.size()) return {Status::truncated, k};
    auto b = uint8_t(text[pos + k]);
    bool ok = k == 1 ? (b >= second_lo && b <= second_hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return {Status::invalid, k};
  }
  return {Status::valid, need + 1};
}

// Appends code point `cp` (<= 0x10FFFF, not a surrogate) as UTF-8.
inline void append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

}  // namespace rwkv::utf8
