// Training end to end on a small synthetic data set: both modes learn, the run directory holds
// what it promises, checkpoints restore exactly, a resumed run equals an uninterrupted one, a
// diverging run stops with a clear error, and the CLI reports errors on one line.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <memory>
#include <set>
#include <sstream>

#include "io/run_dir.h"
#include "io/safetensors.h"
#include "families/classifier/classifier.h"
#include "test_util.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/step.h"
#include "train/trainer.h"

namespace blocklab {
namespace {

using test::Contains;
using test::expect_one_line_error;
using test::quote;
using test::run_cli;
using test::TempDir;
using test::ThrowsUserError;
namespace fs = std::filesystem;

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(test::read_bytes(path));
  for (std::string line; std::getline(in, line);) {
    EXPECT_FALSE(line.empty()) << path << " has an empty line";
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));  // throws (fails the test) if not JSON
  }
  return lines;
}

// Checks the files of a finished run and its metrics lines; returns the metrics.
// The confusion matrix counts every test example once, its diagonal the correct ones.
void check_confusion(const nlohmann::json& summary, int classes, int64_t examples) {
  const auto counts = summary.at("confusion").get<std::vector<std::vector<int64_t>>>();
  ASSERT_EQ(counts.size(), size_t(classes));
  int64_t total = 0, correct = 0;
  for (int t = 0; t < classes; ++t) {
    ASSERT_EQ(counts[size_t(t)].size(), size_t(classes));
    for (int p = 0; p < classes; ++p) total += counts[size_t(t)][size_t(p)];
    correct += counts[size_t(t)][size_t(t)];
  }
  EXPECT_EQ(total, examples);
  EXPECT_DOUBLE_EQ(double(correct) / double(examples), summary.at("test_accuracy").get<double>());
}

std::vector<nlohmann::json> check_finished_run(const std::string& dir, const nlohmann::json& summary, bool blocks) {
  for (const char* f : {"summary.json", "metrics.jsonl", "model.safetensors", "checkpoint.safetensors", "config.toml"})
    EXPECT_TRUE(fs::exists(fs::path(dir) / f)) << f;
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  EXPECT_EQ(RunDir(dir, false).read_json("summary.json"), summary);
  const auto metrics = read_metrics(dir + "/metrics.jsonl");
  EXPECT_FALSE(metrics.empty());
  // One line per block that trained since the previous log point (one line end-to-end); every
  // step is counted in exactly one line.
  int64_t last = 0, last_block = -1, counted = 0;
  // The final evaluation is the last line: the summary's figures, marked final.
  EXPECT_TRUE(metrics.back().contains("evaluation")) << metrics.back().dump();
  EXPECT_TRUE(metrics.back().value("final", false));
  EXPECT_EQ(metrics.back().value("step", int64_t(-1)), summary.at("steps").get<int64_t>());
  const auto headline = Metric::from_json(summary.at("headline"));
  EXPECT_EQ(metrics.back().value("headline", ""), headline.name);
  EXPECT_EQ(metrics.back().value("evaluation", nlohmann::json::object()).value(headline.name, -1.0), headline.value);
  for (const auto& m : metrics) {
    if (m.contains("evaluation")) continue;
    for (const char* key : {"step", "loss", "plain_loss", "steps", "lr", "grad_norm", "seconds"})
      EXPECT_TRUE(m.contains(key)) << key << " missing in " << m.dump();
    EXPECT_EQ(m.contains("block"), blocks) << m.dump();
    const auto step = m.at("step").get<int64_t>();
    if (blocks) {
      const int block = m.at("block").get<int>();
      EXPECT_GE(block, 0);
      EXPECT_LT(block, 3);
      EXPECT_TRUE(step > last || block > last_block) << "one line per block and step, in order: " << m.dump();
      last_block = step > last ? -1 : last_block;
      last_block = std::max<int64_t>(last_block, block);
    } else {
      EXPECT_GT(step, last) << "steps must increase: " << m.dump();
    }
    last = step;
    counted += m.at("steps").get<int64_t>();
    EXPECT_TRUE(std::isfinite(m.at("loss").get<double>()));
    EXPECT_GT(m.at("lr").get<double>(), 0.0);
    EXPECT_GE(m.at("seconds").get<double>(), 0.0);
  }
  EXPECT_EQ(last, summary.at("steps").get<int64_t>()) << "the last step is always logged";
  EXPECT_EQ(counted, summary.at("steps").get<int64_t>()) << "every step is in exactly one metrics line";
  // The final weights load back into a model of the run's shape.
  const auto weights = load_safetensors(dir + "/model.safetensors");
  Config cfg = Config::from_file(dir + "/config.toml");
  ViT model(vit_options(cfg, test::fashion_shape()));
  EXPECT_NO_THROW(load_weights(*model, weights, "model.safetensors"));
  return metrics;
}

