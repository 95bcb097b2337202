// Progress of a long loop: a redrawn bar with rate and ETA on a terminal, a plain line every
// few seconds otherwise (logs, CI, a demo running two trainings at once).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace blocklab {

class Progress {
 public:
  /// `label` prefixes plain lines; `start` items were done before (a resumed run measures its
  /// rate from there); `force_plain` disables the bar even on a terminal.
  Progress(int64_t total, std::string label, int64_t start = 0, bool force_plain = false, double plain_interval_s = 10.0);
  /// `done` items finished; `info` is appended (loss, lr, ...).
  void update(int64_t done, const std::string& info = "");
  void finish(const std::string& info = "");

 private:
  void draw(int64_t done, const std::string& info, bool final);
  int64_t total_, start_;
  std::string label_;
  bool bar_;
  double interval_;
  std::chrono::steady_clock::time_point t0_, last_;
};

std::string format_duration(double seconds);

}  // namespace blocklab
