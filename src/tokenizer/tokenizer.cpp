// Byte trie, greedy longest-match encoding, decoding and UTF-8-safe streaming (spec §5.3,
// §5.4). The vocabulary readers live in vocab_file.cpp and gguf_vocab.cpp.
#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace rwkv {

namespace {

const std::string kEmpty;

// Nodes with more children than this get a direct 256-entry table (1 KB); the others are
// searched by scanning their sorted edge list (5 bytes an edge).
constexpr int32_t kMaxScannedChildren = 8;

// A range of the lexicographically sorted token ids that share the prefix spelled by the
// path to `node`; `depth` is that prefix's length in bytes.
struct PendingNode {
  int32_t node;
  size_t begin;
  size_t end;
  size_t depth;
};

}  // namespace

Tokenizer::Tokenizer() : Tokenizer({}, {}, ErrorCode::argument, "empty vocabulary") {}

Tokenizer Tokenizer::from_tokens(std::vector<std::string> tokens) {
  std::vector<bool> matchable(tokens.size());
  for (size_t id = 1; id < tokens.size(); ++id) matchable[id] = !tokens[id].empty();
  if (!tokens.empty()) tokens[0].clear();
  return Tokenizer(std::move(tokens), matchable, ErrorCode::argument, "from_tokens");
}

Tokenizer::Tokenizer(std::vector<std::string> tokens, const std::vector<bool>& matchable, ErrorCode code,
                     const std::string& context)
    : tokens_(std::move(tokens)) {
  // Sorting the matchable ids by their bytes makes every trie node's tokens a contiguous
  // range whose shortest member (the token ending at the node, if any) comes first.
  std::vector<int32_t> order;
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (matchable[id]) order.push_back(int32_t(id));
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return tokens_[a] < tokens_[b]; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (tokens_[order[i]] == tokens_[order[i - 1]]) {
      fail(code, context + ": tokens " + std::to_string(std::min(order[i], order[i - 1])) + " and " +
                     std::to_string(std::max(order[i], order[i - 1])) + " have the same bytes");
    }
  }

  // Breadth-first build: node n is expanded when it is popped, so its edges are appended
  // contiguously and in byte order, and node ids equal queue positions.
  std::vector<PendingNode> queue{{0, 0, order.size(), 0}};
  nodes_.push_back({0, -1, -1});
  for (size_t q = 0; q < queue.size(); ++q) {
    PendingNode pending = queue[q];
    nodes_[pending.node].first_edge = int32_t(edge_byte_.size());
    size_t i = pending.begin;
    if (i < pending.end && tokens_[order[i]].size() == pending.depth) {
      nodes_[pending.node].token = order[i];
      ++i;
    }
    while (i < pending.end) {
      uint8_t byte = uint8_t(tokens_[order[i]][pending.depth]);
      size_t j = i + 1;
      while (j < pending.end && uint8_t(tokens_[order[j]][pending.depth]) == byte) ++j;
      int32_t child = int32_t(nodes_.size());
      nodes_.push_back({0, -1, -1});
      edge_byte_.push_back(byte);
      edge_target_.push_back(child);
      queue.push_back({child, i, j, pending.depth + 1});
      i = j;
    }
  }
  nodes_.push_back({int32_t(edge_byte_.size()), -1, -1});  // sentinel

  for (size_t n = 0; n + 1 < nodes_.size(); ++n) {
    const int32_t first = nodes_[n].first_edge, last = nodes_[n + 1].first_edge;
    if (n != 0 && last - first <= kMaxScannedChildren) continue;
    nodes_[n].table = int32_t(child_table_.size() / 256);
    child_table_.resize(child_table_.size() + 256, -1);
    int32_t* row = child_table_.data() + size_t(nodes_[n].table) * 256;
    for (int32_t e = first; e < last; ++e) row[edge_byte_[e]] = edge_target_[e];
  }
}

int32_t Tokenizer::find_child(int32_t node, uint8_t byte) const {
  if (nodes_[node].table >= 0) return child_table_[size_t(nodes_[node].table) * 256 + byte];
  const uint8_t* first = edge_byte_.data() + nodes_[node].first_edge;
  const uint8_t* last = edge_byte_.data() + nodes_[node + 1].first_edge;
  for (const uint8_t* e = first; e != last && *e <= byte; ++e) {
    if (*e == byte) return edge_target_[e - edge_byte_.data()];
  }
  return -1;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t best = -1;
    size_t best_len = 0;
    int32_t node = 0;
    for (size_t len = 1; pos + len <= text.size(); ++len) {
      node = find_child(node, bytes[pos + len - 1]);
      if (node < 0) break;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        best_len = len;
      }
    }
    if (best < 0) {
      fail(ErrorCode::argument, "tokenizer: no token starts with byte " + std::to_string(bytes[pos]) +
                                    " at byte offset " + std::to_string(pos) + " of the text");
    }
    ids.push_back(best);
    pos += best_len;
  }
  return ids;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return kEmpty;
  return tokens_[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size()) {
      fail(ErrorCode::argument, "decode: id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                    " is outside the vocabulary of " + std::to_string(vocab_size()));
    }
    text += tokens_[ids[i]];
  }
  return text;
}

std::string StreamDecoder::push(int32_t id) {
  if (id < 0 || id >= tokenizer_->vocab_size()) {
    fail(ErrorCode::argument, "StreamDecoder: id " + std::to_string(id) + " is outside the vocabulary of " +
                                  std::to_string(tokenizer_->vocab_size()));
  }
  pending_ += tokenizer_->token_bytes(id);
  size_t ready = 0;
  // Valid characters and invalid sequences go out; only a valid unfinished character that
  // the next token may complete is held back.
  while (ready < pending_.size()) {
    utf8::Unit unit = utf8::scan(pending_, ready);
    if (unit.status == utf8::Status::truncated) break;
    ready += unit.length;
  }
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace rwkv