TEST(Training, EndToEndLearnsSyntheticData) {
  TempDir out;
  const Config cfg = test::tiny_config("e2e", test::synthetic_data_dir());
  const auto summary = train(cfg, test::train_options(out.path(), "e2e-test"));
  EXPECT_GT(summary.at("test_accuracy").get<double>(), 0.5) << summary.dump(2);  // chance: 0.1
  EXPECT_EQ(summary.at("mode"), "e2e");
  EXPECT_EQ(summary.at("steps").get<int64_t>(), 4 * (600 / 32));
  EXPECT_EQ(summary.at("test_examples").get<int64_t>(), 200);
  EXPECT_EQ(summary.at("train_examples").get<int64_t>(), 600);
  EXPECT_EQ(summary.at("family"), "classifier");
  check_confusion(summary, 10, 200);
  // The family-neutral headline is the classifier's accuracy, higher is better.
  const auto headline = Metric::from_json(summary.at("headline"));
  EXPECT_EQ(headline.value, summary.at("test_accuracy").get<double>());
  EXPECT_TRUE(headline.higher_is_better);
  check_finished_run(out.path(), summary, false);
  EXPECT_EQ(Config::from_file(out.file("config.toml")).to_toml(), cfg.to_toml());
}

void check_blocks_learn(const std::string& label_token) {
  SCOPED_TRACE("model.label_token = " + label_token);
  TempDir out;
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.set("classifier.label_token=" + label_token);
  // One run with the reference sampler (E[y|z] between steps), one with the default (argmax).
  cfg.classifier.inference_temperature = label_token == "as_cls" ? 1.0 : 0.0;
  const auto summary = train(cfg, test::train_options(out.path(), "blocks-test"));
  EXPECT_GT(summary.at("test_accuracy").get<double>(), 0.5) << summary.dump(2);
  // Any other temperature is also scored with the reference sampler, side by side.
  if (cfg.classifier.inference_temperature == 1.0)
    EXPECT_FALSE(summary.contains("test_accuracy_expected_embedding"));
  else
    EXPECT_GT(summary.at("test_accuracy_expected_embedding").get<double>(), 0.5) << summary.dump(2);
  EXPECT_EQ(summary.at("mode"), "blocks");
  const int64_t steps = 3 * 4 * (600 / 32);  // B times the steps of end-to-end
  EXPECT_EQ(summary.at("steps").get<int64_t>(), steps);
  EXPECT_EQ(summary.at("block_steps"), nlohmann::json::array({steps / 3, steps / 3, steps / 3}));
  const auto& inference = summary.at("inference_steps");
  ASSERT_EQ(inference.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(inference[size_t(i)].at("block").get<int>(), i);
  EXPECT_EQ(inference[2].at("accuracy"), summary.at("test_accuracy"));
  EXPECT_EQ(summary.at("teacher_forced").size(), 3u);
  check_confusion(summary, 10, 200);
  check_finished_run(out.path(), summary, true);
}

TEST(Training, BlocksLearnSyntheticData) {
  for (const std::string label_token : {"as_cls", "beside_cls"}) check_blocks_learn(label_token);
}

// A run resumed from a checkpoint ends with exactly the weights of an uninterrupted run:
// everything random is a function of (seed, step).
TEST(Training, ResumedRunIsBitIdenticalToUninterruptedRun) {
  TempDir full, split;
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.train.epochs = 1;  // 18 steps per block, 54 in all
  cfg.train.log_every = 5;
  cfg.data.test_limit = 100;
  const auto summary_full = train(cfg, test::train_options(full.path(), "full"));

  auto stop = test::train_options(split.path(), "first-part");
  stop.stop_after = 22;  // mid-epoch, mid-round and between two metrics lines
  const auto stopped = train(cfg, stop);
  EXPECT_EQ(stopped.at("stopped_at").get<int64_t>(), 22);
  EXPECT_TRUE(fs::exists(split.file("checkpoint.safetensors")));
  EXPECT_FALSE(fs::exists(split.file("summary.json")));
  EXPECT_FALSE(fs::exists(split.file("model.safetensors")));
  std::map<std::string, std::string> meta;
  load_safetensors(split.file("checkpoint.safetensors"), &meta);
  EXPECT_EQ(meta.at("step"), "22");
  EXPECT_GT(std::stod(meta.at("train_seconds")), 0.0);  // the clock lives in the checkpoint, one file
  EXPECT_FALSE(fs::exists(split.file("train_seconds.json")));

  auto resume = test::train_options(split.path(), "second-part");
  resume.resume = true;
  const auto summary_split = train(cfg, resume);

  EXPECT_EQ(test::read_bytes(split.file("model.safetensors")), test::read_bytes(full.file("model.safetensors")))
      << "model.safetensors differs between the resumed and the uninterrupted run";
  const auto a = load_safetensors(full.file("model.safetensors")), b = load_safetensors(split.file("model.safetensors"));
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  EXPECT_EQ(summary_split.at("test_accuracy"), summary_full.at("test_accuracy"));
  EXPECT_EQ(summary_split.at("block_steps"), summary_full.at("block_steps"));

  // metrics.jsonl: the same lines as the uninterrupted run, line for line (but for the clock),
  // including the window that was open when the first part stopped.
  const auto ma = read_metrics(full.file("metrics.jsonl")), mb = read_metrics(split.file("metrics.jsonl"));
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) {
    auto a_line = ma[i], b_line = mb[i];
    for (const char* clock : {"seconds", "eval_seconds"}) {
      a_line.erase(clock);
      b_line.erase(clock);
    }
    EXPECT_EQ(a_line, b_line) << "line " << i;
  }
  EXPECT_GT(summary_split.at("train_seconds").get<double>(), std::stod(meta.at("train_seconds")));
  // Resuming a finished run redoes nothing and gives the same weights again.
  const auto again = train(cfg, resume);
  EXPECT_EQ(again.at("test_accuracy"), summary_full.at("test_accuracy"));
  EXPECT_EQ(test::read_bytes(split.file("model.safetensors")), test::read_bytes(full.file("model.safetensors")));
  EXPECT_EQ(read_metrics(split.file("metrics.jsonl")).size(), ma.size());
}

