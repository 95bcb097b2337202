#include "train/trainer.h"

#include <chrono>
#include <filesystem>
#include <csignal>
#include <optional>
#include <cstring>

#include <fmt/format.h>

#include "families/registry.h"
#include "io/atomic_file.h"
#include "io/run_dir.h"
#include "io/safetensors.h"
#include "train/adamw.h"
#include "train/assemble.h"
#include "train/checkpoint.h"
#include "train/ema.h"
#include "train/plan.h"
#include "train/step.h"
#include "dist/group.h"
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

// What is in memory: the family (every block, or one), its optimizer and weight average.
struct Held {
  std::unique_ptr<Family> family;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<Ema> ema;
  std::unique_ptr<StepRunner> stepper;
  int block = -1;  // the one block held; -1: all of them
};

class Trainer {
 public:
  Trainer(const Config& cfg, const TrainOptions& opts)
      : cfg_(cfg),
        opts_(opts),
        root_(opts.out_dir),
        run_(opts.only_block ? root_.file(fmt::format("blocks/{}", *opts.only_block)) : opts.out_dir),
        device_(resolve_device(cfg.train.device)),
        data_(load_dataset(cfg)),
        order_(data_->size(Split::Train), cfg.train.batch_size, uint64_t(cfg.train.seed)),
        plan_(cfg, updates_per_block(cfg, order_.steps_per_epoch()), opts.only_block),
        window_(cfg.blocks_mode() ? cfg.model.blocks : 1),
        baseline_rss_(current_rss_bytes()),
        baseline_tensors_(TensorMemoryTracker::current_bytes()) {}

  nlohmann::json run() {
    // One trainer per run directory (per block directory); held until run() returns. A block's
    // replicas hold the same weights: the first writes for all.
    const auto lock = writes() ? run_.lock() : nullptr;
    // Continuing, or adding a block, under another config would silently mix two runs.
    const bool other_config = root_.has("config.toml") && read_file(root_.file("config.toml")) != cfg_.to_toml();
    if (other_config && opts_.resume)
      throw UserError(fmt::format("{}: --resume with a config that differs from the run's config.toml; "
                                  "resume with `blocklab train {}/config.toml --out {} --resume`",
                                  root_.root(), root_.root(), root_.root()));
    if (other_config && opts_.only_block)
      throw UserError(fmt::format("{}: holds a run with another config.toml; train block {} of the same config",
                                  root_.root(), *opts_.only_block));
    if (cfg_.train.eval_every > 0 && opts_.only_block)
      throw UserError(fmt::format("train.eval_every = {}: a process that trains one block (--block, launch) cannot "
                                  "evaluate the whole model; set train.eval_every = 0",
                                  cfg_.train.eval_every));
    CheckpointState state;
    if (opts_.resume) {
      if (!run_.has("checkpoint.safetensors") && !run_.has("checkpoint.prev.safetensors"))
        throw UserError(fmt::format("{}: --resume but no checkpoint.safetensors there", run_.root()));
      auto saved = resume_checkpoint();
      const auto& path = saved.path;
      state = saved.state;
      hold(resident() ? state.held_block : first_block());
      restore_training_state(saved.tensors, held_.family->model(), *held_.opt, held_.ema.get(), path);
      if (state.step > plan_.size())
        throw UserError(fmt::format("{}: checkpoint at step {}, beyond this run's {} steps", path, state.step, plan_.size()));
      window_.load(state.window, path);
      if (writes()) run_.truncate_metrics(state.step);
      fmt::print(stderr, "{}: resuming from step {} of {}\n", opts_.tag, state.step, plan_.size());
    } else {
      if (writes()) run_.truncate_metrics(-1);
      if (resident())  // a crashed earlier start's block files must not be taken for this run's
        for (int b = 0; b < cfg_.model.blocks; ++b) std::filesystem::remove(offload_file(b));
      hold(first_block());
    }
    if (writes()) root_.write_text("config.toml", cfg_.to_toml());
    const double seconds = fit(state);
    if (g_signal) return {{"stopped_at", pos_}, {"signal", int(g_signal)}};
    if (opts_.stop_after >= 0 && pos_ < plan_.size()) return {{"stopped_at", pos_}, {"memory", memory()}};
    return finish(seconds);
  }

