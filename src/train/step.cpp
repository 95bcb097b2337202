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

int64_t total_steps(const Config& cfg, int64_t steps_per_epoch) {
  const auto e2e = std::max<int64_t>(1, int64_t(std::ceil(cfg.train.epochs * double(steps_per_epoch))));
  return cfg.blocks_mode() ? e2e * cfg.model.blocks : e2e;
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

StepRunner::StepRunner(Family& family, AdamW& opt, const Config& cfg, int64_t total_steps)
    : family_(family), opt_(opt), cfg_(cfg), total_(total_steps) {}

StepStats StepRunner::run(const Batch& batch, int64_t step) {
  // Named ranges for the profiler (profile/range.h): a branch each when no profiler runs.
  Range data("data");
  const uint64_t seed = derive_seed(uint64_t(cfg_.train.seed), Stream::Step, uint64_t(step));
  torch::manual_seed(seed);
  const int block = block_for_step(cfg_, step);
  data.end();
  Range forward([&] { return block >= 0 ? fmt::format("forward/block{}", block) : std::string("forward/e2e"); });
  Loss loss = family_.loss(batch, block, seed);
  forward.end();
  if (after_forward) after_forward();
  auto where = [&] { return block >= 0 ? fmt::format("step {} (block {})", step, block) : fmt::format("step {}", step); };
  Range check("loss");
  const double loss_value = loss.value.item<double>();
  if (!std::isfinite(loss_value)) throw UserError(fmt::format("loss is {} at {}", loss_value, where()));
  check.end();
  Range backward("backward");
  loss.value.backward();
  backward.end();
  Range optimizer("optimizer");
  const double grad_norm = opt_.clip_grad_norm(cfg_.train.grad_clip);
  if (!std::isfinite(grad_norm)) {
    opt_.zero_grad();
    throw UserError(fmt::format("gradient norm is {} at {}", grad_norm, where()));
  }
  const double lr = learning_rate(cfg_.train, step, total_);
  opt_.step(lr);
  opt_.zero_grad();
  optimizer.end();
  return {loss_value, loss.plain.item<double>(), block, lr, grad_norm};
}

}  // namespace blocklab
