#include "backend/vulkan/profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace rwkv::vk {

Profiler::Profiler(Context& ctx) : ctx_(ctx) {
  const char* env = std::getenv("RWKV_VULKAN_PROFILE");
  if (env == nullptr || env[0] == '\0' || env[0] == '0' || ctx.limits().timestamp_period_ns <= 0) return;
  per_step_ = std::strcmp(env, "steps") == 0;
  capacity_ = 4096;
  VkQueryPoolCreateInfo ci{};
  ci.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO;
  ci.queryType = VK_QUERY_TYPE_TIMESTAMP;
  ci.queryCount = capacity_;
  if (ctx.fn().vkCreateQueryPool(ctx.device(), &ci, nullptr, &pool_) != VK_SUCCESS) pool_ = VK_NULL_HANDLE;
  ns_per_tick_ = ctx.limits().timestamp_period_ns;
}

Profiler::~Profiler() {
  if (pool_ == VK_NULL_HANDLE) return;
  ctx_.fn().vkDestroyQueryPool(ctx_.device(), pool_, nullptr);
  std::fprintf(stderr, "vulkan profile (GPU time between barriers, mean per step):\n");
  for (const auto& [rows, t] : by_rows_) {
    if (t.steps == 0) continue;
    double all = 0;
    for (const auto& [label, ns] : t.ns) all += ns;
    std::fprintf(stderr, "  steps of %u rows: %llu, %.3f ms each\n", rows, static_cast<unsigned long long>(t.steps),
                 all / 1e6 / double(t.steps));
    for (const auto& [label, ns] : t.ns) {
      std::fprintf(stderr, "    %-10s %9.4f ms %5.1f%%\n", label.c_str(), ns / 1e6 / double(t.steps), 100 * ns / all);
    }
  }
}

void Profiler::begin(VkCommandBuffer cmd) {
  if (!enabled()) return;
  labels_.clear();
  ctx_.fn().vkCmdResetQueryPool(cmd, pool_, 0, capacity_);
  ctx_.fn().vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool_, 0);
  labels_.push_back("start");
}

void Profiler::mark(VkCommandBuffer cmd, const char* label) {
  if (!enabled() || labels_.empty() || labels_.size() >= capacity_) return;
  ctx_.fn().vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool_, uint32_t(labels_.size()));
  labels_.push_back(label);
}

void Profiler::collect(const std::vector<const char*>& labels, uint32_t rows, double host_ms) {
  if (!enabled() || labels.size() < 2) return;
  std::vector<uint64_t> ticks(labels.size());
  if (ctx_.fn().vkGetQueryPoolResults(ctx_.device(), pool_, 0, uint32_t(labels.size()), ticks.size() * 8, ticks.data(),
                                      8, VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) != VK_SUCCESS) {
    return;
  }
  if (per_step_) {
    std::map<std::string, double> step;  // ms by label
    for (size_t i = 1; i < labels.size(); ++i) step[labels[i]] += double(ticks[i] - ticks[i - 1]) * ns_per_tick_ / 1e6;
    std::vector<std::pair<double, std::string>> top;
    for (const auto& [label, ms] : step) top.emplace_back(ms, label);
    std::sort(top.rbegin(), top.rend());
    std::fprintf(stderr, "vulkan step: %u rows, gpu %.3f ms, host %.3f ms;", rows,
                 double(ticks.back() - ticks.front()) * ns_per_tick_ / 1e6, host_ms);
    for (size_t i = 0; i < top.size() && i < 3; ++i)
      std::fprintf(stderr, " %s %.3f", top[i].second.c_str(), top[i].first);
    std::fprintf(stderr, "\n");
  }
  Totals& t = by_rows_[rows];
  if (!t.first_seen) {  // the first step of a shape pays first-use costs (pipelines, pages)
    t.first_seen = true;
    return;
  }
  t.steps += 1;
  for (size_t i = 1; i < labels.size(); ++i) t.ns[labels[i]] += double(ticks[i] - ticks[i - 1]) * ns_per_tick_;
}

}  // namespace rwkv::vk
