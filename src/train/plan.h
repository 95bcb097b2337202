// What a run trains, in order: a list of positions, each one optimizer step made of one block's
// update (or the whole network's), or of every block's update at once (synchronous rounds).
//
// Whatever the order, block b's n-th update sees the batch and noise of the same global step:
// the step at which the interleaved schedule would make it (round n, b's place in that round's
// shuffled order). So one block trained alone, in its own process, in runs of updates, or
// interleaved with the others, learns from the same examples at the same noise levels.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "io/config.h"

namespace blocklab {

struct Update {
  int block;          // -1: end-to-end
  int64_t n;          // the block's own update count before this one
  int64_t data_step;  // the global step whose batch and noise it uses
  int64_t lr_step;    // the step whose learning rate it takes
};

/// Global step of block b's n-th update in the interleaved order.
int64_t data_step_of(const Config& cfg, int block, int64_t n);

class Plan {
 public:
  /// The run of `cfg` with `updates` updates per block (end-to-end: steps); `only_block`: one
  /// block trained alone (a process of a distributed run, or `train --block K`).
  Plan(const Config& cfg, int64_t updates, std::optional<int> only_block = std::nullopt);

  int64_t size() const { return size_; }         // positions
  int64_t updates() const { return updates_; }   // per block
  std::vector<Update> at(int64_t position) const;
  /// The total learning-rate steps the schedule spans (the lr_step of the last update + 1).
  int64_t lr_steps() const;

 private:
  const Config& cfg_;
  int64_t updates_, size_;
  std::optional<int> only_;
};

}  // namespace blocklab
