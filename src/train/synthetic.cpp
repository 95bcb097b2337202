#include "train/synthetic.h"

#include <chrono>

#include "families/registry.h"
#include "train/adamw.h"
#include "util/stats.h"
#include "util/system.h"

namespace blocklab {

namespace {
// The rig trains at the configured peak rate from its first step (no warm-up, no decay), so that
// its steps do what a real run's steps do; the schedule's shape does not change a step's cost.
Config at_constant_rate(Config cfg) {
  cfg.train.warmup = 0;
  cfg.train.lr_schedule = LrSchedule::Constant;
  return cfg;
}
}  // namespace

struct SyntheticTraining::State {
  torch::Device device;
  std::shared_ptr<const Dataset> data;
  Batch batch;
  std::unique_ptr<Family> family;
  AdamW opt;
  StepRunner runner;

  explicit State(const Config& cfg)
      : device(resolve_device(cfg.train.device)),
        data(synthetic_dataset(cfg, cfg.train.batch_size)),
        batch(data->batch(Split::Train, torch::arange(cfg.train.batch_size, torch::kInt64), device)),
        family(make_family(cfg, data, device)),
        opt(make_optimizer(family->model(), cfg)),
        runner(*family, opt, cfg, /*total_steps=*/1) {}
};

SyntheticTraining::SyntheticTraining(const Config& cfg)
    : cfg_(at_constant_rate(cfg)), s_(std::make_unique<State>(cfg_)) {}
SyntheticTraining::~SyntheticTraining() = default;

StepStats SyntheticTraining::step() { return s_->runner.run(s_->batch, step_++); }
int SyntheticTraining::round() const { return cfg_.blocks_mode() ? cfg_.model.blocks : 1; }
StepRunner& SyntheticTraining::runner() { return s_->runner; }
Family& SyntheticTraining::family() { return *s_->family; }
const Batch& SyntheticTraining::batch() const { return s_->batch; }
bool SyntheticTraining::cuda() const { return s_->device.is_cuda(); }

StepTimes alternating_step_times(const Config& cfg, int rounds) { return alternating_step_times(cfg, rounds, {[] {}})[0]; }

std::vector<StepTimes> alternating_step_times(const Config& cfg, int rounds,
                                              const std::vector<std::function<void()>>& variants) {
  Config e2e_cfg = cfg, blocks_cfg = cfg;
  e2e_cfg.model.mode = Mode::E2E;
  blocks_cfg.model.mode = Mode::Blocks;
  SyntheticTraining e2e(e2e_cfg), blocks(blocks_cfg);
  std::vector<std::vector<double>> e2e_ms(variants.size()), block_ms(variants.size());
  auto timed = [](SyntheticTraining& t) {
    const auto t0 = std::chrono::steady_clock::now();
    t.step();
    return 1000 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int r = 0; r <= rounds; ++r) {  // round 0 warms up (lazy init, every block's Adam state)
    for (size_t v = 0; v < variants.size(); ++v) {
      variants[v]();
      const double e = timed(e2e);
      std::vector<double> b;
      for (int i = 0; i < blocks.round(); ++i) b.push_back(timed(blocks));
      if (r == 0) continue;
      e2e_ms[v].push_back(e);
      block_ms[v].insert(block_ms[v].end(), b.begin(), b.end());
    }
  }
  std::vector<StepTimes> out;
  for (size_t v = 0; v < variants.size(); ++v) out.push_back({median(e2e_ms[v]), median(block_ms[v])});
  return out;
}

}  // namespace blocklab
