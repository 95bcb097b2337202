#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace blocklab {

std::string format_duration(double s) {
  if (s < 0 || s != s) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m{:02}s", t / 3600, (t / 60) % 60, t % 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

Progress::Progress(int64_t total, std::string label, int64_t start, bool force_plain, double plain_interval_s)
    : total_(total),
      start_(start),
      label_(std::move(label)),
      bar_(!force_plain && isatty(STDERR_FILENO)),
      interval_(plain_interval_s),
      t0_(std::chrono::steady_clock::now()),
      last_(t0_) {}

void Progress::update(int64_t done, const std::string& info) {
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (since < (bar_ ? 0.2 : interval_)) return;
  last_ = now;
  draw(done, info, false);
}

void Progress::finish(const std::string& info) { draw(total_, info, true); }

void Progress::draw(int64_t done, const std::string& info, bool final) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double rate = elapsed > 0 ? double(done - start_) / elapsed : 0;
  const double eta = rate > 0 ? double(total_ - done) / rate : -1;
  const double frac = total_ > 0 ? double(done) / double(total_) : 1;
  if (bar_) {
    const int width = 28, filled = int(frac * width);
    std::string bar(size_t(filled), '#');
    bar.append(size_t(width - filled), '.');
    fmt::print(stderr, "\r{} [{}] {:>3.0f}% {}/{} {:.1f} it/s ETA {} {}\033[K", label_, bar, 100 * frac, done, total_,
               rate, format_duration(eta), info);
    if (final) fmt::print(stderr, "\n");
  } else {
    fmt::print(stderr, "{} {}/{} ({:.0f}%) {:.1f} it/s elapsed {} ETA {} {}\n", label_, done, total_, 100 * frac, rate,
               format_duration(elapsed), format_duration(final ? 0 : eta), info);
  }
  std::fflush(stderr);
}

}  // namespace blocklab
