#include "common/cpu_info.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace rwkv {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "CPU";
}

size_t host_available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream fields(line.substr(13));
      size_t kib = 0;
      if (fields >> kib) return kib * 1024;
    }
  }
  return size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
}

size_t host_last_level_cache() {
  size_t largest = 0;
  for (int index = 0;; ++index) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    if (!in) break;
    size_t value = 0;
    char unit = 0;
    if (!(in >> value)) continue;
    in >> unit;
    const size_t scale = unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : unit == 'G' ? size_t(1) << 30 : 1;
    largest = std::max(largest, value * scale);
  }
  return largest;
}

}  // namespace rwkv
