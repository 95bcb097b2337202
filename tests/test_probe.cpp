// `probe random-step` (docs/probe.md): the measurement against closed forms on a quadratic, the
// AdamW update, and on a tiny trained run that only the probed parameters move, that everything is
// restored bit for bit, that the run's files are untouched, that a seed gives the same numbers, and
// that bad input is one line with exit 1.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "eval/probe.h"
#include "eval/probe_target.h"
#include "families/registry.h"
#include "io/run_dir.h"
#include "train/checkpoint.h"
#include "train/step.h"
#include "train/trainer.h"
#include "test_util.h"

namespace blocklab {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// L(x) = 0.5 (x - x*)^T H (x - x*) with a dense H = Q diag(lambda) Q^T in d dimensions.
struct Quadratic {
  int64_t d;
  torch::Tensor h, x_star, lambda;
  Quadratic(int64_t dims, uint64_t seed) : d(dims) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
    lambda = torch::linspace(0.1, 10.0, d, f64);
    const auto q = std::get<0>(torch::linalg_qr(at::normal(0.0, 1.0, {d, d}, gen, f64)));
    h = q.matmul(torch::diag(lambda)).matmul(q.t());
    h = 0.5 * (h + h.t());  // symmetric to the last bit
    x_star = at::normal(0.0, 1.0, {d}, gen, f64);
  }
  ProbeLoss loss(const torch::Tensor& x) const {
    return [this, x] {
      const auto e = x - x_star;
      return 0.5 * e.dot(h.mv(e));
    };
  }
};

TEST(ProbeQuadratic, RandomStepsMatchTheClosedFormAndTheUpdateTheAnalyticChange) {
  const Quadratic quad(40, 11);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto delta = 0.3 * at::normal(0.0, 1.0, {quad.d}, gen, f64);
  auto x = (quad.x_star + delta).clone().requires_grad_(true);
  const auto loss = quad.loss(x);

  const auto grads = probe_gradient({x}, loss);
  const auto g = quad.h.mv(delta);  // the analytic gradient
  ASSERT_TRUE(torch::allclose(grads[0], g, 1e-12, 1e-12));
  const double lr = 0.1;
  const auto update = sgd_update(grads, lr);
  EXPECT_NEAR(cosine(update, grads), -1.0, 1e-12);

  RandomStepOptions options;
  options.radii = {2.0, 8.0};  // the linear part dominates the spread at 2, the quadratic at 8
  options.directions = 4000;
  options.seed = 3;
  const auto result = random_step_probe({x}, update, loss, options);

  const double gg = g.dot(g).item<double>(), ghg = g.dot(quad.h.mv(g)).item<double>();
  const double tr = quad.lambda.sum().item<double>(), tr2 = quad.lambda.pow(2).sum().item<double>();
  const double d = double(quad.d);
  EXPECT_EQ(result.d, quad.d);
  EXPECT_NEAR(result.l0, 0.5 * delta.dot(quad.h.mv(delta)).item<double>(), 1e-12);
  EXPECT_NEAR(result.update_norm, lr * std::sqrt(gg), 1e-12);
  ASSERT_EQ(result.rows.size(), 2u);
  for (const auto& row : result.rows) {
    const double r = row.radius;
    // The update r * (-lr g): dL = -r lr |g|^2 + (r lr)^2 g^T H g / 2, exactly for a quadratic.
    const double analytic = -r * lr * gg + 0.5 * r * r * lr * lr * ghg;
    EXPECT_NEAR(row.update_change, analytic, 1e-9 * std::abs(analytic)) << "radius " << r;

    // A random step v = rho u, u uniform on the unit sphere, rho = r |update|:
    //   dL = rho g.u + (rho^2 / 2) u^T H u.
    // E[u] = 0 and E[u u^T] = I / d give E[dL] = rho^2 tr(H) / (2d). The two terms are
    // uncorrelated (one is odd in u, the other even), Var(g.u) = |g|^2 / d, and with
    // E[u_i^4] = 3 / (d(d+2)), E[u_i^2 u_j^2] = 1 / (d(d+2)) in H's eigenbasis,
    //   Var(u^T H u) = 2 (tr(H^2) - tr(H)^2 / d) / (d (d+2)), so
    //   Var(dL) = rho^2 |g|^2 / d + rho^4 (tr(H^2) - tr(H)^2 / d) / (2 d (d+2)).
    const double rho = r * lr * std::sqrt(gg);
    const double mean = rho * rho * tr / (2 * d);
    const double var = rho * rho * gg / d + std::pow(rho, 4) * (tr2 - tr * tr / d) / (2 * d * (d + 2));
    const double n = double(row.random_changes.size());
    ASSERT_EQ(row.random_changes.size(), 4000u);
    // The sample mean is within 4 standard errors (a fixed seed: this either always passes or never).
    EXPECT_NEAR(row.mean, mean, 4 * std::sqrt(var / n)) << "radius " << r;
    // The sample variance of 4,000 draws has a relative standard error of sqrt((kurtosis - 1) / n),
    // about 2-4% for these near-Gaussian mixtures; 15% is over 4 of them, and a wrong norm, a
    // non-uniform direction or a missing term is off by far more (the terms are 86% / 14% and
    // 28% / 72% of the variance at the two radii).
    EXPECT_NEAR(row.std * row.std / var, 1.0, 0.15) << "radius " << r;
    // z against the closed form's (the sample std is within ~8% of sqrt(var), see above).
    const double z = (analytic - mean) / std::sqrt(var);
    EXPECT_NEAR(row.z, z, 0.1 * std::abs(z)) << "radius " << r;
    // The summary's definitions.
    EXPECT_NEAR(row.z, (row.update_change - row.mean) / row.std, 1e-12);
    int64_t below = 0;
    for (double v : row.random_changes) below += v < row.update_change;
    EXPECT_DOUBLE_EQ(row.fraction_better, double(below) / n);
  }
  // Small steps: the gradient step stands out by about sqrt(d) = 6.3 standard deviations, less its
  // curvature (z = -4.5 here), and no random step of 4,000 beats it; at radius 8 the curvature
  // dominates and random steps do.
  EXPECT_LT(result.rows[0].z, -4);
  EXPECT_EQ(result.rows[0].fraction_better, 0.0);
  EXPECT_GT(result.rows[1].fraction_better, 0.0);
  // The starting point is restored exactly.
  EXPECT_TRUE(torch::equal(x.detach(), quad.x_star + delta));
}

