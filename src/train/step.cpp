#include "train/step.h"

#include <cmath>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "profile/range.h"
#include "train/lr_schedule.h"
#include "util/error.h"

namespace blocklab {

AdamW make_optimizer(torch::nn::Module& model, const Config& cfg) {
  AdamWOptions options;
  options.weight_decay = cfg.train.weight_decay;
  return AdamW(model.named_parameters().pairs(), options);
}

int64_t total_steps(const Config& cfg, int64_t steps_per_epoch) {
  const auto e2e = std::max<int64_t>(1, int64_t(std::ceil(cfg.train.epochs * double(steps_per_epoch))));
  return cfg.blocks_mode() ? e2e * cfg.model.blocks : e2e;
}

uint64_t step_seed(uint64_t seed, int64_t step) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + uint64_t(step) + 1;  // splitmix64 finalizer
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return (x ^ (x >> 31)) >> 1;  // torch seeds are kept below 2^63
}

int block_for_step(int64_t step, int blocks, uint64_t seed) {
  std::vector<int> order(static_cast<size_t>(blocks));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(step_seed(seed ^ 0xB10C, step / blocks));
  std::shuffle(order.begin(), order.end(), rng);
  return order[size_t(step % blocks)];
}

StepRunner::StepRunner(DenoisingClassifier& task, AdamW& opt, const Config& cfg, int64_t total_steps)
    : task_(task), opt_(opt), cfg_(cfg), total_(total_steps) {}

torch::Tensor StepRunner::sample_sigmas(int block, int64_t n, uint64_t seed, const torch::Device& device) const {
  const auto& sched = task_.schedule();
  const auto range = sched.block_range(cfg_.model.blocks, block, cfg_.diffusion.overlap);
  std::mt19937_64 rng(seed);
  std::vector<double> sigmas(static_cast<size_t>(n));
  for (auto& s : sigmas)
    s = cfg_.diffusion.sigma_sampling == "log_uniform" ? sched.sample_log_uniform(range, rng)
                                                       : sched.sample_lognormal(range, rng);
  return torch::tensor(sigmas, torch::kFloat64).to(device, torch::kFloat32);
}

StepStats StepRunner::run(const Batch& batch, int64_t step) {
  // Named ranges for the profiler (profile/range.h): a branch each when no profiler runs.
  Range data("data");
  const uint64_t seed = step_seed(uint64_t(cfg_.train.seed), step);
  torch::manual_seed(seed);
  int block = -1;
  torch::Tensor sigma;
  if (cfg_.blocks_mode()) {
    block = block_for_step(step, cfg_.model.blocks, uint64_t(cfg_.train.seed));
    sigma = sample_sigmas(block, batch.labels.size(0), seed, batch.images.device());
  }
  data.end();
  Range forward([&] { return block >= 0 ? fmt::format("forward/block{}", block) : std::string("forward/e2e"); });
  Loss loss = block >= 0 ? task_.block_loss(batch, block, sigma) : task_.e2e_loss(batch);
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
  return {loss_value, loss.ce.item<double>(), block, lr, grad_norm};
}

}  // namespace blocklab