 private:
  bool writes() const { return opts_.replica == 0; }
  bool resident() const {
    return !opts_.only_block && cfg_.blocks_mode() && cfg_.train.schedule == BlockSchedule::Resident;
  }
  int first_block() const { return opts_.only_block ? *opts_.only_block : resident() ? plan_.at(0)[0].block : -1; }
  std::string offload_file(int b) const { return root_.file(fmt::format("blocks/{}/state.safetensors", b)); }

  // Builds the family holding `block` (-1: every block), its optimizer, average and step runner.
  void hold(int block) {
    held_ = Held{};  // the previous model goes first: memory holds one block at a time
    held_.block = block;
    held_.family = make_family(cfg_, data_, device_, block >= 0 ? std::optional<int>(block) : std::nullopt);
    held_.opt = std::make_unique<AdamW>(make_optimizer(held_.family->model(), cfg_));
    if (cfg_.ema_decay() > 0) held_.ema = std::make_unique<Ema>(held_.family->model(), *held_.opt, cfg_.ema_decay());
    AllReduce all_reduce;
    if (opts_.group && cfg_.train.shared == SharedModules::Synced)
      all_reduce = [this](torch::Tensor& t) { timed_all_reduce(*opts_.group, t, fmt::format("update {}", pos_)); };
    Replication replication{opts_.replica, opts_.replicas, nullptr};
    if (opts_.replicas > 1) replication.mean = [this] { average_over_replicas(); };
    held_.stepper =
        std::make_unique<StepRunner>(*held_.family, *held_.opt, cfg_, plan_.lr_steps(), all_reduce, replication);
  }

  // Data parallel inside a block: the block's own gradients (with independent blocks, all of this
  // process's) become their mean over the block's replicas, in one flat all-reduce; the shared
  // modules' are summed with every rank's instead (StepRunner divides that sum by the replicas).
  void average_over_replicas() {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> grads;
    for (const auto& [name, p] : held_.opt->params())
      if (p.grad().defined() && name.rfind("shared.", 0) != 0) grads.push_back(p.mutable_grad());
    if (grads.empty()) return;
    auto flat = at::flatten_dense_tensors(grads);
    timed_all_reduce(*opts_.replica_group, flat, fmt::format("the replicas' gradients of update {}", pos_));
    flat.div_(double(opts_.replicas));
    const auto means = at::unflatten_dense_tensors(flat, grads);
    for (size_t i = 0; i < grads.size(); ++i) grads[i].copy_(means[i]);
  }