TEST(ProbeQuadratic, ADirectionIsAFunctionOfSeedAndIndexWithTheGivenNorm) {
  const std::vector<torch::Tensor> like = {torch::zeros({3, 4}), torch::zeros({5})};
  const auto a = random_direction(like, 1, 7, 2.5), b = random_direction(like, 1, 7, 2.5);
  const auto c = random_direction(like, 1, 8, 2.5);
  EXPECT_TRUE(torch::equal(a[0], b[0]) && torch::equal(a[1], b[1]));
  EXPECT_FALSE(torch::equal(a[0], c[0]));
  EXPECT_NEAR(global_norm(a), 2.5, 1e-5);
  EXPECT_EQ(a[0].sizes(), like[0].sizes());
  EXPECT_EQ(a[1].dtype(), torch::kFloat32);
  // The cosine over lists of tensors: the angle of the concatenations.
  EXPECT_NEAR(cosine({torch::tensor({1.0}), torch::tensor({0.0})}, {torch::tensor({1.0}), torch::tensor({1.0})}),
              1 / std::sqrt(2.0), 1e-12);
  EXPECT_EQ(cosine({torch::zeros({2})}, {torch::ones({2})}), 0.0);
}

TEST(ProbeAdamW, TheUpdateIsTheOptimizersStepOnTheProbedParametersOnly) {
  torch::NoGradGuard no_grad;
  auto a = torch::tensor({1.0, -2.0, 0.5}, torch::kFloat64).requires_grad_(true);
  auto b = torch::tensor({3.0, 4.0}, torch::kFloat64).requires_grad_(true);
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt({{"a", a}, {"b", b}}, o);
  const auto a0 = a.detach().clone(), b0 = b.detach().clone();
  const auto g = torch::tensor({0.2, -0.01, 0.0}, torch::kFloat64);
  const double lr = 1e-2;
  const auto update = adamw_update(opt, {a}, {g}, lr);
  // From zero moments the bias-corrected step is lr * g / (|g| + eps), after decay by lr * wd.
  const auto expected = -lr * o.weight_decay * a0 - lr * g / (g.abs() + o.eps);
  EXPECT_TRUE(torch::allclose(update[0], expected, 1e-12, 1e-15)) << update[0] << expected;
  EXPECT_TRUE(torch::equal(a.detach(), a0));  // restored
  EXPECT_TRUE(torch::equal(b.detach(), b0));  // never touched
  EXPECT_EQ(opt.steps_of("b"), 0);            // no gradient, no step
  EXPECT_FALSE(a.grad().defined());
}

