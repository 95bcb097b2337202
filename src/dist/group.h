// A process's place in a distributed run, on libtorch's own distributed engine (c10d): rendezvous
// through a TCPStore, collectives through a Gloo process group (NCCL for CUDA tensors when libtorch
// was built with it). Every failure (a peer that died, one stuck past the timeout) becomes a
// UserError naming this rank and what it was doing; docs/distributed.md.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "dist/world_env.h"

namespace blocklab {

class ProcessGroup {
 public:
  /// Joins the job `env` describes; collectives fail after `timeout_seconds` without progress.
  ProcessGroup(const WorldEnv& env, double timeout_seconds, const torch::Device& device);
  /// A group of some of `parent`'s ranks that share `name` (the replicas of one block), through
  /// the parent's store; this process is `rank` of `size` in it.
  ProcessGroup(const ProcessGroup& parent, const std::string& name, int rank, int size);
  ~ProcessGroup();
  int rank() const;
  int size() const;

  /// Sums `t` across ranks, in place. `what` says when, for messages ("update 812").
  void all_reduce(torch::Tensor& t, const std::string& what);
  /// Waits for every rank, at most the timeout.
  void barrier(const std::string& what);
  /// Marks `key` done for this rank, then waits, without the timeout, until every rank has: for
  /// ranks that finish at their own pace (independent blocks). A dead rank is the launcher's to see.
  void wait_for_all(const std::string& key);
  /// Publishes a value under "<key>/<rank>" in the store (progress for the launcher's messages).
  void publish(const std::string& key, const std::string& value);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The rendezvous store of a run launched on this machine, hosted by the launcher on a free port
/// of 127.0.0.1 (the ranks connect as clients, as under torchrun's agent): it outlives any rank,
/// so the launcher can still read a dead rank's last published progress.
class StoreHost {
 public:
  StoreHost();
  ~StoreHost();
  int port() const;
  /// The value under `key`, or "" if none was set.
  std::string get(const std::string& key);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace blocklab
