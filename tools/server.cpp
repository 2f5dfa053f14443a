#include "server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <optional>
#include <random>

#include "common/error.h"
#include "server_api.h"
#include "server_scheduler.h"

namespace rwkv::serve {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Start of the request this worker thread is answering (httplib runs a request's
// pre-routing handler, handler and logger on one thread).
thread_local Clock::time_point request_start;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status(), error_body(e.what(), e.type(), e.param()));
  if (e.status() == 503) res.set_header("Retry-After", "1");
}

// The chat answer drops the space the model writes after "Assistant:". Fed the output
// piece by piece, removes it once, from the first non-empty piece.
class LeadingSpace {
 public:
  void strip(std::string& piece) {
    if (done_ || piece.empty()) return;
    if (piece.front() == ' ') piece.erase(0, 1);
    done_ = true;
  }

 private:
  bool done_ = false;
};

// An outcome that is not a completed answer, as the error to send.
std::optional<ApiError> failure(const CompletionOutcome& o) {
  if (o.finish_reason == "stop" || o.finish_reason == "length") return std::nullopt;
  if (o.finish_reason == "shutdown") return ApiError(503, "server_busy", "", o.error);
  return ApiError(500, "server_error", "", "generation failed: " + o.error);
}

}  // namespace

struct Server::Impl {
  Impl(Engine& e, ServerOptions o)
      : engine(e), options(std::move(o)), scheduler(e, options.max_queue, options.prefill_chunk) {
    id_prefix = std::to_string(std::random_device{}() % 1000000u);
    install_routes();
  }

  void install_routes();
  void handle_completion(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  void stream(const ResponseMeta& meta, std::shared_ptr<CompletionJob> job, httplib::Response& res);

  Engine& engine;
  ServerOptions options;
  Scheduler scheduler;
  httplib::Server http;
  std::string id_prefix;
  std::atomic<uint64_t> next_id = 0;

  // serve()/stop() handshake: httplib's stop() does nothing until listening has begun.
  std::mutex mutex;
  bool stop_requested = false, serving = false, serve_returned = false, http_stopped = false;
  std::condition_variable serve_ended;
};

void Server::Impl::install_routes() {
  // Enough workers for every slot, every queued request and a few quick requests
  // (/health, 503 answers) besides.
  const size_t workers = size_t(scheduler.load().slots + options.max_queue + 4);
  http.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
  http.set_payload_max_length(size_t(16) << 20);

  http.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    request_start = Clock::now();
    return httplib::Server::HandlerResponse::Unhandled;
  });
  if (options.log) {
    http.set_logger([log = options.log](const httplib::Request& req, const httplib::Response& res) {
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - request_start).count();
      char line[64];
      std::snprintf(line, sizeof(line), " %d %.1f ms", res.status, ms);
      log(req.method + " " + req.path + line);
    });
  }
  // Answers without a body (unknown routes, httplib's own refusals) get a JSON error too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 404)
      send_json(res, 404, error_body("no route for " + req.method + " " + req.path, "not_found_error"));
    else
      send_json(res, res.status, error_body("HTTP error " + std::to_string(res.status), "invalid_request_error"));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    std::string message = "unknown error";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
    }
    send_json(res, 500, error_body(message, "server_error"));
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const Scheduler::Load load = scheduler.load();
    send_json(res, 200,
              {{"status", "ok"},
               {"model", options.model_id},
               {"backend", engine.backend().name()},
               {"slots", {{"total", load.slots}, {"busy", load.busy}}},
               {"queued", load.queued}});
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const json model = {{"id", options.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "rwkv"}};
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model})}});
  });
  const std::pair<const char*, Endpoint> posts[] = {{"/v1/completions", Endpoint::completion},
                                                    {"/v1/chat/completions", Endpoint::chat}};
  for (const auto& [path, endpoint] : posts) {
    http.Post(path, [this, endpoint](const httplib::Request& req, httplib::Response& res) {
      try {
        handle_completion(endpoint, req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    });
    http.Get(path, [](const httplib::Request& req, httplib::Response& res) {
      send_json(res, 405, error_body(req.path + " takes POST", "invalid_request_error"));
      res.set_header("Allow", "POST");
    });
  }
}

void Server::Impl::handle_completion(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  const ApiLimits limits{engine.n_vocab(), options.max_tokens_limit, options.default_max_tokens};
  ParsedRequest parsed = parse_request(endpoint, req.body, engine.tokenizer(), limits);
  std::shared_ptr<CompletionJob> job;
  try {
    job = scheduler.submit(std::move(parsed.completion));
  } catch (const SchedulerBusy& e) {
    throw ApiError(503, "server_busy", "", e.what());
  }
  ResponseMeta meta;
  meta.endpoint = endpoint;
  meta.id =
      std::string(endpoint == Endpoint::chat ? "chatcmpl-" : "cmpl-") + id_prefix + "-" + std::to_string(next_id++);
  meta.created = int64_t(std::time(nullptr));
  meta.model = options.model_id;
  if (parsed.stream) {
    stream(meta, std::move(job), res);
    return;
  }
  std::string text;
  for (CompletionJob::Update u; !u.done;) {
    u = job->wait();
    text += u.text;
  }
  const CompletionOutcome outcome = job->outcome();
  if (auto error = failure(outcome)) throw *error;
  if (endpoint == Endpoint::chat) LeadingSpace().strip(text);
  send_json(res, 200, completion_body(meta, text, outcome));
}

// Server-sent events: one "data: {chunk}" per piece of text as the scheduler produces it,
// a last chunk with the finish reason (or an error object), then "data: [DONE]".
void Server::Impl::stream(const ResponseMeta& meta, std::shared_ptr<CompletionJob> job, httplib::Response& res) {
  struct Progress {
    bool role_sent = false;
    LeadingSpace leading_space;
  };
  auto progress = std::make_shared<Progress>();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [meta, job, progress](size_t, httplib::DataSink& sink) {
        std::string out;
        CompletionJob::Update update;
        if (meta.endpoint == Endpoint::chat && !progress->role_sent) {
          out = sse_event(role_chunk(meta));  // at once, before any text exists
          progress->role_sent = true;
        } else {
          update = job->wait();
          if (meta.endpoint == Endpoint::chat) progress->leading_space.strip(update.text);
          if (!update.text.empty()) out += sse_event(stream_chunk(meta, update.text, ""));
          if (update.done) {
            const CompletionOutcome outcome = job->outcome();
            if (auto error = failure(outcome))
              out += sse_event(error_body(error->what(), error->type()));
            else
              out += sse_event(stream_chunk(meta, "", outcome.finish_reason));
            out += "data: [DONE]\n\n";
          }
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          job->cancel();
          return false;
        }
        if (update.done) sink.done();
        return true;
      },
      [job](bool success) {
        if (!success) job->cancel();  // the client went away: free the slot
      });
}

