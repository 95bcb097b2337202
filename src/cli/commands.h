// The subcommands of the `blocklab` tool. Each parses nothing itself (main.cpp does, with
// CLI11) and returns the process exit code.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace blocklab {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;  // section.key=value
  std::string out;                     // default: runs/<config name>-<mode>
  bool resume = false, plain = false;
  std::string tag = "train";
  long long stop_after = -1;
  long long parent_pid = 0;  // end with this process (demo's children): a parent-death signal
  int block = -1;            // train this block alone, in <out>/blocks/<block>
  bool distributed = false;  // join a distributed run from the environment (torchrun, Slurm, blocklab launch)
  bool report = false;       // keep <out>/report.html current (after every evaluation and checkpoint)
};
int cmd_train(const TrainArgs& a);

struct LaunchArgs {
  int procs = 0;
  std::string config;
  std::vector<std::string> overrides;
  std::string out;
  bool resume = false;
};
/// Starts `procs` training processes on this machine, one per block, joined by c10d.
int cmd_launch(const LaunchArgs& a);

int cmd_eval(const std::string& run_dir, const std::vector<std::string>& overrides);

/// What `sample` and `fd` share: the run and how to sample it (empty or 0: the run's config).
struct SamplerArgs {
  std::string run_dir;
  std::vector<std::string> overrides;
  int steps = 0;
  std::string sampler, schedule;
  std::optional<double> guidance;
  long long seed = 0;
  bool raw_weights = false;  // the raw weights instead of their moving average
};

struct SampleArgs {
  SamplerArgs sampler;
  long long n = 64;
  long long label = -1;  // one class only; -1: one class per row
  std::string out = "samples.png";
};
/// Writes a PNG grid of generated images.
int cmd_sample(const SampleArgs& a);

struct FdArgs {
  SamplerArgs sampler;
  long long n = 10000;
  std::string save_features;
};
/// Fréchet distance of generated images to the test set, into summary.json.
int cmd_fd(const FdArgs& a);

struct GenerateArgs {
  std::string run_dir;
  std::vector<std::string> overrides;
  std::string prompt;
  long long bytes = 256;
  double temperature = 1.0;
  long long seed = 0;
};
/// Continues a prompt with a language-model run, streaming to stdout.
int cmd_generate(const GenerateArgs& a);

struct JudgeArgs {
  std::string run_dir, judge_dir;
  std::vector<std::string> overrides;
  long long prompts = 128, prompt_bytes = 32, bytes = 96, batch = 32;
  double temperature = 1.0;
  long long seed = 0;
};
/// Scores a language-model run's continuations of validation prompts by an end-to-end AR judge
/// (generative bits per byte) and by distinct 4-grams, into summary.json.
int cmd_judge(const JudgeArgs& a);

struct ReportArgs {
  std::vector<std::string> runs;
  std::string out = "report.html";
  std::vector<std::string> profiles;  // more `blocklab profile` directories to show
};
/// One self-contained HTML page of one or more runs.
int cmd_report(const ReportArgs& a);

struct ProbeRandomStepArgs {
  std::vector<std::string> runs;  // run directories: end-to-end (one row) or blocks (one per block)
  int block = -1;                 // blocks runs: only this block; -1 every block
  long long directions = 100, batches = 4, seed = 0;
  std::string radius = "1";       // comma-separated multiples of the update's norm, parsed in cmd
  std::string update = "auto";    // auto (adamw when the checkpoint has moments), adamw or sgd
  double lr = -1;                 // > 0: instead of the run's schedule at the checkpoint's step
  std::string out;                // default: <first run>/probe
};
/// Loss change of one optimizer update against random directions of the same norm, per block and
/// end-to-end: a table, <out>/probe.json and <out>/random-step.png (docs/probe.md).
int cmd_probe_random_step(const ProbeRandomStepArgs& a);

struct DemoArgs {
  std::string out = "runs/demo";
  std::vector<std::string> overrides;
  bool sequential = false;
  bool force = false;  // replace a demo in `out` that ran with other settings
};
int cmd_demo(const DemoArgs& a);

