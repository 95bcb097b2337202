// Nothing lost on a signal, one process per run directory, demo's children end with it, strict
// checkpoints and weights, and command-line errors on one line with exit 1.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "io/run_dir.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "train/trainer.h"

namespace blocklab {
namespace {

namespace fs = std::filesystem;
using test::Contains;
using test::expect_one_line_error;
using test::quote;
using test::run_cli;
using test::TempDir;
using test::ThrowsUserError;

// Starts `blocklab ARGS` in the background (stdout and stderr to `log`); returns its pid.
pid_t start_cli(const std::string& args, const std::string& log) {
  const std::string cmd = "exec " + quote(test::blocklab_bin()) + " " + args + " >" + quote(log) + " 2>&1";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Polls `ready` every 20 ms for up to 60 s.
bool eventually(const std::function<bool()>& ready) {
  for (int i = 0; i < 3000; ++i) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

pid_t lock_holder(const std::string& dir) {
  const auto text = test::read_bytes(dir + "/.lock");
  return text.empty() ? 0 : pid_t(std::stol(text));
}

// A run long enough to be stopped in the middle: 2 epochs of the tiny blocks recipe.
Config slow_config() {
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.train.epochs = 6;
  cfg.train.log_every = 5;
  cfg.train.checkpoint_every = 100000;  // only the signal writes a checkpoint before the end
  cfg.data.test_limit = 50;
  return cfg;
}

TEST(Signals, SigtermAndSighupCheckpointAndResumeEndsByteIdentical) {
  TempDir dir;
  const Config cfg = slow_config();
  const auto cfg_path = dir.file("slow.toml");
  test::write_bytes(cfg_path, cfg.to_toml());
  train(cfg, test::train_options(dir.file("full")));
  for (int sig : {SIGTERM, SIGHUP}) {
    SCOPED_TRACE(strsignal(sig));
    const auto run = dir.file(std::string("run") + std::to_string(sig));
    const pid_t pid = start_cli("train " + quote(cfg_path) + " --plain-progress --out " + quote(run), dir.file("log"));
    ASSERT_TRUE(eventually([&] { return fs::exists(run + "/metrics.jsonl") && fs::file_size(run + "/metrics.jsonl") > 0; }));
    ::kill(pid, sig);
    EXPECT_EQ(wait_exit(pid), 128 + sig) << test::read_bytes(dir.file("log"));
    ASSERT_TRUE(fs::exists(run + "/checkpoint.safetensors")) << test::read_bytes(dir.file("log"));
    EXPECT_FALSE(fs::exists(run + "/model.safetensors")) << "stopped before the end";
    const auto r = run_cli("train " + quote(cfg_path) + " --plain-progress --resume --out " + quote(run), dir);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(test::read_bytes(run + "/model.safetensors"), test::read_bytes(dir.file("full/model.safetensors")));
  }
}

TEST(RunDirectory, OneTrainerAtATime) {
  TempDir dir;
  const auto run = dir.file("run");
  const auto lock = RunDir(run).lock();
  std::string msg;
  EXPECT_TRUE(ThrowsUserError([&] { train(slow_config(), test::train_options(run)); }, {run, std::to_string(::getpid())}, &msg));
  EXPECT_FALSE(fs::exists(run + "/metrics.jsonl"));
  EXPECT_TRUE(ThrowsUserError([&] { RunDir(run).lock(); }, {"pid " + std::to_string(::getpid())}));
}

TEST(RunDirectory, TemporariesOfDeadProcessesAreRemoved) {
  TempDir dir;
  pid_t dead = 4000000;  // above most systems' pid range; checked below
  while (::kill(dead, 0) == 0 || errno != ESRCH) ++dead;
  const auto stale = dir.file("checkpoint.safetensors.tmp." + std::to_string(dead));
  const auto live = dir.file("summary.json.tmp.1");  // pid 1 is alive: its writer may still finish
  test::write_bytes(stale, "half a file");
  test::write_bytes(live, "someone's file");
  test::write_bytes(dir.file("notes.tmp.txt"), "not ours");
  { const auto lock = RunDir(dir.path()).lock(); }
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(dir.file("notes.tmp.txt")));
}

std::string tiny_demo_args(const std::string& out, int epochs) {
  std::string sets = " --set data.dir=" + quote(test::synthetic_data_dir());
  for (const char* kv : {"model.layers=3", "model.hidden=32", "model.heads=2", "model.mlp_ratio=2", "model.cond_dim=16",
                         "train.batch_size=32", "data.test_limit=50", "train.log_every=5"})
    sets += std::string(" --set ") + kv;
  return "demo --out " + quote(out) + sets + " --set train.epochs=" + std::to_string(epochs);
}

TEST(Demo, ChildrenEndWithTheDemo) {
  TempDir dir;
  for (int sig : {SIGTERM, SIGKILL}) {
    SCOPED_TRACE(strsignal(sig));
    const auto out = dir.file(std::string("demo") + std::to_string(sig));
    const pid_t demo = start_cli(tiny_demo_args(out, 40), dir.file("log"));
    pid_t children[2] = {0, 0};
    ASSERT_TRUE(eventually([&] {
      for (int i = 0; i < 2; ++i) {
        const auto run = out + (i == 0 ? "/e2e" : "/blocks");
        if (fs::exists(run + "/metrics.jsonl")) children[i] = lock_holder(run);
      }
      return children[0] > 0 && children[1] > 0;
    })) << test::read_bytes(dir.file("log"));
    ::kill(demo, sig);
    const int code = wait_exit(demo);
    EXPECT_EQ(code, 128 + sig) << test::read_bytes(dir.file("log"));
    EXPECT_TRUE(eventually([&] { return !alive(children[0]) && !alive(children[1]); })) << "children outlived the demo";
    // Both stopped politely: a checkpoint each.
    EXPECT_TRUE(fs::exists(out + "/e2e/checkpoint.safetensors"));
    EXPECT_TRUE(fs::exists(out + "/blocks/checkpoint.safetensors"));
  }
}

TEST(Demo, ReplacingADemoWithOtherSettingsNeedsForce) {
  TempDir dir;
  const auto out = dir.file("demo");
  auto r = run_cli(tiny_demo_args(out, 1), dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto summary = test::read_bytes(out + "/blocks/summary.json");
  r = run_cli(tiny_demo_args(out, 2), dir);
  expect_one_line_error(r, {out, "--force"}, false);
  EXPECT_EQ(test::read_bytes(out + "/blocks/summary.json"), summary) << "the refused demo touched the old one";
  r = run_cli(tiny_demo_args(out, 2) + " --force", dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(test::read_bytes(out + "/blocks/summary.json"), summary);
}

// Rewrites a checkpoint's metadata field.
void set_metadata(const std::string& path, const std::string& key, const std::string& value) {
  std::map<std::string, std::string> meta;
  const auto tensors = load_safetensors(path, &meta);
  meta[key] = value;
  save_safetensors(path, tensors, meta);
}

TEST(Checkpoint, MetadataIsValidatedAndAFailedResumeDestroysNothing) {
  TempDir dir;
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.train.epochs = 1;
  cfg.train.log_every = 5;
  cfg.data.test_limit = 20;
  auto opts = test::train_options(dir.file("run"));
  opts.stop_after = 7;
  train(cfg, opts);
  const auto checkpoint = dir.file("run/checkpoint.safetensors");
  const auto metrics = test::read_bytes(dir.file("run/metrics.jsonl"));
  ASSERT_FALSE(metrics.empty());
  const auto original = test::read_bytes(checkpoint);
  auto resume = test::train_options(dir.file("run"));
  resume.resume = true;
  for (const auto& [step, needle] : std::vector<std::pair<std::string, std::string>>{
           {"100000", "beyond"}, {"-3", "metadata"}, {"seven", "metadata"}, {"7x", "metadata"}}) {
    test::write_bytes(checkpoint, original);
    set_metadata(checkpoint, "step", step);
    EXPECT_TRUE(ThrowsUserError([&] { train(cfg, resume); }, {checkpoint, needle})) << step;
    EXPECT_EQ(test::read_bytes(dir.file("run/metrics.jsonl")), metrics) << "a refused resume changed metrics.jsonl";
    EXPECT_FALSE(fs::exists(dir.file("run/summary.json")));
  }
  // Exactly the expected tensors: an unknown extra tensor of any kind is refused.
  for (const char* extra : {"model.shared.unknown", "optim.shared.head.weight.momentum", "notes"}) {
    test::write_bytes(checkpoint, original);
    std::map<std::string, std::string> meta;
    auto tensors = load_safetensors(checkpoint, &meta);
    tensors[extra] = torch::zeros({1});
    save_safetensors(checkpoint, tensors, meta);
    EXPECT_TRUE(ThrowsUserError([&] { train(cfg, resume); }, {checkpoint, "unexpected"})) << extra;
  }
  // A checkpoint of another run (another seed) is refused, naming both.
  test::write_bytes(checkpoint, original);
  Config other = cfg;
  other.train.seed = 99;
  set_metadata(checkpoint, "config", other.to_toml());
  EXPECT_TRUE(ThrowsUserError([&] { train(cfg, resume); }, {checkpoint, "another run", "seed 99", "seed 3"}));
  test::write_bytes(checkpoint, original);
  train(cfg, resume);  // the intact checkpoint still resumes
  EXPECT_TRUE(fs::exists(dir.file("run/summary.json")));
}

TEST(Eval, RefusesWeightsOfAnotherRunAndOverridesThatDefineTheWeights) {
  TempDir dir;
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.train.epochs = 1;
  cfg.data.train_limit = 64;
  cfg.data.test_limit = 20;
  train(cfg, test::train_options(dir.file("blocks")));
  cfg.set("model.mode=e2e");
  train(cfg, test::train_options(dir.file("e2e")));
  const auto run = dir.file("blocks");
  auto r = run_cli("eval " + quote(run) + " --set model.mode=e2e", dir);
  expect_one_line_error(r, {"model.mode", "cannot change at evaluation"}, true);
  r = run_cli("eval " + quote(run) + " --set classifier.inference_temperature=1 --set data.test_limit=10", dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // An end-to-end model copied into a blocks run is refused, naming both.
  fs::copy_file(dir.file("e2e/model.safetensors"), run + "/model.safetensors", fs::copy_options::overwrite_existing);
  r = run_cli("eval " + quote(run), dir);
  expect_one_line_error(r, {"model.safetensors", "e2e mode", "blocks mode"}, true);
}

TEST(Cli, UsageErrorsAreOneLineAndExitOne) {
  TempDir dir;
  for (const std::string& args : {std::string("train ") + quote(dir.file("absent.toml")), std::string("train"),
                                  std::string("train --no-such-flag x.toml"), std::string("frobnicate"),
                                  std::string("bench step --repeats 0")}) {
    SCOPED_TRACE(args);
    expect_one_line_error(run_cli(args, dir), {}, true);
  }
  const auto help = run_cli("train --help", dir);
  EXPECT_EQ(help.exit_code, 0);
}

}  // namespace
}  // namespace blocklab
