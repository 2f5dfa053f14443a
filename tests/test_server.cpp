// `rwkv serve`'s HTTP server, in-process on 127.0.0.1 with an ephemeral port, on the demo
// model: routes, request checking, greedy answers against rwkv::generate, concurrency
// beyond the slot count, chat formatting, stop strings and server-sent events.
#include <gtest/gtest.h>
#include <httplib.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"
#include "gguf/gguf.h"
#include "runtime/engine.h"
#include "server.h"
#include "testing/testing.h"

namespace rwkv::serve {
namespace {

using nlohmann::json;

constexpr int kSlots = 2;

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    EngineOptions engine_options;
    engine_options.backend = "cpu";
    engine_options.backend_options.n_threads = 2;
    engine_options.n_slots = kSlots;
    engine_ = Engine::open(testing::demo_model_q8_0(), engine_options);
    engine_options.n_slots = 1;
    reference_ = Engine::open(testing::demo_model_q8_0(), engine_options);

    ServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.max_queue = 8;
    options.model_id = "demo";
    server_ = std::make_unique<Server>(*engine_, options);
    port_ = server_->bind();
    thread_ = std::thread([] { server_->serve(); });
  }

  static void TearDownTestSuite() {
    server_->stop();
    thread_.join();
    server_.reset();
    engine_.reset();
    reference_.reset();
  }

  static httplib::Client client() {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5);
    c.set_read_timeout(30);
    return c;
  }

  // POSTs a JSON body and returns (status, body). Fails the test when nothing came back.
  static std::pair<int, std::string> post(const std::string& path, const std::string& body) {
    httplib::Client c = client();
    const httplib::Result res = c.Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(res) << "no answer to POST " << path;
    if (!res) return {0, ""};
    return {res->status, res->body};
  }

  static json post_ok(const std::string& path, const json& body) {
    const auto [status, text] = post(path, body.dump());
    EXPECT_EQ(status, 200) << text;
    return json::parse(text, nullptr, false);
  }

  // What rwkv::generate writes for the prompt with greedy sampling (default penalties).
  static std::string greedy_reference(const std::string& prompt, int max_tokens,
                                      const std::vector<std::string>& stop = {}) {
    reference_->reset(0);
    SamplerParams params;
    params.temperature = 0;
    Sampler sampler(params);
    GenerateOptions options;
    options.max_tokens = max_tokens;
    options.stop = stop;
    return generate(*reference_, 0, prompt, sampler, options, nullptr).text;
  }

  // Splits a server-sent-event body into its data payloads; every event must be "data: ...".
  static std::vector<std::string> events(const std::string& body) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < body.size()) {
      const size_t end = body.find("\n\n", pos);
      EXPECT_NE(end, std::string::npos) << "unterminated event at byte " << pos;
      if (end == std::string::npos) break;
      const std::string event = body.substr(pos, end - pos);
      EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
      out.push_back(event.substr(6));
      pos = end + 2;
    }
    return out;
  }

  static std::unique_ptr<Engine> engine_, reference_;
  static std::unique_ptr<Server> server_;
  static std::thread thread_;
  static int port_;
};

std::unique_ptr<Engine> ServerTest::engine_, ServerTest::reference_;
std::unique_ptr<Server> ServerTest::server_;
std::thread ServerTest::thread_;
int ServerTest::port_ = 0;

TEST_F(ServerTest, HealthAndModels) {
  httplib::Client c = client();
  const httplib::Result health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  const json h = json::parse(health->body);
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["slots"]["total"], kSlots);

  const httplib::Result models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "demo");
}

