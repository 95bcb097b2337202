#include "util/memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <unordered_map>

#include <c10/core/CPUAllocator.h>

namespace blocklab {

int64_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

int64_t current_rss_bytes() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return int64_t(resident) * int64_t(sysconf(_SC_PAGESIZE));
}

namespace {

std::atomic<int64_t> g_current{0}, g_peak{0};
std::atomic<bool> g_installed{false};
std::mutex g_mutex;
std::unordered_map<void*, size_t> g_sizes;  // live tracked buffers
c10::DeleterFnPtr g_base_delete = nullptr;

// Data and context are the same pointer, so that Allocator::raw_allocate (used by oneDNN)
// works through this allocator too.
void delete_tracked(void* ptr) {
  size_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_sizes.find(ptr);
    if (it != g_sizes.end()) {
      bytes = it->second;
      g_sizes.erase(it);
    }
  }
  g_current -= int64_t(bytes);
  g_base_delete(ptr);
}

struct TrackingAllocator final : c10::Allocator {
  explicit TrackingAllocator(c10::Allocator* base) : base(base) {}
  c10::DataPtr allocate(size_t n) const override {
    void* ptr = base->raw_allocate(n);
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      g_sizes[ptr] = n;
    }
    const int64_t now = g_current += int64_t(n);
    int64_t peak = g_peak.load();
    while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
    }
    return {ptr, ptr, &delete_tracked, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &delete_tracked; }
  c10::Allocator* base;
};

}  // namespace

void TensorMemoryTracker::install() {
  if (g_installed.exchange(true)) return;
  static TrackingAllocator tracker(c10::GetCPUAllocator());
  g_base_delete = tracker.base->raw_deleter();
  c10::SetCPUAllocator(&tracker, /*priority=*/100);
}

bool TensorMemoryTracker::installed() { return g_installed.load(); }
int64_t TensorMemoryTracker::current_bytes() { return g_current.load(); }
int64_t TensorMemoryTracker::peak_bytes() { return g_peak.load(); }
void TensorMemoryTracker::reset_peak() { g_peak = g_current.load(); }

}  // namespace blocklab