// Evaluations during training (train.eval_every) are logged and refresh the report, and change
// nothing of the training itself: the weights equal a run's without them.
TEST(Training, EvaluationsDuringTrainingAreLoggedAndChangeNothing) {
  TempDir plain, evaluated;
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.train.epochs = 1;  // 54 steps
  cfg.data.test_limit = 100;
  train(cfg, test::train_options(plain.path(), "plain"));
  cfg.train.eval_every = 20;
  cfg.train.checkpoint_every = 25;
  auto opts = test::train_options(evaluated.path(), "evaluated");
  int refreshes = 0;
  opts.refresh = [&] { ++refreshes; };
  const auto summary = train(cfg, opts);
  const auto a = load_safetensors(plain.file("model.safetensors")), b = load_safetensors(evaluated.file("model.safetensors"));
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  std::vector<int64_t> steps;
  for (const auto& m : read_metrics(evaluated.file("metrics.jsonl")))
    if (m.contains("evaluation")) {
      steps.push_back(m.at("step").get<int64_t>());
      EXPECT_TRUE(m.at("evaluation").contains("test accuracy")) << m.dump();
      EXPECT_GT(m.at("eval_seconds").get<double>(), 0.0);
    }
  EXPECT_EQ(steps, (std::vector<int64_t>{20, 40, 54}));
  EXPECT_EQ(refreshes, 2 + 2 + 1) << "after each evaluation, each checkpoint before the end, and the summary";
  // The final evaluation's clock is the run's training time.
  EXPECT_EQ(read_metrics(evaluated.file("metrics.jsonl")).back().at("seconds"), summary.at("train_seconds"));

  // Where the whole model is not in the process, there is nothing to evaluate: said before training.
  Config resident = cfg;
  resident.set("train.schedule=resident");
  EXPECT_TRUE(test::ThrowsUserError([&] { resident.validate(); }, {"train.eval_every", "resident"}));
  Config independent = cfg;
  independent.set("train.shared=independent");
  auto one_block = test::train_options(evaluated.file("alone"), "alone");
  one_block.only_block = 1;
  EXPECT_TRUE(test::ThrowsUserError([&] { train(independent, one_block); }, {"train.eval_every", "--block"}));
}

