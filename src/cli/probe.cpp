// `blocklab probe random-step`: one optimizer update against random steps of the same length, for
// an end-to-end run (the whole model) and for each block of a blocks run (its own parameters and
// the shared ones, under its own loss and noise range). This file loads checkpoints and prints;
// the measurement is eval/probe.h, the histogram eval/probe_plot.h. docs/probe.md explains it.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "cli/commands.h"
#include "eval/probe.h"
#include "eval/probe_plot.h"
#include "eval/probe_target.h"
#include "families/registry.h"
#include "io/atomic_file.h"
#include "io/png.h"
#include "io/run_dir.h"
#include "train/checkpoint.h"
#include "train/lr_schedule.h"
#include "train/plan.h"
#include "train/step.h"
#include "util/error.h"
#include "util/progress.h"
#include "util/seed.h"
#include "util/system.h"

namespace blocklab {
namespace {

enum class ProbeRule { Auto, AdamW, Sgd };

ProbeRule probe_parse_rule(const std::string& s) {
  if (s == "auto") return ProbeRule::Auto;
  if (s == "adamw") return ProbeRule::AdamW;
  if (s == "sgd") return ProbeRule::Sgd;
  throw UserError(fmt::format("--update {}: expected auto, adamw or sgd", s));
}

std::vector<double> probe_parse_radii(const std::string& list) {
  std::vector<double> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t end = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, end - start);
    double v = 0;
    size_t used = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || !std::isfinite(v) || v <= 0)
      throw UserError(fmt::format("--radius {}: \"{}\" is not a positive number", list, item));
    out.push_back(v);
    start = end + 1;
  }
  return out;
}

// One target loaded afresh from its checkpoint: a target's trials and AdamW step never reach the next.
struct ProbeSubject {
  std::unique_ptr<Family> family;
  std::unique_ptr<AdamW> opt;
  std::string checkpoint;
  int64_t step = 0;
  double lr = 0;  // the schedule's at the checkpoint's step
};

ProbeSubject probe_load(const RunDir& run, const Config& cfg, const std::string& run_config,
                        const std::shared_ptr<const Dataset>& data, const torch::Device& device, int block) {
  ProbeSubject s;
  s.checkpoint = run.file("checkpoint.safetensors");
  std::optional<int> only;  // the model holds this block alone
  bool apart = false;       // a block trained in its own process (blocks/K/checkpoint.safetensors)
  if (block >= 0 && !std::filesystem::exists(s.checkpoint)) {
    const auto own = run.file(fmt::format("blocks/{}/checkpoint.safetensors", block));
    if (std::filesystem::exists(own)) s.checkpoint = own, only = block, apart = true;
  }
  if (!std::filesystem::exists(s.checkpoint))
    throw UserError(fmt::format("{}: no checkpoint.safetensors{} (the probe starts from a checkpoint's weights and "
                                "optimizer state)",
                                run.root(),
                                block >= 0 ? fmt::format(" nor blocks/{}/checkpoint.safetensors", block) : ""));
  TensorMap tensors;
  const auto state = read_checkpoint(s.checkpoint, run_config, tensors);
  if (state.held_block >= 0 && !apart) {
    if (state.held_block != block)
      throw UserError(fmt::format("{}: holds block {} only (resident schedule); probe it with --block {}", s.checkpoint,
                                  state.held_block, state.held_block));
    only = block;
  }
  for (auto it = tensors.begin(); it != tensors.end();)  // the weights' average is not what a step moves
    it = it->first.rfind("ema.", 0) == 0 ? tensors.erase(it) : std::next(it);
  s.family = make_family(cfg, data, device, only);
  s.opt = std::make_unique<AdamW>(make_optimizer(s.family->model(), cfg));
  restore_training_state(tensors, s.family->model(), *s.opt, nullptr, s.checkpoint);
  s.step = state.step;
  // The learning rate of the run's next update; a finished run's last one.
  DataOrder order(data->size(Split::Train), cfg.train.batch_size, uint64_t(cfg.train.seed));
  const Plan plan(cfg, updates_per_block(cfg, order.steps_per_epoch()), apart ? only : std::nullopt);
  const auto next = plan.at(std::min(s.step, plan.size() - 1)).front();
  s.lr = learning_rate(cfg.train, next.lr_step, plan.lr_steps());
  return s;
}

