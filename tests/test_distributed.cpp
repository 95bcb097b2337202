// True B-times memory and parallel blocks (docs/distributed.md): the order of updates, blocks
// held alone, the resident schedule, independent blocks, and `blocklab launch` over c10d.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "families/registry.h"
#include "io/run_dir.h"
#include "test_util.h"
#include "train/assemble.h"
#include "train/checkpoint.h"
#include "train/plan.h"
#include "train/step.h"
#include "util/seed.h"

namespace blocklab {
namespace {

namespace fs = std::filesystem;
using test::Contains;
using test::quote;
using test::run_cli;
using test::TempDir;
using test::ThrowsUserError;

Config plan_config(const std::string& schedule, int blocks = 3) {
  Config cfg = test::tiny_config("blocks", "");
  cfg.model.layers = 6;
  cfg.model.blocks = blocks;
  cfg.set("train.schedule=" + schedule);
  cfg.train.block_run = 4;
  return cfg;
}

TEST(Plan, EveryScheduleGivesBlockUpdatesTheInterleavedStepsData) {
  // The interleaved schedule is the reference: block b's n-th update there happens at some global
  // step; every other schedule must feed that update the same step's batch and noise.
  const int64_t updates = 10;
  const Config interleaved = plan_config("interleaved");
  std::map<std::pair<int, int64_t>, int64_t> reference;  // (block, n) -> data step
  std::vector<int64_t> seen(3, 0);
  const Plan ref(interleaved, updates);
  ASSERT_EQ(ref.size(), 30);
  for (int64_t p = 0; p < ref.size(); ++p) {
    const auto u = ref.at(p).at(0);
    EXPECT_EQ(u.n, seen[size_t(u.block)]++);
    EXPECT_EQ(u.data_step, p);
    reference[{u.block, u.n}] = p;
    EXPECT_EQ(data_step_of(interleaved, u.block, u.n), p);
  }
  for (const auto* schedule : {"resident", "rounds"}) {
    const Config cfg = plan_config(schedule);
    std::set<std::pair<int, int64_t>> done;
    const Plan plan(cfg, updates);
    for (int64_t p = 0; p < plan.size(); ++p)
      for (const auto& u : plan.at(p)) {
        EXPECT_TRUE(done.insert({u.block, u.n}).second) << schedule << ": update made twice";
        EXPECT_EQ(u.data_step, reference.at({u.block, u.n})) << schedule;
        EXPECT_EQ(u.lr_step, u.n * 3) << schedule;
      }
    EXPECT_EQ(done.size(), 30u) << schedule;
  }
  for (int b = 0; b < 3; ++b) {
    const Plan alone(interleaved, updates, b);
    ASSERT_EQ(alone.size(), updates);
    for (int64_t n = 0; n < updates; ++n) EXPECT_EQ(alone.at(n).at(0).data_step, reference.at({b, n}));
  }
}

TEST(Plan, ResidentScheduleRunsEachBlockInTurnsOfBlockRun) {
  const Config cfg = plan_config("resident");  // block_run 4, 10 updates: turns of 4, 4, then 2
  const Plan plan(cfg, 10);
  std::vector<int> order;
  for (int64_t p = 0; p < plan.size(); ++p) order.push_back(plan.at(p).at(0).block);
  const std::vector<int> expected = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                     0, 0, 1, 1, 2, 2};
  EXPECT_EQ(order, expected);
  EXPECT_EQ(Plan(plan_config("rounds"), 10).at(3).size(), 3u);  // a round is every block's update
}

TEST(Config, BlockSchedulesAreRefusedWhereTheyMeanNothing) {
  Config cfg = test::tiny_config("e2e", "");
  cfg.set("train.schedule=resident");
  EXPECT_TRUE(ThrowsUserError([&] { cfg.validate(); }, {"train.schedule", "e2e"}));
  cfg = test::tiny_config("blocks", "");
  cfg.set("train.schedule=rounds");
  cfg.set("train.shared=independent");
  EXPECT_TRUE(ThrowsUserError([&] { cfg.validate(); }, {"rounds", "independent"}));
}

TEST(HeldBlocks, AModelHoldingOneBlockStartsItAsTheWholeModelDoes) {
  for (const char* shared : {"synced", "independent"}) {
    Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
    cfg.set(std::string("train.shared=") + shared);
    const auto data = load_dataset(cfg);
    const auto whole = named_tensors(make_family(cfg, data, torch::kCPU)->model());
    for (int b = 0; b < 3; ++b) {
      const auto one = named_tensors(make_family(cfg, data, torch::kCPU, b)->model());
      for (const auto& [name, t] : one) {
        ASSERT_TRUE(whole.count(name)) << name;
        EXPECT_TRUE(torch::equal(t, whole.at(name))) << shared << ": " << name;
        EXPECT_TRUE(name.rfind("blocks.", 0) != 0 || name.rfind(block_prefix(b), 0) == 0) << name;
      }
      // Independent blocks own their input/output modules; synced ones share `shared.*`.
      const bool has_shared = std::any_of(one.begin(), one.end(), [](const auto& kv) { return kv.first.rfind("shared.", 0) == 0; });
      EXPECT_EQ(has_shared, std::string(shared) == "synced");
    }
  }
}

TEST(Assemble, RefusesBlocksWhoseSharedModulesDiffer) {
  TempDir dir;
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.model.layers = 2;
  cfg.model.blocks = 2;
  const auto data = load_dataset(cfg);
  const std::map<std::string, std::string> meta = {{"config", cfg.to_toml()}};
  std::vector<std::string> files;
  for (int b = 0; b < 2; ++b) {
    auto tensors = named_tensors(make_family(cfg, data, torch::kCPU, b)->model());
    files.push_back(dir.file(fmt::format("b{}.safetensors", b)));
    save_safetensors(files.back(), tensors, meta);
  }
  const auto whole = assemble_blocks(files, cfg.to_toml());
  EXPECT_EQ(whole.size(), named_tensors(make_family(cfg, data, torch::kCPU)->model()).size());
  auto tensors = load_safetensors(files[1]);
  tensors["shared.head.bias"] = tensors["shared.head.bias"] + 1;
  save_safetensors(files[1], tensors, meta);
  EXPECT_TRUE(ThrowsUserError([&] { assemble_blocks(files, cfg.to_toml()); }, {files[1], "shared.head.bias"}));
  EXPECT_TRUE(ThrowsUserError([&] { assemble_blocks({files[1], files[0]}, cfg.to_toml()); }, {"not block 0's"}));
}

TEST(SharedGradients, ARoundSumsSharedGradientsAndClipsOnTheWholeUpdatesNorm) {
  // A synchronous round of two blocks, against the formula computed by hand from each block's own
  // backward: ||g||^2 = ||g_block0||^2 + ||g_block1||^2 + ||g_shared0 + g_shared1||^2.
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.model.layers = 2;
  cfg.model.blocks = 2;
  cfg.set("train.schedule=rounds");
  cfg.train.grad_clip = 1e-3;  // small enough to clip: the scale follows the norm
  const auto data = load_dataset(cfg);
  const Plan plan(cfg, 4);
  const auto updates = plan.at(1);
  std::vector<Batch> batches;
  DataOrder order(data->size(Split::Train), cfg.train.batch_size, uint64_t(cfg.train.seed));
  for (const auto& u : updates) batches.push_back(data->batch(Split::Train, order.indices(u.data_step), torch::kCPU));

  auto reference = make_family(cfg, data, torch::kCPU);
  double squares = 0;
  std::map<std::string, torch::Tensor> shared_sum;
  for (size_t i = 0; i < updates.size(); ++i) {
    const uint64_t seed = derive_seed(uint64_t(cfg.train.seed), Stream::Step, uint64_t(updates[i].data_step));
    torch::manual_seed(seed);
    reference->loss(batches[i], updates[i].block, seed).value.backward();
    for (auto& p : reference->model().named_parameters()) {
      if (!p.value().grad().defined()) continue;
      if (p.key().rfind("shared.", 0) == 0) {
        auto g = p.value().grad().clone();
        shared_sum[p.key()] = shared_sum.count(p.key()) ? shared_sum[p.key()] + g : g;
      } else {
        squares += p.value().grad().to(torch::kFloat64).pow(2).sum().item<double>();
      }
      p.value().mutable_grad().reset();
    }
  }
  for (const auto& [name, g] : shared_sum) squares += g.to(torch::kFloat64).pow(2).sum().item<double>();

  auto family = make_family(cfg, data, torch::kCPU);
  auto opt = make_optimizer(family->model(), cfg);
  StepRunner runner(*family, opt, cfg, plan.lr_steps());
  const auto before = named_tensors(family->model());
  std::map<std::string, torch::Tensor> snapshot;
  for (const auto& [name, t] : before) snapshot[name] = t.clone();
  const auto stats = runner.run(batches, updates);
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_NEAR(stats[0].grad_norm, std::sqrt(squares), 1e-5 * std::sqrt(squares));
  EXPECT_EQ(stats[0].grad_norm, stats[1].grad_norm);
  // One AdamW step from zero moments moves every updated parameter by about lr (sign of its
  // gradient): both blocks and the shared modules moved, the shared ones once.
  const double lr = stats[0].lr;
  for (const auto& [name, t] : named_tensors(family->model())) {
    if (!t.requires_grad()) continue;
    const double moved = (t - snapshot[name]).abs().max().item<double>();
    EXPECT_LT(moved, 1.01 * lr + 1e-7) << name;
  }
}

// ------------------------------------------------------------------------- processes

struct TinyRun {
  TempDir dir;
  std::string config;
  explicit TinyRun(int blocks, double epochs = 1) : config(dir.file("tiny.toml")) {
    Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
    cfg.model.layers = blocks;
    cfg.model.blocks = blocks;
    cfg.train.epochs = epochs;
    cfg.data.train_limit = 256;  // 8 updates per block and epoch
    cfg.data.test_limit = 50;
    cfg.train.log_every = 2;
    cfg.train.block_run = 3;
    test::write_bytes(config, cfg.to_toml());
  }
  std::string run(const std::string& name) const { return dir.file(name); }
};

// The pid of the process whose command line contains every one of `needles` (0: none).
pid_t process_with_args(const std::vector<std::string>& needles) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto cmdline = test::read_bytes(entry.path().string() + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (std::all_of(needles.begin(), needles.end(), [&](const auto& n) { return Contains(cmdline, n); }) &&
        Contains(cmdline, " train "))
      return pid_t(std::stol(name));
  }
  return 0;
}