TEST_F(ServerTest, GreedyCompletionIsDeterministicAndMatchesGenerate) {
  const json request = {{"prompt", "The jury said"}, {"max_tokens", 24}, {"temperature", 0}};
  const json first = post_ok("/v1/completions", request);
  const json second = post_ok("/v1/completions", request);
  const std::string text = first["choices"][0]["text"];
  EXPECT_EQ(second["choices"][0]["text"], text);
  EXPECT_EQ(text, greedy_reference("The jury said", 24));
  EXPECT_EQ(first["object"], "text_completion");
  EXPECT_EQ(first["usage"]["prompt_tokens"], 4);
  EXPECT_LE(first["usage"]["completion_tokens"].get<int>(), 24);

  // The same prompt as token ids.
  const json by_ids =
      post_ok("/v1/completions", {{"prompt", {631, 309, 841, 1313}}, {"max_tokens", 24}, {"temperature", 0}});
  EXPECT_EQ(by_ids["choices"][0]["text"], text);

  // Random sampling repeats with a seed.
  const json seeded = {{"prompt", "The jury said"}, {"max_tokens", 16}, {"temperature", 1.0}, {"seed", 7}};
  EXPECT_EQ(post_ok("/v1/completions", seeded)["choices"][0]["text"],
            post_ok("/v1/completions", seeded)["choices"][0]["text"]);
}

TEST_F(ServerTest, ConcurrentRequestsBeyondTheSlotsGiveTheirOwnAnswers) {
  const std::vector<std::string> prompts = {"The jury said", "In the morning", "The jury said", "In the morning",
                                            "He was"};
  std::vector<std::string> answers(prompts.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i)
    clients.emplace_back([&, i] {
      const json r = post_ok("/v1/completions", {{"prompt", prompts[i]}, {"max_tokens", 20}, {"temperature", 0}});
      answers[i] = r["choices"][0]["text"];
    });
  for (std::thread& t : clients) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(answers[i], greedy_reference(prompts[i], 20)) << "prompt " << i;
}