struct ProbeRecord {
  std::string run, target;
  int block = -1;
  std::string checkpoint, rule;
  int64_t step = 0;
  double lr = 0, grad_norm = 0;
  double cosine = 0;  // cos(update, -gradient): for small steps z ~ -sqrt(d) times this
  int64_t unreached = 0;  // elements of candidates the target's loss does not reach (not in d)
  RandomStepResult result;
};

nlohmann::json probe_record_json(const ProbeRecord& r) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : r.result.rows) rows.push_back(row.to_json());
  return {{"run", r.run},         {"target", r.target}, {"block", r.block},
          {"checkpoint", r.checkpoint}, {"step", r.step}, {"update", r.rule},
          {"lr", r.lr},           {"grad_norm", r.grad_norm}, {"cos_update_neg_grad", r.cosine}, {"d", r.result.d}, {"d_unreached", r.unreached},
          {"l0", r.result.l0},    {"update_norm", r.result.update_norm}, {"rows", rows}};
}

// The probe of one target of one run.
ProbeRecord probe_target(const RunDir& run, const Config& cfg, const std::string& run_config,
                         const std::shared_ptr<const Dataset>& data, const torch::Device& device, int block,
                         const ProbeRandomStepArgs& a, ProbeRule rule, const std::vector<double>& radii) {
  ProbeRecord rec;
  rec.run = run.root();
  rec.block = block;
  rec.target = block < 0 ? "e2e" : fmt::format("block {}", block);
  auto s = probe_load(run, cfg, run_config, data, device, block);
  rec.checkpoint = s.checkpoint;
  rec.step = s.step;
  rec.lr = a.lr > 0 ? a.lr : s.lr;
  // No dropout in these models, but the mode training used (train) keeps the function the same.
  s.family->model().train();
  const auto fixed = probe_batches(*data, cfg.train.batch_size, a.batches, uint64_t(a.seed), device);
  const auto loss = family_probe_loss(*s.family, fixed, block);

  // The parameters the target's update may change and its loss reaches.
  const auto candidates = probe_candidates(s.family->model(), block);
  std::vector<torch::Tensor> all;
  for (const auto& [name, p] : candidates) all.push_back(p);
  const auto all_grads = probe_gradient(all, loss);
  std::vector<torch::Tensor> params, grads;
  std::vector<std::string> names;
  for (size_t i = 0; i < candidates.size(); ++i)
    if (all_grads[i].defined()) {
      names.push_back(candidates[i].first);
      params.push_back(all[i]);
      grads.push_back(all_grads[i]);
    } else {
      rec.unreached += all[i].numel();
    }
  if (params.empty()) throw UserError(fmt::format("{}: the {} loss reaches no parameter", run.root(), rec.target));

  bool moments = true;
  for (const auto& name : names) moments = moments && s.opt->steps_of(name) > 0;
  if (rule == ProbeRule::AdamW && !moments)
    throw UserError(fmt::format("--update adamw: {} has no AdamW moments for the {} parameters", s.checkpoint, rec.target));
  const bool adamw = rule == ProbeRule::AdamW || (rule == ProbeRule::Auto && moments);
  rec.rule = adamw ? "adamw" : "sgd";
  // Clipped as the training step clips (train.grad_clip over the update's gradients).
  rec.grad_norm = probe_clip(grads, cfg.train.grad_clip);
  const auto update = adamw ? adamw_update(*s.opt, params, grads, rec.lr) : sgd_update(grads, rec.lr);
  rec.cosine = -cosine(update, grads);

  RandomStepOptions options;
  options.radii = radii;
  options.directions = a.directions;
  options.seed = uint64_t(a.seed);
  std::unique_ptr<Progress> bar;
  size_t shown = radii.size();
  options.progress = [&](size_t r, int64_t done) {
    if (r != shown) {
      if (bar) bar->finish();
      bar = std::make_unique<Progress>(a.directions, fmt::format("probe {} {} r={}", run.root(), rec.target, radii[r]));
      shown = r;
    }
    bar->update(done);
  };
  rec.result = random_step_probe(params, update, loss, options);
  if (bar) bar->finish();
  return rec;
}

std::string probe_short(double v) { return std::isfinite(v) ? fmt::format("{:.3g}", v) : "n/a"; }

