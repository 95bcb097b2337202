// The DiT family: patch layout, EDM preconditioning at initialization, classifier-free guidance,
// which block serves which sampling step and what it costs, the weights' moving average, the
// Fréchet distance's extrapolation, and the sample/fd commands end to end on a tiny run.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "eval/fd.h"
#include "families/dit/generator.h"
#include "families/registry.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "schedule/precond.h"
#include "test_util.h"
#include "train/ema.h"

namespace blocklab {
namespace {

using test::Contains;
using test::TempDir;
namespace F = torch::nn::functional;

// The classifier tests' tiny config (test_util.h) as a DiT: six layers, longer training.
Config tiny_dit(const std::string& mode, const std::string& data_dir = "") {
  Config c = test::tiny_config(mode, data_dir);
  c.set("model.family=dit");
  c.model.layers = 6;
  c.dit.patch = 7;
  c.dit.eval_samples = 20;
  c.diffusion.inference_steps = 4;
  c.diffusion.sigma_sampling = WithinRange::Distribution;
  c.train.epochs = 6;
  c.train.lr = 2e-3;
  c.train.seed = 5;
  c.validate();
  return c;
}

ImageGenerator make_generator(const Config& cfg) {
  torch::manual_seed(0);
  return ImageGenerator(cfg, test::fashion_shape(), 0.3, 0.35, torch::kCPU);
}

// Every parameter drawn at random, so that no output is zero by initialization.
void randomize(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(11);
  for (auto& p : m.parameters()) p.normal_(0.0, 0.2);
}

TEST(Dit, ShippedRecipeAndFamilyDefaults) {
  const auto root = test::repo_root();
  ASSERT_FALSE(root.empty());
  const auto cfg = Config::from_file(root + "/configs/dit-fmnist.toml");
  EXPECT_EQ(cfg.model.family, FamilyKind::Dit);
  EXPECT_EQ(cfg.inference_steps(), 32);
  EXPECT_EQ(cfg.ema_decay(), 0.999);
  EXPECT_TRUE(Contains(cfg.to_toml(), "[dit]"));
  EXPECT_FALSE(Contains(cfg.to_toml(), "[classifier]"));
  // Family defaults: the DiT averages its weights and samples 32 steps; the classifier neither.
  Config c;
  EXPECT_EQ(c.ema_decay(), 0.0);
  EXPECT_EQ(c.inference_steps(), c.model.blocks);
  c.set("model.family=dit");
  EXPECT_EQ(c.ema_decay(), 0.999);
  EXPECT_EQ(c.inference_steps(), 32);
  c.set("train.ema_decay=0");
  EXPECT_EQ(c.ema_decay(), 0.0);
  // Another family's section is refused, naming it.
  c.set("classifier.patch=4");
  EXPECT_TRUE(test::ThrowsUserError([&] { c.validate(); }, {"[classifier]", "dit"}));
  Config d;
  EXPECT_TRUE(test::ThrowsUserError([&] { d.set("dit.sampler=rk4"); }, {"dit.sampler", "euler", "rk4"}));
  // A model or a step larger than the machine is refused before anything is allocated.
  auto big = tiny_dit("e2e");
  big.model.hidden = 65536;
  big.model.layers = 1024;
  EXPECT_TRUE(test::ThrowsUserError([&] { dit_options(big, test::fashion_shape()); }, {"model.layers", "GiB"}));
  big = tiny_dit("e2e");
  big.train.batch_size = 1 << 20;
  big.dit.patch = 1;
  EXPECT_TRUE(test::ThrowsUserError([&] { dit_options(big, test::fashion_shape()); }, {"train.batch_size", "GiB"}));
  big = tiny_dit("e2e");
  big.dit.patch = 5;
  EXPECT_TRUE(test::ThrowsUserError([&] { dit_options(big, test::fashion_shape()); }, {"dit.patch = 5", "28x28"}));
}

TEST(Dit, UnpatchifyInvertsThePatchEmbeddingsLayout) {
  torch::manual_seed(1);
  const auto x = torch::randn({2, 3, 8, 12});
  // unfold reads each patch in (c, i, j) order, as a Conv2d of kernel = stride = p does.
  const auto tokens = F::unfold(x, F::UnfoldFuncOptions(4).stride(4)).transpose(1, 2);  // [2, 6, 48]
  EXPECT_TRUE(torch::equal(unpatchify(tokens, 3, 8, 12, 4), x));
  auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 5, 4).stride(4).bias(false));
  const auto by_conv = conv->forward(x).flatten(2).transpose(1, 2);
  EXPECT_TRUE(torch::allclose(by_conv, tokens.matmul(conv->weight.view({5, -1}).t()), 1e-5, 1e-5));
}

