// A run directory: the one place a run writes files, each write atomic.
//   config.toml        resolved configuration
//   metrics.jsonl      one line per logged step
//   checkpoint.safetensors  model + optimizer + step (for --resume)
//   model.safetensors  final weights (loads with Python's safetensors)
//   summary.json       results of the run
//   .lock              held (flock) by the process training in the directory
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace blocklab {

class RunDir {
 public:
  explicit RunDir(std::string root, bool create = true);
  std::string file(const std::string& name) const;
  bool has(const std::string& name) const;

  void write_text(const std::string& name, const std::string& text) const;
  void write_json(const std::string& name, const nlohmann::json& j) const;
  nlohmann::json read_json(const std::string& name) const;

  /// Appends one JSON line to metrics.jsonl and flushes it.
  void append_metrics(const nlohmann::json& line) const;
  /// Drops metric lines of steps after `step` and the final evaluation's (a resumed run rewrites them).
  void truncate_metrics(int64_t step) const;

  const std::string& root() const { return root_; }

  /// Takes the directory's advisory lock for the life of the returned handle (the kernel drops it
  /// when the process dies), then removes temporaries that dead processes left (`*.tmp.<pid>`).
  /// UserError naming the holder's pid if another process trains here.
  std::shared_ptr<void> lock() const;

 private:
  std::string root_;
};

}  // namespace blocklab
