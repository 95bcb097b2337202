#include "train/trainer.h"

#include <chrono>
#include <csignal>
#include <optional>
#include <cstring>

#include <fmt/format.h>

#include "families/registry.h"
#include "io/atomic_file.h"
#include "io/run_dir.h"
#include "io/safetensors.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/ema.h"
#include "train/step.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/progress.h"
#include "util/system.h"

namespace blocklab {

namespace {

// The signals that end a run politely: Ctrl-C, and what `timeout`, batch schedulers, `docker
// stop` and Kubernetes send (SIGTERM), or a closed terminal (SIGHUP). Each saves a checkpoint.
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP};
volatile std::sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

// Losses since the last metrics line, one accumulator per block (one in end-to-end mode): block
// losses are weighted differently and must not be averaged together.
struct MetricsWindow {
  struct Slot {
    double loss = 0, plain = 0;
    int64_t steps = 0;
  };
  std::vector<Slot> slots;

  explicit MetricsWindow(int n) : slots(size_t(n)) {}
  void add(int slot, double loss, double plain) {
    auto& s = slots[size_t(slot)];
    s.loss += loss, s.plain += plain, ++s.steps;
  }
  nlohmann::json to_json() const {
    auto j = nlohmann::json::array();
    for (const auto& s : slots) j.push_back({s.loss, s.plain, s.steps});
    return j;
  }
  void load(const nlohmann::json& j, const std::string& source) {
    if (j.is_null()) return;  // a checkpoint taken right after a metrics line
    if (!j.is_array() || j.size() != slots.size())
      throw UserError(fmt::format("{}: the checkpoint's metrics window does not match this run", source));
    for (size_t i = 0; i < slots.size(); ++i)
      slots[i] = {j[i].at(0).get<double>(), j[i].at(1).get<double>(), j[i].at(2).get<int64_t>()};
  }
};

class Trainer {
 public:
  Trainer(const Config& cfg, const TrainOptions& opts)
      : cfg_(cfg),
        opts_(opts),
        run_(opts.out_dir),
        device_(resolve_device(cfg.train.device)),
        data_(load_dataset(cfg)),
        order_(data_->size(Split::Train), cfg.train.batch_size, uint64_t(cfg.train.seed)),
        family_(make_family(cfg, data_, device_)),
        opt_(make_optimizer(family_->model(), cfg)),
        total_(total_steps(cfg, order_.steps_per_epoch())),
        stepper_(*family_, opt_, cfg_, total_),
        window_(cfg.blocks_mode() ? cfg.model.blocks : 1) {
    if (cfg.ema_decay() > 0) ema_ = std::make_unique<Ema>(family_->model(), opt_, cfg.ema_decay());
  }

  nlohmann::json run() {
    const auto lock = run_.lock();  // one trainer per run directory; held until run() returns
    CheckpointState state;
    if (opts_.resume) {
      if (!run_.has("checkpoint.safetensors"))
        throw UserError(fmt::format("{}: --resume but no checkpoint.safetensors there", run_.root()));
      // Continuing under another config would silently mix two runs.
      if (run_.has("config.toml") && read_file(run_.file("config.toml")) != cfg_.to_toml())
        throw UserError(fmt::format("{}: --resume with a config that differs from the run's config.toml; "
                                    "resume with `blocklab train {}/config.toml --out {} --resume`",
                                    run_.root(), run_.root(), run_.root()));
      state = load_checkpoint(run_.file("checkpoint.safetensors"), family_->model(), opt_, cfg_.to_toml(), ema_.get());
      if (state.step > total_)
        throw UserError(fmt::format("{}: checkpoint at step {}, beyond this run's {} steps",
                                    run_.file("checkpoint.safetensors"), state.step, total_));
      window_.load(state.window, run_.file("checkpoint.safetensors"));
      run_.truncate_metrics(state.step);
      fmt::print(stderr, "{}: resuming from step {} of {}\n", opts_.tag, state.step, total_);
    } else {
      run_.truncate_metrics(-1);
    }
    run_.write_text("config.toml", cfg_.to_toml());
    const double seconds = fit(state);
    if (g_signal) return {{"stopped_at", step_}, {"signal", int(g_signal)}};
    if (opts_.stop_after >= 0 && step_ < total_) return {{"stopped_at", step_}};
    const std::map<std::string, std::string> meta = {{"config", cfg_.to_toml()}, {"format", "blocklab-model-1"}};
    save_safetensors(run_.file("model.safetensors"), named_tensors(family_->model()), meta);
    if (ema_) save_safetensors(run_.file("ema.safetensors"), ema_->weights(), meta);
    return summarize(seconds);
  }

