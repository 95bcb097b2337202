#include "train/synthetic.h"

#include "tasks/classification.h"
#include "train/adamw.h"
#include "util/system.h"

namespace blocklab {

struct SyntheticTraining::State {
  torch::Device device;
  Batch batch;
  ViT model;
  DenoisingClassifier task;
  AdamW opt;
  StepRunner runner;

  explicit State(const Config& cfg)
      : device(resolve_device(cfg.train.device)),
        batch(make_batch(cfg, device)),
        model(make_model(cfg, device)),
        task(model, cfg),
        opt(make_optimizer(*model, cfg)),
        // The schedule's length only shapes the learning rate; a long one keeps it near lr.
        runner(task, opt, cfg, /*total_steps=*/1'000'000) {}

  static ViT make_model(const Config& cfg, const torch::Device& device) {
    ViT m(vit_options(cfg, 10));
    m->to(device);
    return m;
  }

  static Batch make_batch(const Config& cfg, const torch::Device& device) {
    torch::manual_seed(0);
    auto images = torch::randn({cfg.train.batch_size, 1, 28, 28}).to(device);
    auto labels = torch::randint(0, 10, {cfg.train.batch_size}, torch::kInt64).to(device);
    return {images, labels};
  }
};

SyntheticTraining::SyntheticTraining(const Config& cfg) : cfg_(cfg), s_(std::make_unique<State>(cfg_)) {}
SyntheticTraining::~SyntheticTraining() = default;

StepStats SyntheticTraining::step() { return s_->runner.run(s_->batch, step_++); }
int SyntheticTraining::round() const { return cfg_.blocks_mode() ? cfg_.model.blocks : 1; }
StepRunner& SyntheticTraining::runner() { return s_->runner; }
bool SyntheticTraining::cuda() const { return s_->device.is_cuda(); }

}  // namespace blocklab
