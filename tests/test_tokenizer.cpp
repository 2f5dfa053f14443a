// Tokenizer: spec §5.3 vectors on the World vocabulary, vocabulary-file parsing and its
// errors, the GGUF-escaped form (§5.2), streaming decode, and round trips.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <unordered_map>

#include "common/error.h"
#include "gguf/gguf.h"
#include "testing/testing.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace rwkv {
namespace {

const std::string kWorldVocab = RWKV_SOURCE_DIR "/data/rwkv_vocab_v20230424.txt";
const std::string kDemoVocab = RWKV_SOURCE_DIR "/models/demo_vocab.txt";

const Tokenizer& world() {
  static const Tokenizer tokenizer = Tokenizer::from_vocab_file(kWorldVocab);
  return tokenizer;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string write_temp(const std::string& name, const std::string& content) {
  std::string path = testing::temp_path(name);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

// Python's repr(bytes) without the b'' wrapper, as the GGUF converter stores tokens (§5.2).
// `upper_hex` and `escape_both_quotes` give other spellings the unescaper must accept.
std::string gguf_escape(const std::string& bytes, bool upper_hex = false, bool escape_both_quotes = false) {
  bool double_quoted = bytes.find('\'') != std::string::npos && bytes.find('"') == std::string::npos;
  char quote = double_quoted ? '"' : '\'';
  const char* digits = upper_hex ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  for (char ch : bytes) {
    auto b = uint8_t(ch);
    if (ch == '\\') {
      out += "\\\\";
    } else if (ch == quote || (escape_both_quotes && (ch == '\'' || ch == '"'))) {
      out += '\\';
      out += ch;
    } else if (ch == '\t') {
      out += "\\t";
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (b < 0x20 || b >= 0x7F) {
      out += "\\x";
      out += digits[b >> 4];
      out += digits[b & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

struct GgufVocab {
  std::vector<uint8_t> bytes;
  std::shared_ptr<gguf::File> file;
};

// A GGUF holding only tokenizer keys, laid out like a converted World model: <s> at id 0
// (CONTROL), the escaped tokens, then [PADnnnnn] entries (UNUSED).
GgufVocab make_gguf(const Tokenizer& source, bool with_types, const std::string& model, bool upper_hex = false,
                    bool escape_both_quotes = false) {
  std::vector<std::string> tokens{"<s>"};
  std::vector<int32_t> types{3};
  for (int32_t id = 1; id < source.vocab_size(); ++id) {
    tokens.push_back(gguf_escape(source.token_bytes(id), upper_hex, escape_both_quotes));
    types.push_back(1);
  }
  for (int pad = 0; pad < 3; ++pad) {
    tokens.push_back("[PAD" + std::to_string(tokens.size()) + "]");
    types.push_back(5);
  }
  gguf::Writer writer;
  writer.set_string("general.architecture", "rwkv7");
  if (!model.empty()) writer.set_string("tokenizer.ggml.model", model);
  writer.set_string_array("tokenizer.ggml.tokens", tokens);
  if (with_types) writer.set_i32_array("tokenizer.ggml.token_type", types);
  GgufVocab out;
  out.bytes = writer.to_bytes();
  out.file = gguf::File::parse(out.bytes.data(), out.bytes.size(), "vocab.gguf");
  return out;
}

// Greedy longest match by brute force over a hash map: the oracle for the trie.
std::vector<int32_t> reference_encode(const Tokenizer& tokenizer, const std::string& text) {
  static std::unordered_map<std::string, int32_t> by_bytes;
  static const Tokenizer* indexed = nullptr;
  if (indexed != &tokenizer) {
    by_bytes.clear();
    for (int32_t id = 1; id < tokenizer.vocab_size(); ++id) by_bytes.emplace(tokenizer.token_bytes(id), id);
    indexed = &tokenizer;
  }
  std::vector<int32_t> ids;
  for (size_t pos = 0; pos < text.size();) {
    for (size_t len = std::min<size_t>(128, text.size() - pos); len > 0; --len) {
      auto it = by_bytes.find(text.substr(pos, len));
      if (it != by_bytes.end()) {
        ids.push_back(it->second);
        pos += len;
        break;
      }
    }
  }
  return ids;
}

std::string random_utf8(std::mt19937& rng, size_t n_chars) {
  // Weighted towards ASCII words and spaces, with Latin-1, CJK and emoji mixed in.
  std::string out;
  std::uniform_int_distribution<int> kind(0, 9);
  for (size_t i = 0; i < n_chars; ++i) {
    int k = kind(rng);
    uint32_t cp;
    if (k < 5) {
      cp = std::uniform_int_distribution<uint32_t>(0x20, 0x7E)(rng);
    } else if (k < 6) {
      cp = std::uniform_int_distribution<uint32_t>(0, 0x1F)(rng);
    } else if (k < 7) {
      cp = std::uniform_int_distribution<uint32_t>(0x80, 0x7FF)(rng);
    } else if (k < 9) {
      cp = std::uniform_int_distribution<uint32_t>(0x4E00, 0x9FFF)(rng);
    } else {
      cp = std::uniform_int_distribution<uint32_t>(0x1F300, 0x1F64F)(rng);
    }
    utf8::append(out, cp);
  }
  return out;
}

// Text made of whole vocabulary tokens glued together: exercises long matches and the
// places where a longer token straddles a boundary.
std::string random_token_soup(std::mt19937& rng, const Tokenizer& tokenizer, size_t n_tokens) {
  std::uniform_int_distribution<int32_t> id(1, tokenizer.vocab_size() - 1);
  std::string out;
  for (size_t i = 0; i < n_tokens; ++i) out += tokenizer.token_bytes(id(rng));
  return out;
}

using Ids = std::vector<int32_t>;

TEST(Tokenizer, WorldVocabularySpecVectors) {
  const Tokenizer& tok = world();
  EXPECT_EQ(tok.vocab_size(), 65530);
  const std::pair<std::string, Ids> vectors[] = {
      {"Hello world", {33155, 40213}},
      {"The Eiffel tower is in the city of", {6699, 304, 25740, 109, 39990, 4600, 4596, 22590, 30449, 4706}},
      {"User: hi\n\nAssistant:", {24281, 59, 4571, 261, 5585, 41693, 59}},
      {"User: simulate SpaceX mars landing using python\n\nAssistant: <think",
       {24281, 59, 57236, 44898, 31377, 52092, 40085, 46966, 261, 5585, 41693, 59, 295, 35762}},
      {"中文测试", {10285, 13012, 13827, 16707}},
      {"😀", {3319, 153, 129}},
      {" \t\r\n", {264, 263}},
      {"<s>", {61, 116, 63}},
      {std::string("\0ÿ", 3), {1, 2525}},
      {std::string(20, 'a'), {53739, 53739, 24364}},
  };
  for (const auto& [text, ids] : vectors) {
    EXPECT_EQ(tok.encode(text), ids) << text;
    EXPECT_EQ(tok.decode(ids), text);
  }
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(Tokenizer, WorldVocabularyLiterals) {
  const Tokenizer& tok = world();
  EXPECT_EQ(tok.token_bytes(1), std::string(1, '\0'));  // '\x00'
  EXPECT_EQ(tok.token_bytes(11), "\n");
  EXPECT_EQ(tok.token_bytes(93), "\\");
  EXPECT_EQ(tok.token_bytes(129), "\x80");           // b'\x80': one raw byte
  EXPECT_EQ(tok.token_bytes(256), "\xff");           // b'\xff'
  EXPECT_EQ(tok.token_bytes(2423), "\xc2\x80");      // '\x80' in a str literal is U+0080
  EXPECT_EQ(tok.token_bytes(9804), "\xe2\x80\x82");  // '\u2002'
  EXPECT_EQ(tok.token_bytes(40), "'");               // "'"
  EXPECT_EQ(tok.token_bytes(1661), "\\$");           // '\\$'
  EXPECT_EQ(tok.token_bytes(65529), std::string(128, ' '));
  EXPECT_EQ(tok.token_bytes(0), "");
  EXPECT_EQ(tok.token_bytes(-1), "");
  EXPECT_EQ(tok.token_bytes(65530), "");
  for (int32_t byte = 0; byte < 256; ++byte) EXPECT_EQ(tok.token_bytes(byte + 1), std::string(1, char(byte)));
}

TEST(Tokenizer, DemoVocabulary) {
  Tokenizer tok = Tokenizer::from_vocab_file(kDemoVocab);
  EXPECT_EQ(tok.vocab_size(), 2048);
  EXPECT_EQ(tok.encode("The jury said"), (Ids{631, 309, 841, 1313}));
  // models/README.md: heldout.txt tokenises to 15,276 tokens in one pass.
  std::string heldout = read_file(RWKV_SOURCE_DIR "/models/heldout.txt");
  ASSERT_EQ(heldout.size(), 48348u);
  Ids ids = tok.encode(heldout);
  EXPECT_EQ(ids.size(), 15276u);
  EXPECT_EQ(tok.decode(ids), heldout);
}

TEST(Tokenizer, TrieAgreesWithBruteForceLongestMatch) {
  const Tokenizer& tok = world();
  std::mt19937 rng(7);
  for (int trial = 0; trial < 30; ++trial) {
    std::string text = trial % 2 ? random_utf8(rng, 300) : random_token_soup(rng, tok, 200);
    EXPECT_EQ(tok.encode(text), reference_encode(tok, text)) << "trial " << trial;
  }
}

TEST(Tokenizer, RoundTripsRandomUtf8AndRandomBytes) {
  const Tokenizer& tok = world();
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    std::string text = random_utf8(rng, 1 + rng() % 500);
    EXPECT_EQ(tok.decode(tok.encode(text)), text);
  }
  for (int trial = 0; trial < 50; ++trial) {
    std::string bytes(1 + rng() % 500, '\0');
    for (char& b : bytes) b = char(rng());
    Ids ids = tok.encode(bytes);
    EXPECT_EQ(tok.decode(ids), bytes);
    EXPECT_EQ(ids, reference_encode(tok, bytes));
  }
}

TEST(Tokenizer, DecodeSkipsEndOfDocumentAndRejectsUnknownIds) {
  const Tokenizer& tok = world();
  EXPECT_EQ(tok.decode({0, 33155, 0, 40213}), "Hello world");
  try {
    tok.decode({33155, 70000});
    FAIL() << "decode accepted an id outside the vocabulary";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::argument);
    EXPECT_NE(std::string(e.what()).find("70000"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok.decode({-1}), Error);
}

TEST(Tokenizer, VocabFileEscapes) {
  std::string path = write_temp("escapes_vocab.txt",
                                "1 'a' 1\n"
                                "2 '\\x80' 2\n"   // str: U+0080
                                "3 b'\\x80' 1\n"  // bytes: one byte
                                "4 '\\u00e9' 2\n"
                                "5 '\\U0001F600' 4\n"
                                "6 '\\n\\t\\r\\\\\\'\\\"' 6\n"
                                "7 \"'\" 1\n"
                                "8 '\\101' 1\n"             // octal
                                "9 '\\$' 2\n"               // unknown escape keeps its backslash
                                "10 'ü' 2\n"                // raw UTF-8
                                "11 b'\\u' 2\n"             // \u is no escape in bytes
                                "12 B\"\\xFf\\x0A\" 2\r\n"  // upper-case prefix and hex, CRLF
                                "13 '\\a\\b\\f\\v\\0' 5\n");
  Tokenizer tok = Tokenizer::from_vocab_file(path);
  ASSERT_EQ(tok.vocab_size(), 14);
  const std::string expected[] = {
      "",  "a", "\xc2\x80", "\x80",     "\xc3\xa9", "\xf0\x9f\x98\x80", "\n\t\r\\'\"",
      "'", "A", "\\$",      "\xc3\xbc", "\\u",      "\xff\n",           std::string("\a\b\f\v\0", 5)};
  for (int32_t id = 0; id < 14; ++id) EXPECT_EQ(tok.token_bytes(id), expected[id]) << "id " << id;
}

TEST(Tokenizer, VocabFileErrorsNameFileAndLine) {
  struct Case {
    std::string second_line;
    std::string message_part;
  };
  const Case cases[] = {
      {"2 'ab' 3", "length column"},
      {"3 'b' 1", "id 2 was expected"},
      {"2 'b 1", "unterminated"},
      {"2 '\\x8' 1", "hex digits"},
      {"2 b'é' 2", "non-ASCII"},
      {"2 '\\ud800' 3", "Unicode scalar"},
      {"2 'b'", "one space"},
      {"2 'b' 1 x", "after the length"},
      {"2 b 1", "quoted"},
      {"2 '' 0", "empty token"},
      {"", "token id"},
      {"2 'b' 1\n3 'a' 1", "same bytes"},
      {"2 '\xff' 1", "invalid UTF-8"},
  };
  for (const Case& c : cases) {
    std::string path = write_temp("bad_vocab.txt", "1 'a' 1\n" + c.second_line + "\n");
    try {
      Tokenizer::from_vocab_file(path);
      ADD_FAILURE() << "accepted: " << c.second_line;
    } catch (const Error& e) {
      std::string message = e.what();
      EXPECT_EQ(e.code(), ErrorCode::format) << message;
      EXPECT_NE(message.find(path), std::string::npos) << message;
      if (c.message_part != "same bytes") {
        EXPECT_NE(message.find(path + ":2:"), std::string::npos) << message;
      }
      EXPECT_NE(message.find(c.message_part), std::string::npos) << message;
    }
  }
  try {
    Tokenizer::from_vocab_file(testing::temp_path("no_such_vocab.txt"));
    ADD_FAILURE() << "opened a missing file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
  }
}

TEST(Tokenizer, FromTokens) {
  Tokenizer tok = Tokenizer::from_tokens({"<zero>", "a", "b", "ab", "", "abc", "c"});
  EXPECT_EQ(tok.encode("abcab"), (Ids{5, 3}));
  EXPECT_EQ(tok.encode("abab"), (Ids{3, 3}));
  EXPECT_EQ(tok.encode("ca"), (Ids{6, 1}));
  EXPECT_EQ(tok.decode({0, 1}), "a");  // id 0 decodes to nothing
  // No token for 'z': encoding must fail naming the offset, not loop or emit garbage.
  try {
    tok.encode("abz");
    FAIL() << "encoded a byte that starts no token";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::argument);
    EXPECT_NE(std::string(e.what()).find("offset 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::from_tokens({"", "x", "y", "x"}), Error);
  Tokenizer empty;
  EXPECT_TRUE(empty.encode("").empty());
  EXPECT_THROW(empty.encode("a"), Error);
}

TEST(StreamDecoder, HoldsBackPartialCharacters) {
  const Tokenizer& tok = world();
  StreamDecoder stream(tok);
  // 😀 = F0 9F 98 80 = tokens 3319 (F0 9F), 153 (98), 129 (80).
  EXPECT_EQ(stream.push(3319), "");
  EXPECT_EQ(stream.push(153), "");
  EXPECT_EQ(stream.push(129), "😀");
  EXPECT_EQ(stream.push(33155), "Hello");
  EXPECT_EQ(stream.flush(), "");

  // A lone continuation byte can never complete: out at once.
  EXPECT_EQ(stream.push(129), "\x80");
  // A lead byte followed by a non-continuation byte: both pass on once that is known.
  EXPECT_EQ(stream.push(241), "");  // F0
  EXPECT_EQ(stream.push(66),
            "\xf0"
            "A");
  // E0 80 is an overlong prefix: invalid as soon as the 80 arrives.
  EXPECT_EQ(stream.push(225), "");  // E0
  EXPECT_EQ(stream.push(129), "\xe0\x80");
  // A truncated character is released by flush.
  EXPECT_EQ(stream.push(3319), "");
  EXPECT_EQ(stream.flush(), "\xf0\x9f");
  EXPECT_EQ(stream.flush(), "");
  EXPECT_THROW(stream.push(65530), Error);
}

TEST(StreamDecoder, ConcatenationEqualsDecode) {
  const Tokenizer& tok = world();
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    std::string text = random_utf8(rng, 200);
    if (trial % 2) text += std::string("\xe4\xb8", 2);  // ends inside a character
    Ids ids = tok.encode(text);
    StreamDecoder stream(tok);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.flush();
    EXPECT_EQ(streamed, text);
  }
}

TEST(TokenizerGguf, EscapedWorldVocabularyGivesSameIds) {
  const Tokenizer& tok = world();
  std::mt19937 rng(5);
  std::vector<std::string> texts = {"Hello world", "<s>[PAD65530]", std::string("\0ÿ\\'\"\t", 7)};
  for (int i = 0; i < 6; ++i) texts.push_back(random_token_soup(rng, tok, 300));
  for (bool upper_hex : {false, true}) {
    for (bool escape_both_quotes : {false, true}) {
      GgufVocab gguf = make_gguf(tok, true, "rwkv", upper_hex, escape_both_quotes);
      Tokenizer from_gguf = Tokenizer::from_gguf(*gguf.file);
      ASSERT_EQ(from_gguf.vocab_size(), tok.vocab_size() + 3);
      for (int32_t id = 0; id < tok.vocab_size(); ++id) ASSERT_EQ(from_gguf.token_bytes(id), tok.token_bytes(id));
      for (const std::string& text : texts) EXPECT_EQ(from_gguf.encode(text), tok.encode(text));
    }
  }
}

TEST(TokenizerGguf, ControlAndPadTokensAreNotText) {
  const Tokenizer& tok = world();
  for (bool with_types : {true, false}) {
    GgufVocab gguf = make_gguf(tok, with_types, "");
    Tokenizer from_gguf = Tokenizer::from_gguf(*gguf.file);
    EXPECT_EQ(from_gguf.encode("<s>"), (Ids{61, 116, 63}));  // not [0] (pitfall P8)
    EXPECT_EQ(from_gguf.encode("[PAD65531]"), tok.encode("[PAD65531]"));
    EXPECT_EQ(from_gguf.token_bytes(0), "");
    EXPECT_EQ(from_gguf.token_bytes(65531), "");
    EXPECT_EQ(from_gguf.decode({0, 65530, 33155}), "Hello");
  }
}

TEST(TokenizerGguf, RejectsOtherTokenizersAndBadKeys) {
  Tokenizer tiny = Tokenizer::from_tokens({"", "a", "b"});
  try {
    Tokenizer::from_gguf(*make_gguf(tiny, true, "gpt2").file);
    FAIL() << "accepted a gpt2 vocabulary";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::model);
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.model"), std::string::npos) << e.what();
  }

  gguf::Writer writer;
  writer.set_string("tokenizer.ggml.model", "rwkv");
  std::vector<uint8_t> bytes = writer.to_bytes();
  try {
    Tokenizer::from_gguf(*gguf::File::parse(bytes.data(), bytes.size(), "empty.gguf"));
    FAIL() << "accepted a file without tokens";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::model);
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.tokens"), std::string::npos) << e.what();
  }

  gguf::Writer bad_escape;
  bad_escape.set_string_array("tokenizer.ggml.tokens", {"<s>", "a", "\\xg0"});
  bytes = bad_escape.to_bytes();
  try {
    Tokenizer::from_gguf(*gguf::File::parse(bytes.data(), bytes.size(), "escape.gguf"));
    FAIL() << "accepted \\xg0";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::model);
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.tokens[2]"), std::string::npos) << e.what();
  }

  gguf::Writer short_types;
  short_types.set_string_array("tokenizer.ggml.tokens", {"<s>", "a"});
  short_types.set_i32_array("tokenizer.ggml.token_type", {3});
  bytes = short_types.to_bytes();
  EXPECT_THROW(Tokenizer::from_gguf(*gguf::File::parse(bytes.data(), bytes.size(), "types.gguf")), Error);
}

TEST(TokenizerGguf, DemoModel) {
  auto file = gguf::File::open(testing::demo_model_f16());
  Tokenizer tok = Tokenizer::from_gguf(*file);
  EXPECT_EQ(tok.vocab_size(), 2048);
  EXPECT_EQ(tok.encode("The jury said"), (Ids{631, 309, 841, 1313}));
  Tokenizer from_text = Tokenizer::from_vocab_file(kDemoVocab);
  for (int32_t id = 0; id < tok.vocab_size(); ++id) EXPECT_EQ(tok.token_bytes(id), from_text.token_bytes(id));
}

}  // namespace
}  // namespace rwkv
