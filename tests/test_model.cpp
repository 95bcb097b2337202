// The ViT with blocks, the denoising classifier and one optimizer step: block independence,
// per-parameter AdamW step counts, a finite-difference gradient check of one block, the NaN
// guard, the step schedule and the memory tracker.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>

#include <fmt/format.h>

#include "models/layer_function.h"
#include "models/vit.h"
#include "schedule/precond.h"
#include "families/classifier/classifier.h"
#include "test_util.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"
#include "train/step.h"
#include "util/seed.h"
#include "util/memory.h"

namespace blocklab {
namespace {

using test::snapshot;
using test::starts_with;

// The two blocks-mode token layouts (model.label_token): the noisy label in the class-token slot
// (reference code), or beside a clean class token that is read out (paper).
const std::vector<std::string> kLabelTokens = {"as_cls", "beside_cls"};

// The tiny training config with 6 layers (2 per block) and a constant learning rate.
Config small_config(const std::string& mode, const std::string& label_token = "as_cls") {
  Config c = test::tiny_config(mode, /*data_dir=*/"");
  c.set("classifier.label_token=" + label_token);
  c.model.layers = 6;
  c.train.lr = 1e-3;
  c.train.lr_schedule = LrSchedule::Constant;
  c.train.warmup = 0.0;
  c.train.seed = 5;
  return c;
}

Batch random_batch(int64_t n, uint64_t seed, torch::Dtype dtype = torch::kFloat32) {
  torch::manual_seed(seed);
  return {torch::randn({n, 1, 28, 28}, dtype), torch::randint(0, 10, {n}, torch::kInt64)};
}

// The rig of these tests: the small config, fixed initial weights.
struct Rig : test::Rig {
  explicit Rig(const std::string& mode, const std::string& label_token = "as_cls")
      : test::Rig(small_config(mode, label_token), /*init_seed=*/11, /*total_steps=*/100) {}
};

// The noise level's sinusoidal embedding (models/layers.h): cos(t f_j) then sin(t f_j) with
// f_j = 10000^(-j / half), against the formula in float64; float32 written in place (no gradient)
// equals the concatenation the differentiable path returns, and a second call (cached frequencies) the first.
TEST(NoiseEmbedder, SinusoidalEmbeddingMatchesTheFormula) {
  const auto t = torch::tensor({0.0, -1.5, 0.25, 40.0}, torch::kDouble);
  const auto e = sinusoidal_embedding(t, 8);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{4, 8}));
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 4; ++j) {
      const double arg = t[i].item<double>() * std::pow(10000.0, -double(j) / 4.0);
      EXPECT_NEAR(e[i][j].item<double>(), std::cos(arg), 1e-12);
      EXPECT_NEAR(e[i][4 + j].item<double>(), std::sin(arg), 1e-12);
    }
  const auto t32 = torch::randn({37}) * 5;
  const auto plain = sinusoidal_embedding(t32, 256);
  EXPECT_TRUE(torch::equal(plain, sinusoidal_embedding(t32, 256)));
  const auto tracked = t32.clone().set_requires_grad(true);
  const auto differentiable = sinusoidal_embedding(tracked, 256);
  EXPECT_TRUE(differentiable.requires_grad());
  EXPECT_TRUE(torch::equal(plain, differentiable.detach()));
}

