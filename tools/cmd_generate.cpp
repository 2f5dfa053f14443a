// rwkv generate: one prompt, one streamed completion.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "common.h"

namespace rwkv::cli {

namespace {

struct GenerateArgs {
  ModelArgs model;
  SamplerParams sampling;
  std::string prompt;
  int n_predict = 128;
  std::vector<std::string> stop;
  bool raw = false;
  bool no_eos = false;
};

void run_generate(const GenerateArgs& args) {
  auto engine = open_engine(args.model);
  const std::string prompt = args.raw ? args.prompt : unescape(args.prompt);
  GenerateOptions options;
  options.max_tokens = args.n_predict;
  options.stop_at_eos = !args.no_eos;
  for (const std::string& s : args.stop) options.stop.push_back(args.raw ? s : unescape(s));

  Sampler sampler(args.sampling);
  std::cout << prompt << std::flush;
  const GenerateResult r = generate(*engine, 0, prompt, sampler, options, [](const std::string& piece) {
    std::cout << piece << std::flush;
    return true;
  });
  std::cout << "\n" << std::flush;
  std::fprintf(stderr, "[prompt %d tokens, %.1f tok/s; generated %d tokens, %.1f tok/s; stop: %s]\n", r.n_prompt,
               r.prefill_seconds > 0 ? r.n_prompt / r.prefill_seconds : 0.0, r.n_generated,
               r.decode_seconds > 0 ? r.n_generated / r.decode_seconds : 0.0, r.stop_reason.c_str());
}

}  // namespace

void register_generate(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Complete a prompt: prompt and completion to stdout, speed to stderr");
  add_model_option(*cmd, args->model);
  add_backend_options(*cmd, args->model);
  cmd->add_option("-p,--prompt", args->prompt, "Prompt text (\\n, \\t, \\xHH escapes are decoded)")->required();
  cmd->add_option("-n,--n-predict", args->n_predict, "Tokens to generate at most")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--stop", args->stop, "Stop when the output contains this text (repeatable; escapes decoded)");
  cmd->add_flag("--raw", args->raw, "Take --prompt and --stop literally (no escape decoding)");
  cmd->add_flag("--ignore-eos", args->no_eos, "Do not stop at the end-of-text token 0");
  add_sampling_options(*cmd, args->sampling);
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace rwkv::cli