TEST_F(ServerTest, StopStringEndsTheAnswerBeforeIt) {
  const std::string full = greedy_reference("The jury said", 24);
  ASSERT_GE(full.size(), 12u);
  const std::string stop = full.substr(8, 3);
  const json r = post_ok("/v1/completions",
                         {{"prompt", "The jury said"}, {"max_tokens", 24}, {"temperature", 0}, {"stop", {stop}}});
  EXPECT_EQ(r["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServerTest, ChatUsesTheRwkvPromptFormat) {
  const json request = {{"messages",
                         {{{"role", "system"}, {"content", "You answer briefly."}},
                          {{"role", "user"}, {"content", "What did\n\n\nthe jury say?"}}}},
                        {"max_tokens", 20},
                        {"temperature", 0}};
  const json r = post_ok("/v1/chat/completions", request);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  std::string expected =
      greedy_reference("System: You answer briefly.\n\nUser: What did\nthe jury say?\n\nAssistant:", 20, {"\n\n"});
  if (!expected.empty() && expected[0] == ' ') expected.erase(0, 1);
  EXPECT_EQ(r["choices"][0]["message"]["content"], expected);
}

TEST_F(ServerTest, StreamingSendsTheSameTextAsEvents) {
  const json request = {{"prompt", "The jury said"}, {"max_tokens", 24}, {"temperature", 0}, {"stream", true}};
  httplib::Client c = client();
  const httplib::Result res = c.Post("/v1/completions", request.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type").rfind("text/event-stream", 0), 0u);
  const std::vector<std::string> data = events(res->body);
  ASSERT_GE(data.size(), 3u);  // text, finish, [DONE]
  EXPECT_EQ(data.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < data.size(); ++i) {
    const json chunk = json::parse(data[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    text += chunk["choices"][0]["text"].get<std::string>();
    EXPECT_EQ(chunk["choices"][0]["finish_reason"].is_null(), i + 2 < data.size()) << data[i];
  }
  EXPECT_EQ(text, greedy_reference("The jury said", 24));

  // Chat streams start with the assistant role and carry the text in deltas.
  const json chat = {{"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                     {"max_tokens", 8},
                     {"temperature", 0},
                     {"stream", true}};
  const auto [status, body] = post("/v1/chat/completions", chat.dump());
  EXPECT_EQ(status, 200);
  const std::vector<std::string> chat_data = events(body);
  ASSERT_GE(chat_data.size(), 3u);
  EXPECT_EQ(json::parse(chat_data[0])["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(json::parse(chat_data[chat_data.size() - 2])["object"], "chat.completion.chunk");
  EXPECT_EQ(chat_data.back(), "[DONE]");
}

// The error body names the problem; returns its message.
std::string error_message(int status, const std::string& body, int expected_status) {
  EXPECT_EQ(status, expected_status) << body;
  const json j = json::parse(body, nullptr, false);
  EXPECT_TRUE(j.contains("error")) << body;
  return j.contains("error") ? j["error"]["message"].get<std::string>() : "";
}

TEST_F(ServerTest, BadRequestsGet400NamingTheField) {
  auto [status, body] = post("/v1/completions", "{\"prompt\": \"x\",");
  EXPECT_NE(error_message(status, body, 400).find("JSON"), std::string::npos);

  std::tie(status, body) = post("/v1/completions", R"({"max_tokens": 5})");
  EXPECT_NE(error_message(status, body, 400).find("prompt is required"), std::string::npos);

  std::tie(status, body) = post(
      "/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": 42}]})");
  EXPECT_EQ(error_message(status, body, 400), "messages[1].content must be a string");
  EXPECT_EQ(json::parse(body)["error"]["param"], "messages[1].content");

  std::tie(status, body) = post("/v1/completions", R"({"prompt": "x", "temperature": "hot"})");
  EXPECT_NE(error_message(status, body, 400).find("temperature"), std::string::npos);

  std::tie(status, body) = post("/v1/completions", R"({"prompt": "x", "max_tokens": 0})");
  EXPECT_NE(error_message(status, body, 400).find("max_tokens"), std::string::npos);

  std::tie(status, body) = post("/v1/completions", R"({"prompt": [631, 99999]})");
  EXPECT_NE(error_message(status, body, 400).find("prompt[1]"), std::string::npos);

  std::tie(status, body) = post("/v1/completions", "[1, 2]");
  EXPECT_NE(error_message(status, body, 400).find("object"), std::string::npos);
}

TEST_F(ServerTest, UnknownRoutesGet404AndWrongMethods405) {
  httplib::Client c = client();
  const httplib::Result missing = c.Get("/v1/nothing");
  ASSERT_TRUE(missing);
  EXPECT_NE(error_message(missing->status, missing->body, 404).find("/v1/nothing"), std::string::npos);
  const httplib::Result get = c.Get("/v1/completions");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 405);
}

// The cpu backend under the test's control: while the gate is closed every step waits,
// which holds the scheduler still so that slot and queue occupancy are known exactly; while
// failing, every step throws as a lost device would.
class ControlledBackend final : public Backend {
 public:
  explicit ControlledBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  std::string device_name() const override { return inner_->device_name(); }
  void load(std::shared_ptr<const Model> model, const ProgressFn& progress) override { inner_->load(model, progress); }
  void set_slots(int n) override { inner_->set_slots(n); }
  int slots() const override { return inner_->slots(); }
  void reset_slot(int slot) override { inner_->reset_slot(slot); }
  void get_state(int slot, std::span<float> out) override { inner_->get_state(slot, out); }
  void set_state(int slot, std::span<const float> in) override { inner_->set_state(slot, in); }
  size_t memory_bytes() const override { return inner_->memory_bytes(); }
  void step(std::span<const SeqTokens> batch, float* logits) override {
    {
      std::unique_lock lock(mutex_);
      ++steps_waiting_;
      changed_.notify_all();
      changed_.wait(lock, [&] { return open_; });
      --steps_waiting_;
      if (failing_) fail(ErrorCode::backend, "simulated device failure");
    }
    inner_->step(batch, logits);
  }

  void set_open(bool open) {
    std::lock_guard lock(mutex_);
    open_ = open;
    changed_.notify_all();
  }
  void set_failing(bool failing) {
    std::lock_guard lock(mutex_);
    failing_ = failing;
  }
  void wait_for_blocked_step() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return steps_waiting_ > 0; });
  }

 private:
  std::unique_ptr<Backend> inner_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = true, failing_ = false;
  int steps_waiting_ = 0;
};

// A one-slot server on the demo model over a ControlledBackend, serving on its own thread.
class ControlledServer {
 public:
  explicit ControlledServer(int max_queue) {
    auto model = Model::load(testing::demo_model_q8_0());
    BackendOptions backend_options;
    backend_options.n_threads = 1;
    auto backend = std::make_unique<ControlledBackend>(create_backend("cpu", backend_options));
    backend_ = backend.get();
    backend_->load(model, nullptr);
    EngineOptions engine_options;
    engine_options.n_slots = 1;
    engine_ = std::make_unique<Engine>(model, std::move(backend), Tokenizer::from_gguf(model->file()), engine_options);
    ServerOptions options;
    options.port = 0;
    options.max_queue = max_queue;
    server_ = std::make_unique<Server>(*engine_, options);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->serve(); });
  }
  ~ControlledServer() {
    backend_->set_open(true);
    server_->stop();
    thread_.join();
  }

  ControlledBackend& backend() { return *backend_; }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30);
    return c;
  }
  // Status and body of a completion request.
  std::pair<int, std::string> complete(const std::string& body) const {
    const auto res = client().Post("/v1/completions", body, "application/json");
    return res ? std::pair(res->status, res->body) : std::pair(0, std::string());
  }
  int queued() const {
    const auto res = client().Get("/health");
    return res ? json::parse(res->body)["queued"].get<int>() : -1;
  }

 private:
  ControlledBackend* backend_ = nullptr;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Server> server_;
  int port_ = 0;
  std::thread thread_;
};

