#include "server_scheduler.h"

#include <algorithm>
#include <exception>
#include <span>
#include <utility>

namespace rwkv::serve {

CompletionJob::Update CompletionJob::wait() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return done_ || !pending_.empty(); });
  Update update;
  update.text = std::move(pending_);
  pending_.clear();
  update.done = done_;
  return update;
}

CompletionOutcome CompletionJob::outcome() const {
  std::lock_guard lock(mutex_);
  return outcome_;
}

void CompletionJob::append(const std::string& text) {
  if (text.empty()) return;
  {
    std::lock_guard lock(mutex_);
    pending_ += text;
  }
  changed_.notify_all();
}

void CompletionJob::finish(CompletionOutcome outcome) {
  {
    std::lock_guard lock(mutex_);
    if (done_) return;
    outcome_ = std::move(outcome);
    done_ = true;
  }
  changed_.notify_all();
}

// A job holding a slot, with its generation state; mirrors rwkv::generate() step by step
// so that a request gives the same text as `rwkv generate` with the same sampling.
struct Scheduler::Active {
  Active(CompletionRequest req, std::shared_ptr<CompletionJob> j, int s, const Tokenizer& tokenizer)
      : request(std::move(req)), job(std::move(j)), slot(s), sampler(request.sampling), decoder(tokenizer) {}

  CompletionRequest request;
  std::shared_ptr<CompletionJob> job;
  int slot;
  Sampler sampler;
  StreamDecoder decoder;
  size_t prompt_fed = 0;    // prompt tokens already in the slot's state
  int32_t next_token = -1;  // sampled and not yet fed (-1: none)
  std::string held;         // decoded text that may still be the start of a stop string
  int n_generated = 0;
  bool finished = false;

  void end(const std::string& reason, const std::string& error = "") {
    finished = true;
    job->finish({reason, int(request.prompt.size()), n_generated, error});
  }
};

Scheduler::Scheduler(Engine& engine, int max_queue, int prefill_chunk)
    : engine_(engine),
      n_slots_(engine.backend().slots()),
      max_queue_(std::max(max_queue, 0)),
      prefill_chunk_(std::max(prefill_chunk, 1)) {
  for (int s = n_slots_ - 1; s >= 0; --s) free_slots_.push_back(s);
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() { shutdown(); }

std::shared_ptr<CompletionJob> Scheduler::submit(CompletionRequest request) {
  auto job = std::make_shared<CompletionJob>();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw SchedulerBusy("the server is shutting down");
    if (queue_.size() >= free_slots_.size() + size_t(max_queue_))
      throw SchedulerBusy("all " + std::to_string(n_slots_) + " slots are busy and " + std::to_string(max_queue_) +
                          " requests are already waiting; try again later");
    queue_.emplace_back(std::move(request), job);
  }
  wake_.notify_all();
  return job;
}

Scheduler::Load Scheduler::load() const {
  std::lock_guard lock(mutex_);
  const int busy = n_slots_ - int(free_slots_.size());
  return {n_slots_, busy, int(queue_.size())};
}

void Scheduler::shutdown() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  std::call_once(joined_, [this] { thread_.join(); });
}

void Scheduler::run() {
  std::vector<Active> active;
  while (true) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !active.empty() || (!queue_.empty() && !free_slots_.empty()); });
      if (stopping_) break;
    }
    for (Active& a : active)
      if (a.job->cancelled()) a.end("cancelled", "the client went away");
    admit_waiting(active);
    prefill(active);
    decode(active);
    std::lock_guard lock(mutex_);
    for (const Active& a : active)
      if (a.finished) free_slots_.push_back(a.slot);
    std::erase_if(active, [](const Active& a) { return a.finished; });
  }
  for (Active& a : active) a.end("shutdown", "the server is shutting down");
  std::lock_guard lock(mutex_);
  for (auto& [request, job] : queue_) job->finish({"shutdown", 0, 0, "the server is shutting down"});
  queue_.clear();
}

void Scheduler::admit_waiting(std::vector<Active>& active) {
  const size_t first_new = active.size();
  {
    std::lock_guard lock(mutex_);
    while (!queue_.empty() && !free_slots_.empty()) {
      auto [request, job] = std::move(queue_.front());
      queue_.pop_front();
      active.emplace_back(std::move(request), std::move(job), free_slots_.back(), engine_.tokenizer());
      free_slots_.pop_back();
    }
  }
  for (size_t i = first_new; i < active.size(); ++i) {
    try {
      engine_.reset(active[i].slot);  // a fresh context for every request
    } catch (const std::exception& e) {
      active[i].end("error", e.what());
    }
  }
}

void Scheduler::prefill(std::vector<Active>& active) {
  std::vector<float> logits(size_t(engine_.n_vocab()));
  for (Active& a : active) {
    const std::vector<int32_t>& prompt = a.request.prompt;
    if (a.finished || a.prompt_fed == prompt.size()) continue;
    const size_t n = std::min(prompt.size() - a.prompt_fed, size_t(prefill_chunk_));
    const bool last = a.prompt_fed + n == prompt.size();
    try {
      engine_.feed(a.slot, std::span(prompt).subspan(a.prompt_fed, n), last ? logits.data() : nullptr);
      a.prompt_fed += n;
      if (last) on_token(a, a.sampler.sample(logits.data(), engine_.n_vocab()));
    } catch (const std::exception& e) {
      a.end("error", e.what());
    }
  }
}

void Scheduler::decode(std::vector<Active>& active) {
  std::vector<Active*> batch;
  std::vector<int> slots;
  std::vector<int32_t> tokens;
  for (Active& a : active) {
    if (a.finished || a.next_token < 0) continue;
    batch.push_back(&a);
    slots.push_back(a.slot);
    tokens.push_back(a.next_token);
  }
  if (batch.empty()) return;
  const size_t n_vocab = size_t(engine_.n_vocab());
  std::span<float> logits;
  try {
    logits = engine_.logits_buffer(batch.size());
    engine_.decode(slots, tokens, logits.data());
  } catch (const std::exception& e) {
    for (Active* a : batch) a->end("error", e.what());
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    Active& a = *batch[i];
    a.next_token = -1;
    try {
      on_token(a, a.sampler.sample(logits.data() + i * n_vocab, int32_t(n_vocab)));
    } catch (const std::exception& e) {
      a.end("error", e.what());
    }
  }
}

void Scheduler::on_token(Active& a, int32_t token) {
  a.sampler.accept(token);
  ++a.n_generated;
  if (token == 0) {  // end of text
    a.job->append(a.held + a.decoder.flush());
    a.end("stop");
    return;
  }
  a.held += a.decoder.push(token);
  // The output ends before the earliest stop string found.
  size_t cut = std::string::npos;
  for (const std::string& s : a.request.stop)
    if (!s.empty()) cut = std::min(cut, a.held.find(s));
  if (cut != std::string::npos) {
    a.job->append(a.held.substr(0, cut));
    a.end("stop");
    return;
  }
  if (a.n_generated >= a.request.max_tokens) {
    a.job->append(a.held + a.decoder.flush());
    a.end("length");
    return;
  }
  // Hold back the longest tail that could be the start of a stop string.
  size_t keep = 0;
  for (const std::string& s : a.request.stop)
    for (size_t k = std::min(s.empty() ? 0 : s.size() - 1, a.held.size()); k > keep; --k)
      if (a.held.compare(a.held.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
  a.job->append(a.held.substr(0, a.held.size() - keep));
  a.held.erase(0, a.held.size() - keep);
  a.next_token = token;
}

}  // namespace rwkv::serve
