// The host CPU's model name, for tables and logs; its memory still available, and its
// last-level cache.
#pragma once

#include <cstddef>
#include <string>

namespace rwkv {
std::string cpu_model_name();
// Bytes of memory the host can still give without swapping (Linux: MemAvailable of
// /proc/meminfo; elsewhere the physical memory).
size_t host_available_memory();
// Bytes of the largest cache of CPU 0 as the kernel reports it (Linux sysfs); 0 when unknown.
size_t host_last_level_cache();
}  // namespace rwkv
