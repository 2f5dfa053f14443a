// Tokenizer from a GGUF's tokenizer.ggml.* keys (spec §5.2). Kept apart from the core so
// that programs using only vocabulary files do not pull in the GGUF reader.
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace rwkv {

namespace {

constexpr const char* kTokensKey = "tokenizer.ggml.tokens";
constexpr const char* kTypesKey = "tokenizer.ggml.token_type";
constexpr const char* kModelKey = "tokenizer.ggml.model";
constexpr int64_t kNormalTokenType = 1;

int hex_value(char h) {
  if (h >= '0' && h <= '9') return h - '0';
  if (h >= 'a' && h <= 'f') return h - 'a' + 10;
  if (h >= 'A' && h <= 'F') return h - 'A' + 10;
  return -1;
}

// Undoes the converter's repr()-style escaping: \t \n \r, \xHH (either case) is one byte,
// a backslash before any other character stands for that character, and everything else
// is literal.
std::string unescape_token(const std::string& escaped, const std::string& where) {
  std::string out;
  out.reserve(escaped.size());
  for (size_t i = 0; i < escaped.size(); ++i) {
    if (escaped[i] != '\\') {
      out += escaped[i];
      continue;
    }
    if (i + 1 == escaped.size()) fail(ErrorCode::model, where + ": ends with a lone backslash");
    char c = escaped[++i];
    if (c == 't') {
      out += '\t';
    } else if (c == 'n') {
      out += '\n';
    } else if (c == 'r') {
      out += '\r';
    } else if (c == 'x') {
      int hi = i + 1 < escaped.size() ? hex_value(escaped[i + 1]) : -1;
      int lo = i + 2 < escaped.size() ? hex_value(escaped[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        fail(ErrorCode::model, where + ": \\x at character " + std::to_string(i - 1) + " needs two hex digits");
      }
      out += char(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

bool is_pad_name(const std::string& token) {
  return token.size() > 5 && token.compare(0, 4, "[PAD") == 0 && token.back() == ']';
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const gguf::File& file) {
  const std::string& name = file.path();
  if (const gguf::Value* model = file.find(kModelKey)) {
    if (model->type != gguf::ValueType::string || model->string != "rwkv") {
      fail(ErrorCode::model,
           name + ": " + kModelKey + " is " +
               (model->type == gguf::ValueType::string ? "'" + model->string + "'" : std::string("not a string")) +
               ", this tokenizer reads only 'rwkv' vocabularies");
    }
  }
  const gguf::Value* tokens_value = file.find(kTokensKey);
  if (tokens_value == nullptr) fail(ErrorCode::model, name + ": " + kTokensKey + " is missing");
  if (tokens_value->type != gguf::ValueType::array || tokens_value->array_type != gguf::ValueType::string) {
    fail(ErrorCode::model, name + ": " + kTokensKey + " is not an array of strings");
  }
  const std::vector<std::string>& escaped = tokens_value->strings;
  if (escaped.empty()) fail(ErrorCode::model, name + ": " + kTokensKey + " is empty");

  const gguf::Value* types_value = file.find(kTypesKey);
  if (types_value != nullptr) {
    gguf::ValueType element = types_value->array_type;
    bool integer_array = types_value->type == gguf::ValueType::array && element != gguf::ValueType::string &&
                         element != gguf::ValueType::array && element != gguf::ValueType::f32 &&
                         element != gguf::ValueType::f64;
    if (!integer_array) fail(ErrorCode::model, name + ": " + kTypesKey + " is not an array of integers");
    if (types_value->integers.size() != escaped.size()) {
      fail(ErrorCode::model, name + ": " + kTypesKey + " has " + std::to_string(types_value->integers.size()) +
                                 " entries but " + kTokensKey + " has " + std::to_string(escaped.size()));
    }
  }

  // Only NORMAL tokens are text: id 0 (<s>, CONTROL) and the [PADnnnnn] (UNUSED) entries
  // must neither match raw text (pitfall P8) nor print anything.
  std::vector<std::string> tokens(escaped.size());
  std::vector<bool> matchable(escaped.size(), false);
  for (size_t id = 0; id < escaped.size(); ++id) {
    bool normal =
        types_value != nullptr ? types_value->integers[id] == kNormalTokenType : id != 0 && !is_pad_name(escaped[id]);
    if (!normal) continue;
    std::string where = name + ": " + kTokensKey + "[" + std::to_string(id) + "]";
    tokens[id] = unescape_token(escaped[id], where);
    if (tokens[id].empty()) fail(ErrorCode::model, where + " is an empty NORMAL token");
    matchable[id] = true;
  }
  return Tokenizer(std::move(tokens), matchable, ErrorCode::model, name + ": " + kTokensKey);
}

}  // namespace rwkv
