// rwkv perplexity: scores a text file as models/README.md defines it. The whole file is
// tokenised in one pass and fed as one sequence from a zero state; every token after the
// first is predicted from all before it. Logits are taken a chunk at a time so that a
// 65536-token vocabulary never needs n_tokens x V floats at once.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "common/error.h"

namespace rwkv::cli {

namespace {

struct PerplexityArgs {
  ModelArgs model;
  std::string file;
  int chunk = 512;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::io, "cannot open '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// -log softmax(logits)[target] in double.
double token_nll(const float* logits, int n_vocab, int32_t target) {
  float max_logit = logits[0];
  for (int i = 1; i < n_vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0;
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i]) - double(max_logit));
  return std::log(sum) + double(max_logit) - double(logits[target]);
}

void run_perplexity(const PerplexityArgs& args) {
  const std::string text = read_file(args.file);
  auto engine = open_engine(args.model, 1, args.chunk);
  const Tokenizer& tok = engine->tokenizer();
  const std::vector<int32_t> ids = tok.encode(text);
  if (ids.size() < 2)
    fail(ErrorCode::argument,
         "'" + args.file + "' gives " + std::to_string(ids.size()) + " token(s); perplexity needs at least 2");
  const int V = engine->n_vocab();
  double total_nats = 0;
  size_t predicted_bytes = 0;
  ProgressBar bar("scoring");
  // Row r of a chunk starting at `begin` holds the prediction for token begin + r + 1.
  for (size_t begin = 0; begin + 1 < ids.size(); begin += size_t(args.chunk)) {
    const size_t n = std::min(size_t(args.chunk), ids.size() - 1 - begin);
    const std::vector<float> logits = engine->feed_all(0, std::span(ids).subspan(begin, n));
    for (size_t r = 0; r < n; ++r) {
      const int32_t target = ids[begin + r + 1];
      const double nll = token_nll(logits.data() + r * size_t(V), V, target);
      if (!std::isfinite(nll))
        fail(ErrorCode::backend, "non-finite log-probability at token " + std::to_string(begin + r + 1) + " (backend " +
                                     engine->backend().name() + ")");
      total_nats += nll;
      predicted_bytes += tok.token_bytes(target).size();
    }
    bar.update(double(begin + n), double(ids.size() - 1), std::to_string(begin + n) + " tokens");
  }
  bar.finish();
  const double n_pred = double(ids.size() - 1);
  const double nats = total_nats / n_pred;
  std::printf("file:             %s (%zu bytes)\n", args.file.c_str(), text.size());
  std::printf("backend:          %s\n", engine->backend().name().c_str());
  std::printf("tokens:           %zu (%zu predicted)\n", ids.size(), ids.size() - 1);
  std::printf("nats/token:       %.5f\n", nats);
  std::printf("perplexity/token: %.3f\n", std::exp(nats));
  std::printf("bits/byte:        %.5f\n", total_nats / std::log(2.0) / double(predicted_bytes));
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Score a text file: nats/token, perplexity, bits/byte");
  add_model_option(*cmd, args->model);
  add_backend_options(*cmd, args->model);
  cmd->add_option("-f,--file", args->file, "Text file")->required();
  cmd->add_option("--ctx-chunk", args->chunk, "Tokens per step (the state carries over; this bounds memory)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->callback([args] { run_perplexity(*args); });
}

}  // namespace rwkv::cli
