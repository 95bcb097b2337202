// `blocklab bench twin`: blocklab's classifier training step against the same step written in
// plain PyTorch (bench/pytorch_twin.py on Debian's python3-torch, i.e. on the libtorch 1.13 that
// blocklab links). The twin first shows that it does the same work: from the same weights, batch
// and seeds it must reach blocklab's losses, gradient norms and updated weights over two steps.
// Then, per mode, N steps of blocklab and N steps of the twin alternate round after round in one
// invocation, so that this machine's drifting speed (README) moves both sides alike, and the
// medians and their ratio are printed. The twin is one process, kept alive, spoken to in lines.
#include <dlfcn.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/spawn.h"
#include "families/classifier/classifier.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "train/synthetic.h"
#include "util/error.h"
#include "util/seed.h"
#include "util/simd.h"
#include "util/stats.h"
#include "util/system.h"

namespace blocklab {

namespace fs = std::filesystem;  // as profile.cpp declares it: one unity translation unit holds both

namespace {

// Equal work: float32 sums taken in another order (blocklab's fused attention against libtorch's
// matmul and softmax) move a loss by about 1e-7 relative; any other computation moves it by far more.
constexpr double kLossTolerance = 1e-5;
// The gradient norm: seen at 4e-7 at most; tanh's GELU for erf's moves it by 3e-5 (and the loss by
// only 1.4e-6), so this is the finer of the two checks.
constexpr double kNormTolerance = 1e-5;
// Weights after the steps: the fraction of those that moved which ended further from blocklab's
// than 1e-4 of their update. Weights with a true gradient of zero (the attention keys' biases)
// move as rounding says, a few per thousand; a different optimizer step moves most elsewhere.
// Seen: 0.1-0.4%; without weight decay 95%.
constexpr double kOffTolerance = 0.02;
// The second check step starts from weights that the first one's clipping and AdamW moved, so
// the optimizer's arithmetic is checked too, not only the loss.
constexpr int kCheckSteps = 2;
// Noise added to the fixture's weights, see perturb().
constexpr double kWeightNoise = 0.1;

double relative(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

std::vector<std::string> words_of(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

void refuse_what_the_twin_lacks(const Config& cfg) {
  if (cfg.model.family != FamilyKind::Classifier)
    throw UserError(fmt::format("bench twin: the twin mirrors the classifier family only (model.family = \"{}\")",
                                to_string(cfg.model.family)));
  if (cfg.train.device != "cpu")
    throw UserError(fmt::format("bench twin: the twin runs on the CPU only (train.device = \"{}\")", cfg.train.device));
  if (cfg.train.shared != SharedModules::Synced)
    throw UserError("bench twin: the twin mirrors shared input/output modules only (train.shared = \"synced\")");
}

// bench/pytorch_twin.py of the source tree this binary was built in (the build directory sits in
// it), else of the working directory.
std::string find_twin(const std::string& given) {
  if (!given.empty()) return given;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (const fs::path& root : {exe.parent_path().parent_path(), fs::current_path()})
    if (fs::exists(root / "bench" / "pytorch_twin.py")) return (root / "bench" / "pytorch_twin.py").string();
  throw UserError("bench twin: bench/pytorch_twin.py is neither beside the build directory nor here; give --twin PATH");
}

// The twin's environment: blocklab's thread count for every pool libtorch may use and, by
// default, blocklab's own allocator (jemalloc, linked into the executable, with the decay
// settings main.cpp gives it), so that the ratio compares the steps' code and not two
// allocators (glibc's pays 30-45% of GEMM time in page faults here, CMakeLists.txt). Returns
// what the twin's allocator is, in words.
std::string twin_environment(int threads, bool same_malloc, std::map<std::string, std::string>& env) {
  for (const char* pool : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"})
    env[pool] = std::to_string(threads);
  if (!same_malloc) return "the system's malloc (--twin-malloc system)";
  using Mallctl = int (*)(const char*, void*, size_t*, void*, size_t);
  auto mallctl = reinterpret_cast<Mallctl>(dlsym(RTLD_DEFAULT, "mallctl"));
  Dl_info library{};
  if (!mallctl || !dladdr(reinterpret_cast<void*>(mallctl), &library) || !library.dli_fname)
    return "the system's malloc, as blocklab (built without jemalloc)";
  std::string conf;
  for (const char* key : {"dirty_decay_ms", "muzzy_decay_ms"}) {
    ssize_t value = 0;
    size_t size = sizeof value;
    if (mallctl(fmt::format("opt.{}", key).c_str(), &value, &size, nullptr, 0) == 0)
      conf += fmt::format("{}{}:{}", conf.empty() ? "" : ",", key, value);
  }
  env["LD_PRELOAD"] = library.dli_fname;
  env["MALLOC_CONF"] = conf;
  return fmt::format("blocklab's jemalloc ({}, {})", library.dli_fname, conf);
}

// A fresh directory under $TMPDIR for the fixture, removed at the end unless kept.
struct FixtureDir {
  fs::path path;
  bool keep;
  explicit FixtureDir(bool keep_) : keep(keep_) {
    std::string pattern = (fs::temp_directory_path() / "blocklab-twin-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw UserError(fmt::format("bench twin: cannot create {}", pattern));
    path = pattern;
  }
  ~FixtureDir() {
    std::error_code ec;
    if (!keep) fs::remove_all(path, ec);
  }
};

// The Python twin, one process for the whole run.
class Twin {
 public:
  Twin(const std::string& python, const std::string& script, const fs::path& fixture, int threads,
       const std::map<std::string, std::string>& env)
      : stderr_path_((fixture / "twin.stderr").string()), child_(start(python, script, fixture, threads, env)) {
    hello_ = ask("", "ready");
  }
  /// Sends `command` (none if empty) and returns the words of the reply after `expect`.
  /// UserError with the twin's own message if it answers "error ...", or if it has ended.
  std::vector<std::string> ask(const std::string& command, const std::string& expect) {
    if (!command.empty() && !child_->send(command)) gone();
    const auto line = child_->receive();
    if (!line) gone();
    auto words = words_of(*line);
    if (!words.empty() && words[0] == "error") throw UserError("bench twin: " + line->substr(6));
    if (words.empty() || words[0] != expect)
      throw UserError(fmt::format("bench twin: the twin answered `{}` to `{}`", *line, command));
    words.erase(words.begin());
    return words;
  }
  const std::vector<std::string>& hello() const { return hello_; }
  ~Twin() {
    if (child_) child_->send("quit");
  }

 private:
  static std::unique_ptr<LineChild> start(const std::string& python, const std::string& script, const fs::path& fixture,
                                          int threads, const std::map<std::string, std::string>& env) {
    try {
      return std::make_unique<LineChild>(
          std::vector<std::string>{python, script, fixture.string(), "--threads", std::to_string(threads)},
          "the PyTorch twin", env, (fixture / "twin.stderr").string());
    } catch (const UserError& e) {
      throw UserError(fmt::format("bench twin: {} (apt-get install python3-torch, or give --python)", e.what()));
    }
  }
  [[noreturn]] void gone() {
    const int status = child_->finish();
    std::ifstream err(stderr_path_);
    std::string last;
    for (std::string line; std::getline(err, line);)
      if (!line.empty()) last = line;
    const auto how = WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                                       : fmt::format("signal {}", WTERMSIG(status));
    throw UserError(fmt::format("bench twin: the PyTorch twin ended ({}){}", how, last.empty() ? "" : ": " + last));
  }

  std::string stderr_path_;
  std::unique_ptr<LineChild> child_;
  std::vector<std::string> hello_;
};

// At initialization adaLN-Zero makes every layer the identity and the head zero: the loss is
// ln(K) whatever the layers compute, and a check there would prove nothing. Noise on every
// parameter makes every path count (modulations, gates, attention, MLP, head).
void perturb(torch::nn::Module& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto& p : model.parameters()) p.add_(torch::randn_like(p), kWeightNoise);
}

TensorMap parameters_of(torch::nn::Module& model) {
  TensorMap out;
  for (const auto& item : model.named_parameters()) out[item.key()] = item.value().detach();
  return out;
}

// What the twin reads once, whatever the mode: the resolved config, the data's shape, AdamW's
// constants, and blocklab's noise ranges and decayed parameters (the twin derives both itself and
// refuses to run if it finds others).
void write_common(const fs::path& dir, const Config& cfg, SyntheticTraining& t) {
  auto& clf = dynamic_cast<DenoisingClassifier&>(t.family());
  const auto& o = clf.vit()->opt;
  const AdamWOptions adam;
  nlohmann::json j;
  j["data"] = {{"channels", o.channels}, {"height", o.height}, {"width", o.width}, {"classes", o.classes}};
  j["adamw"] = {{"beta1", adam.beta1}, {"beta2", adam.beta2}, {"eps", adam.eps}};
  j["ranges"] = nlohmann::json::array();
  for (int b = 0; b < cfg.model.blocks; ++b) {
    const auto r = clf.partition().range(b);
    j["ranges"].push_back({r.lo, r.hi});
  }
  const auto opt = make_optimizer(clf.model(), cfg);
  j["decayed"] = nlohmann::json::array();
  for (const auto& [name, p] : opt.params())
    if (opt.decays(name)) j["decayed"].push_back(name);
  write_file_atomic((dir / "config.toml").string(), cfg.to_toml());
  write_file_atomic((dir / "fixture.json").string(), j.dump(2) + "\n");
}

std::string step_words(const Config& cfg, int64_t first, int n) {
  std::string out;
  for (int64_t s = first; s < first + n; ++s) out += fmt::format(" {}:{}", block_for_step(cfg, s), step_seed(cfg, s));
  return out;
}

// Both sides take the same steps from the same weights; fails (UserError) unless they agree.
// The fixture: <dir>/weights.safetensors (the perturbed weights), batch.safetensors (x, y),
// after.safetensors (blocklab's weights after the steps), check.json (its losses and norms).
void check_equal_work(SyntheticTraining& t, Twin& twin, const Config& cfg, const fs::path& dir, const char* mode) {
  fs::create_directories(dir);
  perturb(t.family().model(), derive_seed(uint64_t(cfg.train.seed), Stream::Synthetic, 1));
  save_safetensors((dir / "weights.safetensors").string(), parameters_of(t.family().model()));
  save_safetensors((dir / "batch.safetensors").string(), {{"x", t.batch().x}, {"y", t.batch().y}});
  const int64_t first = t.steps_taken();
  nlohmann::json record = nlohmann::json::array();
  std::vector<StepStats> ours;
  for (int i = 0; i < kCheckSteps; ++i) {
    ours.push_back(t.step());
    record.push_back({{"step", first + i}, {"block", ours.back().block}, {"seed", step_seed(cfg, first + i)},
                      {"loss", ours.back().loss}, {"grad_norm", ours.back().grad_norm}});
  }
  save_safetensors((dir / "after.safetensors").string(), parameters_of(t.family().model()));
  write_file_atomic((dir / "check.json").string(), nlohmann::json{{"steps", record}}.dump(2) + "\n");

  twin.ask("load " + dir.string(), "ok");
  const auto theirs = twin.ask("run" + step_words(cfg, first, kCheckSteps), "done");
  const double off = std::stod(twin.ask("diff " + (dir / "after.safetensors").string(), "diff").at(0));
  for (int i = 0; i < kCheckSteps; ++i) {
    const double loss = std::stod(theirs.at(size_t(1 + 2 * i))), norm = std::stod(theirs.at(size_t(2 + 2 * i)));
    const auto& s = ours[size_t(i)];
    const std::string step = s.block < 0 ? fmt::format("step {}", i) : fmt::format("step {} (block {})", i, s.block);
    fmt::print("  {:<6} {:<16} loss blocklab {:<12.8g} twin {:<12.8g} rel diff {:.1e}; grad norm rel diff {:.1e}\n",
               mode, step, s.loss, loss, relative(loss, s.loss), relative(norm, s.grad_norm));
    if (!(relative(loss, s.loss) <= kLossTolerance))
      throw UserError(fmt::format("bench twin: {} {}: the twin's loss {:.8g} differs from blocklab's {:.8g} by {:.1e} "
                                  "relative (tolerance {:.0e}): not the same computation",
                                  mode, step, loss, s.loss, relative(loss, s.loss), kLossTolerance));
    if (!(relative(norm, s.grad_norm) <= kNormTolerance))
      throw UserError(fmt::format("bench twin: {} {}: the twin's gradient norm {:.8g} differs from blocklab's {:.8g} "
                                  "by {:.1e} relative (tolerance {:.0e}): not the same gradients",
                                  mode, step, norm, s.grad_norm, relative(norm, s.grad_norm), kNormTolerance));
  }
  fmt::print("  {:<6} weights after {} steps: {:.2f}% of those that moved differ from blocklab's by more than 1e-4 "
             "of their update\n", mode, kCheckSteps, 100 * off);
  if (!(off <= kOffTolerance))
    throw UserError(fmt::format("bench twin: {}: after {} steps {:.1f}% of the twin's updated weights differ from "
                                "blocklab's (tolerance {:.0f}%): not the same optimizer step",
                                mode, kCheckSteps, 100 * off, 100 * kOffTolerance));
}

struct Timing {
  double blocklab_ms = 0, twin_ms = 0;
  // blocklab / twin of each round (neighbours in time, so the host's slow drifts cancel): median, range
  double ratio = 0, ratio_low = 0, ratio_high = 0;
  double blocklab_loss = 0, twin_loss = 0;  // of the last step, after the same trajectory
  int64_t steps = 0;
};

// Round 0 warms up (every block's AdamW state, the allocators' pools); the median of the rest.
Timing time_alternating(SyntheticTraining& t, Twin& twin, const Config& cfg, int steps, int repeats) {
  std::vector<double> ours, theirs, ratios;
  Timing out;
  for (int r = 0; r <= repeats; ++r) {
    const int64_t first = t.steps_taken();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) out.blocklab_loss = t.step().loss;
    const double ms = 1000 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
    const auto reply = twin.ask("run" + step_words(cfg, first, steps), "done");
    out.twin_loss = std::stod(reply.at(reply.size() - 2));
    if (r == 0) continue;
    ours.push_back(ms);
    theirs.push_back(1000 * std::stod(reply.at(0)) / steps);
    ratios.push_back(ours.back() / theirs.back());
  }
  out.blocklab_ms = median(ours);
  out.twin_ms = median(theirs);
  out.ratio = median(ratios);
  out.ratio_low = *std::min_element(ratios.begin(), ratios.end());
  out.ratio_high = *std::max_element(ratios.begin(), ratios.end());
  out.steps = t.steps_taken();
  return out;
}

}  // namespace

int cmd_bench_twin(const BenchTwinArgs& a) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each line as it comes, also into a pipe: the checks take a while
  const Config cfg = Config::load(a.config, a.overrides);
  refuse_what_the_twin_lacks(cfg);
  set_threads(cfg.train.threads);
  if (a.libtorch_ops) simd::set_fused_kernels(false);  // the twin's ops: what is left is the host's work
  std::vector<Mode> modes;
  if (a.mode != "blocks") modes.push_back(Mode::E2E);
  if (a.mode != "e2e") modes.push_back(Mode::Blocks);
  const std::string script = find_twin(a.twin);
  std::map<std::string, std::string> env;
  const std::string allocator = twin_environment(cfg.train.threads, a.twin_malloc == "same", env);

  fmt::print("bench twin: {} L={} B={} d={} heads={} batch={} threads={} BLAS {}; blocklab: {}\n",
             to_string(cfg.model.family), cfg.model.layers, cfg.model.blocks, cfg.model.hidden, cfg.model.heads,
             cfg.train.batch_size, cfg.train.threads, blas_core(),
             simd::fused_kernels_enabled() ? "fused CPU kernels (" + simd::kernel_isa() + ")" : "libtorch's ops");
  FixtureDir dir(a.keep);
  std::optional<Twin> twin;
  std::vector<std::pair<Mode, Timing>> timings;
  for (const Mode mode : modes) {
    Config mcfg = cfg;
    mcfg.model.mode = mode;
    SyntheticTraining training(mcfg);
    if (!twin) {
      write_common(dir.path, cfg, training);
      twin.emplace(a.python, script, dir.path, cfg.train.threads, env);
      fmt::print("twin: {} {} ({}), on {}\n", a.python, script, fmt::join(twin->hello(), " "), allocator);
      fmt::print("equal work: {} steps from the same weights, batch and seeds (tolerances: loss {:.0e}, gradient norm "
                 "{:.0e} relative; {:.0f}% of the weights)\n", kCheckSteps, kLossTolerance, kNormTolerance,
                 100 * kOffTolerance);
    }
    try {
      check_equal_work(training, *twin, mcfg, dir.path / to_string(mode), to_string(mode));
    } catch (const UserError& e) {
      dir.keep = true;  // it reproduces the disagreement
      throw UserError(fmt::format("{}; fixture kept: {} {} {} --replay", e.what(), a.python, script, dir.path.string()));
    }
    timings.emplace_back(mode, time_alternating(training, *twin, mcfg, a.steps, a.repeats));
  }

  fmt::print("time per step, median of {} rounds of {} steps (blocklab's, then the twin's, alternating):\n", a.repeats,
             a.steps);
  fmt::print("  {:<22} {:>12} {:>12} {:>10} {:>15}\n", "", "blocklab", "twin", "ratio", "rounds' range");
  for (const auto& [mode, t] : timings)
    fmt::print("  {:<22} {:>9.2f} ms {:>9.2f} ms {:>10.3f} {:>7.3f}-{:.3f}\n",
               mode == Mode::E2E ? std::string("end-to-end") : fmt::format("one block (B={})", cfg.model.blocks),
               t.blocklab_ms, t.twin_ms, t.ratio, t.ratio_low, t.ratio_high);
  fmt::print("ratio = median over rounds of blocklab / twin in the same round (above 1: blocklab's step is slower\n"
             "than the same step in PyTorch)\n");
  for (const auto& [mode, t] : timings)
    fmt::print("{}: after {} steps on both sides, last losses blocklab {:.8g}, twin {:.8g} (rel diff {:.1e})\n",
               to_string(mode), t.steps, t.blocklab_loss, t.twin_loss, relative(t.twin_loss, t.blocklab_loss));
  if (a.keep) fmt::print("fixture kept in {}\n", dir.path.string());
  return 0;
}

}  // namespace blocklab