TEST(ServerQueue, RequestsBeyondSlotsAndQueueGet503) {
  ControlledServer server(/*max_queue=*/1);
  const std::string request = R"({"prompt": "The jury", "max_tokens": 4})";
  server.backend().set_open(false);
  int first = 0, second = 0;
  std::thread holds_the_slot([&] { first = server.complete(request).first; });
  server.backend().wait_for_blocked_step();  // the first request is in its prompt step
  std::thread waits([&] { second = server.complete(request).first; });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.queued() != 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(server.queued(), 1);

  const auto refused = server.client().Post("/v1/completions", request, "application/json");
  EXPECT_TRUE(refused);
  if (refused) {
    EXPECT_EQ(refused->status, 503);
    EXPECT_EQ(refused->get_header_value("Retry-After"), "1");
    EXPECT_EQ(json::parse(refused->body)["error"]["type"], "server_busy");
  }

  server.backend().set_open(true);
  holds_the_slot.join();
  waits.join();
  EXPECT_EQ(first, 200);
  EXPECT_EQ(second, 200);
}

TEST(ServerFailures, EngineErrorsGive500AndFreeTheSlot) {
  ControlledServer server(/*max_queue=*/1);
  server.backend().set_failing(true);
  const auto [status, body] = server.complete(R"({"prompt": "The jury", "max_tokens": 4})");
  EXPECT_NE(error_message(status, body, 500).find("simulated device failure"), std::string::npos);

  // A stream that fails after its headers ends with an error event, then [DONE].
  const auto [stream_status, stream_body] =
      server.complete(R"({"prompt": "The jury", "max_tokens": 4, "stream": true})");
  EXPECT_EQ(stream_status, 200);
  EXPECT_NE(stream_body.find("simulated device failure"), std::string::npos) << stream_body;
  EXPECT_TRUE(stream_body.ends_with("data: [DONE]\n\n")) << stream_body;

  server.backend().set_failing(false);
  EXPECT_EQ(server.complete(R"({"prompt": "The jury", "max_tokens": 4})").first, 200);
}

}  // namespace
}  // namespace rwkv::serve
