// blocklab: train networks end-to-end or one block at a time (DiffusionBlocks).
// This file only parses the command line; the subcommands live in src/cli/*.cpp.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/commands.h"
#include "io/config.h"
#include "util/error.h"
#include "util/system.h"

#ifdef BLOCKLAB_JEMALLOC
// Keep freed pages: returning them costs page faults on every fresh activation buffer.
extern "C" const char* malloc_conf;
const char* malloc_conf = "dirty_decay_ms:-1,muzzy_decay_ms:-1";
#endif

int main(int argc, char** argv) {
  using namespace blocklab;
  CLI::App app{"blocklab: train deep networks end-to-end or block-wise (DiffusionBlocks)"};
  app.set_version_flag("--version", std::string("blocklab ") + build_commit());
  app.require_subcommand(1);
  app.footer("Run `blocklab COMMAND --help` for a command's options.");

  TrainArgs train;
  auto* t = app.add_subcommand("train", "train a model from a TOML config");
  t->add_option("config", train.config, "config file, e.g. configs/vit-fmnist.toml")->required()->check(CLI::ExistingFile);
  t->add_option("--set", train.overrides, "override a key: section.key=value (repeatable)");
  t->add_option("--out", train.out, "run directory (default runs/<config>-<mode>)");
  t->add_flag("--resume", train.resume, "continue the run in --out from its last checkpoint");
  t->add_flag("--plain-progress", train.plain, "periodic progress lines instead of a bar");
  t->add_flag("--report", train.report,
              "keep <out>/report.html current: rewritten after every evaluation (train.eval_every) and checkpoint");
  t->add_option("--tag", train.tag, "prefix of progress lines")->group("");
  t->add_option("--stop-after", train.stop_after, "stop with a checkpoint after N steps")->group("");
  t->add_option("--parent-pid", train.parent_pid, "end (with a checkpoint) when this process ends")->group("");
  t->add_option("--block", train.block, "train only this block, in <out>/blocks/<K> (needs train.shared=independent)")
      ->check(CLI::NonNegativeNumber);
  t->add_flag("--distributed", train.distributed,
              "join a distributed run: rank, world size and rendezvous from torchrun's or Slurm's variables");
  t->footer("Config keys (section.key, default, meaning):\n" + Config::describe());

  LaunchArgs launch;
  auto* la = app.add_subcommand("launch", "train every block at once, in processes on this machine (c10d)");
  la->add_option("--procs", launch.procs, "processes: model.blocks x replicas (data parallel inside each block)")->required()->check(CLI::PositiveNumber);
  la->add_option("config", launch.config, "config file")->required()->check(CLI::ExistingFile);
  la->add_option("--set", launch.overrides, "override a key: section.key=value (repeatable)");
  la->add_option("--out", launch.out, "run directory (default runs/<config>-parallel)");
  la->add_flag("--resume", launch.resume, "continue every block from its last checkpoint");

  std::string run_dir;
  std::vector<std::string> eval_overrides;
  auto* e = app.add_subcommand("eval", "evaluate a finished run on the test set");
  e->add_option("run_dir", run_dir, "run directory written by `blocklab train`")->required();
  e->add_option("--set", eval_overrides, "override a key, e.g. diffusion.inference_steps=4");

  // sample and fd: the run and its sampler.
  auto sampler_options = [](CLI::App* c, SamplerArgs& a) {
    c->add_option("run_dir", a.run_dir, "run directory of a dit run")->required();
    c->add_option("--steps", a.steps, "denoising steps (default: the run's diffusion.inference_steps)")
        ->check(CLI::Range(1, 1000));
    c->add_option("--sampler", a.sampler, "euler or heun (default: the run's dit.sampler)");
    c->add_option("--schedule", a.schedule, "cdf (equal-probability levels) or karras (rho=7)");
    c->add_option("--guidance", a.guidance, "classifier-free guidance scale (1: none)");
    c->add_option("--seed", a.seed, "seed of the sampling noise")->check(CLI::NonNegativeNumber);
    c->add_flag("--raw-weights", a.raw_weights, "use the raw weights, not their moving average");
    c->add_option("--set", a.overrides, "override an evaluation key (repeatable)");
  };
  SampleArgs sample;
  auto* sa = app.add_subcommand("sample", "generate images from a dit run into a PNG grid, one class per row");
  sampler_options(sa, sample.sampler);
  sa->add_option("--n", sample.n, "images (one class per row: rounded up to fill the rows)")->check(CLI::Range(1, 100000));
  sa->add_option("--class", sample.label, "only this class")->check(CLI::NonNegativeNumber);
  sa->add_option("--out", sample.out, "PNG file to write");
  FdArgs fd;
  auto* fa = app.add_subcommand("fd", "Fréchet distance of a dit run's images to the test set, into summary.json");
  sampler_options(fa, fd.sampler);
  fa->add_option("--n", fd.n, "images to generate")->check(CLI::Range(8, 1000000));
  fa->add_option("--save-features", fd.save_features, "also write both feature matrices to this safetensors file");

  GenerateArgs gen;
  auto* ge = app.add_subcommand("generate", "continue a prompt with a language-model run (mdm or ar), streaming");
  ge->add_option("run_dir", gen.run_dir, "run directory of an mdm or ar run")->required();
  ge->add_option("--prompt", gen.prompt, "text to continue (default: none)");
  ge->add_option("--bytes", gen.bytes, "bytes to generate")->check(CLI::Range(1, 10000000));
  ge->add_option("--temperature", gen.temperature, "sampling temperature (0: the most likely byte)")->check(CLI::Range(0.0, 100.0));
  ge->add_option("--seed", gen.seed, "seed of the sampling")->check(CLI::NonNegativeNumber);
  ge->add_option("--set", gen.overrides, "override an evaluation key, e.g. diffusion.inference_steps=8 (repeatable)");
  JudgeArgs judge;
  auto* ju = app.add_subcommand("judge", "score a language-model run's generated text by an end-to-end ar judge run");
  ju->add_option("run_dir", judge.run_dir, "run directory of an mdm or ar run")->required();
  ju->add_option("--judge", judge.judge_dir, "run directory of an end-to-end ar run trained longer")->required();
  ju->add_option("--prompts", judge.prompts, "validation prompts")->check(CLI::Range(1, 100000));
  ju->add_option("--prompt-bytes", judge.prompt_bytes, "bytes of each prompt")->check(CLI::Range(0, 100000));
  ju->add_option("--bytes", judge.bytes, "bytes generated per prompt")->check(CLI::Range(4, 100000));
  ju->add_option("--batch", judge.batch, "prompts generated at once")->check(CLI::Range(1, 100000));
  ju->add_option("--temperature", judge.temperature, "sampling temperature")->check(CLI::Range(0.0, 100.0));
  ju->add_option("--seed", judge.seed, "seed of the sampling")->check(CLI::NonNegativeNumber);
  ju->add_option("--set", judge.overrides, "override an evaluation key of the run (repeatable)");

  ReportArgs report;
  auto* rp = app.add_subcommand("report", "one offline HTML page of one or more runs: plots, summaries, metrics");
  rp->add_option("runs", report.runs, "run directories (the first is the reference of differences)")->required();
  rp->add_option("--out", report.out, "HTML file to write");
  rp->add_option("--profile", report.profiles,
                 "a `blocklab profile` output directory to show (repeatable; a run's own profile*/ are found)");

  auto* probe = app.add_subcommand("probe", "diagnostics of a trained run's loss landscape");
  probe->require_subcommand(1);
  ProbeRandomStepArgs prs;
  auto* ps = probe->add_subcommand("random-step",
                                   "is an optimizer step better than random steps of the same length? per block and end-to-end");
  ps->add_option("runs", prs.runs, "run directories with a checkpoint (end-to-end: one row; blocks: one per block)")->required();
  ps->add_option("--block", prs.block, "blocks runs: probe only block K (default: every block)")->check(CLI::NonNegativeNumber);
  ps->add_option("--directions", prs.directions, "random directions per radius (default 100)")->check(CLI::PositiveNumber);
  ps->add_option("--batches", prs.batches, "fixed training batches the loss is averaged over (default 4)")
      ->check(CLI::PositiveNumber);
  ps->add_option("--radius", prs.radius, "step lengths in units of the update's norm, comma-separated (default 1)");
  ps->add_option("--update", prs.update, "auto (adamw when the checkpoint has AdamW moments, else sgd), adamw or sgd");
  ps->add_option("--lr", prs.lr, "learning rate of the update (default: the run's schedule at the checkpoint's step)");
  ps->add_option("--seed", prs.seed, "seed of the batches, their noise and the directions (default 0)")
      ->check(CLI::NonNegativeNumber);
  ps->add_option("--out", prs.out, "directory for probe.json and random-step.png (default <first run>/probe)");

  DemoArgs demo;
  auto* d = app.add_subcommand("demo", "train the default recipe end-to-end and block-wise, then compare");
  d->add_option("--out", demo.out, "output directory (default runs/demo)");
  d->add_option("--set", demo.overrides, "override a key of the default recipe (repeatable)");
  d->add_flag("--sequential", demo.sequential, "run the two trainings one after the other, not side by side");
  d->add_flag("--force", demo.force, "replace a demo in --out that ran with other settings");

  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  BenchStepArgs bstep;
  auto* bs = bench->add_subcommand("step", "memory and time of one training step: end-to-end vs one block");
  bs->add_option("--config", bstep.config, "config file (default: the built-in recipe)")->check(CLI::ExistingFile);
  bs->add_option("--set", bstep.overrides, "override a key, e.g. model.layers=12 (repeatable)");
  bs->add_option("--repeats", bstep.repeats, "measured steps per mode (and block)")->check(CLI::PositiveNumber);
  bs->add_flag("--fused-kernels", bstep.fused_kernels,
               "time the steps with the fused CPU kernels and with libtorch's ops, alternating");
  bs->add_flag("--libtorch-ops", bstep.libtorch_ops, "memory and time on libtorch's ops instead of the fused CPU kernels");
  bs->add_flag("--separate-mlp", bstep.separate_mlp,
               "also time the steps with the MLP's layers separate (dense, bias + GELU, dense), alternating");
  bs->add_flag("--composed-layers", bstep.composed_layers,
               "also time the steps with each transformer layer's fused functions composed (a dozen autograd nodes), not one function, alternating");

  BenchTwinArgs btwin;
  auto* bt = bench->add_subcommand("twin", "blocklab's classifier step against the same step in PyTorch (python3-torch)");
  bt->add_option("--config", btwin.config, "config file (default: the built-in recipe)")->check(CLI::ExistingFile);
  bt->add_option("--set", btwin.overrides, "override a key, e.g. model.layers=12 (repeatable)");
  bt->add_option("--mode", btwin.mode, "e2e, blocks or both")->check(CLI::IsMember({"e2e", "blocks", "both"}));
  bt->add_option("--repeats", btwin.repeats, "timed rounds per mode, after one warm-up round (default 5)")
      ->check(CLI::PositiveNumber);
  bt->add_option("--steps", btwin.steps, "steps of each side per round (default 6)")->check(CLI::PositiveNumber);
  bt->add_option("--python", btwin.python,
                 "a Python with Debian's torch module (default /usr/bin/python3; apt-get install python3-torch)");
  bt->add_option("--twin", btwin.twin, "the twin script (default: bench/pytorch_twin.py of this source tree)")
      ->check(CLI::ExistingFile);
  bt->add_option("--twin-malloc", btwin.twin_malloc, "same: the twin on blocklab's allocator (jemalloc); system: glibc's")
      ->check(CLI::IsMember({"same", "system"}));
  bt->add_flag("--keep", btwin.keep, "keep the fixture directory and say where it is");
  bt->add_flag("--libtorch-ops", btwin.libtorch_ops,
               "blocklab on libtorch's ops (the twin's), not its fused CPU kernels");

  BenchMemoryArgs bmem;
  auto* bm = bench->add_subcommand("memory", "training memory: end-to-end vs block-wise (shared, resident, independent)");
  bm->add_option("--config", bmem.config, "config file (default: the built-in recipe at L=12, d=256, batch 256)")
      ->check(CLI::ExistingFile);
  bm->add_option("--set", bmem.overrides, "override a key (repeatable)");
  bm->add_option("--blocks", bmem.blocks, "values of B")->delimiter(',')->check(CLI::PositiveNumber);
  bm->add_option("--out", bmem.out, "directory for memory.json and the rows' runs");
  bm->add_option("--row", bmem.row, "internal: one configuration")->group("");

  ProfileArgs prof;
  auto* pr = app.add_subcommand("profile", "profile training steps (or `profile linear`): ops, phases, MFU, trace");
  pr->add_option("target", prof.target, "config file or run directory (uses its config.toml)");
  pr->add_option("--steps", prof.steps, "profiled steps (after warm-up)")->check(CLI::PositiveNumber);
  pr->add_option("--mode", prof.mode, "e2e or blocks (default: the config's)")->check(CLI::IsMember({"e2e", "blocks"}));
  pr->add_option("--out", prof.out, "output directory for ops.json and trace.json");
  pr->add_option("--set", prof.overrides, "override a key: section.key=value (repeatable)");
  pr->add_option("--peak", prof.peak, "peak file of `blocklab bench peak` (default ~/.cache/blocklab/peak.json)");
  pr->add_option("--warmup", prof.warmup, "warm-up steps (default: three rounds of blocks, 3 end-to-end)");
  pr->add_option("--top", prof.top, "rows of the printed table")->check(CLI::PositiveNumber);
  pr->add_flag("--libtorch-ops", prof.libtorch_ops, "libtorch's ops instead of the fused CPU kernels (to compare)");
  pr->add_flag("!--no-peak-around", prof.peak_around,
               "skip measuring the GEMM peak just before and after the steps (~1-2 s; the MFU then uses the peak file's only)");
  ProfileLinearArgs plin;
  auto* pl = pr->add_subcommand("linear", "y = x W + b: matmul + add vs fused addmm, forward and backward, roofline");
  pl->add_option("--sizes", plin.sizes, "n of x [batch, n] and W [n, n]")->delimiter(',')->check(CLI::PositiveNumber);
  pl->add_option("--batch", plin.batches, "rows of x (default: n, at most 1024)")->delimiter(',')->check(CLI::PositiveNumber);
  pl->add_option("--threads", plin.threads, "intra-op threads")->check(CLI::PositiveNumber);
  pl->add_option("--seconds", plin.seconds, "time spent per row")->check(CLI::PositiveNumber);
  pl->add_option("--peak", plin.peak, "peak file (default ~/.cache/blocklab/peak.json)");
  pl->add_option("--out", plin.out, "also write the rows as JSON to this file");

  BenchPeakArgs bpeak;
  auto* bp = bench->add_subcommand("peak", "this machine's fp32 FLOP/s and memory bandwidth, saved for the profiler");
  bp->add_option("--threads", bpeak.threads, "thread counts to measure")->delimiter(',')->check(CLI::PositiveNumber);
  bp->add_option("--out", bpeak.out, "peak file to write (default ~/.cache/blocklab/peak.json)");
  bp->add_flag("--quick", bpeak.quick, "about a second per thread count instead of several");
  BenchGemmArgs bgemm;
  auto* bg = bench->add_subcommand("gemm", "blocklab's GEMM against libtorch's mm on one layer's products, alternating");
  bg->add_option("--rows", bgemm.rows, "tokens in a batch (default 2176: the default recipe's 128 x 17)")
      ->check(CLI::PositiveNumber);
  bg->add_option("--hidden", bgemm.hidden, "model width d")->check(CLI::PositiveNumber);
  bg->add_option("--mlp-ratio", bgemm.mlp_ratio, "MLP width / d")->check(CLI::PositiveNumber);
  bg->add_option("--threads", bgemm.threads, "threads of both")->check(CLI::PositiveNumber);
  bg->add_option("--rounds", bgemm.rounds, "alternating rounds per product")->check(CLI::PositiveNumber);
  bg->add_flag("--cold", bgemm.cold, "each call after the caches are flushed (a step's layers leave a product's operands cold)");
  BenchAttentionArgs battn;
  auto* ba = bench->add_subcommand("attention", "the fused attention's two kernels and libtorch's ops on the recipes' shapes, alternating");
  ba->add_option("--threads", battn.threads, "threads")->check(CLI::PositiveNumber);
  ba->add_option("--rounds", battn.rounds, "alternating rounds per shape")->check(CLI::PositiveNumber);
  BenchOverheadArgs bover;
  auto* bo = bench->add_subcommand("profiler-overhead", "step time with and without the profiler, interleaved");
  bo->add_option("--config", bover.config, "config file (default: the built-in recipe)")->check(CLI::ExistingFile);
  bo->add_option("--set", bover.overrides, "override a key (repeatable)");
  bo->add_option("--mode", bover.mode, "e2e or blocks (default: the config's)")->check(CLI::IsMember({"e2e", "blocks"}));
  bo->add_option("--rounds", bover.rounds, "rounds of (plain, profiled) steps")->check(CLI::PositiveNumber);
  bo->add_option("--steps", bover.steps, "steps per arm and round")->check(CLI::PositiveNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& err) {
    // A usage error is a user error: one line, exit 1 (README), not CLI11's own codes.
    fmt::print(stderr, "error: {} (see `blocklab --help`)\n", err.what());
    return 1;
  }
  try {
    if (*t) return cmd_train(train);
    if (*la) return cmd_launch(launch);
    if (*e) return cmd_eval(run_dir, eval_overrides);
    if (*d) return cmd_demo(demo);
    if (*ps) return cmd_probe_random_step(prs);
    if (*sa) return cmd_sample(sample);
    if (*ge) return cmd_generate(gen);
    if (*rp) return cmd_report(report);
    if (*ju) return cmd_judge(judge);
    if (*fa) return cmd_fd(fd);
    if (*bs) return cmd_bench_step(bstep);
    if (*bm) return cmd_bench_memory(bmem);
    if (*bt) return cmd_bench_twin(btwin);
    if (*pl) return cmd_profile_linear(plin);
    if (*pr) {
      if (prof.target.empty()) throw UserError("profile: give a config file or a run directory (or `profile linear`)");
      return cmd_profile(prof);
    }
    if (*bp) return cmd_bench_peak(bpeak);
    if (*bo) return cmd_bench_profiler_overhead(bover);
    if (*bg) return cmd_bench_gemm(bgemm);
    if (*ba) return cmd_bench_attention(battn);
  } catch (const UserError& err) {
    fmt::print(stderr, "error: {}\n", err.what());
    return 1;
  } catch (const c10::Error& err) {
    fmt::print(stderr, "error: {}\n", err.what_without_backtrace());
    return 2;
  } catch (const std::exception& err) {
    fmt::print(stderr, "error: {}\n", err.what());
    return 2;
  }
  return 0;
}
