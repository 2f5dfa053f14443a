// rwkv perplexity: scores a text file as models/README.md defines it (runtime/perplexity.h):
// the whole file tokenised in one pass and fed as one sequence from a zero state, every
// token after the first predicted from all before it.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "common/error.h"
#include "runtime/perplexity.h"

namespace rwkv::cli {

namespace {

struct PerplexityArgs {
  ModelArgs model;
  std::string file;
  int chunk = 256;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::io, "cannot open '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void run_perplexity(const PerplexityArgs& args) {
  const std::string text = read_file(args.file);
  auto engine = open_engine(args.model, 1, args.chunk);
  ProgressBar bar("scoring");
  const PerplexityResult r = perplexity(*engine, text, 0, [&](int done, int total) {
    bar.update(done, total, std::to_string(done) + " / " + std::to_string(total) + " tokens");
  });
  bar.finish();
  if (!std::isfinite(r.total_nats))
    fail(ErrorCode::backend, "the log-likelihood of '" + args.file + "' is not finite (backend " +
                                 engine->backend().name() + " produced NaN or infinite logits)");
  std::printf("file:             %s (%zu bytes)\n", args.file.c_str(), text.size());
  std::printf("backend:          %s\n", engine->backend().name().c_str());
  std::printf("tokens:           %d (%d predicted)\n", r.n_tokens, r.n_predicted);
  std::printf("nats/token:       %.5f\n", r.nats_per_token());
  std::printf("perplexity/token: %.3f\n", r.perplexity());
  std::printf("bits/byte:        %.5f\n", r.bits_per_byte());
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Score a text file: nats/token, perplexity, bits/byte");
  add_model_option(*cmd, args->model);
  add_backend_options(*cmd, args->model);
  cmd->add_option("-f,--file", args->file, "Text file")->required();
  cmd->add_option("--ctx-chunk", args->chunk, "Tokens per model step (the state carries over between steps)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->callback([args] { run_perplexity(*args); });
}

}  // namespace rwkv::cli
