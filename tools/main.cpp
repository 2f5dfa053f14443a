// rwkv: the command-line front end. Parses the subcommand, runs it, and turns every failure
// into one line on stderr: exit 1 for errors while running, 2 for usage errors.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "commands.h"
#include "common.h"
#include "common/error.h"

namespace {

// "rwkv <cmd>" for the subcommand being run, or "rwkv" before one was recognised.
std::string command_prefix(const CLI::App& app) {
  const auto subs = app.get_subcommands();
  return subs.empty() ? std::string("rwkv") : "rwkv " + subs.front()->get_name();
}

int report(const std::string& prefix, const std::string& message, int code) {
  std::string line = message;
  // One line per error: CLI11 and some library messages may carry newlines.
  for (char& c : line)
    if (c == '\n') c = ' ';
  while (!line.empty() && line.back() == ' ') line.pop_back();
  std::fprintf(stderr, "%s: %s\n", prefix.c_str(), line.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"rwkv: run RWKV-7 (x070) language models from GGUF files on CPU, CUDA and Vulkan."};
  app.name("rwkv");
  app.set_version_flag("--version", std::string("rwkv ") + RWKV_VERSION);
  app.require_subcommand(0, 1);
  app.footer(rwkv::cli::default_model_help() + "\nRun 'rwkv <command> --help' for a command's options.");
  using namespace rwkv::cli;
  register_chat(app);
  register_generate(app);
  register_logits(app);
  register_tokenize(app);
  register_info(app);
  register_perplexity(app);
  register_make_model(app);
  register_quantize(app);
  register_bench(app);
  register_check(app);
  register_devices(app);
  register_serve(app);

  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) std::cout << app.help();
    return 0;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ExtrasError& e) {
    // A first word that is no subcommand: say so plainly.
    if (app.get_subcommands().empty() && argc > 1 && argv[1][0] != '-')
      return report("rwkv", std::string("unknown command '") + argv[1] + "' (run 'rwkv --help' for the list)", 2);
    return report(command_prefix(app), e.what(), 2);
  } catch (const CLI::ParseError& e) {
    return report(command_prefix(app), e.what(), 2);
  } catch (const UsageError& e) {
    return report(command_prefix(app), e.what(), 2);
  } catch (const std::exception& e) {  // rwkv::Error included
    return report(command_prefix(app), e.what(), 1);
  }
}
