// RWKV "World" tokenizer: greedy longest match over a byte trie (spec §5).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace rwkv::gguf {
class File;
}

namespace rwkv {

class Tokenizer {
 public:
  Tokenizer();  // empty vocabulary: encode("") only
  // From a GGUF's tokenizer.ggml.tokens (+ token_type): escaped strings as the spec §5.2
  // says. Only NORMAL tokens (type 1, or every id 1.. when token_type is absent, except
  // [PAD...] names) enter the trie. Throws Error(model) naming the key when absent/bad.
  static Tokenizer from_gguf(const gguf::File& file);
  // From an rwkv_vocab_v20230424.txt-format file (spec §5.1); the length column is
  // checked. Throws Error(format) naming the file and line.
  static Tokenizer from_vocab_file(const std::string& path);
  // From raw byte strings: tokens[id] (id 0 and empty entries are not matchable).
  static Tokenizer from_tokens(std::vector<std::string> tokens);

  // Greedy longest match (spec §5.3). Throws Error(argument) naming the byte offset when
  // a byte starts no token (cannot happen with the full World vocabulary).
  std::vector<int32_t> encode(std::string_view text) const;
  // Concatenated bytes of the ids (id 0 -> nothing). May end inside a UTF-8 character.
  // Throws Error(argument) naming an id outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;
  // The bytes a token decodes to: empty for id 0, for CONTROL/UNUSED tokens of a GGUF
  // vocabulary and for out-of-range ids.
  const std::string& token_bytes(int32_t id) const;
  int32_t vocab_size() const { return int32_t(tokens_.size()); }

 private:
  // Compact byte trie, nodes in breadth-first order, node 0 the root. Node n's children are
  // the edges [nodes_[n].first_edge, nodes_[n + 1].first_edge), sorted by byte; nodes_
  // ends with a sentinel. Nodes with many children (the root, common first bytes) also get
  // a 256-entry row of child_table_ so that lookups there stay O(1). The World vocabulary
  // needs 116k nodes and 1.2k rows: 3.2 MB, against 116 MB for 256-way nodes everywhere.
  struct TrieNode {
    int32_t first_edge;
    int32_t token;  // -1 when no token ends here
    int32_t table;  // row of child_table_, -1 when none
  };
  // tokens_[id] are the decoded bytes; matchable[id] says which enter the trie. Throws
  // Error(code) prefixed with `context` when two matchable tokens have the same bytes.
  Tokenizer(std::vector<std::string> tokens, const std::vector<bool>& matchable, ErrorCode code,
            const std::string& context);
  int32_t find_child(int32_t node, uint8_t byte) const;  // -1 when absent

  std::vector<std::string> tokens_;
  std::vector<TrieNode> nodes_;
  std::vector<uint8_t> edge_byte_;
  std::vector<int32_t> edge_target_;
  std::vector<int32_t> child_table_;  // rows of 256 child nodes (-1 when absent)
};

// Turns a stream of token ids into text, holding back bytes until they form whole UTF-8
// characters, so a console never shows half a character. Invalid sequences are passed on
// as they are once it is clear they cannot complete.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  std::string push(int32_t id);  // text ready to print (possibly empty)
  std::string flush();           // whatever is still held back

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
};

}  // namespace rwkv
