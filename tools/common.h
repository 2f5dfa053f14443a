// Options and helpers shared by the `rwkv` subcommands: the model / backend options, the
// sampling options, default model lookup, a progress bar and small text utilities.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/sampler.h"

namespace rwkv::cli {

// A mistake in how the command was invoked (exit code 2), as opposed to a failure while
// running it (exit code 1).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The demo model used when -m is absent, looked up as default_model_help() says.
inline constexpr const char* kDefaultModel = "models/rwkv7-demo-6x256-q8_0.gguf";
// One line for --help footers.
std::string default_model_help();

// -m/--model, and optionally --backend, -t/--threads, --device, -v/--verbose.
struct ModelArgs {
  std::string model;  // empty: the default model
  std::string backend = "auto";
  int threads = 0;  // 0: every hardware thread
  int device = -1;  // GPU adapter index, -1: the best one
  bool verbose = false;

  BackendOptions backend_options() const;
};
void add_model_option(CLI::App& cmd, ModelArgs& args);
void add_backend_options(CLI::App& cmd, ModelArgs& args);

// The model path to open: `given`, or the default model. Throws Error(io) naming every place
// looked in when the default model is not found.
std::string resolve_model(const std::string& given);

// Opens an engine on the resolved model, drawing a progress bar on stderr while the
// backend loads the weights (when stderr is a terminal) and printing backend notes with -v.
std::unique_ptr<Engine> open_engine(const ModelArgs& args, int n_slots = 1, int prefill_chunk = 512);

// --temp, --top-k, --top-p, --min-p, --presence-penalty, --frequency-penalty,
// --penalty-decay, --seed; defaults from SamplerParams (RWKV's chat demos).
void add_sampling_options(CLI::App& cmd, SamplerParams& params);

// A one-line bar redrawn in place on stderr; silent when stderr is not a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  ~ProgressBar();  // ends the line if one was drawn
  void update(double done, double total, const std::string& detail = "");
  void finish();

 private:
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  int last_permille_ = -1;
};

bool stderr_is_tty();

// "\n", "\t", "\\", "\r" and "\xHH" escapes as written on a command line -> bytes.
std::string unescape(const std::string& text);
// Token ids from "1,2,3", "1 2 3" or several such arguments; UsageError on anything else.
std::vector<int32_t> parse_token_ids(const std::vector<std::string>& args);
// Bytes as "12.3 MiB" / "456 KiB" / "78 B".
std::string format_bytes(double bytes);
// A count as "6.29 M" / "2.95 B".
std::string format_count(double n);

}  // namespace rwkv::cli
