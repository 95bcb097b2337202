// The training loop, end-to-end or block-wise, from a validated config to a run directory.
#pragma once
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "io/config.h"

namespace blocklab {

class ProcessGroup;

struct TrainOptions {
  std::string out_dir;
  bool resume = false;         // continue from out_dir/checkpoint.safetensors
  bool plain_progress = false; // periodic lines instead of a bar
  std::string tag = "train";   // prefix of progress lines and messages
  int64_t stop_after = -1;     // stop (with a checkpoint) after this many steps; for tests of resume
  std::optional<int> only_block;  // train this block alone (`--block K`, or a rank of a distributed run),
                                  // in out_dir/blocks/K
  ProcessGroup* group = nullptr;  // a distributed run: the block is the rank's (docs/distributed.md)
  int replica = 0, replicas = 1;  // data parallel inside the block: this rank's share of each batch
  ProcessGroup* replica_group = nullptr;  // the block's replicas, when replicas > 1
  /// Called when the run directory has new results (after every evaluation, every checkpoint and
  /// the summary): `train --report` rewrites report.html there.
  std::function<void()> refresh;
};

/// Trains, checkpoints, evaluates and writes summary.json; returns the summary. Stopped early (by
/// SIGINT, SIGTERM or SIGHUP, after a checkpoint, or by stop_after) it returns {"stopped_at": step}
/// and, for a signal, {"signal": number}. UserError on bad data, a run directory another process
/// trains in, or a diverging run (after which the last checkpoint is intact).
nlohmann::json train(const Config& cfg, const TrainOptions& opts);

}  // namespace blocklab
