// The server's scheduler: one thread owns the Engine (its backend is not thread-safe) and
// runs every live request on a pool of state slots. Each iteration it feeds one prompt chunk
// to each request still reading its prompt, then advances all generating requests by one
// token with a single batched Engine::decode, so concurrent requests share each step.
// Requests beyond the slots wait in a bounded queue; beyond that submit() refuses them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/engine.h"
#include "runtime/sampler.h"

namespace rwkv::serve {

// One completion to run.
struct CompletionRequest {
  std::vector<int32_t> prompt;    // >= 1 token ids, each < n_vocab
  SamplerParams sampling;         // penalties count the prompt too, as rwkv::generate does
  int max_tokens = 256;           // >= 1
  std::vector<std::string> stop;  // non-empty strings; the output ends before the first found
};

// How a finished completion ended.
struct CompletionOutcome {
  std::string finish_reason;  // "stop" (stop string or end-of-text), "length", "error"
  int n_prompt = 0, n_generated = 0;
  std::string error;  // when finish_reason is "error": what failed
};

// A submitted completion, shared by the scheduler (which produces text) and the HTTP
// handler (which waits for it). All members are thread-safe.
class CompletionJob {
 public:
  struct Update {
    std::string text;   // new output since the last wait (may be empty when done)
    bool done = false;  // no more text will come; outcome() is final
  };
  // Blocks until new text or the end is available.
  Update wait();
  // Asks the scheduler to drop the job (client gone); it then ends with an error.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  CompletionOutcome outcome() const;

  // Producer side (the scheduler).
  void append(const std::string& text);
  void finish(CompletionOutcome outcome);

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string pending_;
  bool done_ = false;
  CompletionOutcome outcome_;
  std::atomic<bool> cancelled_ = false;
};

// submit() when every slot is busy and the queue is full, or after shutdown().
class SchedulerBusy : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Scheduler {
 public:
  // engine: used only by the scheduler's thread from now until shutdown(); its slots
  // (backend().slots()) are the pool. max_queue: requests allowed to wait for a slot.
  // prefill_chunk: prompt tokens fed per request per iteration.
  Scheduler(Engine& engine, int max_queue, int prefill_chunk);
  ~Scheduler();  // shutdown()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request (checked by the caller: prompt ids in range, max_tokens >= 1). Throws
  // SchedulerBusy when it cannot be accepted.
  std::shared_ptr<CompletionJob> submit(CompletionRequest request);

  struct Load {
    int slots = 0, busy = 0, queued = 0;
  };
  Load load() const;

  // Ends every live and queued job with an error and stops the thread. Idempotent.
  void shutdown();

 private:
  struct Active;  // a job holding a slot
  void run();
  void admit_waiting(std::vector<Active>& active);
  void prefill(std::vector<Active>& active);
  void decode(std::vector<Active>& active);
  void on_token(Active& a, int32_t token);

  Engine& engine_;
  const int n_slots_, max_queue_, prefill_chunk_;

  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  std::deque<std::pair<CompletionRequest, std::shared_ptr<CompletionJob>>> queue_;
  std::vector<int> free_slots_;
  bool stopping_ = false;
  std::once_flag joined_;
  std::thread thread_;  // last: starts after the members above exist
};

}  // namespace rwkv::serve
