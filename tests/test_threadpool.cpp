// The thread pool (common/threadpool.h): every index of every job exactly once, ranges
// aligned to the grain, results visible to the caller, through both hand-overs (workers still
// spinning, and workers or the caller asleep after a pause), and a clean shutdown.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "common/threadpool.h"

namespace rwkv {
namespace {

// Runs one job over n items and checks that each item was visited once, in ranges that
// start at multiples of grain, by valid thread indices.
void expect_each_index_once(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> visits(size_t(n) + 1);
  std::atomic<int> misaligned{0}, bad_thread{0};
  pool.parallel_for(
      n,
      [&](int64_t begin, int64_t end, int thread) {
        if (begin % grain != 0) ++misaligned;
        if (thread < 0 || thread >= pool.size()) ++bad_thread;
        for (int64_t i = begin; i < end; ++i) ++visits[size_t(i)];
      },
      grain);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(visits[size_t(i)].load(), 1) << "n=" << n << " grain=" << grain << " i=" << i;
  EXPECT_EQ(visits[size_t(n)].load(), 0);
  EXPECT_EQ(misaligned.load(), 0);
  EXPECT_EQ(bad_thread.load(), 0);
}

TEST(ThreadPool, EveryIndexOnceInAlignedRanges) {
  for (const int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (const int64_t n : {0, 1, 5, 63, 64, 1000})
      for (const int64_t grain : {1, 4, 64}) expect_each_index_once(pool, n, grain);
  }
}

// Thousands of tiny jobs back to back (the decode pattern: workers never get to sleep);
// each job's writes by the workers are seen by the caller when parallel_for returns.
TEST(ThreadPool, ManyQuickJobsSeeEachOthersWrites) {
  ThreadPool pool(2);  // no more threads than CI's cores: spinning workers must not queue
  std::vector<int64_t> out(64, 0);
  for (int job = 1; job <= 20000; ++job) {
    pool.parallel_for(64, [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) out[size_t(i)] += job;
    });
    if (job % 5000 == 0) {
      for (int64_t v : out) ASSERT_EQ(v, int64_t(job) * (job + 1) / 2) << "after job " << job;
    }
  }
}

// Pauses longer than the spin put the workers to sleep between jobs; a job whose worker
// ranges take long puts the caller to sleep. Both must be woken, every time.
TEST(ThreadPool, WakesSleepingWorkersAndCaller) {
  ThreadPool pool(3);
  for (int round = 0; round < 6; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(round % 2 == 0 ? 20 : 1));
    expect_each_index_once(pool, 300, 1);
    std::atomic<int> done{0};
    pool.parallel_for(3, [&](int64_t begin, int64_t end, int thread) {
      if (thread != 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      done += int(end - begin);
    });
    EXPECT_EQ(done.load(), 3) << "round " << round;
  }
}

// Destroying a pool whose workers sleep (or spin) returns.
TEST(ThreadPool, ShutsDownWhetherWorkersSleepOrSpin) {
  for (const int pause_ms : {0, 30}) {
    ThreadPool pool(4);
    expect_each_index_once(pool, 16, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
  }
}

}  // namespace
}  // namespace rwkv