Server::Server(Engine& engine, ServerOptions options) : impl_(std::make_unique<Impl>(engine, std::move(options))) {}

Server::~Server() { stop(); }

int Server::bind() {
  const std::string& host = impl_->options.host;
  const int port = impl_->options.port;
  const int bound = port == 0 ? impl_->http.bind_to_any_port(host) : (impl_->http.bind_to_port(host, port) ? port : -1);
  if (bound < 0)
    fail(ErrorCode::io,
         "cannot listen on " + host + ":" + std::to_string(port) + " (address in use, not local, or not permitted)");
  return bound;
}

void Server::serve() {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stop_requested) return;
    impl_->serving = true;
  }
  impl_->http.listen_after_bind();
  std::lock_guard lock(impl_->mutex);
  impl_->serve_returned = true;
  impl_->serve_ended.notify_all();
}

void Server::stop() {
  bool serving;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stop_requested = true;
    serving = impl_->serving;
  }
  // Waiting handlers return once their jobs end, so the HTTP workers can be joined.
  impl_->scheduler.shutdown();
  if (!serving) return;
  // listen_after_bind() may not have reached its accept loop yet; until it does,
  // httplib's stop() is a no-op.
  // httplib's stop() must run once only (a second call trips an assertion).
  std::unique_lock lock(impl_->mutex);
  while (!impl_->serve_returned) {
    if (!impl_->http_stopped && impl_->http.is_running()) {
      impl_->http.stop();
      impl_->http_stopped = true;
    }
    impl_->serve_ended.wait_for(lock, std::chrono::milliseconds(5));
  }
}

}  // namespace rwkv::serve
