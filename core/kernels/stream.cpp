// The size threshold for streaming stores (see stream.h): half the last-level cache, read from
// sysfs. glibc's sysconf(_SC_LEVEL3_CACHE_SIZE) is not used: in a VM it reports the host's
// (320 MiB on a machine whose guest sees 32 MiB).
#include "core/kernels/stream.h"

#include <atomic>
#include <fstream>
#include <string>

namespace sb::kernels {

static std::atomic<int64_t> g_override{-1};

// Size in bytes of cpu0's highest-level cache per sysfs, or 0 when sysfs does not say.
static int64_t last_level_cache_bytes() {
  int best_level = 0;
  int64_t best_bytes = 0;
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    std::string size;  // "32768K"
    if (!(level_file >> level) || !(size_file >> size) || size.empty()) continue;
    int64_t bytes = 0;
    try {
      bytes = std::stoll(size);
    } catch (...) {
      continue;
    }
    const char unit = size.back();
    bytes <<= unit == 'K' ? 10 : unit == 'M' ? 20 : unit == 'G' ? 30 : 0;
    if (level > best_level) best_level = level, best_bytes = bytes;
  }
  return best_bytes;
}

static int64_t default_streaming_min_bytes() {
  static const int64_t bytes = [] {
    const int64_t llc = last_level_cache_bytes();
    return llc > 0 ? llc / 2 : int64_t(8) << 20;
  }();
  return bytes;
}

int64_t streaming_min_bytes() {
  const int64_t o = g_override.load(std::memory_order_relaxed);
  return o >= 0 ? o : default_streaming_min_bytes();
}

void set_streaming_min_bytes(int64_t bytes) { g_override.store(bytes < 0 ? -1 : bytes); }

}  // namespace sb::kernels
