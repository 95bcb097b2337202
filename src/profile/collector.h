// Records every op (aten ops, autograd nodes) and every Range of the running process with its
// start and end time and its arguments' shapes, through a RecordFunction observer: Debian's
// libtorch has no Kineto, so blocklab collects and exports the events itself.
//
// Times come from the CPU's steady clock, or on CUDA from CUDA events recorded on the current
// stream at each op's start and end (the op's GPU time, not its launch time). The CUDA path goes
// through libtorch's profiler stubs (registered by libtorch_cuda), so this file needs no CUDA
// headers and builds against a CPU-only libtorch.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "profile/flops.h"

struct CUevent_st;  // a CUDA event, as libtorch's profiler stubs hand it out

namespace blocklab {

struct CollectorSession;  // collector.cpp
struct ThreadBuffer;      // collector.cpp: one thread's events

struct OpEvent {
  std::string name;
  int64_t start_ns = 0, end_ns = 0;  // since the collector started
  uint64_t thread = 0;               // RecordFunction's thread id (1, 2, ... in order of first use)
  bool range = false;                // a blocklab::Range (a phase), not an op
  int64_t seq = -1;                  // autograd sequence number (links a forward op to its backward)
  std::vector<OpInput> inputs;
  int64_t dur_ns() const { return end_ns - start_ns; }
};

struct CollectorOptions {
  bool shapes = true;        // record argument shapes (needed for FLOPs) from the start
  bool cuda_events = false;  // time with CUDA events (only when cuda_available())
};

/// One collection at a time per process; start() while another runs is a UserError.
class OpCollector {
 public:
  explicit OpCollector(CollectorOptions opt = {});
  ~OpCollector();
  OpCollector(const OpCollector&) = delete;
  OpCollector& operator=(const OpCollector&) = delete;

  void start();
  /// Records argument shapes from now on, or stops recording them (cheaper: without shapes the
  /// dispatcher does not box each op's arguments). Takes effect for ops that start later.
  void record_shapes(bool on);
  /// Stops and returns the events in the order they started. Events still open (a range that
  /// began before start() or ends after stop()) are dropped.
  std::vector<OpEvent> stop();
  bool running() const;

  /// Whether libtorch has CUDA profiler support registered and a device to use.
  static bool cuda_available();

 private:
  std::unique_ptr<CollectorSession> session_;
  CollectorOptions opt_;
  std::shared_ptr<ThreadBuffer> buffer_;  // the calling thread's buffer for the next start()
};

/// Wall time of a stretch of work on the training device: the steady clock on CPU, CUDA events
/// on the current stream on CUDA (elapsed_ms() then waits for the device).
class DeviceTimer {
 public:
  explicit DeviceTimer(bool cuda);
  ~DeviceTimer();
  void start();
  double elapsed_ms();

 private:
  bool cuda_;
  std::chrono::steady_clock::time_point t0_;
  std::shared_ptr<CUevent_st> ev0_;
};

}  // namespace blocklab