  // Every collective of a step, timed for the summary's all-reduce share.
  void timed_all_reduce(ProcessGroup& group, torch::Tensor& t, const std::string& what) {
    const auto t0 = std::chrono::steady_clock::now();
    group.all_reduce(t, what);
    allreduce_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  // Resident schedule: block `block` replaces the one in memory, whose state (weights, AdamW
  // moments, average) goes to its file; the shared modules' state carries over. Returns whether
  // anything changed.
  bool activate(int block) {
    if (held_.block == block) return false;
    const int previous = held_.block;
    auto state = training_state(held_.family->model(), *held_.opt, held_.ema.get());
    std::filesystem::create_directories(root_.file(fmt::format("blocks/{}", previous)));
    save_safetensors(offload_file(previous), owned_by_block(state, previous), {{"config", cfg_.to_toml()}});
    auto carried = owned_by_block(state, previous, /*inside=*/false);
    state.clear();
    hold(block);
    if (std::filesystem::exists(offload_file(block)))
      for (auto& [name, t] : load_safetensors(offload_file(block))) carried[name] = t;
    // A block that has not trained yet keeps its initialization (and has no AdamW state).
    restore_training_state(carried, held_.family->model(), *held_.opt, held_.ema.get(), offload_file(block),
                           block_prefix(block));
    return true;
  }

  struct Saved {
    std::string path;
    CheckpointState state;
    TensorMap tensors;
  };
  Saved read_saved(const std::string& path) {
    Saved saved{path, {}, {}};
    saved.state = read_checkpoint(path, cfg_.to_toml(), saved.tensors);
    return saved;
  }

  // The checkpoint to resume from. Synchronised ranks must continue from the same update, or their
  // sums would mix steps; a crash between two ranks' checkpoint writes can leave them one
  // checkpoint apart, so each rank keeps its previous checkpoint and all take the latest they share.
  Saved resume_checkpoint() {
    const auto current = run_.file("checkpoint.safetensors"), previous = run_.file("checkpoint.prev.safetensors");
    // A crash may fall between the rotation and the write of the next checkpoint.
    auto saved = read_saved(std::filesystem::exists(current) ? current : previous);
    if (!opts_.group || cfg_.train.shared != SharedModules::Synced) return saved;
    auto& g = *opts_.group;
    auto steps = torch::zeros({g.size()}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
    steps[g.rank()] = double(saved.state.step);
    g.all_reduce(steps, "the resume steps");
    const int64_t agreed = int64_t(steps.min().item<double>());
    if (saved.state.step == agreed) return saved;
    if (saved.path != previous && std::filesystem::exists(previous)) {
      auto older = read_saved(previous);
      if (older.state.step == agreed) {
        fmt::print(stderr, "{}: another rank's last checkpoint is of update {}: resuming from my previous one\n",
                   opts_.tag, agreed);
        return older;
      }
    }
    throw UserError(fmt::format("{}: rank {} has a checkpoint of update {}, another rank only of update {}, and no "
                                "checkpoint of that update is left here",
                                run_.root(), g.rank(), saved.state.step, agreed));
  }

  // Runs positions [state.step, plan size); returns training seconds (this invocation's plus earlier ones').
  double fit(const CheckpointState& state) {
    g_signal = 0;
    std::vector<void (*)(int)> previous;
    for (int sig : kStopSignals) previous.push_back(std::signal(sig, on_signal));
    Progress progress(plan_.size(), opts_.tag, state.step, opts_.plain_progress);
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] {  // training time: evaluations during training are not part of it
      return state.train_seconds + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() -
             eval_seconds_;
    };
    for (pos_ = state.step; pos_ < plan_.size() && !g_signal;) {
      const auto updates = plan_.at(pos_);
      // A checkpoint right after each switch keeps it consistent with the blocks' files.
      if (resident() && activate(updates.front().block)) checkpoint(elapsed());
      const auto stats = guarded_step(updates);
      if (held_.ema) held_.ema->update(updates.size() > 1 ? -1 : updates.front().block);
      ++pos_;
      for (const auto& s : stats) window_.add(std::max(s.block, 0), s.loss, s.plain);
      if (opts_.group) opts_.group->publish("progress", std::to_string(pos_));
      if ((pos_ % cfg_.train.log_every == 0 || pos_ == plan_.size()) && writes()) log(stats.back(), elapsed(), progress);
      // Before the checkpoint of the same step: a crash between the two repeats the evaluation.
      const bool evaluate = cfg_.train.eval_every > 0 && pos_ % cfg_.train.eval_every == 0 && pos_ < plan_.size();
      const bool save = pos_ % cfg_.train.checkpoint_every == 0 || pos_ == plan_.size() || pos_ == opts_.stop_after;
      if (evaluate && writes()) evaluate_now(elapsed());
      if (save && writes()) checkpoint(elapsed());
      // One refresh for both; the end's comes with the summary.
      if ((evaluate || save) && writes() && opts_.refresh && pos_ < plan_.size()) opts_.refresh();
      if (pos_ == opts_.stop_after) break;
    }
    if (g_signal) {
      if (writes()) checkpoint(elapsed());
      fmt::print(stderr, "\n{}: {} at step {}; checkpoint saved, continue with --resume\n", opts_.tag,
                 strsignal(g_signal), pos_);
    }
    for (size_t i = 0; i < previous.size(); ++i) std::signal(kStopSignals[i], previous[i]);
    if (pos_ == plan_.size()) progress.finish();
    fit_seconds_ = elapsed() - state.train_seconds;
    return elapsed();
  }

  // One metrics line per block that trained since the last one (one line end-to-end).
  void log(const StepStats& last, double seconds, Progress& progress) {
    double plain = 0;
    int64_t steps = 0;
    for (size_t b = 0; b < window_.slots.size(); ++b) {
      auto& w = window_.slots[b];
      if (w.steps == 0) continue;
      nlohmann::json line = {{"step", pos_}, {"loss", w.loss / double(w.steps)}, {"plain_loss", w.plain / double(w.steps)},
                             {"steps", w.steps}, {"lr", last.lr}, {"grad_norm", last.grad_norm}, {"seconds", seconds}};
      if (cfg_.blocks_mode()) line["block"] = b;
      run_.append_metrics(line);
      plain += w.plain, steps += w.steps;
      w = {};
    }
    progress.update(pos_, fmt::format("plain loss {:.4f} lr {:.2e}{}", plain / double(std::max<int64_t>(steps, 1)),
                                      last.lr, last_evaluation_));
  }

  // Evaluates the model as it is now (its average, with an EMA), then training goes on unchanged:
  // evaluations draw from their own seeds and step() reseeds torch's generator at every step.
  void evaluate_now(double seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    if (held_.ema) held_.ema->swap();
    const auto evaluation = held_.family->evaluate(*data_, Split::Test, uint64_t(cfg_.train.seed));
    if (held_.ema) held_.ema->swap();
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    eval_seconds_ += took;
    log_evaluation(evaluation, seconds, took);
    last_evaluation_ = fmt::format(" | step {} {} {}", pos_, evaluation.headline.name, evaluation.headline.show());
  }

  // One metrics line of an evaluation's figures, and the family's files (samples) beside it.
  void log_evaluation(const Evaluation& e, double seconds, double took, bool final = false) const {
    nlohmann::json figures = {{e.headline.name, e.headline.value}};
    for (const auto& m : e.alternatives) figures[m.name] = m.value;
    // (A run of blocks trained apart has its metrics in blocks/K/; the summary keeps the figures.)
    nlohmann::json line = {{"step", pos_}, {"seconds", seconds}, {"evaluation", figures}, {"headline", e.headline.name},
                           {"eval_seconds", took}};
    if (final) line["final"] = true;
    if (!opts_.only_block) run_.append_metrics(line);
    for (const auto& [name, contents] : e.files) root_.write_text(name, contents);
  }

  std::vector<StepStats> guarded_step(const std::vector<Update>& updates) {
    std::vector<Batch> batches;
    for (const auto& u : updates) {
      auto indices = order_.indices(u.data_step);
      if (opts_.replicas > 1) {  // this replica's share of the step's batch
        const int64_t share = indices.size(0) / opts_.replicas;
        indices = indices.narrow(0, opts_.replica * share, share);
      }
      batches.push_back(data_->batch(Split::Train, indices, device_));
    }
    try {
      return held_.stepper->run(batches, updates);
    } catch (const UserError& e) {  // a non-finite loss or gradient: stop, say what is safe
      throw UserError(fmt::format("{}: {}; training stopped. {} Try a lower train.lr.", opts_.tag, e.what(),
                                  run_.has("checkpoint.safetensors")
                                      ? "The last checkpoint in " + run_.root() + " is intact."
                                      : "No checkpoint was written yet."));
    }
  }

  void checkpoint(double seconds) {
    if (opts_.group && cfg_.train.shared == SharedModules::Synced && run_.has("checkpoint.safetensors"))  // for resume_checkpoint()
      std::filesystem::rename(run_.file("checkpoint.safetensors"), run_.file("checkpoint.prev.safetensors"));
    save_checkpoint(run_.file("checkpoint.safetensors"), held_.family->model(), *held_.opt,
                    {pos_, seconds, window_.to_json(), cfg_.to_toml(), held_.block}, held_.ema.get());
  }

  // What training held in memory: the process against its state before any model existed (libtorch
  // and the data loaded), and the tensors of the model in memory by kind (the tracker's peak, when
  // `bench memory` installed it, gives the activations and temporaries of a step beside them).
  nlohmann::json memory() const {
    auto bytes = [](const torch::Tensor& t) { return int64_t(t.numel() * t.element_size()); };
    int64_t params = 0, optimizer = 0, average = 0, trained = 0;
    for (const auto& p : held_.family->model().parameters()) params += bytes(p);
    for (const auto& [name, t] : held_.opt->state_dict()) optimizer += bytes(t);
    if (held_.ema)
      for (const auto& [name, t] : held_.ema->state()) average += bytes(t);
    // Gradients exist for what one step trains: the network, or the shared modules and one block.
    for (int b = cfg_.blocks_mode() ? 0 : -1; b < (cfg_.blocks_mode() ? cfg_.model.blocks : 0); ++b) {
      int64_t sum = 0;
      for (const auto& [name, p] : held_.opt->params())
        if (b < 0 || name.rfind("blocks.", 0) != 0 || name.rfind(block_prefix(b), 0) == 0) sum += bytes(p);
      trained = std::max(trained, sum);
    }
    nlohmann::json m = {{"baseline_rss_bytes", baseline_rss_},
                        {"peak_rss_bytes", peak_rss_bytes()},
                        {"parameter_bytes", params},
                        {"gradient_bytes", trained},
                        {"optimizer_bytes", optimizer},
                        {"average_bytes", average}};
    if (TensorMemoryTracker::installed())
      m["activation_bytes"] = std::max<int64_t>(
          0, TensorMemoryTracker::peak_bytes() - baseline_tensors_ - params - trained - optimizer - average);
    return m;
  }

  // Writes the final weights (and their average) into the run directory, evaluates, summarizes.
  nlohmann::json finish(double train_seconds) {
    const std::map<std::string, std::string> meta = {{"config", cfg_.to_toml()}, {"format", "blocklab-model-1"}};
    auto weights = named_tensors(held_.family->model());
    std::optional<TensorMap> average;
    if (held_.ema) average = held_.ema->weights();
    if (opts_.only_block) {
      // One block of a larger run: its files, then (in a distributed run) rank 0 assembles the model.
      if (writes()) {
        save_safetensors(run_.file("model.safetensors"), weights, meta);
        if (average) save_safetensors(run_.file("ema.safetensors"), *average, meta);
      }
      const int block = *opts_.only_block;
      if (!opts_.group) {
        fmt::print(stderr, "{}: block {} trained; `blocklab eval {}` assembles the model once every block is\n",
                   opts_.tag, block, root_.root());
        return {{"block", block}, {"steps", plan_.size()}};
      }
      held_ = Held{};
      if (cfg_.train.shared == SharedModules::Synced) opts_.group->barrier("at the end of training");
      else opts_.group->wait_for_all("trained");
      if (opts_.group->rank() != 0) return {{"block", block}, {"steps", plan_.size()}};
      std::vector<std::string> files, averages;
      for (int b = 0; b < cfg_.model.blocks; ++b) {
        files.push_back(root_.file(fmt::format("blocks/{}/model.safetensors", b)));
        averages.push_back(root_.file(fmt::format("blocks/{}/ema.safetensors", b)));
      }
      weights = assemble_blocks(files, cfg_.to_toml());
      if (average) average = assemble_blocks(averages, cfg_.to_toml());
    } else if (resident()) {
      // The block in memory, and the others' last state from their files.
      for (int b = 0; b < cfg_.model.blocks; ++b) {
        if (b == held_.block) continue;
        // (Names sort "ema." before "model.": a buffer, which has no average, comes from the weights.)
        for (auto& [name, t] : load_safetensors(offload_file(b))) {
          if (name.rfind("model.", 0) == 0) {
            weights[name.substr(6)] = t;
            if (average && !average->count(name.substr(6))) (*average)[name.substr(6)] = t;
          }
          if (average && name.rfind("ema.", 0) == 0) (*average)[name.substr(4)] = t;
        }
      }
      held_ = Held{};
    }
    save_safetensors(root_.file("model.safetensors"), weights, meta);
    if (average) save_safetensors(root_.file("ema.safetensors"), *average, meta);
    if (!held_.family) hold(-1);  // the whole model, for evaluation
    return summarize(weights, average ? &*average : nullptr, train_seconds);
  }

  nlohmann::json summarize(const TensorMap& weights, const TensorMap* average, double train_seconds) {
    auto& family = *held_.family;
    fmt::print(stderr, "{}: evaluating on {} test examples\n", opts_.tag, data_->size(Split::Test));
    // With an EMA, the averaged weights are the model; the raw weights' figure is kept beside
    // them once, so the average's effect is known.
    std::optional<Evaluation> raw;
    load_weights(family.model(), weights, root_.file("model.safetensors"));
    if (average) {
      raw = family.evaluate(*data_, Split::Test, uint64_t(cfg_.train.seed));
      load_weights(family.model(), *average, root_.file("ema.safetensors"));
    }
    const auto t0 = std::chrono::steady_clock::now();
    const auto evaluation = family.evaluate(*data_, Split::Test, uint64_t(cfg_.train.seed));
    log_evaluation(evaluation, train_seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                   /*final=*/true);
    int64_t params = 0;
    for (const auto& p : family.model().parameters()) params += p.numel();
    const int64_t steps = plan_.updates() * (cfg_.blocks_mode() ? cfg_.model.blocks : 1);
    nlohmann::json s = evaluation.to_json();
    s.update({{"family", to_string(cfg_.model.family)},
              {"mode", to_string(cfg_.model.mode)},
              {"blocks", cfg_.model.blocks},
              {"layers", cfg_.model.layers},
              {"params", params},
              {"steps", steps},
              {"train_seconds", train_seconds},
              {"ms_per_step", 1000.0 * train_seconds / double(steps)},
              {"peak_rss_bytes", peak_rss_bytes()},
              {"baseline_rss_bytes", baseline_rss_},
              {"device", device_.str()},
              {"threads", at::get_num_threads()},
              {"blas", blas_core()},
              {"commit", build_commit()},
              {"train_examples", data_->size(Split::Train)}});
    if (raw) {
      s["raw_weights"] = raw->to_json();
      s["ema_decay"] = cfg_.ema_decay();
      fmt::print(stderr, "{}: raw weights (no EMA): {}", opts_.tag, raw->report());
    }
    if (cfg_.blocks_mode()) {
      s["block_steps"] = std::vector<int64_t>(size_t(cfg_.model.blocks), plan_.updates());
      s["schedule"] = to_string(cfg_.train.schedule);
      s["shared"] = to_string(cfg_.train.shared);
      if (resident()) s["block_run"] = cfg_.train.block_run;
    }
    if (opts_.group) {
      s["processes"] = opts_.group->size();
      s["replicas"] = opts_.replicas;
      s["schedule"] = "parallel";
      s["allreduce_seconds"] = allreduce_seconds_;  // of this invocation (after a resume: since it)
      s["allreduce_share"] = allreduce_seconds_ / fit_seconds_;
    }
    root_.write_json("summary.json", s);
    if (opts_.refresh) opts_.refresh();
    fmt::print(stderr, "{}: {}", opts_.tag, evaluation.report());
    return s;
  }

  Config cfg_;
  TrainOptions opts_;
  RunDir root_;  // the run
  RunDir run_;   // where this process trains: the run, or blocks/K of it
  torch::Device device_;
  std::shared_ptr<const Dataset> data_;
  DataOrder order_;
  Plan plan_;
  MetricsWindow window_;
  Held held_;
  int64_t pos_ = 0;  // positions of the plan done
  int64_t baseline_rss_, baseline_tensors_;  // after the data loaded, before any model
  double allreduce_seconds_ = 0, fit_seconds_ = 0;  // this invocation's
  double eval_seconds_ = 0;       // evaluations during this invocation's training
  std::string last_evaluation_;   // for the progress line
};

}  // namespace

nlohmann::json train(const Config& cfg, const TrainOptions& opts) {
  cfg.validate();
  set_threads(cfg.train.threads);
  Trainer trainer(cfg, opts);
  return trainer.run();
}

}  // namespace blocklab
