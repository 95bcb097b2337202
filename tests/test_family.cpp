// The family seam and the classifier family: the inference chain against a perfect and an
// image-blind denoiser, the preconditioning's wiring at both ends of the noise range, the start
// noise, data of other image sizes, the synthetic rig's learning rate, decay on matrices only,
// the training loss's weightings, and a golden regression of a few training steps in each mode.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include <fmt/format.h>

#include "data/image_data.h"
#include "families/classifier/classifier.h"
#include "families/classifier/evaluate.h"
#include "families/registry.h"
#include "test_util.h"
#include "train/step.h"
#include "train/synthetic.h"
#include "util/simd.h"

namespace blocklab {
namespace {

namespace F = torch::nn::functional;
using test::ThrowsUserError;

Partition edm3() { return Partition(std::make_shared<LogNormalSigma>(NoiseOptions{}), 3, 0.05); }

// K random unit embeddings of width d, and random labels.
struct Classes {
  torch::Tensor embeddings, labels;
};
Classes random_classes(int64_t K, int64_t d, int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  auto e = F::normalize(torch::randn({K, d}, torch::kFloat64), F::NormalizeFuncOptions().dim(-1));
  return {e, torch::randint(0, K, {n}, torch::kInt64)};
}

TEST(Chain, PerfectDenoiserEndsAtTheTargetFromAnyStart) {
  const auto c = random_classes(10, 32, 200, 1);
  const auto y = c.embeddings.index_select(0, c.labels);
  // D = target: the denoiser is certain of the true class whatever z is.
  auto perfect = [&](const torch::Tensor&, double, int) { return 50.0 * F::one_hot(c.labels, 10).to(torch::kFloat64); };
  for (int steps : {3, 10})
    for (double temperature : {0.0, 1.0})
      for (uint64_t start : {2, 3}) {
        torch::manual_seed(start);
        const auto z0 = 80.0 * torch::randn({200, 32}, torch::kFloat64) + 5.0 * start;  // any start, even off-centre
        const auto out = run_chain(edm3(), steps, z0, perfect, c.embeddings, temperature);
        EXPECT_TRUE(torch::equal(out.logits.back().argmax(-1), c.labels));
        // Every Euler step towards D = y shrinks z - y by sigma_next / sigma: in all by 0.002 / 80.
        EXPECT_TRUE(torch::allclose(out.z, y + (0.002 / 80.0) * (z0 - y), 1e-9, 1e-9)) << steps << " steps";
        EXPECT_EQ(out.blocks.front(), 0);
        EXPECT_EQ(out.blocks.back(), 2);
      }
}

TEST(Chain, ImageBlindDenoiserEndsAtChance) {
  const int64_t n = 4000, K = 10;
  const auto c = random_classes(K, 32, n, 4);
  // A denoiser that never looks at the image: it reads its class off z alone.
  auto blind = [&](const torch::Tensor& z, double, int) { return 20.0 * z.matmul(c.embeddings.t()); };
  torch::manual_seed(5);
  const auto out = run_chain(edm3(), 3, 80.0 * torch::randn({n, 32}, torch::kFloat64), blind, c.embeddings, 0.0);
  const double accuracy = (out.logits.back().argmax(-1) == c.labels).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(accuracy, 1.0 / K, 0.02);  // sd 0.0047 at n = 4000
}

// A classifier with every weight perturbed, so no zero-initialized path hides the wiring.
struct Perturbed {
  Config cfg = test::tiny_config("blocks", "");
  std::unique_ptr<DenoisingClassifier> task;
  Perturbed() {
    torch::manual_seed(6);
    ViT vit(vit_options(cfg, test::fashion_shape()));
    torch::NoGradGuard ng;
    for (auto& p : vit->parameters()) p.add_(0.3 * torch::randn_like(p));
    task = std::make_unique<DenoisingClassifier>(cfg, vit);
  }
};

TEST(Preconditioning, OutputIsTheInputAtZeroNoiseAndTheNetworkAtTheTop) {
  Perturbed p;
  torch::NoGradGuard ng;
  torch::manual_seed(7);
  const auto images = torch::randn({8, 1, 28, 28});
  const auto y = p.task->target(torch::randint(0, 10, {8}, torch::kInt64));
  for (int block = 0; block < 3; ++block) {
    // sigma -> 0: c_skip -> 1, c_out -> 0, so D(z) = z (the denoiser passes a clean input through).
    const auto z = y + 1e-6 * torch::randn_like(y);
    const auto d0 = p.task->denoise(images, z, torch::full({8}, 1e-6), block);
    EXPECT_LT((d0 - z).abs().max().item<double>(), 1e-5) << "block " << block;
    // sigma = sigma_max: c_skip ~ 4e-5, so D is the network's c_out h and hardly moves with z.
    const auto e1 = torch::randn_like(y), e2 = torch::randn_like(y);
    const auto s = torch::full({8}, 80.0);
    const auto z1 = y + 80.0 * e1, z2 = y + 80.0 * e2;
    const double dz = (z1 - z2).norm().item<double>();
    const double dd = (p.task->denoise(images, z1, s, block) - p.task->denoise(images, z2, s, block)).norm().item<double>();
    EXPECT_LT(dd, 0.05 * dz) << "block " << block << ": D moved " << dd << " for z moving " << dz;
    EXPECT_GT(dd, 0.0) << "the network does see its input";
  }
}

TEST(Inference, StartNoiseHasTheSpreadOfZAtSigmaMax) {
  Perturbed p;
  torch::manual_seed(9);
  const auto z = p.task->start_noise(64, torch::TensorOptions().dtype(torch::kFloat64));
  torch::manual_seed(9);
  const auto eps = torch::randn({64, 32}, torch::kFloat64);
  // z_sigma_max = y + 80 eps with y a unit vector in d = 32 dimensions: variance 80^2 + 1/32 per coordinate.
  EXPECT_TRUE(torch::allclose(z, eps * std::sqrt(6400.0 + 1.0 / 32), 1e-12, 0.0));
}

TEST(Evaluation, TeacherForcingDoesNotDependOnTheSampler) {
  Perturbed p;
  const ImageData data(ImageSplit{torch::randint(0, 256, {40, 1, 28, 28}, torch::kUInt8), torch::arange(40) % 10, "l"},
                       ImageSplit{torch::randint(0, 256, {30, 1, 28, 28}, torch::kUInt8), torch::arange(30) % 10, "l"},
                       "random");
  auto tf = [&](double temperature, int steps) {
    Config cfg = p.cfg;
    cfg.classifier.inference_temperature = temperature;
    cfg.diffusion.inference_steps = steps;
    DenoisingClassifier task(cfg, p.task->vit());
    return evaluate_classifier(task, cfg, data, Split::Test, 11);
  };
  // Temperature 0 also runs the reference sampler (twice the draws); teacher forcing does not see it.
  const auto a = tf(0.0, 3), b = tf(1.0, 3);
  EXPECT_EQ(a.teacher_sigmas, b.teacher_sigmas);
  EXPECT_EQ(a.teacher_forced, b.teacher_forced);
  EXPECT_EQ(a.accuracy_expected_embedding, b.accuracy);  // the paired reference sampler is the temperature-1 run
}

TEST(Data, ImageSizeChannelsAndClassesComeFromTheData) {
  test::TempDir dir;
  std::vector<uint8_t> images(size_t(20) * 32 * 32, 100), labels(20);
  for (int i = 0; i < 20; ++i) labels[size_t(i)] = uint8_t(i % 4);
  for (const char* split : {"train", "t10k"}) {
    test::write_idx(dir.file(std::string(split) + "-images-idx3-ubyte"), {20, 32, 32}, images, false);
    test::write_idx(dir.file(std::string(split) + "-labels-idx1-ubyte"), {20}, labels, false);
  }
  Config cfg = test::tiny_config("blocks", dir.path());
  const auto data = load_dataset(cfg);
  EXPECT_EQ(data->shape().height, 32);
  EXPECT_EQ(data->shape().width, 32);
  EXPECT_EQ(data->shape().channels, 1);
  EXPECT_EQ(data->shape().classes, 4);
  // Patch 7 does not tile 32x32: a one-line error naming both.
  EXPECT_TRUE(ThrowsUserError([&] { make_family(cfg, data, torch::kCPU); }, {"32x32", "classifier.patch = 7"}));
  cfg.classifier.patch = 8;
  auto family = make_family(cfg, data, torch::kCPU);
  auto& task = dynamic_cast<DenoisingClassifier&>(*family);
  EXPECT_EQ(task.vit()->shared->pos_embed.size(1), task.vit()->opt.lead_tokens() + 16);  // 4x4 patches of 8x8
  const auto batch = data->batch(Split::Train, torch::arange(4), torch::kCPU);
  EXPECT_TRUE(std::isfinite(family->loss(batch, 1, 3).value.item<double>()));
  EXPECT_EQ(task.vit()->forward(batch.x).sizes(), (std::vector<int64_t>{4, 4}));
}

TEST(Data, AModelTooLargeForTheMachineIsRefusedBeforeAllocating) {
  Config cfg = test::tiny_config("blocks", "");
  cfg.model.layers = 1023;
  cfg.model.blocks = 1;
  cfg.model.hidden = 65536;
  cfg.model.heads = 1;
  EXPECT_TRUE(ThrowsUserError([&] { DenoisingClassifier(cfg, test::fashion_shape(), torch::kCPU); },
                              {"model.layers = 1023", "model.hidden = 65536", "GiB"}));
  Config big_batch = test::tiny_config("blocks", "");
  big_batch.train.batch_size = 1 << 20;
  EXPECT_TRUE(ThrowsUserError([&] { DenoisingClassifier(big_batch, test::fashion_shape(), torch::kCPU); },
                              {"train.batch_size = 1048576", "GiB"}));
}

TEST(SyntheticTraining, TrainsAtTheConfiguredLearningRate) {
  Config cfg = test::tiny_config("blocks", "");
  cfg.train.lr = 2e-3;
  cfg.train.batch_size = 8;
  SyntheticTraining rig(cfg);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(rig.step().lr, 2e-3);
}

TEST(Optimizer, DecayOnMatricesOnly) {
  Config cfg = test::tiny_config("blocks", "");
  cfg.set("train.decay=matrices");
  DenoisingClassifier task(cfg, test::fashion_shape(), torch::kCPU);
  const auto opt = make_optimizer(task.model(), cfg);
  for (const char* name : {"blocks.0.layers.0.qkv.weight", "blocks.2.layers.0.fc2.weight", "shared.patch_embed.weight",
                           "shared.head.weight", "shared.out_ada.proj.weight"})
    EXPECT_TRUE(opt.decays(name)) << name;
  for (const char* name : {"blocks.0.layers.0.qkv.bias", "shared.pos_embed", "shared.cls_token", "shared.label_embed.weight",
                           "shared.final_norm.weight", "shared.final_norm.bias"})
    EXPECT_FALSE(opt.decays(name)) << name;
  cfg.set("train.decay=all");
  const auto all = make_optimizer(task.model(), cfg);
  for (const auto& p : task.model().named_parameters()) EXPECT_TRUE(all.decays(p.key())) << p.key();
}

// The batch's loss for each diffusion.weighting (family.h) against its formula, written out here
// in float64: the fused pass and libtorch's ops give the same values and per-example gradients, and
// the plain mean alongside. The weights take no gradient.
TEST(Loss, EveryWeightingMatchesItsFormula) {
  torch::manual_seed(17);
  const auto l = torch::rand({7}, torch::kDouble) * 3, w = torch::rand({7}, torch::kDouble) + 0.5;
  const double n = 7;
  const std::vector<std::pair<Weighting, torch::Tensor>> cases = {
      {Weighting::PerSample, w / n}, {Weighting::BatchMean, w.mean() / n * torch::ones_like(w)},
      {Weighting::Normalized, w / w.sum()}, {Weighting::None, torch::ones_like(w) / n}};
  for (const auto& [how, coefficients] : cases)
    for (bool fused : {true, false}) {
      SCOPED_TRACE(fmt::format("weighting {} {}", int(how), fused ? "fused" : "libtorch"));
      simd::set_fused_kernels(fused);
      auto x = l.clone().set_requires_grad(true);
      const auto loss = weighted_loss(x, w, how);
      loss.value.backward();
      simd::set_fused_kernels(true);
      EXPECT_NEAR(loss.value.item<double>(), (coefficients * l).sum().item<double>(), 1e-12);
      EXPECT_NEAR(loss.plain.item<double>(), l.mean().item<double>(), 1e-12);
      EXPECT_FALSE(loss.plain.requires_grad());
      EXPECT_TRUE(torch::allclose(x.grad(), coefficients, 1e-12, 1e-14));
    }
}

// A golden regression: a fixed seed, a tiny model and a few steps in each mode give these losses.
// A change here changes the method (or its random streams); update the numbers only on purpose.
TEST(Golden, LossesOfTheFirstStepsAreUnchanged) {
  const std::map<std::string, std::vector<double>> expected = {
      {"e2e", {2.30258536, 2.2777369, 2.25345397, 2.23578262}},  // since per-block init seeds
      {"blocks", {12.1059265, 43.0175438, 27803.4648, 10.0999699}},
  };
  for (const auto& [mode, losses] : expected) {
    test::Rig rig(test::tiny_config(mode, ""), /*init_seed=*/1, /*total_steps=*/20);
    torch::manual_seed(2);
    const Batch batch{torch::randn({16, 1, 28, 28}), torch::randint(0, 10, {16}, torch::kInt64)};
    std::vector<double> got;
    for (int64_t step = 0; step < 4; ++step) got.push_back(rig.runner->run(batch, step).loss);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], losses[i], 1e-5 * std::max(1.0, std::abs(losses[i])))
          << mode << " step " << i << fmt::format(": got {:.9g}", got[i]);
  }
}

}  // namespace
}  // namespace blocklab
