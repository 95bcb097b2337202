#include "train/trainer.h"

#include <chrono>
#include <csignal>

#include <fmt/format.h>

#include "eval/evaluate.h"
#include "io/atomic_file.h"
#include "io/run_dir.h"
#include "io/safetensors.h"
#include "tasks/classification.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/step.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/progress.h"
#include "util/system.h"

namespace blocklab {

namespace {

volatile std::sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

class Trainer {
 public:
  Trainer(const Config& cfg, const TrainOptions& opts)
      : cfg_(cfg),
        opts_(opts),
        run_(opts.out_dir),
        device_(resolve_device(cfg.train.device)),
        data_(ImageData::load(cfg.data.dir, cfg.data.train_limit, cfg.data.test_limit)),
        order_(data_.train.size(), cfg.train.batch_size, uint64_t(cfg.train.seed)),
        task_(make_model(), cfg),
        opt_(make_optimizer(*task_.model(), cfg)),
        total_(total_steps(cfg, order_.steps_per_epoch())),
        stepper_(task_, opt_, cfg_, total_) {}

  nlohmann::json run() {
    int64_t start = 0;
    if (opts_.resume) {
      if (!run_.has("checkpoint.safetensors"))
        throw UserError(fmt::format("{}: --resume but no checkpoint.safetensors there", run_.root()));
      // Continuing under another config would silently mix two runs.
      if (run_.has("config.toml") && read_file(run_.file("config.toml")) != cfg_.to_toml())
        throw UserError(fmt::format("{}: --resume with a config that differs from the run's config.toml; "
                                    "resume with `blocklab train {}/config.toml --out {} --resume`",
                                    run_.root(), run_.root(), run_.root()));
      start = load_checkpoint(run_.file("checkpoint.safetensors"), *task_.model(), opt_);
      run_.truncate_metrics(start);
      fmt::print(stderr, "{}: resuming from step {} of {}\n", opts_.label, start, total_);
    } else {
      run_.truncate_metrics(-1);
    }
    run_.write_text("config.toml", cfg_.to_toml());
    const double seconds = fit(start);
    if (g_interrupted || (opts_.stop_after >= 0 && step_ < total_)) return {{"stopped_at", step_}};
    save_safetensors(run_.file("model.safetensors"), named_tensors(*task_.model()),
                     {{"config", cfg_.to_toml()}, {"format", "blocklab-model-1"}});
    return summarize(seconds);
  }

 private:
  ViT make_model() {
    torch::manual_seed(uint64_t(cfg_.train.seed));
    ViT model(vit_options(cfg_, data_.classes));
    model->to(device_);
    return model;
  }

  // Runs steps [start, total); returns training seconds (this invocation's plus earlier ones').
  double fit(int64_t start) {
    const double earlier = start > 0 && run_.has("train_seconds.json") ? run_.read_json("train_seconds.json").value("seconds", 0.0) : 0.0;
    auto previous = std::signal(SIGINT, on_interrupt);
    Progress progress(total_, opts_.label, start, opts_.plain_progress);
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return earlier + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    double loss_sum = 0, ce_sum = 0;
    int64_t since_log = 0;
    for (step_ = start; step_ < total_ && !g_interrupted; ) {
      const auto [loss, ce, block, lr, grad_norm] = guarded_step(step_);
      ++step_;
      loss_sum += loss, ce_sum += ce, ++since_log;
      if (step_ % cfg_.train.log_every == 0 || step_ == total_) {
        run_.append_metrics({{"step", step_}, {"block", block}, {"loss", loss_sum / since_log},
                             {"ce", ce_sum / since_log}, {"lr", lr}, {"grad_norm", grad_norm}, {"seconds", elapsed()}});
        progress.update(step_, fmt::format("loss {:.4f} ce {:.4f} lr {:.2e}", loss_sum / since_log, ce_sum / since_log, lr));
        loss_sum = ce_sum = 0, since_log = 0;
      }
      if (step_ % cfg_.train.checkpoint_every == 0 || step_ == total_ || step_ == opts_.stop_after) {
        checkpoint(elapsed());
        if (step_ == opts_.stop_after) break;
      }
    }
    std::signal(SIGINT, previous);
    if (g_interrupted) {
      checkpoint(elapsed());
      fmt::print(stderr, "\n{}: interrupted at step {}; checkpoint saved, continue with --resume\n", opts_.label, step_);
      return elapsed();
    }
    progress.finish();
    return elapsed();
  }

  StepStats guarded_step(int64_t step) {
    try {
      return stepper_.run(data_.batch(data_.train, order_.indices(step), device_), step);
    } catch (const UserError& e) {  // a non-finite loss or gradient: stop, say what is safe
      throw UserError(fmt::format("{}: {}; training stopped. {} Try a lower train.lr.", opts_.label, e.what(),
                                  run_.has("checkpoint.safetensors")
                                      ? "The last checkpoint in " + run_.root() + " is intact."
                                      : "No checkpoint was written yet."));
    }
  }

  void checkpoint(double seconds) {
    save_checkpoint(run_.file("checkpoint.safetensors"), *task_.model(), opt_, step_);
    run_.write_json("train_seconds.json", {{"step", step_}, {"seconds", seconds}});
  }

  nlohmann::json summarize(double train_seconds) {
    fmt::print(stderr, "{}: evaluating on {} test images\n", opts_.label, data_.test.size());
    const auto report = evaluate(task_, cfg_, data_, device_);
    int64_t params = 0;
    for (const auto& p : task_.model()->parameters()) params += p.numel();
    nlohmann::json s = {{"mode", cfg_.model.mode},
                        {"blocks", cfg_.model.blocks},
                        {"layers", cfg_.model.layers},
                        {"params", params},
                        {"steps", total_},
                        {"train_seconds", train_seconds},
                        {"ms_per_step", 1000.0 * train_seconds / double(total_)},
                        {"peak_rss_bytes", peak_rss_bytes()},
                        {"device", device_.str()},
                        {"threads", at::get_num_threads()},
                        {"blas", blas_core()},
                        {"train_images", data_.train.size()}};
    s.update(report.to_json());
    if (cfg_.blocks_mode()) {
      s["block_steps"] = nlohmann::json::array();
      for (int b = 0; b < cfg_.model.blocks; ++b)
        s["block_steps"].push_back(opt_.steps_of(ViTImpl::block_prefix(b) + "layers.0.fc1.weight"));
    }
    run_.write_json("summary.json", s);
    fmt::print(stderr, "{}: {}", opts_.label, report.table());
    return s;
  }

  Config cfg_;
  TrainOptions opts_;
  RunDir run_;
  torch::Device device_;
  ImageData data_;
  DataOrder order_;
  DenoisingClassifier task_;
  AdamW opt_;
  int64_t total_;
  StepRunner stepper_;
  int64_t step_ = 0;
};

}  // namespace

nlohmann::json train(const Config& cfg, const TrainOptions& opts) {
  cfg.validate();
  set_threads(cfg.train.threads);
  Trainer trainer(cfg, opts);
  return trainer.run();
}

}  // namespace blocklab
