// rwkv tokenize / detokenize: the model's RWKV World tokenizer (spec §5) on its own. Only
// the GGUF's vocabulary is read (no weights are touched), or a vocabulary file with --vocab.
#include <iostream>

#include "commands.h"
#include "common.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace rwkv::cli {

namespace {

struct TokenizerArgs {
  ModelArgs model;
  std::string vocab;  // rwkv_vocab_v20230424.txt-format file, instead of the model's
  std::string text;
  std::vector<std::string> ids;
  bool pieces = false;
};

Tokenizer load_tokenizer(const TokenizerArgs& args) {
  if (!args.vocab.empty()) {
    if (!args.model.model.empty()) throw UsageError("give -m or --vocab, not both");
    return Tokenizer::from_vocab_file(args.vocab);
  }
  return Tokenizer::from_gguf(*gguf::File::open(resolve_model(args.model.model)));
}

// A token's bytes with control characters and non-ASCII bytes escaped, for --pieces.
std::string printable(const std::string& bytes) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\\')
      out += "\\\\";
    else if (c >= 0x20 && c < 0x7f)
      out += char(c);
    else
      out += {'\\', 'x', hex[c >> 4], hex[c & 15]};
  }
  return out;
}

void run_tokenize(const TokenizerArgs& args) {
  const Tokenizer tok = load_tokenizer(args);
  const std::vector<int32_t> ids = tok.encode(args.text);
  if (args.pieces) {
    for (int32_t id : ids) std::cout << id << "\t" << printable(tok.token_bytes(id)) << "\n";
    return;
  }
  for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
  std::cout << "\n";
}

void run_detokenize(const TokenizerArgs& args) {
  const Tokenizer tok = load_tokenizer(args);
  // The exact bytes, with no newline added, so that tokenize/detokenize round-trips.
  std::cout << tok.decode(parse_token_ids(args.ids)) << std::flush;
}

void add_common(CLI::App& cmd, TokenizerArgs& args) {
  add_model_option(cmd, args.model);
  cmd.add_option("--vocab", args.vocab, "Use an rwkv_vocab_v20230424.txt-format vocabulary file instead of a model");
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto args = std::make_shared<TokenizerArgs>();
  CLI::App* tok = app.add_subcommand("tokenize", "Print the token ids of TEXT, space-separated");
  add_common(*tok, *args);
  tok->add_option("text", args->text, "Text to tokenise (taken literally)")->required();
  tok->add_flag("--pieces", args->pieces, "One line per token: id, tab, its bytes (escaped)");
  tok->callback([args] { run_tokenize(*args); });

  CLI::App* detok = app.add_subcommand("detokenize", "Print the text of token ids (exact bytes, no newline added)");
  add_common(*detok, *args);
  detok->add_option("ids", args->ids, "Token ids: 1 2 3 or 1,2,3")->required();
  detok->callback([args] { run_detokenize(*args); });
}

}  // namespace rwkv::cli
