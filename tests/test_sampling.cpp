// Samplers against the exact solution for Gaussian data, their block attribution, EDM's rho
// schedule, and the Fréchet distance against closed forms.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "eval/frechet.h"
#include "schedule/noise.h"
#include "schedule/sampler.h"

namespace blocklab {
namespace {

// Data y ~ N(0, s^2 I): the ideal denoiser is D(z; sigma) = z s^2 / (s^2 + sigma^2), and the
// probability-flow ODE carries z(sigma) = z(sigma_0) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_0^2).
constexpr double kS = 0.5;
torch::Tensor ideal(const torch::Tensor& z, double sigma, int) { return z * (kS * kS / (kS * kS + sigma * sigma)); }

// Relative error at sigma = 0 of sampling Gaussian data on EDM's rho = 7 schedule of n levels.
double error_at_zero(Sampler sampler, int n) {
  torch::manual_seed(1);
  const auto z0 = 80.0 * torch::randn({256, 4}, torch::kFloat64);
  const auto out = sample_ode(karras_sigmas(n, 0.002, 80.0), z0, sampler, ideal, [](double) { return -1; });
  const auto exact = z0 * (kS / std::sqrt(kS * kS + 80.0 * 80.0));
  return (out - exact).abs().max().item<double>() / exact.abs().max().item<double>();
}

TEST(Sampler, EulerIsFirstOrderAndHeunSecondOrder) {
  const double e16 = error_at_zero(Sampler::Euler, 16), e32 = error_at_zero(Sampler::Euler, 32);
  const double h16 = error_at_zero(Sampler::Heun, 16), h32 = error_at_zero(Sampler::Heun, 32);
  EXPECT_LT(h16, e16);
  EXPECT_NEAR(e16 / e32, 2.0, 0.3) << e16 << " " << e32;  // halving the step halves Euler's error
  EXPECT_GT(h16 / h32, 3.5) << h16 << " " << h32;          // and quarters Heun's
  EXPECT_LT(error_at_zero(Sampler::Heun, 64), 1e-2);
}

TEST(Sampler, EveryEvaluationRunsTheBlockThatOwnsItsLevel) {
  const Partition p(std::make_shared<LogNormalSigma>(NoiseOptions{}), 3, 0.0);
  const auto levels = p.inference_levels(9);
  for (const auto sampler : {Sampler::Euler, Sampler::Heun}) {
    std::vector<DenoiserCall> calls;
    sample_ode(levels, torch::randn({2, 3}, torch::kFloat64), sampler, ideal, [&](double s) { return p.block_of(s); },
               &calls);
    ASSERT_EQ(calls.size(), sampler == Sampler::Euler ? 9u : 17u);
    std::vector<int> per_block(3, 0);
    for (const auto& c : calls) {
      EXPECT_EQ(c.block, p.block_of(c.sigma));
      ++per_block[size_t(c.block)];
    }
    if (sampler == Sampler::Heun) {
      // Heun's correction at level i+1 is that level's: call 2i+1 is at levels[i+1].
      for (size_t i = 0; i + 1 < levels.size(); ++i) EXPECT_EQ(calls[2 * i + 1].sigma, levels[i + 1]);
    }
    for (int b = 0; b < 3; ++b) EXPECT_GE(per_block[size_t(b)], 2) << "each block serves about N/B steps";
  }
}

TEST(Sampler, KarrasScheduleMatchesEq5) {
  const auto s = karras_sigmas(5, 0.002, 80.0, 7.0);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(s.front(), 80.0);
  EXPECT_EQ(s.back(), 0.002);
  const double hi = std::pow(80.0, 1 / 7.0), lo = std::pow(0.002, 1 / 7.0);
  EXPECT_NEAR(s[2], std::pow(0.5 * (hi + lo), 7.0), 1e-12);
  for (size_t i = 1; i < s.size(); ++i) EXPECT_LT(s[i], s[i - 1]);
  EXPECT_EQ(karras_sigmas(1, 0.002, 80.0), std::vector<double>{80.0});
}

TEST(Frechet, ClosedForms) {
  torch::manual_seed(3);
  const auto x = torch::randn({500, 6}, torch::kFloat64) * torch::tensor({1.0, 2.0, 0.5, 1.5, 1.0, 3.0}, torch::kFloat64);
  const auto a = feature_stats(x);
  EXPECT_NEAR(frechet_distance(a, a), 0.0, 1e-9);  // identical sets
  // A shift of the mean by v adds |v|^2 (the covariance is unchanged).
  const auto v = torch::tensor({1.0, -2.0, 0.0, 0.5, 3.0, 0.0}, torch::kFloat64);
  EXPECT_NEAR(frechet_distance(a, feature_stats(x + v)), v.pow(2).sum().item<double>(), 1e-8);
  // Two Gaussians with diagonal covariances: |m1 - m2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2)).
  FeatureStats g1{torch::tensor({0.0, 1.0, 2.0}, torch::kFloat64), torch::diag(torch::tensor({1.0, 4.0, 9.0}, torch::kFloat64)), 10};
  FeatureStats g2{torch::tensor({1.0, 1.0, 0.0}, torch::kFloat64), torch::diag(torch::tensor({4.0, 1.0, 9.0}, torch::kFloat64)), 10};
  const double expected = (1 + 0 + 4) + (1 + 4 - 2 * 2) + (4 + 1 - 2 * 2) + (9 + 9 - 2 * 9);
  EXPECT_NEAR(frechet_distance(g1, g2), expected, 1e-10);
  EXPECT_NEAR(frechet_distance(g2, g1), expected, 1e-10);
  // A rank-deficient covariance (rounding can make eigenvalues slightly negative) stays finite and >= 0.
  const auto flat = feature_stats(torch::randn({3, 6}, torch::kFloat64));
  const double d = frechet_distance(flat, flat);
  EXPECT_TRUE(std::isfinite(d));
  EXPECT_NEAR(d, 0.0, 1e-6);
  const auto r = sqrt_psd(g1.cov);
  EXPECT_TRUE(torch::allclose(r.matmul(r), g1.cov, 1e-12, 1e-12));
}

}  // namespace
}  // namespace blocklab