TEST(Training, ResumeWithAnotherConfigIsRefused) {
  TempDir out;
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  auto opts = test::train_options(out.file("run"), "first-part");
  opts.stop_after = 6;
  train(cfg, opts);
  const auto checkpoint = test::read_bytes(out.file("run/checkpoint.safetensors"));
  cfg.train.lr *= 2;  // not the run's config any more
  auto resume = test::train_options(out.file("run"), "second-part");
  resume.resume = true;
  EXPECT_TRUE(ThrowsUserError([&] { train(cfg, resume); }, {out.file("run"), "config.toml"}));
  EXPECT_EQ(test::read_bytes(out.file("run/checkpoint.safetensors")), checkpoint);
}

TEST(Training, ResumeWithoutCheckpointNamesTheDirectory) {
  TempDir out;
  const Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  auto o = test::train_options(out.path(), "resume-test");
  o.resume = true;
  EXPECT_TRUE(ThrowsUserError([&] { train(cfg, o); }, {out.path(), "checkpoint"}));
}

TEST(Training, MissingDataDirectoryNamesIt) {
  TempDir out;
  const std::string missing = out.path() + "/no-data-here";
  const Config cfg = test::tiny_config("e2e", missing);
  EXPECT_TRUE(ThrowsUserError([&] { train(cfg, test::train_options(out.file("run"), "data-test")); }, {missing}));
}

TEST(Training, InvalidConfigIsRefusedBeforeTraining) {
  TempDir out;
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.model.blocks = 2;  // does not divide 3 layers
  EXPECT_TRUE(ThrowsUserError([&] { train(cfg, test::train_options(out.path(), "invalid")); }, {"model.blocks", "model.layers"}));
  EXPECT_FALSE(fs::exists(out.file("metrics.jsonl")));
}

TEST(Training, DivergingRunStopsWithNonFiniteError) {
  TempDir out;
  Config cfg = test::tiny_config("e2e", test::synthetic_data_dir());
  cfg.train.lr = 1e6;  // with weight decay 0.01 every step multiplies the weights by -1e4
  cfg.train.min_lr = 0;
  cfg.train.warmup = 0;
  cfg.train.lr_schedule = LrSchedule::Constant;
  cfg.train.grad_clip = 0;
  std::string msg;
  EXPECT_TRUE(ThrowsUserError([&] { train(cfg, test::train_options(out.path(), "diverge")); }, {"diverge", "train.lr"}, &msg));
  EXPECT_TRUE(Contains(msg, "nan") || Contains(msg, "inf")) << msg;
  EXPECT_FALSE(fs::exists(out.file("summary.json")));
  EXPECT_FALSE(fs::exists(out.file("model.safetensors")));
}

// ------------------------------------------------------------------------------- checkpoints

struct Rig : test::Rig {
  explicit Rig(uint64_t init_seed) : test::Rig(test::tiny_config("blocks", ""), init_seed, /*total_steps=*/50) {}
};