// A transformer layer as one autograd function (models/layer_function.h) against the same layer
// composed of the fused functions: the output and the gradients of the condition and every
// parameter bit for bit, x's and adaLN's bias's to rounding, with adaLN's SiLU after its product
// (the ViT's) and before it (the DiT's and LM's), per-sample and per-token conditions, a causal
// mask, and a shape with heads of 8 and 5 tokens. (Training takes the one function: its grad_fn
// says so.)
TEST(TransformerLayer, OneFunctionMatchesTheComposedLayerBitForBit) {
  struct Shape {
    int64_t n, t, d, heads;
    bool per_token, masked;
    AdaLNStyle style;
  };
  for (const auto& s : std::vector<Shape>{{3, 18, 64, 4, false, false, AdaLNStyle::SiluAfter},
                                          {2, 5, 24, 3, true, true, AdaLNStyle::SiluBefore},
                                          {1, 7, 32, 2, false, true, AdaLNStyle::SiluAfter},
                                          {2, 6, 32, 4, false, false, AdaLNStyle::SiluBefore}}) {
    SCOPED_TRACE(fmt::format("N={} T={} d={} heads={}{}{} SiLU {}", s.n, s.t, s.d, s.heads, s.per_token ? " per-token" : "",
                             s.masked ? " masked" : "", s.style == AdaLNStyle::SiluAfter ? "after" : "before"));
    torch::manual_seed(21);
    TransformerLayer layer(TransformerLayerOptions{s.d, s.heads, 4, 16, s.style});
    {
      torch::NoGradGuard no_grad;  // (adaLN starts at zero: every modulation would be 0)
      for (auto& p : layer->parameters()) p.normal_(0.0, 0.3);
    }
    const auto x = torch::randn({s.n, s.t, s.d});
    const auto cond = s.per_token ? torch::randn({s.n, s.t, 16}) : torch::randn({s.n, 16});
    const auto mask = s.masked ? torch::full({s.t, s.t}, -INFINITY).triu(1) : torch::Tensor();
    const auto upstream = torch::randn({s.n, s.t, s.d});
    std::vector<std::vector<torch::Tensor>> results;
    std::vector<std::string> names{"output", "x", "cond"};
    for (bool one_function : {true, false}) {
      set_layer_function(one_function);
      layer->zero_grad();
      auto xi = x.clone().set_requires_grad(true), ci = cond.clone().set_requires_grad(true);
      const auto out = layer->forward(xi, ci, {mask});
      EXPECT_EQ(out.grad_fn()->name().find("LayerFunction") != std::string::npos, one_function) << out.grad_fn()->name();
      (out * upstream).sum().backward();
      std::vector<torch::Tensor> r{out.detach(), xi.grad(), ci.grad()};
      for (const auto& p : layer->named_parameters()) {
        r.push_back(p.value().grad().clone());
        if (one_function) names.push_back(p.key());
      }
      results.push_back(r);
    }
    set_layer_function(true);
    // x's gradient: its two parts are added in modulate's backward pass, where the compiler may fuse
    // the last product and the sum into one FMA (one rounding fewer); adaLN's bias gradient: summed
    // over the batch as the GEMM packs, not by the activation's backward pass. Everything else bit for bit.
    for (size_t i = 0; i < results[0].size(); ++i) {
      const auto &got = results[0][i], &composed = results[1][i];
      if (names[i] == "x" || names[i] == "ada.proj.bias")
        EXPECT_LT(((got - composed).abs().max() / composed.abs().max()).item<double>(), 1e-6) << names[i];
      else
        EXPECT_TRUE(torch::equal(got, composed)) << names[i];
    }
  }
  // Its first backward releases what it saved: a second one is a clear error, not a crash.
  TransformerLayer layer(TransformerLayerOptions{16, 2, 4, 8});
  const auto out = layer->forward(torch::randn({2, 3, 16}).set_requires_grad(true), torch::randn({2, 8}));
  out.sum().backward({}, /*retain_graph=*/true);
  try {
    out.sum().backward();
    ADD_FAILURE() << "a second backward ran";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph is not supported"), std::string::npos) << e.what();
  }
}

// The patch embedding as one product (models/layers.h) against the convolution it stands for:
// values and the gradients of the kernel and bias, float32 (the GEMM) and float64 (libtorch's
// linear), with an image size the patch does not divide (the convolution drops the remainder).
TEST(PatchEmbedding, MatchesTheConvolution) {
  for (auto type : {torch::kFloat, torch::kDouble}) {
    torch::manual_seed(3);
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 8, 4).stride(4));
    conv->to(type);
    const auto images = torch::randn({2, 3, 13, 18}, type);
    const auto got = embed_patches(images, conv);
    const auto want = conv->forward(images).flatten(2).transpose(1, 2);
    ASSERT_EQ(got.sizes(), want.sizes());
    const double tol = type == torch::kFloat ? 1e-5 : 1e-12;
    EXPECT_LT((got - want).abs().max().item<double>(), tol);
    const auto upstream = torch::randn(want.sizes(), type);
    const auto grads = torch::autograd::grad({(got * upstream).sum()}, {conv->weight, conv->bias});
    const auto ref = torch::autograd::grad({(want * upstream).sum()}, {conv->weight, conv->bias});
    for (size_t i = 0; i < 2; ++i) EXPECT_LT((grads[i] - ref[i]).abs().max().item<double>(), 10 * tol) << i;
  }
}

TEST(ViT, ParameterAddressesAndShapes) {
  const Config cfg = small_config("blocks");
  ViT model(vit_options(cfg, test::fashion_shape()));
  std::set<std::string> names;
  for (const auto& p : model->named_parameters()) {
    names.insert(p.key());
    EXPECT_TRUE(starts_with(p.key(), "shared.") || starts_with(p.key(), "blocks.")) << p.key();
  }
  for (int b = 0; b < 3; ++b)
    for (int l = 0; l < 2; ++l)
      for (const char* leaf : {"ada.proj.weight", "qkv.weight", "proj.bias", "fc1.weight", "fc2.weight"})
        EXPECT_TRUE(names.count(block_prefix(b) + "layers." + std::to_string(l) + "." + leaf))
            << b << " " << l << " " << leaf;
  EXPECT_FALSE(names.count("blocks.0.layers.2.qkv.weight"));  // L/B = 2 layers per block
  EXPECT_FALSE(names.count("blocks.3.layers.0.qkv.weight"));
  EXPECT_EQ(block_prefix(2), "blocks.2.");
  // Positions: one lead token (the class token or the noisy label in its slot) and 16 patches;
  // with the label beside the class token, two lead tokens.
  EXPECT_EQ(model->shared->pos_embed.sizes(), (std::vector<int64_t>{1, 17, 32}));
  ViT beside(vit_options(small_config("blocks", "beside_cls"), test::fashion_shape()));
  EXPECT_EQ(beside->shared->pos_embed.sizes(), (std::vector<int64_t>{1, 18, 32}));
  EXPECT_EQ(beside->forward(torch::randn({3, 1, 28, 28})).sizes(), (std::vector<int64_t>{3, 10}));
  // adaLN-Zero: every modulation and the classifier start at zero; each layer is the identity.
  for (const auto& p : model->named_parameters())
    if (p.key().find("ada.proj") != std::string::npos || starts_with(p.key(), "shared.head."))
      EXPECT_EQ(p.value().abs().max().item<double>(), 0.0) << p.key();
  auto x = torch::randn({2, 17, 32});
  auto cond = torch::randn({2, 16});
  auto layer = model->block(0)->layers[0]->as<TransformerLayer>();
  EXPECT_TRUE(torch::equal(layer->forward(x, cond), x));
  EXPECT_EQ(model->forward(torch::randn({3, 1, 28, 28})).sizes(), (std::vector<int64_t>{3, 10}));
}