// ------------------------------------------------------------------ a tiny trained blocks run

// One blocks run for the tests below, trained once per process.
const std::string& probe_run_dir() {
  static TempDir dir;
  static bool trained = false;
  if (!trained) {
    auto cfg = test::tiny_config("blocks", test::synthetic_data_dir());
    cfg.train.epochs = 1;
    train(cfg, test::train_options(dir.path(), "probe-test"));
    trained = true;
  }
  return dir.path();
}

// Every file under `dir` by relative path, with its bytes.
std::map<std::string, std::string> probe_files(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = test::read_bytes(e.path().string());
  return out;
}

TEST(ProbeRun, OnlyTheProbedParametersMoveAndEverythingIsRestoredBitForBit) {
  const auto& dir = probe_run_dir();
  const RunDir run(dir, false);
  const auto cfg = Config::load(run.file("config.toml"), {});
  const torch::Device cpu(torch::kCPU);
  auto data = load_dataset(cfg);
  auto family = make_family(cfg, data, cpu);
  auto opt = make_optimizer(family->model(), cfg);
  TensorMap tensors;
  read_checkpoint(run.file("checkpoint.safetensors"), "", tensors);
  for (auto it = tensors.begin(); it != tensors.end();) it = it->first.rfind("ema.", 0) == 0 ? tensors.erase(it) : std::next(it);
  restore_training_state(tensors, family->model(), opt, nullptr, "checkpoint");

  const int block = 1;
  const auto fixed = probe_batches(*data, cfg.train.batch_size, 2, 0, cpu);
  const auto inner = family_probe_loss(*family, fixed, block);
  const auto candidates = probe_candidates(family->model(), block);
  std::vector<torch::Tensor> params;
  std::set<std::string> probed;
  for (const auto& [name, p] : candidates) {
    EXPECT_TRUE(test::starts_with(name, "blocks.1.") || test::starts_with(name, "shared.")) << name;
    params.push_back(p);
    probed.insert(name);
  }
  const auto before = test::snapshot(family->model());
  ASSERT_GT(before.size(), probed.size());  // the other blocks are not probed

  // The loss, checking at every trial that nothing outside the probed set has moved.
  int calls = 0, moved_calls = 0;
  const ProbeLoss loss = [&] {
    ++calls;
    bool moved = false;
    for (const auto& p : family->model().named_parameters()) {
      const bool same = torch::equal(p.value(), before.at(p.key()));
      if (!probed.count(p.key())) EXPECT_TRUE(same) << p.key() << " changed during trial " << calls;
      moved = moved || !same;
    }
    moved_calls += moved;
    return inner();
  };
  auto grads = probe_gradient(params, inner);
  std::vector<torch::Tensor> reached, reached_grads;
  for (size_t i = 0; i < params.size(); ++i)
    if (grads[i].defined()) reached.push_back(params[i]), reached_grads.push_back(grads[i]);
  ASSERT_FALSE(reached.empty());
  RandomStepOptions options;
  options.radii = {1.0, 2.0};
  options.directions = 3;
  const auto result = random_step_probe(reached, sgd_update(reached_grads, 1e-2), loss, options);
  EXPECT_EQ(calls, 1 + 2 * (1 + 3));   // L0, then per radius the update and 3 directions
  EXPECT_EQ(moved_calls, 2 * (1 + 3)); // every trial but L0 moved some probed parameter
  for (const auto& p : family->model().named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), before.at(p.key()))) << p.key() << " not restored";
  torch::NoGradGuard no_grad;
  EXPECT_EQ(inner().item<double>(), result.l0);  // bit-identical: the same function, the same weights
  EXPECT_NE(result.rows[0].update_change, 0.0);
}