// The table, Markdown (readable in a terminal, pasted as is into the README).
void print_probe_table(const std::vector<ProbeRecord>& records, bool several_runs) {
  fmt::print("| {}target | d | L0 | update | lr | update norm | cos(update, -g) | radius | dL update | dL random (mean ± std) | z | random better |\n",
             several_runs ? "run | " : "");
  fmt::print("|{}---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n", several_runs ? "---|" : "");
  for (const auto& r : records)
    for (const auto& row : r.result.rows)
      fmt::print("| {}{} | {} | {:.4f} | {} | {:.3g} | {:.3g} | {:.3f} | {:g} | {} | {} ± {} | {} | {:.0f}% |\n",
                 several_runs ? r.run + " | " : "", r.target, r.result.d, r.result.l0, r.rule, r.lr,
                 r.result.update_norm, r.cosine, row.radius, probe_short(row.update_change), probe_short(row.mean),
                 probe_short(row.std), std::isfinite(row.z) ? fmt::format("{:.1f}", row.z) : "n/a",
                 100 * row.fraction_better);
}

}  // namespace

int cmd_probe_random_step(const ProbeRandomStepArgs& a) {
  const auto rule = probe_parse_rule(a.update);
  const auto radii = probe_parse_radii(a.radius);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<ProbeRecord> records;
  for (const auto& dir : a.runs) {
    if (!std::filesystem::is_directory(dir)) throw UserError(fmt::format("{}: no such run directory", dir));
    const RunDir run(dir, /*create=*/false);
    if (!run.has("config.toml")) throw UserError(fmt::format("{}: not a run directory (no config.toml)", dir));
    const Config cfg = Config::load_for_evaluation(run.file("config.toml"), {});
    const auto run_config = read_file(run.file("config.toml"));
    if (a.block >= 0 && !cfg.blocks_mode())
      throw UserError(fmt::format("--block {}: {} is an end-to-end run (probed whole)", a.block, dir));
    if (a.block >= cfg.model.blocks)
      throw UserError(fmt::format("--block {}: {} has {} blocks (0 to {})", a.block, dir, cfg.model.blocks,
                                  cfg.model.blocks - 1));
    set_threads(cfg.train.threads);
    const torch::Device device(resolve_device(cfg.train.device));
    const auto data = load_dataset(cfg);
    std::vector<int> targets;
    if (!cfg.blocks_mode()) targets = {-1};
    else if (a.block >= 0) targets = {a.block};
    else
      for (int b = 0; b < cfg.model.blocks; ++b) targets.push_back(b);
    for (int block : targets) records.push_back(probe_target(run, cfg, run_config, data, device, block, a, rule, radii));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  print_probe_table(records, a.runs.size() > 1);
  const std::string out = a.out.empty() ? (std::filesystem::path(a.runs.front()) / "probe").string() : a.out;
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec || !std::filesystem::is_directory(out))
    throw UserError(fmt::format("--out {}: cannot create the directory{}", out, ec ? ": " + ec.message() : ""));
  // Arguments and numbers only (no times), so that a seed always writes the same file.
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& r : records) targets.push_back(probe_record_json(r));
  const nlohmann::json j = {{"runs", a.runs},           {"seed", a.seed},     {"batches", a.batches},
                            {"directions", a.directions}, {"radii", radii},   {"update", a.update},
                            {"lr", a.lr > 0 ? nlohmann::json(a.lr) : nlohmann::json("schedule")},
                            {"z", "(dL update - mean dL random) / std of dL random; negative: the update lowers the loss more"},
                            {"targets", targets}};
  write_file_atomic((std::filesystem::path(out) / "probe.json").string(), j.dump(2) + "\n");
  std::vector<ProbePanel> panels;
  for (const auto& r : records)
    for (const auto& row : r.result.rows)
      panels.push_back({fmt::format("{} r={:g}", r.target, row.radius), row});
  write_png((std::filesystem::path(out) / "random-step.png").string(),
            random_step_histogram(panels, int64_t(radii.size())));
  fmt::print(stderr, "probe: {} target(s) in {:.0f} s; {}/probe.json, {}/random-step.png\n", records.size(), seconds,
             out, out);
  return 0;
}

}  // namespace blocklab
