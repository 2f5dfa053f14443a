// A fixed pool of worker threads for data-parallel loops. parallel_for cuts [0, n) into a few
// chunks per thread, which the threads (the caller's included) take in turn, and returns
// when all are done. Not re-entrant: one parallel_for at a time per pool.
//
// Decode issues hundreds of small loops per token, so a job is handed over without locks:
// workers spin on a generation counter for a while before they block, and the caller spins
// on the count of unfinished ranges. The mutex and condition variables are touched only
// when a side has gone to sleep (a wake-up through them costs about 5 us, and 16 workers
// taking one mutex in turn for every job cost several more).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rwkv {

class ThreadPool {
 public:
  // n_threads <= 0 picks the number of hardware threads.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end, thread_index) on disjoint ranges covering [0, n), any number a
  // thread. Ranges start at multiples of `grain` and are multiples of it except the last,
  // so callers can keep blocks whole.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain = 1);

 private:
  void worker_loop(int index);
  // Takes chunks of the current job until none is left.
  void run_chunks(int index);

  std::vector<std::thread> workers_;
  // The job: written by the caller before it bumps generation_ (release), read by the
  // workers after they see the new generation (acquire); not rewritten before every worker
  // has counted itself out of pending_.
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0, job_chunk_ = 1;
  std::atomic<int64_t> next_{0};  // start of the next chunk to take
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // workers yet to finish the current job
  std::atomic<bool> stop_{false};
  // Sleeping sides: workers blocked on start_cv_, the caller blocked on done_cv_.
  std::atomic<int> sleeping_workers_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::mutex mutex_;
  std::condition_variable start_cv_, done_cv_;
};

}  // namespace rwkv
