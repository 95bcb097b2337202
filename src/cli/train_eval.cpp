// `blocklab train` and `blocklab eval`.
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/run_loader.h"
#include "families/registry.h"
#include "io/atomic_file.h"
#include "io/run_dir.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/system.h"

namespace blocklab {

int cmd_train(const TrainArgs& a) {
  if (a.parent_pid > 0) {
    // Started by demo: SIGTERM (checkpoint, exit) when the parent dies, even by SIGKILL.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != pid_t(a.parent_pid)) return 128 + SIGTERM;  // it died before prctl took effect
  }
  const Config cfg = Config::load(a.config, a.overrides);
  TrainOptions opts;
  opts.out_dir = !a.out.empty() ? a.out
                                : fmt::format("runs/{}-{}", std::filesystem::path(a.config).stem().string(),
                                              to_string(cfg.model.mode));
  opts.resume = a.resume;
  opts.plain_progress = a.plain;
  opts.tag = a.tag;
  opts.stop_after = a.stop_after;
  if (!a.resume && std::filesystem::exists(std::filesystem::path(opts.out_dir) / "checkpoint.safetensors"))
    throw UserError(fmt::format("{}: holds a run already; pass --resume to continue it or choose another --out",
                                opts.out_dir));
  fmt::print(stderr, "{}: {} {} mode, L={} B={} d={}, {} thread(s), BLAS {}, run directory {}\n", a.tag,
             to_string(cfg.model.family), to_string(cfg.model.mode), cfg.model.layers, cfg.model.blocks,
             cfg.model.hidden, cfg.train.threads, blas_core(), opts.out_dir);
  const auto summary = train(cfg, opts);
  // Stopped by a signal with a checkpoint saved: the conventional exit status, 128 + signal.
  return summary.contains("signal") ? 128 + summary["signal"].get<int>() : 0;
}

int cmd_eval(const std::string& run_dir, const std::vector<std::string>& overrides) {
  auto r = load_run(run_dir, overrides, WeightsChoice::Average);
  const auto evaluation = r.family->evaluate(*r.data, Split::Test, uint64_t(r.cfg.train.seed));
  r.run.write_json("eval.json", evaluation.to_json());
  fmt::print("{}", evaluation.report());
  return 0;
}

}  // namespace blocklab
