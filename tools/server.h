// `rwkv serve`'s HTTP server: OpenAI-compatible /v1/completions, /v1/chat/completions and
// /v1/models, plus /health, over cpp-httplib. Requests run on the Scheduler's slot pool.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "runtime/engine.h"

namespace rwkv::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;               // 0: any free port (bind() tells which)
  int max_queue = 16;            // requests that may wait for a slot; more get 503
  int prefill_chunk = 256;       // prompt tokens per request per scheduler iteration
  int max_tokens_limit = 4096;   // largest max_tokens a request may ask for
  int default_max_tokens = 256;  // when a request gives none
  std::string model_id;          // the model's name in answers and /v1/models
  // One line per request ("POST /v1/completions 200 12.3 ms"); may be empty.
  std::function<void(const std::string&)> log;
};

class Server {
 public:
  // engine: its slots are the request pool; the server uses it from its own thread until
  // it is destroyed.
  Server(Engine& engine, ServerOptions options);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Opens the listening socket and returns its port. Throws Error(io) naming host:port.
  int bind();
  // Answers requests until stop(); call bind() first. Returns after stop().
  void serve();
  // Ends every running request, closes the socket and makes serve() return. Callable from
  // any thread, also before serve() has started; idempotent.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rwkv::serve
