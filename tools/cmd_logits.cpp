// rwkv logits: the logits of every input position, as a NumPy .npy file, for comparing
// against other implementations (e.g. numpy.load(...) next to a PyTorch reference).
#include <bit>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "common/error.h"

namespace rwkv::cli {

namespace {

struct LogitsArgs {
  ModelArgs model;
  std::vector<std::string> tokens;
  std::string text;
  std::string out;
};

// NPY format version 1.0: magic, version, little-endian u16 header length, then a Python
// dict literal padded with spaces and ended by '\n' so the data starts 64-byte aligned.
void write_npy_f32(const std::string& path, const std::vector<float>& data, size_t rows, size_t cols) {
  static_assert(std::endian::native == std::endian::little, "the .npy writer assumes a little-endian host");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  const size_t prefix = 10;  // magic (6) + version (2) + header length (2)
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(ErrorCode::io, "cannot write '" + path + "'");
  const uint16_t header_len = uint16_t(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(reinterpret_cast<const char*>(&header_len), 2);
  out.write(header.data(), std::streamsize(header.size()));
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size() * sizeof(float)));
  if (!out.flush()) fail(ErrorCode::io, "cannot write '" + path + "': write failed");
}

void run_logits(const LogitsArgs& args) {
  if (args.tokens.empty() == args.text.empty()) throw UsageError("give exactly one of --tokens and --text");
  auto engine = open_engine(args.model);
  const std::vector<int32_t> ids =
      args.tokens.empty() ? engine->tokenizer().encode(args.text) : parse_token_ids(args.tokens);
  if (ids.empty()) throw UsageError("no tokens to run");
  for (int32_t id : ids)
    if (id >= engine->n_vocab())
      throw UsageError("token id " + std::to_string(id) + " is outside the vocabulary of " +
                       std::to_string(engine->n_vocab()));
  const std::vector<float> logits = engine->feed_all(0, ids);
  write_npy_f32(args.out, logits, ids.size(), size_t(engine->n_vocab()));
  std::fprintf(stderr, "wrote %s: %zu x %d float32 (backend %s)\n", args.out.c_str(), ids.size(), engine->n_vocab(),
               engine->backend().name().c_str());
}

}  // namespace

void register_logits(CLI::App& app) {
  auto args = std::make_shared<LogitsArgs>();
  CLI::App* cmd = app.add_subcommand(
      "logits", "Write the logits of every input position to a .npy file (float32, shape (n_tokens, n_vocab))");
  add_model_option(*cmd, args->model);
  add_backend_options(*cmd, args->model);
  cmd->add_option("--tokens", args->tokens, "Token ids: 1,2,3 or 1 2 3");
  cmd->add_option("--text", args->text, "Text to tokenise instead of --tokens");
  cmd->add_option("-o,--out", args->out, "Output .npy file")->required();
  cmd->callback([args] { run_logits(*args); });
}

}  // namespace rwkv::cli
