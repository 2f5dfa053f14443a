#include "common/threadpool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RWKV_CPU_RELAX() _mm_pause()
#else
#define RWKV_CPU_RELAX() std::this_thread::yield()
#endif

namespace rwkv {

namespace {
// Spin iterations before blocking: roughly 20-50 us of pause instructions (more on CPUs
// whose pause is long).
constexpr int kSpinIterations = 4000;

// Chunks a job is cut into per thread: threads that finish early take the chunks of slow ones
// (a thread descheduled on a shared host, or waiting longer on memory).
constexpr int64_t kChunksPerThread = 4;
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(mutex_);  // a worker between its check and its wait holds it
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

// The hand-over without locks is safe against lost wake-ups because each side first
// announces that it sleeps (sleeping_workers_, caller_sleeping_), then checks the condition,
// both sequentially consistent; the other side first changes the condition, then reads the
// announcement. One of the two sees the other's write. A sleeper re-checks the condition
// under the mutex, and a waker takes the mutex once before notifying, so the notification
// cannot fall between that check and the wait.
void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int parts = size();
  if (parts == 1 || n <= grain) {
    fn(0, n, 0);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  const int64_t per_chunk = (n + parts * kChunksPerThread - 1) / (parts * kChunksPerThread);
  job_chunk_ = (per_chunk + grain - 1) / grain * grain;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(int(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes the job, ordered before the read below
  if (sleeping_workers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mutex_); }
    start_cv_.notify_all();
  }
  run_chunks(0);
  for (int i = 0; i < kSpinIterations && pending_.load(std::memory_order_acquire) != 0; ++i) RWKV_CPU_RELAX();
  if (pending_.load(std::memory_order_acquire) != 0) {
    caller_sleeping_.store(true);
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [this] { return pending_.load() == 0; });
    caller_sleeping_.store(false);
  }
}

void ThreadPool::run_chunks(int index) {
  for (;;) {
    const int64_t begin = next_.fetch_add(job_chunk_, std::memory_order_relaxed);
    if (begin >= job_n_) return;
    (*job_)(begin, std::min(job_n_, begin + job_chunk_), index);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    for (int i = 0; i < kSpinIterations && generation_.load(std::memory_order_acquire) == seen; ++i) RWKV_CPU_RELAX();
    if (generation_.load(std::memory_order_acquire) == seen) {
      sleeping_workers_.fetch_add(1);
      std::unique_lock<std::mutex> lock(mutex_);
      start_cv_.wait(lock, [&] { return generation_.load() != seen; });
      sleeping_workers_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    run_chunks(index);
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      { std::lock_guard<std::mutex> lock(mutex_); }
      done_cv_.notify_one();
    }
  }
}

}  // namespace rwkv
