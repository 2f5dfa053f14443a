// Reader of rwkv_vocab_v20230424.txt-format files (spec §5.1): one token per line,
// `<id> <python str or bytes literal> <byte length>`, ids 1, 2, 3, ... in order.
#include <fstream>
#include <sstream>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace rwkv {

namespace {

// Longest token the World vocabulary has is 128 bytes; anything this long is corruption.
constexpr size_t kMaxTokenBytes = 1 << 16;

class LineParser {
 public:
  LineParser(std::string_view line, const std::string& path, size_t line_number)
      : line_(line), path_(path), line_number_(line_number) {}

  [[noreturn]] void error(const std::string& what) const {
    fail(ErrorCode::format,
         path_ + ":" + std::to_string(line_number_) + ": " + what + " at column " + std::to_string(pos_ + 1));
  }

  // A decimal number of at most 9 digits.
  int64_t number(const char* what) {
    size_t start = pos_;
    int64_t value = 0;
    while (pos_ < line_.size() && line_[pos_] >= '0' && line_[pos_] <= '9' && pos_ - start < 10) {
      value = value * 10 + (line_[pos_++] - '0');
    }
    if (pos_ == start) error(std::string("expected the ") + what);
    if (pos_ - start > 9) error(std::string("the ") + what + " is too large");
    return value;
  }

  void expect_space() {
    if (pos_ >= line_.size() || line_[pos_] != ' ') error("expected one space");
    ++pos_;
  }

  void expect_end() {
    if (pos_ != line_.size()) error("unexpected text after the length");
  }

  // A Python str literal ('...' or "...", result UTF-8 encoded) or bytes literal
  // (b'...' / b"...", result the raw bytes). Escapes follow Python: in a str literal
  // \xHH, \ooo, \uHHHH and \UHHHHHHHH are code points; in a bytes literal \xHH and \ooo
  // are bytes and \u, \U are not escapes. Unknown escapes keep their backslash.
  std::string literal() {
    bool bytes = false;
    if (pos_ < line_.size() && (line_[pos_] == 'b' || line_[pos_] == 'B')) {
      bytes = true;
      ++pos_;
    }
    if (pos_ >= line_.size() || (line_[pos_] != '\'' && line_[pos_] != '"')) {
      error("expected a quoted Python str or bytes literal");
    }
    char quote = line_[pos_++];
    std::string out;
    while (true) {
      if (pos_ >= line_.size()) error("unterminated literal");
      char c = line_[pos_];
      if (c == quote) {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        escape(bytes, out);
        continue;
      }
      utf8::Unit unit = utf8::scan(line_, pos_);
      if (unit.status != utf8::Status::valid) error("invalid UTF-8");
      if (bytes && unit.length > 1) error("non-ASCII character in a bytes literal");
      out.append(line_.substr(pos_, unit.length));
      pos_ += unit.length;
    }
  }

 private:
  // Parses the escape at line_[pos_] == '\\' and appends its value.
  void escape(bool bytes, std::string& out) {
    size_t start = pos_++;
    if (pos_ >= line_.size()) error("backslash at the end of the line");
    char c = line_[pos_++];
    switch (c) {
      case '\\':
        out += '\\';
        return;
      case '\'':
        out += '\'';
        return;
      case '"':
        out += '"';
        return;
      case 'a':
        out += '\a';
        return;
      case 'b':
        out += '\b';
        return;
      case 'f':
        out += '\f';
        return;
      case 'n':
        out += '\n';
        return;
      case 'r':
        out += '\r';
        return;
      case 't':
        out += '\t';
        return;
      case 'v':
        out += '\v';
        return;
      default:
        break;
    }
    uint32_t value;
    if (c >= '0' && c <= '7') {
      value = uint32_t(c - '0');
      for (int k = 0; k < 2 && pos_ < line_.size() && line_[pos_] >= '0' && line_[pos_] <= '7'; ++k) {
        value = value * 8 + uint32_t(line_[pos_++] - '0');
      }
    } else if (c == 'x') {
      value = hex_digits(2, start);
    } else if (!bytes && c == 'u') {
      value = hex_digits(4, start);
    } else if (!bytes && c == 'U') {
      value = hex_digits(8, start);
    } else if (!bytes && c == 'N') {
      pos_ = start;
      error("\\N{...} escapes are not supported");
    } else {
      out += '\\';  // Python keeps unknown escapes as written
      pos_ = start + 1;
      return;
    }
    if (bytes) {
      if (value > 0xFF) error("octal escape above \\377 in a bytes literal");
      out += char(value);
      return;
    }
    if (value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) {
      pos_ = start;
      error("escape is not a Unicode scalar value, it cannot be UTF-8 encoded");
    }
    utf8::append(out, value);
  }

  uint32_t hex_digits(int count, size_t escape_start) {
    uint32_t value = 0;
    for (int k = 0; k < count; ++k) {
      char h = pos_ < line_.size() ? line_[pos_] : '\0';
      uint32_t digit;
      if (h >= '0' && h <= '9') {
        digit = uint32_t(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        digit = uint32_t(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        digit = uint32_t(h - 'A' + 10);
      } else {
        pos_ = escape_start;
        error("escape needs " + std::to_string(count) + " hex digits");
      }
      value = value * 16 + digit;
      ++pos_;
    }
    return value;
  }

  std::string_view line_;
  const std::string& path_;
  size_t line_number_;
  size_t pos_ = 0;
};

}  // namespace

Tokenizer Tokenizer::from_vocab_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::io, path + ": cannot open the vocabulary file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(ErrorCode::io, path + ": cannot read the vocabulary file");
  const std::string content = buffer.str();

  std::vector<std::string> tokens(1);  // id 0 (end of document) has no bytes
  size_t line_start = 0;
  for (size_t line_number = 1; line_start < content.size(); ++line_number) {
    size_t line_end = content.find('\n', line_start);
    if (line_end == std::string::npos) line_end = content.size();
    std::string_view line(content.data() + line_start, line_end - line_start);
    line_start = line_end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    LineParser parser(line, path, line_number);
    int64_t id = parser.number("token id");
    if (id != int64_t(tokens.size())) {
      parser.error("token id " + std::to_string(id) + " where id " + std::to_string(tokens.size()) +
                   " was expected (ids run 1, 2, 3, ...)");
    }
    parser.expect_space();
    std::string token = parser.literal();
    parser.expect_space();
    int64_t length = parser.number("byte length");
    parser.expect_end();
    if (token.empty()) parser.error("empty token");
    if (token.size() > kMaxTokenBytes) parser.error("token longer than " + std::to_string(kMaxTokenBytes) + " bytes");
    if (int64_t(token.size()) != length) {
      parser.error("the literal has " + std::to_string(token.size()) + " bytes but the length column says " +
                   std::to_string(length));
    }
    tokens.push_back(std::move(token));
  }
  if (tokens.size() == 1) fail(ErrorCode::format, path + ": the vocabulary file has no tokens");

  std::vector<bool> matchable(tokens.size(), true);
  matchable[0] = false;
  return Tokenizer(std::move(tokens), matchable, ErrorCode::format, path + " (token ids are line numbers)");
}

}  // namespace rwkv
