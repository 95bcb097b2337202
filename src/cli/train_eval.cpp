// `blocklab train` and `blocklab eval`.
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/run_loader.h"
#include "dist/group.h"
#include "dist/world_env.h"
#include "families/registry.h"
#include "io/atomic_file.h"
#include "io/run_dir.h"
#include "io/safetensors.h"
#include "report/report.h"
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
  std::unique_ptr<ProcessGroup> group, replica_group;
  std::optional<int> block;
  int replica = 0, replicas = 1;
  if (a.block >= 0) block = a.block;
  if (a.distributed) {
    const auto env = world_from_environment();
    if (!env)
      throw UserError("--distributed: no RANK and WORLD_SIZE (torchrun, blocklab launch) or SLURM_PROCID and "
                      "SLURM_NTASKS (Slurm) in the environment");
    const int B = cfg.model.blocks;
    if (!cfg.blocks_mode() || env->world_size % B != 0)
      throw UserError(fmt::format("--distributed: {} ranks for model.mode = \"{}\", model.blocks = {}: a distributed run "
                                  "trains each block on the same number of ranks (ranks = blocks x replicas)",
                                  env->world_size, to_string(cfg.model.mode), B));
    replicas = env->world_size / B;
    if (cfg.train.batch_size % replicas != 0)
      throw UserError(fmt::format("--distributed: train.batch_size = {} does not split over {} replicas per block",
                                  cfg.train.batch_size, replicas));
    if (block && *block != env->rank % B)
      throw UserError(fmt::format("--block {} with --distributed: rank {} trains block {}", *block, env->rank, env->rank % B));
    if (cfg.train.device == "cuda" && env->local_rank != 0)
      throw UserError(fmt::format("--distributed: LOCAL_RANK={} on CUDA: one rank per machine for now (each rank "
                                  "uses the first GPU)",
                                  env->local_rank));
    std::signal(SIGPIPE, SIG_IGN);  // a dead peer's socket must raise an error, not kill this process
    group = std::make_unique<ProcessGroup>(*env, cfg.train.dist_timeout, resolve_device(cfg.train.device));
    block = env->rank % B;  // rank = replica x B + block
    replica = env->rank / B;
    if (replicas > 1) replica_group = std::make_unique<ProcessGroup>(*group, fmt::format("block{}/", *block), replica, replicas);
  } else if (block) {
    if (!cfg.blocks_mode() || *block >= cfg.model.blocks)
      throw UserError(fmt::format("--block {}: model.mode = \"{}\" with model.blocks = {}", *block,
                                  to_string(cfg.model.mode), cfg.model.blocks));
    if (cfg.train.shared != SharedModules::Independent)
      throw UserError(fmt::format("--block {}: a block trained alone needs its own input/output modules "
                                  "(--set train.shared=independent); synced blocks train together with "
                                  "`blocklab launch`",
                                  *block));
  }
  TrainOptions opts;
  opts.out_dir = !a.out.empty() ? a.out
                                : fmt::format("runs/{}-{}", std::filesystem::path(a.config).stem().string(),
                                              to_string(cfg.model.mode));
  opts.resume = a.resume;
  opts.plain_progress = a.plain;
  opts.tag = a.tag;
  opts.stop_after = a.stop_after;
  opts.only_block = block;
  if (a.report) {
    check_report_library();  // before training, not at the first refresh
    const auto page = (std::filesystem::path(opts.out_dir) / "report.html").string();
    opts.refresh = [page, dir = opts.out_dir] { write_file_atomic(page, render_report({dir})); };
  }
  opts.group = group.get();
  opts.replica = replica;
  opts.replicas = replicas;
  opts.replica_group = replica_group.get();
  const auto own_dir = block ? std::filesystem::path(opts.out_dir) / "blocks" / std::to_string(*block)
                             : std::filesystem::path(opts.out_dir);
  if (!a.resume && replica == 0 && std::filesystem::exists(own_dir / "checkpoint.safetensors"))
    throw UserError(fmt::format("{}: holds a run already; pass --resume to continue it or choose another --out",
                                own_dir.string()));
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
  for (const auto& [name, contents] : evaluation.files) r.run.write_text(name, contents);
  fmt::print("{}", evaluation.report());
  return 0;
}

}  // namespace blocklab
