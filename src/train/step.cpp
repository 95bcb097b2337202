#include "train/step.h"

#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include <fmt/format.h>

#include "profile/range.h"
#include "train/lr_schedule.h"
#include "util/error.h"
#include "util/seed.h"

namespace blocklab {

AdamW make_optimizer(torch::nn::Module& model, const Config& cfg) {
  AdamWOptions options;
  options.weight_decay = cfg.train.weight_decay;
  auto params = model.named_parameters().pairs();
  if (cfg.train.decay == Decay::All) return AdamW(params, options);
  // Matrices only (as nanoGPT): the weights of Linear and Conv layers decay; norms, biases,
  // positions and embedding tables (tables normalized on use gain nothing from decay) do not.
  std::set<std::string> matrices;
  for (const auto& m : model.named_modules("", /*include_self=*/false))
    if (m.value()->as<torch::nn::Linear>() || m.value()->as<torch::nn::Conv2d>()) matrices.insert(m.key() + ".weight");
  std::vector<bool> decay;
  for (const auto& [name, p] : params) decay.push_back(matrices.count(name) > 0);
  return AdamW(params, options, decay);
}

int64_t updates_per_block(const Config& cfg, int64_t steps_per_epoch) {
  return std::max<int64_t>(1, int64_t(std::ceil(cfg.train.epochs * double(steps_per_epoch))));
}

int64_t total_steps(const Config& cfg, int64_t steps_per_epoch) {
  const auto n = updates_per_block(cfg, steps_per_epoch);
  return cfg.blocks_mode() ? n * cfg.model.blocks : n;
}

uint64_t step_seed(const Config& cfg, int64_t data_step) {
  return derive_seed(uint64_t(cfg.train.seed), Stream::Step, uint64_t(data_step));
}

int block_for_step(const Config& cfg, int64_t step) {
  if (!cfg.blocks_mode()) return -1;
  const int blocks = cfg.model.blocks;
  std::vector<int> order(static_cast<size_t>(blocks));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(derive_seed(uint64_t(cfg.train.seed), Stream::BlockOrder, uint64_t(step / blocks)));
  std::shuffle(order.begin(), order.end(), rng);
  return order[size_t(step % blocks)];
}

StepRunner::StepRunner(Family& family, AdamW& opt, const Config& cfg, int64_t lr_steps, AllReduce all_reduce,
                       Replication replication)
    : family_(family),
      opt_(opt),
      cfg_(cfg),
      lr_steps_(lr_steps),
      all_reduce_(std::move(all_reduce)),
      replication_(std::move(replication)) {}

StepStats StepRunner::run(const Batch& batch, int64_t step) {
  const int block = block_for_step(cfg_, step);
  return run({batch}, {{block, block < 0 ? step : step / cfg_.model.blocks, step, step}}).front();
}

std::vector<StepStats> StepRunner::run(const std::vector<Batch>& batches, const std::vector<Update>& updates) {
  // Several updates from the same weights, or one whose shared gradients other processes add to:
  // the shared modules' gradients are summed (train/grad_sync.h).
  const bool synced = updates.size() > 1 || all_reduce_;
  if (synced && !shared_) shared_ = std::make_unique<SharedGradients>(opt_);
  std::vector<StepStats> stats;
  torch::Tensor summed;
  for (size_t i = 0; i < updates.size(); ++i) {
    const auto& u = updates[i];
    // Named ranges for the profiler (profile/range.h): a branch each when no profiler runs.
    Range data("data");
    uint64_t seed = step_seed(cfg_, u.data_step);
    if (replication_.index > 0) seed = derive_seed(seed, Stream::Replica, uint64_t(replication_.index));
    torch::manual_seed(seed);
    data.end();
    const int block = u.block;
    Range forward([&] { return block >= 0 ? fmt::format("forward/block{}", block) : std::string("forward/e2e"); });
    Loss loss = family_.loss(batches[i], block, seed);
    forward.end();
    if (after_forward) after_forward();
    Range check("loss");
    const double loss_value = loss.value.item<double>();
    if (!std::isfinite(loss_value)) {
      opt_.zero_grad();
      throw UserError(fmt::format("loss is {} at step {}{}", loss_value, u.data_step,
                                  block >= 0 ? fmt::format(" (block {}, its update {})", block, u.n) : ""));
    }
    check.end();
    Range backward("backward");
    loss.value.backward();
    if (replication_.mean) replication_.mean();
    if (synced) {
      auto buffer = shared_->take(block);
      summed = summed.defined() ? summed + buffer : buffer;
    }
    backward.end();
    stats.push_back({loss_value, loss.plain.item<double>(), block, 0, 0});
  }
  Range optimizer("optimizer");
  double grad_norm;
  if (synced) {
    if (all_reduce_) {
      all_reduce_(summed);
      // Every replica of a block added the same block norm and its share of the shared gradients.
      summed.div_(double(replication_.count));
    }
    grad_norm = shared_->restore(summed);
    opt_.clip_to(grad_norm, cfg_.train.grad_clip);
  } else {
    grad_norm = opt_.clip_grad_norm(cfg_.train.grad_clip);
  }
  if (!std::isfinite(grad_norm)) {
    opt_.zero_grad();
    throw UserError(fmt::format("gradient norm is {} at step {}", grad_norm, updates.front().data_step));
  }
  const double lr = learning_rate(cfg_.train, updates.front().lr_step, lr_steps_);
  opt_.step(lr);
  opt_.zero_grad();
  optimizer.end();
  for (auto& s : stats) s.lr = lr, s.grad_norm = grad_norm;
  return stats;
}

}  // namespace blocklab