struct BenchStepArgs {
  std::string config;  // optional; built-in defaults otherwise
  std::vector<std::string> overrides;
  int repeats = 10;
  bool fused_kernels = false;  // also time libtorch's ops against the fused CPU kernels
  bool libtorch_ops = false;   // measure everything on libtorch's ops instead of the fused CPU kernels
  bool separate_mlp = false;   // also time the steps with the MLP's layers separate (set_mlp_fused(false))
  bool composed_layers = false;  // also time the steps with each layer's functions composed (set_layer_function(false))
};
/// Memory and time of one training step, end-to-end against one block.
int cmd_bench_step(const BenchStepArgs& a);

struct BenchTwinArgs {
  std::string config;  // optional; built-in defaults otherwise
  std::vector<std::string> overrides;
  std::string mode = "both";  // e2e, blocks or both
  int repeats = 5;            // timed rounds per mode
  int steps = 6;              // steps of each side per round
  std::string python = "/usr/bin/python3";  // Debian's, which python3-torch installs for
  std::string twin;           // the twin script; default: bench/pytorch_twin.py of this source tree
  std::string twin_malloc = "same";  // same: the twin runs on blocklab's allocator (jemalloc); system: glibc's
  bool keep = false;          // keep the fixture directory (to run the twin by hand)
  bool libtorch_ops = false;  // blocklab on libtorch's ops, as the twin, not its fused CPU kernels
};
/// blocklab's classifier step against the same step in plain PyTorch (bench/pytorch_twin.py):
/// equal losses from equal weights, batch and seeds, then alternating timed rounds and the ratio.
int cmd_bench_twin(const BenchTwinArgs& a);

struct BenchMemoryArgs {
  std::string config;  // optional; built-in defaults with a layer-dominated shape otherwise
  std::vector<std::string> overrides;
  std::vector<int> blocks{2, 3, 4, 6};
  std::string out = "runs/bench-memory";
  std::string row;  // internal: measure this one configuration ("e2e", "shared", "resident", "independent")
};
/// Training memory per mode and B, one process per configuration, into <out>/memory.json.
int cmd_bench_memory(const BenchMemoryArgs& a);

struct ProfileArgs {
  std::string target;  // a TOML config or a run directory (its config.toml)
  std::vector<std::string> overrides;
  std::string mode;    // "e2e" or "blocks"; empty: the config's
  std::string out;     // default: <run>/profile-<mode> or runs/profile-<config>-<mode>
  std::string peak;    // peak file; default: default_peak_path()
  int steps = 6, warmup = -1, top = 25;
  bool libtorch_ops = false;  // libtorch's ops instead of the fused CPU kernels (the "before" profile)
  bool peak_around = true;    // also measure the GEMM peak just before and after the steps
};
/// Profiles training steps: ops table, phases, MFU, ops.json and trace.json.
int cmd_profile(const ProfileArgs& a);

struct ProfileLinearArgs {
  std::vector<long long> sizes{16, 64, 256, 1024, 4096};
  std::vector<long long> batches;  // empty: batch = size, at most 1024
  int threads = 1;
  double seconds = 0.2;
  std::string peak, out;
};
/// y = x W + b: separate vs fused, forward and backward, on a roofline.
int cmd_profile_linear(const ProfileLinearArgs& a);

struct BenchPeakArgs {
  std::vector<int> threads{1, 2};
  std::string out;  // default: default_peak_path()
  bool quick = false;
};
/// Measures fp32 FLOP/s (GEMM, FMA loop) and memory bandwidth per thread count; saves them.
int cmd_bench_peak(const BenchPeakArgs& a);

struct BenchGemmArgs {
  int64_t rows = 2176, hidden = 64, mlp_ratio = 4;  // rows: the default recipe's 128 x 17 tokens
  int threads = 1, rounds = 9;
  bool cold = false;  // each call with its operands out of the caches, as in a training step
};
/// blocklab's GEMM against libtorch's mm on one transformer layer's products, alternating.
int cmd_bench_gemm(const BenchGemmArgs& a);

struct BenchAttentionArgs {
  int threads = 1, rounds = 7;
};
/// The fused attention's two kernels and libtorch's ops on the recipes' shapes, alternating.
int cmd_bench_attention(const BenchAttentionArgs& a);

struct BenchOverheadArgs {
  std::string config;
  std::vector<std::string> overrides;
  std::string mode;
  int rounds = 12, steps = 6;  // steps: as many as `blocklab profile` profiles by default
};
/// Step time with and without the profiler, interleaved.
int cmd_bench_profiler_overhead(const BenchOverheadArgs& a);

}  // namespace blocklab