TEST(Checkpoint, RoundTripRestoresWeightsAndOptimizerExactly) {
  TempDir dir;
  torch::manual_seed(0);
  const Batch batch{torch::randn({16, 1, 28, 28}), torch::randint(0, 10, {16}, torch::kInt64)};
  Rig a(1);
  for (int64_t s = 0; s < 4; ++s) a.runner->run(batch, s);  // one round of 3 blocks and one more step
  const auto path = dir.file("checkpoint.safetensors");
  save_checkpoint(path, *a.model, *a.opt, {4, 1.5, nlohmann::json::array({1, 2})});

  Rig b(2);  // other initial weights, empty optimizer
  const auto state = load_checkpoint(path, *b.model, *b.opt);
  EXPECT_EQ(state.step, 4);
  EXPECT_EQ(state.train_seconds, 1.5);
  EXPECT_EQ(state.window, nlohmann::json::array({1, 2}));
  const auto wa = named_tensors(*a.model), wb = named_tensors(*b.model);
  ASSERT_EQ(wa.size(), wb.size());
  for (const auto& [name, t] : wa) EXPECT_TRUE(torch::equal(t, wb.at(name))) << name;
  const auto sa = a.opt->state_dict(), sb = b.opt->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [name, t] : sa) {
    ASSERT_TRUE(sb.count(name)) << name;
    EXPECT_TRUE(torch::equal(t, sb.at(name))) << name;
  }
  for (const auto& [name, t] : wa) EXPECT_EQ(a.opt->steps_of(name), b.opt->steps_of(name)) << name;
  // Both continue identically.
  for (int64_t s = 4; s < 7; ++s) {
    const auto ra = a.runner->run(batch, s), rb = b.runner->run(batch, s);
    EXPECT_EQ(ra.loss, rb.loss) << "step " << s;
  }
  const auto ca = named_tensors(*a.model), cb = named_tensors(*b.model);
  for (const auto& [name, t] : ca) EXPECT_TRUE(torch::equal(t, cb.at(name))) << name;

  // Optimizer state of a parameter that never stepped is reset by loading, not kept.
  Rig c(3);
  c.runner->run(batch, 0);
  save_checkpoint(path, *c.model, *c.opt, {1});  // one block stepped once, the others never
  EXPECT_EQ(load_checkpoint(path, *b.model, *b.opt).step, 1);
  for (const auto& [name, t] : named_tensors(*c.model)) EXPECT_EQ(b.opt->steps_of(name), c.opt->steps_of(name)) << name;
}

TEST(Checkpoint, MismatchedOrForeignFilesNameThePath) {
  TempDir dir;
  Rig a(1);
  const auto path = dir.file("checkpoint.safetensors");
  save_checkpoint(path, *a.model, *a.opt, {0});
  Config other = a.cfg;
  other.model.hidden = 48;
  ViT wide(vit_options(other, test::fashion_shape()));
  AdamW wide_opt(wide->named_parameters().pairs(), AdamWOptions{});
  EXPECT_TRUE(ThrowsUserError([&] { load_checkpoint(path, *wide, wide_opt); }, {path, "shape"}));
  other = a.cfg;
  other.model.layers = 6;  // more tensors than the file has
  ViT deep(vit_options(other, test::fashion_shape()));
  AdamW deep_opt(deep->named_parameters().pairs(), AdamWOptions{});
  EXPECT_TRUE(ThrowsUserError([&] { load_checkpoint(path, *deep, deep_opt); }, {path, "missing"}));
  // A plain weights file (no step) is not a checkpoint.
  const auto weights = dir.file("model.safetensors");
  save_safetensors(weights, named_tensors(*a.model));
  EXPECT_TRUE(ThrowsUserError([&] { load_checkpoint(weights, *a.model, *a.opt); }, {weights}));
  // Extra tensors are refused by load_weights.
  auto extra = named_tensors(*a.model);
  extra["shared.unknown"] = torch::zeros({1});
  EXPECT_TRUE(ThrowsUserError([&] { load_weights(*a.model, extra, "src.safetensors"); }, {"src.safetensors", "shared.unknown"}));
}

// ------------------------------------------------------------------------------------- CLI

TEST(Cli, UnknownConfigKeyIsOneLineError) {
  TempDir dir;
  const auto cfg = dir.file("bad.toml");
  test::write_bytes(cfg, "[model]\nlayers = 6\nlayerz = 6\n");
  auto r = run_cli("train " + quote(cfg) + " --out " + quote(dir.file("run")), dir);
  expect_one_line_error(r, {"model.layerz", cfg}, true);
  const auto good = test::repo_root() + "/configs/vit-fmnist.toml";
  r = run_cli("train " + quote(good) + " --set train.speed=3 --out " + quote(dir.file("run")), dir);
  expect_one_line_error(r, {"train.speed"}, true);
  r = run_cli("train " + quote(good) + " --set model.blocks=4 --out " + quote(dir.file("run")), dir);
  expect_one_line_error(r, {"model.blocks", "model.layers"}, true);
  EXPECT_FALSE(fs::exists(dir.file("run/checkpoint.safetensors")));
}

TEST(Cli, MissingDataDirectoryIsNamed) {
  TempDir dir;
  const auto missing = dir.path() + "/no-such-data";
  const auto good = test::repo_root() + "/configs/vit-fmnist.toml";
  const auto r = run_cli("train " + quote(good) + " --set data.dir=" + quote(missing) + " --out " + quote(dir.file("run")), dir);
  expect_one_line_error(r, {missing}, false);
}