TensorMap weights_of(const std::string& run) { return load_safetensors(run + "/model.safetensors"); }

::testing::AssertionResult BitIdentical(const TensorMap& a, const TensorMap& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << a.size() << " vs " << b.size() << " tensors";
  for (const auto& [name, t] : a)
    if (!b.count(name) || !torch::equal(t, b.at(name))) return ::testing::AssertionFailure() << name << " differs";
  return ::testing::AssertionSuccess();
}

TEST(Launch, TwoRanksComputeTheSynchronousRoundsBitForBit) {
  TinyRun t(2, 4);
  auto r = run_cli("train " + quote(t.config) + " --set train.schedule=rounds --plain-progress --out " + quote(t.run("rounds")),
                   t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("launch --procs 2 " + quote(t.config) + " --out " + quote(t.run("parallel")), t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(BitIdentical(weights_of(t.run("rounds")), weights_of(t.run("parallel"))));
  const auto summary = RunDir(t.run("parallel"), false).read_json("summary.json");
  EXPECT_EQ(summary.at("processes").get<int>(), 2);
  EXPECT_EQ(summary.at("block_steps"), nlohmann::json::array({32, 32}));
  EXPECT_GT(summary.at("test_accuracy").get<double>(), 0.3) << "chance is 0.1";
  // `eval` streams the blocks from their files, one in memory at a time: the same figures as the
  // assembled model rank 0 evaluated.
  r = run_cli("eval " + quote(t.run("parallel")), t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto eval = RunDir(t.run("parallel"), false).read_json("eval.json");
  EXPECT_EQ(eval.at("test_accuracy"), summary.at("test_accuracy"));
  EXPECT_EQ(eval.at("teacher_forced"), summary.at("teacher_forced"));
}

TEST(HeldBlocks, AStreamingModelHoldsOneBlockAtATimeAndScoresAsTheWholeModel) {
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.data.test_limit = 60;
  const auto data = load_dataset(cfg);
  auto whole = make_family(cfg, data, torch::kCPU);
  const auto weights = named_tensors(whole->model());
  auto streaming = make_family(cfg, data, torch::kCPU, 0);
  load_weights(streaming->model(), [&] {
    TensorMap first;
    for (const auto& [name, t] : weights)
      if (name.rfind("blocks.", 0) != 0 || name.rfind("blocks.0.", 0) == 0) first[name] = t;
    return first;
  }(), "whole");
  std::vector<int64_t> loaded;
  streaming->stream_blocks([&](Block& block, int64_t b) {
    loaded.push_back(b);
    TensorMap own;
    for (const auto& [name, t] : weights)
      if (name.rfind(block_prefix(b), 0) == 0) own[name.substr(block_prefix(b).size())] = t;
    load_weights(*block, own, "whole");
  });
  const auto a = whole->evaluate(*data, Split::Test, 1), b = streaming->evaluate(*data, Split::Test, 1);
  EXPECT_EQ(a.headline.value, b.headline.value);
  EXPECT_EQ(a.details.dump(), b.details.dump());
  EXPECT_FALSE(loaded.empty());
  int held = 0;
  for (const auto& p : streaming->model().named_parameters())
    if (p.key().rfind("blocks.", 0) == 0 && p.key().find(".layers.0.qkv.weight") != std::string::npos) ++held;
  EXPECT_EQ(held, 1) << "one block in memory";
}

TEST(Launch, ReplicasSplitEachBlocksBatch) {
  TinyRun t(2, 4);
  const auto run = t.run("replicas");
  auto r = run_cli("launch --procs 4 " + quote(t.config) + " --out " + quote(run), t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto summary = RunDir(run, false).read_json("summary.json");
  EXPECT_EQ(summary.at("processes").get<int>(), 4);
  EXPECT_EQ(summary.at("replicas").get<int>(), 2);
  EXPECT_EQ(summary.at("block_steps"), nlohmann::json::array({32, 32}));
  EXPECT_GT(summary.at("test_accuracy").get<double>(), 0.3) << "chance is 0.1";
  r = run_cli("launch --procs 3 " + quote(t.config) + " --out " + quote(t.run("uneven")), t.dir);
  test::expect_one_line_error(r, {"--procs 3", "model.blocks = 2"}, true);
}

TEST(Launch, AKilledRankEndsTheLaunchAndItsResumeEndsAsAnUninterruptedOne) {
  TinyRun t(2, 20);  // 160 updates per block: long enough to be killed mid-run
  Config cfg = Config::from_file(t.config);
  cfg.train.checkpoint_every = 5;
  cfg.train.dist_timeout = 10;
  test::write_bytes(t.config, cfg.to_toml());
  const auto run = t.run("killed");
  const auto err = t.dir.file("launch.txt");
  const pid_t launcher = fork();
  if (launcher == 0) {
    const auto cmd = quote(test::blocklab_bin()) + " launch --procs 2 " + quote(t.config) + " --out " + quote(run) +
                     " >/dev/null 2>" + quote(err);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(run + "/blocks/1/checkpoint.safetensors") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(run + "/blocks/1/checkpoint.safetensors"));
  const pid_t rank1 = process_with_args({run, "rank 1"});
  ASSERT_GT(rank1, 0);
  ::kill(rank1, SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  int status = 0;
  ASSERT_EQ(waitpid(launcher, &status, 0), launcher);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_LT(seconds, cfg.train.dist_timeout) << "the launch must end within the configured timeout";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const auto message = test::read_bytes(err);
  EXPECT_TRUE(Contains(message, "rank 1 (block 1) was killed by signal 9")) << message;
  EXPECT_TRUE(Contains(message, "--resume")) << message;
  EXPECT_FALSE(Contains(message, "frame #")) << message;
  // Both blocks' last checkpoints are whole and load into a model holding that block.
  const auto data = load_dataset(cfg);
  for (int b = 0; b < 2; ++b) {
    auto family = make_family(cfg, data, torch::kCPU, b);
    auto opt = make_optimizer(family->model(), cfg);
    const auto state = load_checkpoint(run + fmt::format("/blocks/{}/checkpoint.safetensors", b), family->model(), opt,
                                       cfg.to_toml());
    EXPECT_GT(state.step, 0);
    EXPECT_EQ(state.step % 5, 0);
  }
  // Resumed, the launch ends where an uninterrupted one does, bit for bit.
  auto r = run_cli("launch --procs 2 " + quote(t.config) + " --out " + quote(run) + " --resume", t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("launch --procs 2 " + quote(t.config) + " --out " + quote(t.run("whole")), t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(BitIdentical(weights_of(run), weights_of(t.run("whole"))));
}

TEST(ResidentSchedule, StopAndResumeGiveTheUninterruptedWeights) {
  TinyRun t(3, 2);  // 16 updates per block in turns of 3: switches inside the stopped stretch
  const std::string train = "train " + quote(t.config) + " --set train.schedule=resident --plain-progress --out ";
  auto r = run_cli(train + quote(t.run("whole")), t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli(train + quote(t.run("parts")) + " --stop-after 10", t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(t.run("parts") + "/blocks/0/state.safetensors"));  // block 0 lives in its file
  r = run_cli(train + quote(t.run("parts")) + " --resume", t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(BitIdentical(weights_of(t.run("whole")), weights_of(t.run("parts"))));
  const auto summary = RunDir(t.run("whole"), false).read_json("summary.json");
  EXPECT_EQ(summary.at("schedule").get<std::string>(), "resident");
  EXPECT_GT(summary.at("test_accuracy").get<double>(), 0.3) << "chance is 0.1";
}

TEST(IndependentBlocks, TrainedAloneThenAssembledByEval) {
  TinyRun t(2, 4);
  const auto run = t.run("alone");
  const std::string train = "train " + quote(t.config) + " --set train.shared=independent --plain-progress --out " + quote(run);
  auto r = run_cli(train + " --block 0", t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("eval " + quote(run), t.dir);
  test::expect_one_line_error(r, {"blocks/1/model.safetensors", "block 1"}, true);
  r = run_cli(train + " --block 1", t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("eval " + quote(run), t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(RunDir(run, false).read_json("eval.json").at("test_accuracy").get<double>(), 0.3) << "chance is 0.1";
  // A block alone in another process is the block a launch trains: nothing crosses between them.
  r = run_cli("launch --procs 2 " + quote(t.config) + " --set train.shared=independent --out " + quote(t.run("launched")),
              t.dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int b = 0; b < 2; ++b)
    EXPECT_TRUE(BitIdentical(load_safetensors(fmt::format("{}/blocks/{}/model.safetensors", run, b)),
                             load_safetensors(fmt::format("{}/blocks/{}/model.safetensors", t.run("launched"), b))));
  // Synced blocks cannot train alone.
  r = run_cli("train " + quote(t.config) + " --block 0 --out " + quote(t.run("synced")), t.dir);
  test::expect_one_line_error(r, {"--block 0", "train.shared=independent"}, false);
}

}  // namespace
}  // namespace blocklab
