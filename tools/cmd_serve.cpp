// rwkv serve: an OpenAI-compatible HTTP server (see docs/server.md). Runs until SIGINT or
// SIGTERM, which end the running requests and close the socket.
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include "commands.h"
#include "common.h"
#include "server.h"

namespace rwkv::cli {

namespace {

struct ServeArgs {
  ModelArgs model;
  serve::ServerOptions server;
  int slots = 4;
  std::string alias;
};

// Routes SIGINT/SIGTERM to one thread (sigwait) instead of whichever thread they hit. It
// must exist before any other thread starts, so that every thread inherits the mask. A
// signal stops the attached server, or ends the process while none is attached (loading).
class SignalWatcher {
 public:
  SignalWatcher() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::thread([this] { watch(); });
  }
  ~SignalWatcher() {
    {
      std::lock_guard lock(mutex_);
      finished_ = true;
    }
    pthread_kill(thread_.native_handle(), SIGTERM);  // wakes sigwait if no signal came
    thread_.join();
  }
  // The server a signal stops (nullptr: none; detach before destroying it).
  void attach(serve::Server* server) {
    std::lock_guard lock(mutex_);
    server_ = server;
  }

 private:
  void watch() {
    int signal_number = 0;
    sigwait(&signals_, &signal_number);
    std::lock_guard lock(mutex_);
    if (finished_) return;
    if (!server_) {
      std::cerr << "rwkv serve: interrupted\n";
      std::_Exit(128 + signal_number);
    }
    std::cerr << "rwkv serve: stopping\n";
    server_->stop();
  }

  sigset_t signals_;
  std::mutex mutex_;
  serve::Server* server_ = nullptr;
  bool finished_ = false;
  std::thread thread_;
};

void run_serve(const ServeArgs& args) {
  SignalWatcher watcher;
  const std::string model_path = resolve_model(args.model.model);
  auto engine = open_engine(args.model, args.slots, args.server.prefill_chunk);
  serve::ServerOptions options = args.server;
  options.model_id = args.alias.empty() ? std::filesystem::path(model_path).stem().string() : args.alias;
  options.log = [](const std::string& line) { std::cerr << line + "\n"; };
  serve::Server server(*engine, options);
  const int port = server.bind();
  std::cerr << "rwkv serve: listening on http://" << options.host << ":" << port << " (model " << options.model_id
            << ", backend " << engine->backend().name() << ", " << args.slots << " slots); Ctrl-C stops\n";
  watcher.attach(&server);
  server.serve();
  watcher.attach(nullptr);
}

}  // namespace

void register_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)");
  add_model_option(*cmd, args->model);
  add_backend_options(*cmd, args->model);
  cmd->add_option("--host", args->server.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", args->server.port, "TCP port (0: any free port)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--slots", args->slots, "Requests generated at once (state slots)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--queue", args->server.max_queue, "Requests that may wait for a slot; more get 503")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-tokens", args->server.max_tokens_limit, "Largest max_tokens a request may ask for")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--default-max-tokens", args->server.default_max_tokens, "max_tokens of requests that give none")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--prefill-chunk", args->server.prefill_chunk, "Prompt tokens fed per request per step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--alias", args->alias, "Model name in answers and /v1/models (default: the file name)");
  cmd->callback([args] {
    if (args->server.default_max_tokens > args->server.max_tokens_limit)
      throw UsageError("--default-max-tokens must not exceed --max-tokens");
    run_serve(*args);
  });
}

}  // namespace rwkv::cli