TEST(Dit, AtInitializationTheDenoiserIsCSkipAndTheWeightedLossIsOne) {
  const auto cfg = tiny_dit("blocks");
  auto gen = make_generator(cfg);
  torch::manual_seed(2);
  const auto z = torch::randn({4, 1, 28, 28});
  const auto sigma = torch::tensor({0.01f, 0.3f, 2.0f, 60.0f});
  const auto labels = torch::tensor({0, 3, 9, 10}, torch::kInt64);  // 10: no label
  const auto pc = precondition(sigma, cfg.diffusion.noise.sigma_data);
  for (int block : {-1, 0, 2})  // adaLN-Zero: F = 0, so D = c_skip z whatever the block
    EXPECT_TRUE(torch::allclose(gen.denoise(z, sigma, labels, block), pc.c_skip.view({-1, 1, 1, 1}) * z, 1e-6, 1e-7));
  // With the data's spread equal to sigma_data, EDM's lambda(sigma) E|c_skip z - x|^2 is exactly 1
  // at every sigma: the pixel scaling, the preconditioning and the weight agree.
  const auto standardized = torch::randn({2048, 1, 28, 28});
  const Batch batch{standardized, torch::arange(2048, torch::kInt64) % 10};
  for (int block : {-1, 0, 1, 2}) {
    torch::manual_seed(3);
    const auto loss = gen.loss(batch, block, 42 + uint64_t(block + 1));
    EXPECT_NEAR(loss.value.item<double>(), 1.0, 0.02) << "block " << block;
  }
}

TEST(Dit, PixelsSurviveTheTripToModelSpace) {
  auto gen = make_generator(tiny_dit("e2e"));
  const auto pixels = torch::arange(256, torch::kInt64).to(torch::kUInt8).view({1, 1, 16, 16});
  const auto standardized = (pixels.to(torch::kFloat32) / 255.0 - 0.3) / 0.35;
  EXPECT_TRUE(torch::equal(gen.to_pixels(gen.to_model(standardized)), pixels));
  // Model space has the data's spread sigma_data.
  EXPECT_NEAR(gen.to_model(torch::ones({1})).item<double>(), 0.5, 1e-7);
}

