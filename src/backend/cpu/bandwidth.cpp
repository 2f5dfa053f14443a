#include "backend/cpu/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>

#include "common/threadpool.h"

namespace rwkv {

double host_copy_bandwidth(ThreadPool* pool) {
  constexpr int64_t kBytes = int64_t(256) << 20;
  constexpr int64_t kGrain = int64_t(1) << 20;  // each thread's range, a multiple of 1 MiB
  std::unique_ptr<uint8_t[]> src(new uint8_t[kBytes]), dst(new uint8_t[kBytes]);
  // Runs fn(begin, end) over [0, kBytes), on the pool's threads where there is one.
  const auto split = [&](auto fn) {
    if (pool == nullptr) {
      fn(int64_t(0), kBytes);
    } else {
      pool->parallel_for(
          kBytes, [&](int64_t begin, int64_t end, int) { fn(begin, end); }, kGrain);
    }
  };
  // Touch every page first, so that no page fault is timed.
  split([&](int64_t begin, int64_t end) {
    std::memset(src.get() + begin, 1, size_t(end - begin));
    std::memset(dst.get() + begin, 0, size_t(end - begin));
  });
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    split([&](int64_t begin, int64_t end) { std::memcpy(dst.get() + begin, src.get() + begin, size_t(end - begin)); });
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * double(kBytes) / best / 1e9;
}

}  // namespace rwkv
