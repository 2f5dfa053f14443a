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

// Range of thread `index` out of `parts` over n items, aligned to grain.
void split(int64_t n, int64_t grain, int parts, int index, int64_t& begin, int64_t& end) {
  const int64_t blocks = (n + grain - 1) / grain;
  const int64_t per = blocks / parts, extra = blocks % parts;
  const int64_t b0 = index * per + std::min<int64_t>(index, extra);
  const int64_t b1 = b0 + per + (index < extra ? 1 : 0);
  begin = std::min(n, b0 * grain);
  end = std::min(n, b1 * grain);
}
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
  job_grain_ = grain;
  pending_.store(int(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes the job, ordered before the read below
  if (sleeping_workers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mutex_); }
    start_cv_.notify_all();
  }
  int64_t begin, end;
  split(n, grain, parts, 0, begin, end);
  if (begin < end) fn(begin, end, 0);
  for (int i = 0; i < kSpinIterations && pending_.load(std::memory_order_acquire) != 0; ++i) RWKV_CPU_RELAX();
  if (pending_.load(std::memory_order_acquire) != 0) {
    caller_sleeping_.store(true);
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [this] { return pending_.load() == 0; });
    caller_sleeping_.store(false);
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
    int64_t begin, end;
    split(job_n_, job_grain_, size(), index, begin, end);
    if (begin < end) (*job_)(begin, end, index);
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      { std::lock_guard<std::mutex> lock(mutex_); }
      done_cv_.notify_one();
    }
  }
}

}  // namespace rwkv