TEST(Dit, GuidanceCombinesTheConditionalAndUnconditionalDenoisers) {
  auto gen = make_generator(tiny_dit("blocks"));
  randomize(gen.model());
  torch::NoGradGuard no_grad;
  torch::manual_seed(4);
  const auto z = torch::randn({3, 1, 28, 28});
  const auto y = torch::tensor({1, 4, 7}, torch::kInt64), none = torch::full({3}, 10, torch::kInt64);
  const auto s = torch::full({3}, 0.7f);
  const auto dc = gen.denoise(z, s, y, 1), du = gen.denoise(z, s, none, 1);
  ASSERT_GT((dc - du).abs().max().item<double>(), 1e-3);  // the label matters
  EXPECT_TRUE(torch::allclose(gen.guided_denoise(z, 0.7, y, 1, 1.0), dc, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(gen.guided_denoise(z, 0.7, y, 1, 0.0), du, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(gen.guided_denoise(z, 0.7, y, 1, 2.5), du + 2.5 * (dc - du), 1e-4, 1e-4));
}

TEST(Dit, EachSamplingStepRunsOnlyItsBlockAndBlocksShareTheSteps) {
  auto blocks = make_generator(tiny_dit("blocks"));
  auto e2e = make_generator(tiny_dit("e2e"));
  SamplingOptions opt;
  opt.steps = 32;
  // Equal-probability levels: each of the 3 blocks serves 32/3 steps, give or take one.
  std::vector<int> served(3, 0);
  for (double s : blocks.levels(opt)) ++served[size_t(blocks.block_of(s))];
  for (int b = 0; b < 3; ++b) EXPECT_LE(std::abs(served[size_t(b)] - 32.0 / 3.0), 1.0) << "block " << b;
  EXPECT_EQ(e2e.block_of(1.0), -1);
  // Cost per image: steps x the layers that run (L/B block-wise, L end-to-end), doubled by guidance.
  const auto labels = torch::arange(3, torch::kInt64);
  opt.steps = 5;
  EXPECT_EQ(blocks.generate(labels, opt, 1).layer_evaluations_per_image, 5 * 2);
  EXPECT_EQ(e2e.generate(labels, opt, 1).layer_evaluations_per_image, 5 * 6);
  opt.guidance = 2.0;
  EXPECT_EQ(blocks.generate(labels, opt, 1).layer_evaluations_per_image, 2 * 5 * 2);
  opt.guidance = 1.0;
  opt.sampler = Sampler::Heun;  // 2n - 1 denoiser calls
  const auto heun = blocks.generate(labels, opt, 1);
  EXPECT_EQ(heun.denoiser_calls_per_image, 9);
  EXPECT_EQ(heun.layer_evaluations_per_image, 9 * 2);
  EXPECT_EQ(heun.images.sizes(), torch::IntArrayRef({3, 1, 28, 28}));
  EXPECT_EQ(heun.images.dtype(), torch::kUInt8);
}

TEST(Dit, TheMovingAverageFollowsOnlyWhatTheStepUpdated) {
  const auto cfg = tiny_dit("blocks");
  auto gen = make_generator(cfg);
  auto opt = make_optimizer(gen.model(), cfg);
  Ema ema(gen.model(), opt, 0.9);
  const auto before = test::snapshot(gen.model());
  StepRunner runner(gen, opt, cfg, 30);
  torch::manual_seed(6);
  const Batch batch{torch::randn({8, 1, 28, 28}), torch::arange(8, torch::kInt64)};
  int64_t step = 0;
  while (block_for_step(cfg, step) != 1) ++step;
  runner.run(batch, step);
  ema.update(1);
  const double d = std::min(0.9, 2.0 / 11.0);  // one update: (1 + n) / (10 + n) with n = 1
  auto avg = ema.state();
  for (auto& [name, t] : avg) t = t.clone();  // state() is the live averages
  for (const auto& p : gen.model().named_parameters()) {
    const auto& name = p.key();
    const bool updated = !test::starts_with(name, "blocks.") || test::starts_with(name, "blocks.1.");
    const auto expected = updated ? d * before.at(name) + (1 - d) * p.value() : before.at(name);
    EXPECT_TRUE(torch::allclose(avg.at(name), expected, 1e-6, 1e-7)) << name;
  }
  // swap() exchanges weights and averages; twice restores both.
  const auto weights = test::snapshot(gen.model());
  ema.swap();
  for (const auto& p : gen.model().named_parameters()) EXPECT_TRUE(torch::equal(p.value(), avg.at(p.key())));
  ema.swap();
  for (const auto& p : gen.model().named_parameters()) EXPECT_TRUE(torch::equal(p.value(), weights.at(p.key())));
}

TEST(Fd, ExtrapolationRemovesTheFiniteSampleBias) {
  std::vector<std::pair<int64_t, double>> exact;
  for (int64_t n : {100, 200, 400, 800}) exact.push_back({n, 3.0 + 50.0 / double(n)});
  EXPECT_NEAR(extrapolate_to_infinity(exact), 3.0, 1e-9);
  // Samples of the reference distribution itself: FD(N) > 0 only by the finite-sample bias, which
  // the extrapolation mostly removes.
  torch::manual_seed(8);
  const auto scale = torch::linspace(0.5, 2.0, 64, torch::kFloat64);
  const auto reference = feature_stats(torch::randn({50000, 64}, torch::kFloat64) * scale);
  const auto curve = frechet_curve(torch::randn({2000, 64}, torch::kFloat64) * scale, reference);
  EXPECT_EQ(curve.points.front().first, 2000);
  EXPECT_EQ(curve.points.back().first, 500);
  EXPECT_GT(curve.at_n, 0.02);
  EXPECT_LT(std::abs(curve.infinity), curve.at_n / 3);
}

// A tiny DiT run on the synthetic data set, trained once for the tests below.
struct TinyDitRun {
  TempDir dir, cache;
  std::string run;
  nlohmann::json summary;
  TinyDitRun() {
    ::setenv("BLOCKLAB_CACHE", cache.path().c_str(), 1);  // the feature network is trained into it
    run = dir.file("run");
    summary = train(tiny_dit("blocks", test::synthetic_data_dir()), test::train_options(run, "tiny dit"));
  }
};

const TinyDitRun& tiny_run() {
  static TinyDitRun r;
  return r;
}

TEST(Dit, TrainsBlockWiseWithAMovingAverageAndScoresItself) {
  const auto& r = tiny_run();
  const auto& s = r.summary;
  EXPECT_EQ(s["family"], "dit");
  EXPECT_EQ(s["headline"]["name"], "FD");
  EXPECT_FALSE(s["headline"]["higher_is_better"].get<bool>());
  EXPECT_GT(s["fd"].get<double>(), 0.0);
  EXPECT_EQ(s["fd_samples"], 20);
  EXPECT_EQ(s["fd_class_accuracy"].size(), 10u);
  EXPECT_EQ(s["ema_decay"], 0.999);
  EXPECT_TRUE(s["raw_weights"].contains("fd"));
  EXPECT_EQ(s["sampling_layer_evaluations_per_image"], 4 * 2);
  // The feature network learned the synthetic classes.
  EXPECT_GT(s["fd_features"]["test_accuracy"].get<double>(), 0.9);
  // The weighted loss starts at 1 (see above) and training lowers it in every block; least in the
  // lowest-noise block, where the synthetic images' own pixel noise cannot be told from sigma eps.
  std::map<int, std::vector<double>> losses;
  std::istringstream metrics(test::read_bytes(r.run + "/metrics.jsonl"));
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("evaluation")) continue;
    losses[j["block"].get<int>()].push_back(j["loss"].get<double>());
  }
  ASSERT_EQ(losses.size(), 3u);
  for (const auto& [b, l] : losses) EXPECT_LT(l.back(), (b < 2 ? 0.8 : 0.95) * l.front()) << "block " << b;
  // The first samples, a column per class, for a person to look at: 20 samples, 2 rows of 10.
  const auto grid = decode_png(test::read_bytes(r.run + "/samples.png"), "samples.png");
  EXPECT_EQ(grid.sizes(), (std::vector<int64_t>{2 * 30 + 2, 10 * 30 + 2}));
  // The average and the raw weights are both saved, and they differ.
  const auto ema = load_safetensors(r.run + "/ema.safetensors"), raw = load_safetensors(r.run + "/model.safetensors");
  ASSERT_EQ(ema.size(), raw.size());
  EXPECT_FALSE(torch::equal(ema.at("blocks.0.layers.0.fc1.weight"), raw.at("blocks.0.layers.0.fc1.weight")));
  EXPECT_TRUE(torch::equal(ema.at("shared.pixel_std"), raw.at("shared.pixel_std")));
}