TEST(DenoisingClassifier, TargetIsUnitNormAndTrainsTheEmbedding) {
  Rig rig("blocks");
  auto y = rig.task->target(torch::tensor({0, 3, 3, 9}, torch::kInt64));
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_TRUE(torch::allclose(y.norm(2, 1), torch::ones({4}), 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(y[1], y[2]));
  y.sum().backward();
  EXPECT_TRUE(rig.model->shared->label_embed->weight.grad().defined());
}

// Each weighting of the block loss against per-example cross-entropies computed independently
// (the same noisy targets, one logits call, the per-example CE by hand).
TEST(DenoisingClassifier, LossWeightingModes) {
  const auto batch = random_batch(6, 4);
  const auto sigma = torch::tensor({0.3, 0.5, 1.0, 2.0, 5.0, 9.0}, torch::kFloat32);
  const auto w = precondition(sigma, 0.5).weight;
  for (const std::string weighting : {"per_sample", "batch_mean", "normalized", "none"}) {
    SCOPED_TRACE(weighting);
    Config cfg = small_config("blocks");
    cfg.set("diffusion.weighting=" + weighting);
    torch::manual_seed(3);
    ViT model(vit_options(cfg, test::fashion_shape()));
    {  // non-trivial logits
      torch::NoGradGuard ng;
      for (auto& p : model->parameters()) p.add_(0.5 * torch::randn_like(p));
    }
    DenoisingClassifier task(cfg, model);
    torch::manual_seed(8);
    const auto loss = task.block_loss(batch, 0, sigma);
    torch::Tensor ce;
    {
      torch::NoGradGuard ng;
      torch::manual_seed(8);  // block_loss draws its noise right after computing the target
      const auto y = task.target(batch.y);
      const auto z = y + sigma.unsqueeze(1) * torch::randn_like(y);
      const auto logp = torch::log_softmax(task.denoise_logits(batch.x, z, sigma, 0), -1);
      ce = -logp.gather(1, batch.y.unsqueeze(1)).squeeze(1);  // [6]
    }
    const double expected = weighting == "per_sample"   ? (w * ce).mean().item<double>()
                            : weighting == "batch_mean" ? w.mean().item<double>() * ce.mean().item<double>()
                            : weighting == "normalized" ? ((w * ce).sum() / w.sum()).item<double>()
                                                        : ce.mean().item<double>();
    EXPECT_NEAR(loss.value.item<double>(), expected, 1e-5 * expected);
    EXPECT_NEAR(loss.plain.item<double>(), ce.mean().item<double>(), 1e-5 * ce.mean().item<double>());
  }
}

// A training step on block b leaves every other block's parameters bit-identical;
// the active block and the shared modules change; AdamW counts steps per parameter.
void check_block_independence(const std::string& label_token) {
  SCOPED_TRACE("model.label_token = " + label_token);
  // The class token takes part in blocks mode only beside the label; in the label's slot it is unused.
  const bool cls_used = label_token == "beside_cls";
  Rig rig("blocks", label_token);
  const auto batch = random_batch(16, 21);
  const auto initial = snapshot(*rig.model);
  const int K = 9;
  std::vector<int> visits(3, 0);
  for (int64_t step = 0; step < K; ++step) {
    const int b = block_for_step(rig.cfg, step);
    const auto before = snapshot(*rig.model);
    const auto stats = rig.runner->run(batch, step);
    ASSERT_EQ(stats.block, b) << "step " << step;
    EXPECT_TRUE(std::isfinite(stats.loss));
    ++visits[size_t(b)];
    const auto after = snapshot(*rig.model);
    for (const auto& [name, t] : after) {
      const bool same = torch::equal(t, before.at(name));
      if (starts_with(name, "blocks.") && !starts_with(name, block_prefix(b)))
        EXPECT_TRUE(same) << "step " << step << " (block " << b << ") changed " << name;
      else if (name == "shared.cls_token" && !cls_used)
        EXPECT_TRUE(same) << "step " << step << " changed " << name;
      else if (starts_with(name, block_prefix(b)) && step >= 1)
        // From step 1 on the zero-initialized head passes gradients back; weight decay moves the rest.
        EXPECT_FALSE(same) << "step " << step << " (block " << b << ") left " << name << " unchanged";
    }
    for (int l = 0; l < 2; ++l) {
      const auto name = block_prefix(b) + "layers." + std::to_string(l) + ".ada.proj.weight";
      if (step >= 1)
        EXPECT_GT((after.at(name) - before.at(name)).abs().max().item<double>(), 0.0) << name << " at step " << step;
    }
  }
  for (int b = 0; b < 3; ++b) EXPECT_EQ(visits[size_t(b)], K / 3) << "block " << b;
  const auto final = snapshot(*rig.model);
  for (const auto& [name, t] : final) {
    if (starts_with(name, "shared.") && (name != "shared.cls_token" || cls_used))
      EXPECT_FALSE(torch::equal(t, initial.at(name))) << name << " never changed";
    // Per-parameter step counts: block parameters count their block's visits, shared ones every step.
    int64_t expected = K;
    if (name == "shared.cls_token" && !cls_used) expected = 0;
    for (int b = 0; b < 3; ++b)
      if (starts_with(name, block_prefix(b))) expected = visits[size_t(b)];
    EXPECT_EQ(rig.opt->steps_of(name), expected) << name;
  }
  EXPECT_EQ(rig.opt->steps_of("no.such.parameter"), -1);
}

TEST(StepRunner, BlockStepLeavesOtherBlocksBitIdentical) {
  for (const auto& label_token : kLabelTokens) check_block_independence(label_token);
}

TEST(StepRunner, StepCountsWithUnevenVisits) {
  // Steps 0..3 of seed 5: one full round plus one step, so one block has two visits.
  Rig rig("blocks");
  const auto batch = random_batch(8, 2);
  std::vector<int> visits(3, 0);
  for (int64_t step = 0; step < 4; ++step) {
    rig.runner->run(batch, step);
    ++visits[size_t(test::block_at(step, 3, 5))];
  }
  for (int b = 0; b < 3; ++b)
    EXPECT_EQ(rig.opt->steps_of(block_prefix(b) + "layers.1.fc2.weight"), visits[size_t(b)]);
  EXPECT_EQ(rig.opt->steps_of("shared.head.weight"), 4);
}

TEST(StepRunner, EndToEndStepTrainsEveryLayer) {
  Rig rig("e2e");
  const auto batch = random_batch(8, 3);
  for (int64_t step = 0; step < 3; ++step) {
    const auto stats = rig.runner->run(batch, step);
    EXPECT_EQ(stats.block, -1);
  }
  for (const auto& p : rig.model->named_parameters()) {
    if (p.key() == "shared.label_embed.weight") EXPECT_EQ(rig.opt->steps_of(p.key()), 0) << "unused in e2e";
    else EXPECT_EQ(rig.opt->steps_of(p.key()), 3) << p.key();
  }
}

TEST(StepRunner, SameStepSameResult) {
  // All randomness of a step is a function of (seed, step): two fresh rigs agree bit for bit.
  Rig a("blocks"), b("blocks");
  const auto batch = random_batch(8, 9);
  for (int64_t step : {0, 1, 2, 7}) {
    const auto sa = a.runner->run(batch, step), sb = b.runner->run(batch, step);
    EXPECT_EQ(sa.loss, sb.loss);
    EXPECT_EQ(sa.block, sb.block);
  }
  const auto ma = snapshot(*a.model), mb = snapshot(*b.model);
  for (const auto& [name, t] : ma) EXPECT_TRUE(torch::equal(t, mb.at(name))) << name;
}

TEST(StepRunner, SampledSigmasLieInTheBlockRange) {
  Rig rig("blocks");
  for (int b = 0; b < 3; ++b) {
    const auto r = rig.task->partition().range(b);
    const auto s = rig.task->sample_sigmas(b, 2000, 17, torch::kCPU).to(torch::kFloat64);
    EXPECT_EQ(s.scalar_type(), torch::kFloat64);
    EXPECT_GE(s.min().item<double>(), r.lo * (1 - 1e-6));
    EXPECT_LE(s.max().item<double>(), r.hi * (1 + 1e-6));
    // A majority of draws maps to the block itself (reference §1.5 step 3).
    int own = 0;
    for (int64_t i = 0; i < s.size(0); ++i) own += rig.task->partition().block_of(s[i].item<double>()) == b;
    EXPECT_GT(own, 1500) << "block " << b;
    EXPECT_TRUE(torch::equal(s, rig.task->sample_sigmas(b, 2000, 17, torch::kCPU).to(torch::kFloat64)));
  }
}

TEST(StepRunner, NonFiniteLossThrowsAndUpdatesNothing) {
  Rig rig("blocks");
  const auto batch = random_batch(8, 5);
  rig.runner->run(batch, 0);
  {
    torch::NoGradGuard ng;
    rig.model->shared->head->weight[0][0] = std::nan("");
  }
  const auto before = snapshot(*rig.model);
  std::map<std::string, int64_t> steps_before;
  for (const auto& [name, t] : before) steps_before[name] = rig.opt->steps_of(name);
  std::string msg;
  EXPECT_TRUE(test::ThrowsUserError([&] { rig.runner->run(batch, 1); }, {"nan", "step 1"}, &msg));
  const auto after = snapshot(*rig.model);
  for (const auto& [name, t] : after) {
    if (name == "shared.head.weight") EXPECT_TRUE(torch::equal(torch::nan_to_num(t), torch::nan_to_num(before.at(name))));
    else EXPECT_TRUE(torch::equal(t, before.at(name))) << name;
    EXPECT_EQ(rig.opt->steps_of(name), steps_before.at(name)) << name;
  }
  for (const auto& p : rig.model->parameters()) EXPECT_FALSE(p.grad().defined());
}

// A finite-difference gradient check of one block step, in double precision.
void check_block_gradients(const std::string& label_token) {
  SCOPED_TRACE("model.label_token = " + label_token);
  const bool cls_used = label_token == "beside_cls";
  Config cfg = small_config("blocks", label_token);
  cfg.model.hidden = 16;
  cfg.model.cond_dim = 8;
  torch::manual_seed(2);
  ViT model(vit_options(cfg, test::fashion_shape()));
  model->to(torch::kFloat64);
  {  // Make the zero-initialized modulations and head non-zero, so every gradient is non-trivial.
    torch::NoGradGuard ng;
    for (auto& p : model->parameters()) p.add_(0.2 * torch::randn_like(p));
  }
  DenoisingClassifier task(cfg, model);
  const Batch batch = random_batch(4, 6, torch::kFloat64);
  const auto sigma = torch::tensor({0.4, 0.7, 1.5, 3.0}, torch::kFloat64);
  const int block = 1;
  const uint64_t noise_seed = 1234;

  torch::manual_seed(noise_seed);
  const auto loss = task.block_loss(batch, block, sigma);
  ASSERT_EQ(loss.value.scalar_type(), torch::kFloat64);
  loss.value.backward();

  auto params = model->named_parameters();
  for (const auto& p : params) {
    const auto& name = p.key();
    const bool other_block = starts_with(name, "blocks.") && !starts_with(name, block_prefix(block));
    if (other_block || (name == "shared.cls_token" && !cls_used)) EXPECT_FALSE(p.value().grad().defined()) << name;
    else EXPECT_TRUE(p.value().grad().defined()) << name;
  }

  auto loss_at = [&] {
    torch::NoGradGuard ng;
    torch::manual_seed(noise_seed);
    return task.block_loss(batch, block, sigma).value.item<double>();
  };
  EXPECT_DOUBLE_EQ(loss_at(), loss.value.item<double>());  // the same noise every evaluation

  std::vector<std::string> checked = {
      "blocks.1.layers.0.qkv.weight",     "blocks.1.layers.0.ada.proj.weight", "blocks.1.layers.1.fc2.bias",
      "blocks.1.layers.1.fc1.weight",     "blocks.1.layers.1.proj.weight",     "shared.label_embed.weight",
      "shared.head.weight",               "shared.pos_embed",                  "shared.patch_embed.weight",
      "shared.noise_embed.mlp.0.weight",  "shared.out_ada.proj.weight",        "shared.final_norm.weight"};
  if (cls_used) checked.push_back("shared.cls_token");
  const double h = 1e-6;
  std::mt19937_64 rng(99);
  int compared = 0;
  for (const auto& name : checked) {
    ASSERT_TRUE(params.contains(name)) << name;
    auto param = params[name];
    const auto grad = param.grad().reshape(-1).clone();
    auto flat = param.detach().view(-1);  // shares the parameter's storage
    std::vector<int64_t> entries = {grad.abs().argmax().item<int64_t>()};
    std::uniform_int_distribution<int64_t> pick(0, flat.numel() - 1);
    for (int i = 0; i < 4; ++i) entries.push_back(pick(rng));
    for (int64_t i : entries) {
      const double original = flat[i].item<double>();
      flat[i] = original + h;
      const double up = loss_at();
      flat[i] = original - h;
      const double down = loss_at();
      flat[i] = original;
      const double numeric = (up - down) / (2 * h), analytic = grad[i].item<double>();
      EXPECT_LE(std::abs(numeric - analytic), 1e-5 * std::max(std::abs(numeric), std::abs(analytic)) + 1e-8)
          << name << "[" << i << "]: autograd " << analytic << ", central difference " << numeric;
      ++compared;
    }
    EXPECT_GT(grad.abs().max().item<double>(), 1e-4) << name << ": the check needs a non-trivial gradient";
  }
  EXPECT_EQ(compared, int(checked.size()) * 5);
}

TEST(Gradients, BlockLossMatchesFiniteDifferences) {
  for (const auto& label_token : kLabelTokens) check_block_gradients(label_token);
}

TEST(Inference, PredictStepsWalksTheBlocksInOrder) {
  for (const auto& label_token : kLabelTokens) {
    Rig other("blocks", label_token);
    other.cfg.classifier.inference_temperature = 0.0;
    torch::NoGradGuard ng;
    const auto out = DenoisingClassifier(other.cfg, other.model).predict_steps(random_batch(2, 1).x, 3);
    EXPECT_EQ(out.blocks, (std::vector<int>{0, 1, 2})) << label_token;
  }
  Rig rig("blocks");
  torch::NoGradGuard ng;
  const auto images = random_batch(5, 1).x;
  const auto out = rig.task->predict_steps(images, 3);
  EXPECT_EQ(out.sigmas, rig.task->partition().inference_levels(3));
  EXPECT_EQ(out.blocks, (std::vector<int>{0, 1, 2}));
  ASSERT_EQ(out.logits.size(), 3u);
  for (const auto& l : out.logits) EXPECT_EQ(l.sizes(), (std::vector<int64_t>{5, 10}));
  const auto six = rig.task->predict_steps(images, 6);
  ASSERT_EQ(six.blocks.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(six.blocks[i], rig.task->partition().block_of(six.sigmas[i]));
  EXPECT_EQ(six.blocks.front(), 0);
  EXPECT_EQ(six.blocks.back(), 2);
}

TEST(Inference, ClassWeightsByTemperature) {
  const auto logits = torch::tensor({{1.0, 3.0, 2.0}, {0.5, -1.0, 0.0}}, torch::kFloat64);
  EXPECT_TRUE(torch::allclose(class_weights(logits, 1.0), torch::softmax(logits, -1), 1e-15, 1e-15));  // E[y|z]
  EXPECT_TRUE(torch::allclose(class_weights(logits, 0.5), torch::softmax(2.0 * logits, -1), 1e-15, 1e-15));
  EXPECT_TRUE(torch::equal(class_weights(logits, 0.0), torch::tensor({{0.0, 1.0, 0.0}, {1.0, 0.0, 0.0}}, torch::kFloat64)));
  for (double t : {0.0, 0.1, 1.0, 10.0})
    EXPECT_TRUE(torch::allclose(class_weights(logits, t).sum(-1), torch::ones({2}, torch::kFloat64), 1e-12, 1e-12));
}

TEST(Schedule, BlockForStepVisitsEveryBlockOncePerRound) {
  for (int B : {1, 2, 3, 4}) {
    std::vector<int> counts(size_t(B), 0);
    bool some_round_not_identity = false;
    for (int64_t round = 0; round < 50; ++round) {
      std::set<int> seen;
      for (int i = 0; i < B; ++i) {
        const int b = test::block_at(round * B + i, B, 42);
        EXPECT_GE(b, 0);
        EXPECT_LT(b, B);
        seen.insert(b);
        ++counts[size_t(b)];
        some_round_not_identity |= b != i;
        EXPECT_EQ(b, test::block_at(round * B + i, B, 42));  // a pure function
      }
      EXPECT_EQ(int(seen.size()), B) << "round " << round;
    }
    for (int c : counts) EXPECT_EQ(c, 50);
    if (B > 2) EXPECT_TRUE(some_round_not_identity) << "the order within rounds is drawn, not fixed";
  }
  EXPECT_NE(derive_seed(0, Stream::Step, 1), derive_seed(0, Stream::Step, 2));
  EXPECT_NE(derive_seed(0, Stream::Step, 1), derive_seed(1, Stream::Step, 1));
  EXPECT_NE(derive_seed(0, Stream::Step, 1), derive_seed(0, Stream::DataOrder, 1));  // streams never share draws
  EXPECT_EQ(derive_seed(7, Stream::Eval, 3), derive_seed(7, Stream::Eval, 3));
  EXPECT_LT(derive_seed(123, Stream::Step, 456), uint64_t(1) << 63);
}

TEST(Schedule, TotalStepsAndLearningRate) {
  Config c;
  c.train.epochs = 2.5;
  c.model.mode = Mode::E2E;
  EXPECT_EQ(total_steps(c, 10), 25);
  c.model.mode = Mode::Blocks;
  c.model.blocks = 3;
  EXPECT_EQ(total_steps(c, 10), 75);  // equal compute: B times the steps
  c.train.epochs = 0.01;
  EXPECT_EQ(total_steps(c, 10), 3);  // at least one step per block

  TrainConfig t;
  t.lr = 1e-3;
  t.min_lr = 1e-5;
  t.warmup = 0.1;
  t.lr_schedule = LrSchedule::Cosine;
  const int64_t total = 100;
  EXPECT_NEAR(learning_rate(t, 0, total), 1e-4, 1e-12);  // (0 + 1/100) / 0.1 of the peak
  EXPECT_NEAR(learning_rate(t, 4, total), 5e-4, 1e-12);
  EXPECT_NEAR(learning_rate(t, 9, total), 1e-3, 1e-12);
  EXPECT_NEAR(learning_rate(t, 10, total), 1e-3, 1e-12);  // cosine starts at the peak
  EXPECT_NEAR(learning_rate(t, 55, total), 0.5 * (1e-3 + 1e-5), 1e-12);
  EXPECT_NEAR(learning_rate(t, 100, total), 1e-5, 1e-12);
  for (int64_t s = 11; s < total; ++s) EXPECT_LT(learning_rate(t, s, total), learning_rate(t, s - 1, total));
  t.lr_schedule = LrSchedule::Constant;
  EXPECT_NEAR(learning_rate(t, 50, total), 1e-3, 1e-15);
  t.warmup = 0;
  EXPECT_NEAR(learning_rate(t, 0, total), 1e-3, 1e-15);
}

TEST(AdamW, MatchesTheReferenceUpdateAndSkipsParametersWithoutGradient) {
  auto a = torch::tensor({1.0, -2.0, 0.5}, torch::kFloat64).requires_grad_(true);
  auto b = torch::tensor({3.0, 4.0}, torch::kFloat64).requires_grad_(true);
  AdamW opt({{"a", a}, {"b", b}}, AdamWOptions{0.9, 0.999, 1e-8, 0.1});
  const std::vector<double> g1 = {0.1, -0.2, 0.3}, g2 = {-0.05, 0.4, 0.0};
  std::vector<double> p = {1.0, -2.0, 0.5}, m(3, 0.0), v(3, 0.0);
  const double lr = 0.01;
  for (int step = 1; step <= 2; ++step) {
    const auto& g = step == 1 ? g1 : g2;
    a.mutable_grad() = torch::tensor(g, torch::kFloat64);
    opt.step(lr);
    opt.zero_grad();
    for (size_t i = 0; i < 3; ++i) {
      p[i] *= 1 - lr * 0.1;
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(0.9, step)), vh = v[i] / (1 - std::pow(0.999, step));
      p[i] -= lr * mh / (std::sqrt(vh) + 1e-8);
    }
    for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(a[int64_t(i)].item<double>(), p[i], 1e-12) << "step " << step;
  }
  EXPECT_FALSE(a.grad().defined());
  EXPECT_EQ(opt.steps_of("a"), 2);
  EXPECT_EQ(opt.steps_of("b"), 0);  // no gradient: no decay, no step
  EXPECT_TRUE(torch::equal(b, torch::tensor({3.0, 4.0}, torch::kFloat64)));
  const auto state = opt.state_dict();
  EXPECT_TRUE(state.count("a.exp_avg") && state.count("a.exp_avg_sq") && state.count("a.step"));
  EXPECT_FALSE(state.count("b.step"));
  EXPECT_EQ(state.at("a.step").item<int64_t>(), 2);

  // Round trip of the state (through its safetensors bytes, as a checkpoint does) into a fresh optimizer.
  auto a2 = a.detach().clone().requires_grad_(true), b2 = b.detach().clone().requires_grad_(true);
  AdamW opt2({{"a", a2}, {"b", b2}}, AdamWOptions{0.9, 0.999, 1e-8, 0.1});
  opt2.load_state_dict(parse_safetensors(safetensors_bytes(state), "state"), "test");
  EXPECT_EQ(opt2.steps_of("a"), 2);
  a.mutable_grad() = torch::tensor(g1, torch::kFloat64);
  a2.mutable_grad() = torch::tensor(g1, torch::kFloat64);
  opt.step(lr);
  opt2.step(lr);
  EXPECT_TRUE(torch::equal(a, a2));

  TensorMap bad = state;
  bad["a.exp_avg"] = torch::zeros({4}, torch::kFloat64);
  EXPECT_TRUE(test::ThrowsUserError([&] { opt2.load_state_dict(bad, "ckpt.safetensors"); }, {"ckpt.safetensors", "a"}));
}

// The CPU fast path in float32 (one pass per parameter, vectorised with a scalar tail: 37
// elements) against the same update in float64, and its gradient norm against libtorch's.
TEST(AdamW, Float32FastPathMatchesTheUpdateInFloat64) {
  torch::manual_seed(5);
  auto a = torch::randn({37}).requires_grad_(true);
  auto ref = a.detach().to(torch::kFloat64);
  AdamW opt({{"a", a}}, AdamWOptions{0.9, 0.999, 1e-8, 0.1});
  auto m = torch::zeros_like(ref), v = torch::zeros_like(ref);
  const double lr = 0.05;
  for (int step = 1; step <= 3; ++step) {
    const auto g = torch::randn({37});
    a.mutable_grad() = g.clone();
    const double norm = opt.clip_grad_norm(0.0);
    EXPECT_NEAR(norm, g.to(torch::kFloat64).norm().item<double>(), 1e-12 * norm);
    opt.step(lr);
    opt.zero_grad();
    const auto gd = g.to(torch::kFloat64);
    ref = ref * (1 - lr * 0.1);
    m = 0.9 * m + 0.1 * gd;
    v = 0.999 * v + 0.001 * gd * gd;
    ref = ref - lr * (m / (1 - std::pow(0.9, step))) / ((v / (1 - std::pow(0.999, step))).sqrt() + 1e-8);
    EXPECT_LT((a.detach().to(torch::kFloat64) - ref).abs().max().item<double>(), 2e-6) << "step " << step;
  }
}

TEST(AdamW, ClipGradNorm) {
  auto a = torch::zeros({2}, torch::kFloat64).requires_grad_(true);
  auto b = torch::zeros({1}, torch::kFloat64).requires_grad_(true);
  auto c = torch::zeros({1}, torch::kFloat64).requires_grad_(true);
  AdamW opt({{"a", a}, {"b", b}, {"c", c}}, AdamWOptions{});
  EXPECT_EQ(opt.clip_grad_norm(1.0), 0.0);  // no gradients at all
  a.mutable_grad() = torch::tensor({3.0, 0.0}, torch::kFloat64);
  b.mutable_grad() = torch::tensor({4.0}, torch::kFloat64);
  EXPECT_NEAR(opt.clip_grad_norm(0.0), 5.0, 1e-12);  // 0: report only
  EXPECT_NEAR(b.grad().item<double>(), 4.0, 1e-15);
  EXPECT_NEAR(opt.clip_grad_norm(10.0), 5.0, 1e-12);  // below the limit: unchanged
  EXPECT_NEAR(b.grad().item<double>(), 4.0, 1e-15);
  EXPECT_NEAR(opt.clip_grad_norm(1.0), 5.0, 1e-12);
  EXPECT_NEAR(a.grad()[0].item<double>(), 0.6, 1e-6);
  EXPECT_NEAR(b.grad().item<double>(), 0.8, 1e-6);
  EXPECT_FALSE(c.grad().defined());
}

// Installing the tracker replaces the process-wide CPU allocator for good, so these checks run in
// child processes (gtest death tests that must exit 0) and the rest of the suite is unaffected.
// Each prints what failed to stderr, which gtest shows when the exit code is not 0.
class ChildChecks {
 public:
  void check(bool ok, const std::string& what) {
    if (!ok) failures_ += what + "\n";
  }
  void fail(const std::string& what) { failures_ += what + "\n"; }
  [[noreturn]] void exit() {
    std::fprintf(stderr, "%s", failures_.c_str());
    std::exit(failures_.empty() ? 0 : 1);
  }

 private:
  std::string failures_;
};

void tracker_counts_bytes() {
  ChildChecks c;
  c.check(peak_rss_bytes() > 0, "peak_rss_bytes() > 0");
  TensorMemoryTracker::install();
  TensorMemoryTracker::install();  // idempotent
  c.check(TensorMemoryTracker::installed(), "installed()");
  const int64_t base = TensorMemoryTracker::current_bytes();
  TensorMemoryTracker::reset_peak();
  c.check(TensorMemoryTracker::peak_bytes() == base, "peak == current after reset_peak");
  {
    auto t = torch::empty({1 << 20}, torch::kFloat32);  // 4 MiB
    c.check(TensorMemoryTracker::current_bytes() - base == (4 << 20), "4 MiB tensor counted");
    auto u = torch::empty({1 << 18}, torch::kFloat64);  // 2 MiB
    c.check(TensorMemoryTracker::current_bytes() - base == (6 << 20), "6 MiB counted");
  }
  c.check(TensorMemoryTracker::current_bytes() == base, "freed tensors uncounted");
  c.check(TensorMemoryTracker::peak_bytes() - base == (6 << 20), "peak of 6 MiB");
  TensorMemoryTracker::reset_peak();
  c.check(TensorMemoryTracker::peak_bytes() == base, "reset_peak");
  c.exit();
}

void tracker_keeps_training_working() {
  ChildChecks c;
  TensorMemoryTracker::install();
  const int64_t base = TensorMemoryTracker::current_bytes();
  TensorMemoryTracker::reset_peak();
  // Every operation of a training step must still work with the tracker installed, including
  // kernels that take raw buffers from the CPU allocator (oneDNN convolution, as used by the
  // patch embedding for batches like these; `blocklab bench step` runs exactly this).
  try {
    Config cfg = small_config("blocks");
    ViT model(vit_options(cfg, test::fashion_shape()));
    DenoisingClassifier task(cfg, model);
    const auto batch = random_batch(32, 1);
    task.block_loss(batch, 0, torch::full({32}, 1.0)).value.backward();
    c.check(TensorMemoryTracker::peak_bytes() > base, "a training step allocates");
  } catch (const c10::Error& e) {
    c.fail(std::string("a block step with the tracker installed threw: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    c.fail(std::string("a block step with the tracker installed threw: ") + e.what());
  }
  c.exit();
}

TEST(Memory, TrackerCountsTensorBytes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(tracker_counts_bytes(), ::testing::ExitedWithCode(0), "");
}

TEST(Memory, TrackerKeepsTrainingStepsWorking) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(tracker_keeps_training_working(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace blocklab
