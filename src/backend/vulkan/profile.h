// Optional GPU timing of a step's kernels (RWKV_VULKAN_PROFILE=1): a timestamp after each
// barrier, so each interval holds the dispatches recorded since the previous mark and the
// barrier's own bubble. Per step shape (rows), the mean time per label over every step but the
// first (which pays first-use costs: pipeline creation, page mappings) is printed to stderr
// when the backend is destroyed. RWKV_VULKAN_PROFILE=steps also prints one line per step: its
// GPU time, the host's time from submit to the fence, and its three longest labels (to tell a
// slow step's GPU work from its host side).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backend/vulkan/context.h"

namespace rwkv::vk {

class Profiler {
 public:
  // Enabled when RWKV_VULKAN_PROFILE is set and the queue has timestamps.
  explicit Profiler(Context& ctx);
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  bool enabled() const { return pool_ != VK_NULL_HANDLE; }
  // Starts the marks of one command buffer (recorded with it, so replays reuse them).
  void begin(VkCommandBuffer cmd);
  // Ends the interval since the previous mark and charges it to `label` (a literal).
  void mark(VkCommandBuffer cmd, const char* label);
  // After the command buffer recorded with `labels` ran (host_ms: submit to fence): adds its
  // intervals to the totals.
  void collect(const std::vector<const char*>& labels, uint32_t rows, double host_ms);
  // The labels of the command buffer being recorded (take them after recording).
  std::vector<const char*> take_labels() { return std::move(labels_); }

 private:
  Context& ctx_;
  VkQueryPool pool_ = VK_NULL_HANDLE;
  double ns_per_tick_ = 1;
  bool per_step_ = false;  // RWKV_VULKAN_PROFILE=steps
  uint32_t capacity_ = 0;
  std::vector<const char*> labels_;
  struct Totals {
    bool first_seen = false;  // the first step is left out of the means
    uint64_t steps = 0;
    std::map<std::string, double> ns;  // by label
  };
  std::map<uint32_t, Totals> by_rows_;  // by the step's activation rows
};

}  // namespace rwkv::vk