TEST(Dit, ResumedRunEqualsTheUninterruptedOneAverageIncluded) {
  const auto& r = tiny_run();
  TempDir dir;
  auto opts = test::train_options(dir.file("run"), "resume");
  opts.stop_after = 7;
  const auto cfg = tiny_dit("blocks", test::synthetic_data_dir());
  EXPECT_EQ(train(cfg, opts)["stopped_at"], 7);
  opts.stop_after = -1;
  opts.resume = true;
  train(cfg, opts);
  for (const char* file : {"/ema.safetensors", "/model.safetensors"}) {
    const auto a = load_safetensors(r.run + file), b = load_safetensors(dir.file("run") + file);
    for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << file << " " << name;
  }
}

TEST(Dit, SampleAndFdCommands) {
  const auto& r = tiny_run();
  TempDir scratch;
  const auto run = test::quote(r.run);
  // One class per row: 20 images are 10 rows of 2, each 28 pixels and a 2-pixel gap.
  auto res = test::run_cli("sample " + run + " --n 20 --steps 3 --out " + test::quote(scratch.file("g.png")), scratch);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  auto grid = decode_png(test::read_bytes(scratch.file("g.png")), "g.png");
  EXPECT_EQ(grid.size(0), 10 * 30 + 2);
  EXPECT_EQ(grid.size(1), 2 * 30 + 2);
  res = test::run_cli("sample " + run + " --n 9 --class 3 --sampler heun --guidance 2 --out " +
                          test::quote(scratch.file("c.png")),
                      scratch);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  grid = decode_png(test::read_bytes(scratch.file("c.png")), "c.png");
  EXPECT_EQ(grid.size(0), 3 * 30 + 2);
  // fd writes its figures and settings into summary.json, and the features on request.
  res = test::run_cli("fd " + run + " --n 16 --steps 2 --seed 3 --save-features " + test::quote(scratch.file("f.safetensors")),
                      scratch);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  const auto summary = nlohmann::json::parse(test::read_bytes(r.run + "/summary.json"));
  EXPECT_EQ(summary["fd_samples"], 16);
  EXPECT_EQ(summary["fd_sampler"]["steps"], 2);
  EXPECT_EQ(summary["fd_sampler"]["seed"], 3);
  EXPECT_EQ(summary["fd_sampler"]["weights"], "ema");
  for (const char* key : {"fd", "fd_infinity", "fd_floor", "fd_floor_infinity"}) EXPECT_TRUE(summary[key].is_number()) << key;
  const auto features = load_safetensors(scratch.file("f.safetensors"));
  EXPECT_EQ(features.at("generated").sizes(), torch::IntArrayRef({16, 64}));
  EXPECT_EQ(features.at("real").sizes(), torch::IntArrayRef({200, 64}));
  // Bad requests: one line, naming what is wrong.
  test::expect_one_line_error(test::run_cli("sample " + run + " --class 10", scratch), {"--class 10", "0..9"}, true);
  test::expect_one_line_error(test::run_cli("sample " + run + " --sampler rk4", scratch), {"dit.sampler", "rk4"}, true);
  TempDir classifier;
  auto c = test::tiny_config("e2e", test::synthetic_data_dir());
  c.train.epochs = 0.05;  // one step: a finished run of another family
  train(c, test::train_options(classifier.file("run")));
  test::expect_one_line_error(test::run_cli("sample " + test::quote(classifier.file("run")), scratch),
                              {"model.family = \"dit\"", "\"classifier\""}, true);
}

TEST(Dit, IndependentBlocksOneResidentAtATimeTrainSampleAndScore) {
  // The DiT keeps buffers (the pixel statistics) in each independent block's own modules, and an
  // EMA: the resident schedule must bring both back whole from the blocks' files.
  tiny_run();  // its feature network (same training data) is cached for this run's FD
  test::TempDir dir;
  Config cfg = tiny_dit("blocks", test::synthetic_data_dir());
  cfg.set("train.schedule=resident");
  cfg.set("train.shared=independent");
  cfg.train.epochs = 0.5;  // 10 updates per block: two turns each
  cfg.train.block_run = 5;
  cfg.data.test_limit = 50;
  TrainOptions opts;
  opts.out_dir = dir.file("run");
  opts.plain_progress = true;
  const auto summary = train(cfg, opts);
  EXPECT_TRUE(summary.contains("fd")) << summary.dump();
  const auto average = load_safetensors(dir.file("run/ema.safetensors"));
  for (int b = 0; b < 3; ++b)
    EXPECT_TRUE(average.count(fmt::format("blocks.{}.io.pixel_std", b))) << b;
  EXPECT_FALSE(average.count("shared.head.weight"));
}

}  // namespace
}  // namespace blocklab
