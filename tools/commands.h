// The subcommands of `rwkv`. Each register_* adds one subcommand (its options and a
// callback that runs it) to the root app; it lives in tools/cmd_<name>.cpp. Callbacks
// report failures by throwing: rwkv::Error or std::exception (exit 1), cli::UsageError or
// CLI::ParseError (exit 2); main() prints them as one line "rwkv <cmd>: <message>".
#pragma once

#include <CLI/CLI.hpp>

namespace rwkv::cli {

void register_chat(CLI::App& app);
void register_generate(CLI::App& app);
void register_logits(CLI::App& app);
void register_tokenize(CLI::App& app);  // tokenize and detokenize
void register_info(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_make_model(CLI::App& app);
void register_quantize(CLI::App& app);
void register_bench(CLI::App& app);
void register_check(CLI::App& app);
void register_devices(CLI::App& app);
void register_serve(CLI::App& app);  // tools/cmd_serve.cpp (HTTP server)

}  // namespace rwkv::cli