 private:
  // Runs steps [state.step, total); returns training seconds (this invocation's plus earlier ones').
  double fit(const CheckpointState& state) {
    g_signal = 0;
    std::vector<void (*)(int)> previous;
    for (int sig : kStopSignals) previous.push_back(std::signal(sig, on_signal));
    Progress progress(total_, opts_.tag, state.step, opts_.plain_progress);
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] {
      return state.train_seconds + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    for (step_ = state.step; step_ < total_ && !g_signal;) {
      const auto s = guarded_step(step_);
      if (ema_) ema_->update(s.block);
      ++step_;
      window_.add(std::max(s.block, 0), s.loss, s.plain);
      if (step_ % cfg_.train.log_every == 0 || step_ == total_) log(s, elapsed(), progress);
      if (step_ % cfg_.train.checkpoint_every == 0 || step_ == total_ || step_ == opts_.stop_after) {
        checkpoint(elapsed());
        if (step_ == opts_.stop_after) break;
      }
    }
    if (g_signal) {
      checkpoint(elapsed());
      fmt::print(stderr, "\n{}: {} at step {}; checkpoint saved, continue with --resume\n", opts_.tag,
                 strsignal(g_signal), step_);
    }
    for (size_t i = 0; i < previous.size(); ++i) std::signal(kStopSignals[i], previous[i]);
    if (g_signal) return elapsed();
    progress.finish();
    return elapsed();
  }

  // One metrics line per block that trained since the last one (one line end-to-end).
  void log(const StepStats& last, double seconds, Progress& progress) {
    double plain = 0;
    int64_t steps = 0;
    for (size_t b = 0; b < window_.slots.size(); ++b) {
      auto& w = window_.slots[b];
      if (w.steps == 0) continue;
      nlohmann::json line = {{"step", step_}, {"loss", w.loss / double(w.steps)}, {"plain_loss", w.plain / double(w.steps)},
                             {"steps", w.steps}, {"lr", last.lr}, {"grad_norm", last.grad_norm}, {"seconds", seconds}};
      if (cfg_.blocks_mode()) line["block"] = b;
      run_.append_metrics(line);
      plain += w.plain, steps += w.steps;
      w = {};
    }
    progress.update(step_, fmt::format("plain loss {:.4f} lr {:.2e}", plain / double(std::max<int64_t>(steps, 1)), last.lr));
  }

  StepStats guarded_step(int64_t step) {
    try {
      return stepper_.run(data_->batch(Split::Train, order_.indices(step), device_), step);
    } catch (const UserError& e) {  // a non-finite loss or gradient: stop, say what is safe
      throw UserError(fmt::format("{}: {}; training stopped. {} Try a lower train.lr.", opts_.tag, e.what(),
                                  run_.has("checkpoint.safetensors")
                                      ? "The last checkpoint in " + run_.root() + " is intact."
                                      : "No checkpoint was written yet."));
    }
  }

  void checkpoint(double seconds) {
    save_checkpoint(run_.file("checkpoint.safetensors"), family_->model(), opt_,
                    {step_, seconds, window_.to_json(), cfg_.to_toml()}, ema_.get());
  }

  nlohmann::json summarize(double train_seconds) {
    fmt::print(stderr, "{}: evaluating on {} test examples\n", opts_.tag, data_->size(Split::Test));
    // With an EMA, the averaged weights are the model; the raw weights' figure is kept beside
    // them once, so the average's effect is known.
    std::optional<Evaluation> raw;
    if (ema_) {
      raw = family_->evaluate(*data_, Split::Test, uint64_t(cfg_.train.seed));
      ema_->swap();
    }
    const auto evaluation = family_->evaluate(*data_, Split::Test, uint64_t(cfg_.train.seed));
    int64_t params = 0;
    for (const auto& p : family_->model().parameters()) params += p.numel();
    nlohmann::json s = evaluation.to_json();
    s.update({{"family", to_string(cfg_.model.family)},
              {"mode", to_string(cfg_.model.mode)},
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
              {"train_examples", data_->size(Split::Train)}});
    if (raw) {
      s["raw_weights"] = raw->to_json();
      s["ema_decay"] = ema_->decay();
      fmt::print(stderr, "{}: raw weights (no EMA): {}", opts_.tag, raw->report());
    }
    if (cfg_.blocks_mode()) {
      s["block_steps"] = nlohmann::json::array();
      for (int b = 0; b < cfg_.model.blocks; ++b) s["block_steps"].push_back(opt_.max_steps_under(block_prefix(b)));
    }
    run_.write_json("summary.json", s);
    fmt::print(stderr, "{}: {}", opts_.tag, evaluation.report());
    return s;
  }

  Config cfg_;
  TrainOptions opts_;
  RunDir run_;
  torch::Device device_;
  std::shared_ptr<const Dataset> data_;
  DataOrder order_;
  std::unique_ptr<Family> family_;
  AdamW opt_;
  int64_t total_;
  StepRunner stepper_;
  MetricsWindow window_;
  std::unique_ptr<Ema> ema_;  // when train.ema_decay (or the family's default) asks for one
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
