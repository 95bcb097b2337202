#include "util/memory.h"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>

#include <c10/core/CPUAllocator.h>

namespace blocklab {

int64_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

namespace {

std::atomic<int64_t> g_current{0}, g_peak{0};
std::atomic<bool> g_installed{false};

// Owns the base allocator's DataPtr; its deleter gives the bytes back to the count.
struct Tracked {
  c10::DataPtr inner;
  size_t bytes;
};

void delete_tracked(void* ctx) {
  auto* t = static_cast<Tracked*>(ctx);
  g_current -= int64_t(t->bytes);
  delete t;  // destroys `inner`, which frees the memory through the base allocator
}

struct TrackingAllocator final : c10::Allocator {
  explicit TrackingAllocator(c10::Allocator* base) : base(base) {}
  c10::DataPtr allocate(size_t n) const override {
    auto* t = new Tracked{base->allocate(n), n};
    const int64_t now = g_current += int64_t(n);
    int64_t peak = g_peak.load();
    while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
    }
    void* data = t->inner.get();
    const auto device = t->inner.device();
    return {data, t, &delete_tracked, device};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  c10::Allocator* base;
};

}  // namespace

void TensorMemoryTracker::install() {
  if (g_installed.exchange(true)) return;
  static TrackingAllocator tracker(c10::GetCPUAllocator());
  c10::SetCPUAllocator(&tracker, /*priority=*/100);
}

bool TensorMemoryTracker::installed() { return g_installed.load(); }
int64_t TensorMemoryTracker::current_bytes() { return g_current.load(); }
int64_t TensorMemoryTracker::peak_bytes() { return g_peak.load(); }
void TensorMemoryTracker::reset_peak() { g_peak = g_current.load(); }

}  // namespace blocklab