TEST(Cli, DemoTrainsBothModesAndWritesBothSummaries) {
  TempDir dir;
  const auto out = dir.file("demo");
  std::string sets;
  for (const char* kv : {"model.layers=3", "model.hidden=32", "model.heads=2", "model.mlp_ratio=2", "model.cond_dim=16",
                         "train.batch_size=32", "train.epochs=4", "train.lr=3e-3", "train.min_lr=1e-4",
                         "train.warmup=0.05", "train.seed=3", "data.test_limit=50", "train.eval_every=30"})
    sets += std::string(" --set ") + kv;
  const auto r = run_cli("demo --out " + quote(out) + " --set data.dir=" + quote(test::synthetic_data_dir()) + sets, dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* mode : {"e2e", "blocks"}) {
    const auto summary = RunDir(out + "/" + mode, false).read_json("summary.json");
    EXPECT_EQ(summary.at("mode").get<std::string>(), mode);
    EXPECT_EQ(summary.at("test_examples").get<int64_t>(), 50);
    EXPECT_GT(summary.at("test_accuracy").get<double>(), 0.5) << mode << ": chance is 0.1";
  }
  // Evaluations at equal compute (blocks: B times the steps apart), each run with its own page.
  const std::map<std::string, std::vector<int64_t>> evaluated = {{"e2e", {30, 60, 72}}, {"blocks", {90, 180, 216}}};
  for (const auto& [mode, expected] : evaluated) {
    std::vector<int64_t> steps;
    for (const auto& m : read_metrics(out + "/" + mode + "/metrics.jsonl"))
      if (m.contains("evaluation")) steps.push_back(m.at("step").get<int64_t>());
    EXPECT_EQ(steps, expected) << mode;
    EXPECT_TRUE(fs::exists(out + "/" + mode + "/report.html")) << mode;
  }
  // Equal compute: blocks mode ran B times the steps.
  EXPECT_EQ(RunDir(out + "/blocks", false).read_json("summary.json").at("steps").get<int64_t>(),
            3 * RunDir(out + "/e2e", false).read_json("summary.json").at("steps").get<int64_t>());
  // And the comparison's report beside the summaries, naming both runs.
  const auto report = test::read_bytes(out + "/report.html");
  EXPECT_NE(report.find("blocklab report: e2e, blocks"), std::string::npos);
}

TEST(Cli, TrainResumeAndEvalARun) {
  TempDir dir;
  Config cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.train.epochs = 1;
  cfg.data.train_limit = 64;  // 2 steps per epoch, 6 block steps
  cfg.data.test_limit = 50;
  const auto cfg_path = dir.file("tiny.toml");
  test::write_bytes(cfg_path, cfg.to_toml());
  const auto run = dir.file("run");
  const std::string train = "train " + quote(cfg_path) + " --plain-progress --out " + quote(run);

  auto r = run_cli(train + " --stop-after 2", dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(fs::exists(run + "/checkpoint.safetensors"));
  EXPECT_FALSE(fs::exists(run + "/summary.json"));

  // An existing run is not overwritten without --resume.
  const auto checkpoint = test::read_bytes(run + "/checkpoint.safetensors");
  r = run_cli(train, dir);
  expect_one_line_error(r, {run, "--resume"}, true);
  EXPECT_EQ(test::read_bytes(run + "/checkpoint.safetensors"), checkpoint);

  r = run_cli(train + " --resume --report", dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.err, "resuming from step 2"));
  // --report: the run's page, written when the summary was (its data holds the summary).
  EXPECT_TRUE(Contains(test::read_bytes(run + "/report.html"), "\"train_examples\":64"));
  const auto summary = RunDir(run, false).read_json("summary.json");
  EXPECT_EQ(summary.at("steps").get<int64_t>(), 6);
  EXPECT_EQ(summary.at("block_steps"), nlohmann::json::array({2, 2, 2}));

  r = run_cli("eval " + quote(run), dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto eval = RunDir(run, false).read_json("eval.json");
  EXPECT_EQ(eval.at("test_accuracy"), summary.at("test_accuracy"));  // evaluation noise is seeded
  EXPECT_EQ(eval.at("test_examples").get<int64_t>(), 50);

  r = run_cli("eval " + quote(dir.file("nothing-here")), dir);
  expect_one_line_error(r, {dir.file("nothing-here")}, true);
}

}  // namespace
}  // namespace blocklab