TEST(ProbeRun, TheCliLeavesTheRunUntouchedAndASeedGivesTheSameNumbers) {
  const auto& dir = probe_run_dir();
  TempDir scratch;
  const auto files_before = probe_files(dir);
  ASSERT_TRUE(files_before.count("checkpoint.safetensors"));
  auto probe = [&](const std::string& out) {
    return test::run_cli("probe random-step " + test::quote(dir) +
                             " --directions 4 --batches 1 --radius 0.5,2 --out " + test::quote(out),
                         scratch);
  };
  const auto first = probe(scratch.file("a")), second = probe(scratch.file("b"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(probe_files(dir), files_before);  // the checkpoint and every other file, byte for byte

  const auto a = test::read_bytes(scratch.file("a/probe.json")), b = test::read_bytes(scratch.file("b/probe.json"));
  EXPECT_EQ(a, b);
  const auto j = nlohmann::json::parse(a);
  ASSERT_EQ(j["targets"].size(), 3u);  // one per block
  int64_t total = 0;
  for (const auto& p : make_family(Config::load(dir + "/config.toml", {}), load_dataset(Config::load(dir + "/config.toml", {})),
                                   torch::Device(torch::kCPU))
                           ->model()
                           .parameters())
    total += p.numel();
  for (const auto& t : j["targets"]) {
    EXPECT_EQ(t["update"], "adamw");  // the checkpoint has every block's moments
    EXPECT_GT(t["d"].get<int64_t>(), 0);
    EXPECT_LT(t["d"].get<int64_t>(), total);  // a block and the shared modules, not the whole model
    ASSERT_EQ(t["rows"].size(), 2u);
    EXPECT_EQ(t["rows"][0]["random_changes"].size(), 4u);
    EXPECT_EQ(t["rows"][1]["radius"], 2.0);
  }
  EXPECT_TRUE(fs::exists(scratch.file("a/random-step.png")));
  EXPECT_EQ(test::read_bytes(scratch.file("a/random-step.png")), test::read_bytes(scratch.file("b/random-step.png")));

  // Another seed draws other batches and directions.
  const auto other = test::run_cli("probe random-step " + test::quote(dir) +
                                       " --directions 4 --batches 1 --radius 0.5,2 --seed 1 --out " +
                                       test::quote(scratch.file("c")),
                                   scratch);
  ASSERT_EQ(other.exit_code, 0) << other.err;
  EXPECT_NE(test::read_bytes(scratch.file("c/probe.json")), a);
}

TEST(ProbeCli, BadInputIsOneLineWithExitOne) {
  TempDir scratch;
  // A run directory's config is all the checks below read (they come before any weights).
  TempDir run;
  auto cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  test::write_bytes(run.file("config.toml"), cfg.to_toml());
  const auto missing = scratch.file("no-such-run");
  test::expect_one_line_error(test::run_cli("probe random-step " + test::quote(missing), scratch), {missing}, true);
  test::expect_one_line_error(test::run_cli("probe random-step " + test::quote(run.path()) + " --block 7", scratch),
                              {"--block 7", "3 blocks"}, true);
  test::expect_one_line_error(test::run_cli("probe random-step " + test::quote(run.path()) + " --radius abc", scratch),
                              {"--radius", "abc"}, true);
  test::expect_one_line_error(test::run_cli("probe random-step " + test::quote(run.path()) + " --radius 1,-2", scratch),
                              {"--radius", "-2"}, true);
  test::expect_one_line_error(test::run_cli("probe random-step " + test::quote(run.path()) + " --update adam", scratch),
                              {"--update", "adam"}, true);
  // A config but no checkpoint: named.
  test::expect_one_line_error(test::run_cli("probe random-step " + test::quote(run.path()), scratch),
                              {run.path(), "checkpoint"}, true);
}

}  // namespace
}  // namespace blocklab
