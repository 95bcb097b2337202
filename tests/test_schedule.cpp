// Noise distributions, the DiffusionBlocks partition (paper §3.3, App. C, App. H) and EDM
// preconditioning (Karras et al. 2022, Table 1) against values computed from the formulas with the
// default constants (docs/method.md lists them), and the Euler step.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "schedule/noise.h"
#include "schedule/precond.h"

namespace blocklab {
namespace {

// A value printed in a reference table, e.g. "0.1796" or "3.9e-5": what it says and the
// rounding error its printed digits allow (half a unit of the last digit).
struct Printed {
  double value, tolerance;
};

Printed printed(const std::string& s) {
  const auto e = s.find_first_of("eE");
  const std::string mantissa = s.substr(0, e);
  const int exponent = e == std::string::npos ? 0 : std::stoi(s.substr(e + 1));
  const auto dot = mantissa.find('.');
  const int decimals = dot == std::string::npos ? 0 : int(mantissa.size() - dot - 1);
  return {std::stod(s), 0.5 * std::pow(10.0, exponent - decimals)};
}

// The EDM log-normal with the paper's constants, and its partition into B blocks.
const LogNormalSigma kEdm{NoiseOptions{}};
Partition edm(int B, double overlap = 0.0) { return Partition(std::make_shared<LogNormalSigma>(NoiseOptions{}), B, overlap); }

#define EXPECT_PRINTED(actual, text)                                                   \
  do {                                                                                 \
    const Printed p_ = printed(text);                                                  \
    EXPECT_NEAR((actual), p_.value, p_.tolerance) << "reference value " << (text);     \
  } while (0)

TEST(NormalQuantile, InvertsNormalCdf) {
  for (double p : {1e-12, 1e-8, 1e-5, 0.001, 0.02, 0.02425, 0.1, 0.3, 0.5, 0.7, 0.9, 0.97575, 0.99, 0.999999}) {
    EXPECT_NEAR(normal_cdf(normal_quantile(p)), p, 1e-12 * std::max(1.0, p)) << "p = " << p;
    EXPECT_NEAR(normal_cdf(normal_quantile(p)), p, 1e-9 * p) << "relative, p = " << p;
  }
  for (double x = -8.0; x <= 4.0; x += 0.25) EXPECT_NEAR(normal_quantile(normal_cdf(x)), x, 1e-9) << "x = " << x;
}

TEST(NormalQuantile, KnownValuesAndDomain) {
  EXPECT_NEAR(normal_quantile(0.5), 0.0, 1e-15);
  EXPECT_NEAR(normal_quantile(0.975), 1.959963984540054, 1e-12);
  EXPECT_NEAR(normal_quantile(0.025), -1.959963984540054, 1e-12);
  EXPECT_NEAR(normal_quantile(0.8413447460685429), 1.0, 1e-12);
  EXPECT_NEAR(normal_cdf(0.0), 0.5, 1e-16);
  EXPECT_THROW(normal_quantile(0.0), std::domain_error);
  EXPECT_THROW(normal_quantile(1.0), std::domain_error);
  EXPECT_THROW(normal_quantile(-0.1), std::domain_error);
  EXPECT_THROW(normal_quantile(std::nan("")), std::domain_error);
}

TEST(Partition, EdmBoundariesMatchTheTable) {  // paper §3.3
  const std::vector<std::pair<int, std::vector<std::string>>> table = {
      {2, {"0.002", "0.3012", "80"}},
      {3, {"0.002", "0.1796", "0.5050", "80"}},
      {4, {"0.002", "0.1341", "0.3012", "0.6766", "80"}},
      {6, {"0.002", "0.0943", "0.1796", "0.3012", "0.5050", "0.9617", "80"}},
  };
  for (const auto& [B, expected] : table) {
    const auto b = edm(B).boundaries();
    ASSERT_EQ(b.size(), expected.size()) << "B = " << B;
    EXPECT_EQ(b.front(), 0.002);
    EXPECT_EQ(b.back(), 80.0);
    for (size_t i = 0; i < b.size(); ++i) {
      SCOPED_TRACE("B = " + std::to_string(B) + ", boundary " + std::to_string(i));
      // Agreement to the table's printed digits (half a unit of the last one: 5e-5 absolute for
      // "0.1796", a relative 2.8e-4; a relative 1e-4 is more than four printed digits can say).
      EXPECT_PRINTED(b[i], expected[i]);
    }
  }
}

TEST(Partition, EdmBoundariesSplitTheTruncatedDistributionEqually) {
  const auto& s = kEdm;
  const double q_min = s.cdf(0.002), q_max = s.cdf(80.0);
  EXPECT_NEAR(q_min, 1.5e-5, 0.05e-5);  // q_min = 1.5e-5, q_max = 0.999998
  EXPECT_NEAR(q_max, 0.999998, 0.5e-6);
  for (int B : {1, 2, 3, 4, 5, 6, 12}) {
    const auto b = edm(B).boundaries();
    ASSERT_EQ(int(b.size()), B + 1);
    for (int i = 0; i < B; ++i) {
      EXPECT_LT(b[i], b[i + 1]);
      EXPECT_NEAR(s.cdf(b[i + 1]) - s.cdf(b[i]), (q_max - q_min) / B, 1e-12) << "B = " << B << ", interval " << i;
    }
  }
  // Nested partitions share their boundaries exactly (up to round-off).
  const auto b2 = edm(2).boundaries(), b3 = edm(3).boundaries(), b4 = edm(4).boundaries(), b6 = edm(6).boundaries();
  EXPECT_NEAR(b2[1], b4[2], 1e-14);
  EXPECT_NEAR(b2[1], b6[3], 1e-14);
  EXPECT_NEAR(b3[1], b6[2], 1e-14);
  EXPECT_NEAR(b3[2], b6[4], 1e-14);
  EXPECT_THROW(edm(0), std::invalid_argument);
}

TEST(NoiseDistribution, CdfAndQuantileAreInverse) {
  const auto& s = kEdm;
  for (double sigma : {0.002, 0.01, 0.3012, 1.0, 7.5, 80.0}) EXPECT_NEAR(s.quantile(s.cdf(sigma)) / sigma, 1.0, 1e-10);
  EXPECT_NEAR(s.quantile(0.5), std::exp(-1.2), 1e-15);  // the median of the log-normal
}

TEST(Partition, EdmRangesWithOverlap) {  // paper App. C, B = 3, gamma = 0.05
  const auto p = edm(3, 0.05), p0 = edm(3);
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"0.392", "80"}, {"0.1706", "0.5318"}, {"0.002", "0.2249"}};
  for (int b = 0; b < 3; ++b) {
    SCOPED_TRACE("block " + std::to_string(b));
    const auto r = p.range(b);
    EXPECT_PRINTED(r.lo, expected[size_t(b)].first);
    EXPECT_PRINTED(r.hi, expected[size_t(b)].second);
    EXPECT_NEAR(r.lo / printed(expected[size_t(b)].first).value, 1.0, 1.5e-3);
    EXPECT_NEAR(r.hi / printed(expected[size_t(b)].second).value, 1.0, 1.5e-3);
  }
  // The clipped ends are exact.
  EXPECT_EQ(p.range(0).hi, 80.0);
  EXPECT_EQ(p.range(2).lo, 0.002);
  // Without overlap the ranges are the nominal intervals, block 0 owning the highest noise.
  const auto bounds = p.boundaries();
  for (int b = 0; b < 3; ++b) {
    const auto r = p0.range(b);
    EXPECT_EQ(r.lo, p.nominal(b).lo);
    EXPECT_EQ(r.hi, p.nominal(b).hi);
    EXPECT_DOUBLE_EQ(r.lo, bounds[size_t(2 - b)]);
    EXPECT_DOUBLE_EQ(r.hi, bounds[size_t(3 - b)]);
  }
  // Unclipped sides widen by gamma * log-width: block 1 (both sides interior).
  const auto r1 = p.range(1);
  const double width = std::log(bounds[2]) - std::log(bounds[1]);
  EXPECT_NEAR(std::log(r1.lo), std::log(bounds[1]) - 0.05 * width, 1e-12);
  EXPECT_NEAR(std::log(r1.hi), std::log(bounds[2]) + 0.05 * width, 1e-12);
  EXPECT_THROW(p.range(3), std::out_of_range);
  EXPECT_THROW(p.range(-1), std::out_of_range);
}

TEST(Partition, BlockOfPutsTheHighestNoiseInBlockZero) {
  const auto s = edm(3);
  EXPECT_EQ(s.block_of(80.0), 0);
  EXPECT_EQ(s.block_of(0.3012), 1);
  EXPECT_EQ(s.block_of(0.002), 2);
  EXPECT_EQ(s.block_of(1000.0), 0);  // clamped
  EXPECT_EQ(s.block_of(1e-6), 2);    // clamped
  const auto b = s.boundaries();
  // bucketize(right=True): a boundary belongs to the interval above it (the lower-index block).
  EXPECT_EQ(s.block_of(b[1]), 1);
  EXPECT_EQ(s.block_of(std::nextafter(b[1], 0.0)), 2);
  EXPECT_EQ(s.block_of(b[2]), 0);
  EXPECT_EQ(s.block_of(std::nextafter(b[2], 0.0)), 1);
  // Every nominal interval's interior maps to its own block, for several B.
  for (int B : {1, 2, 4, 6}) {
    for (int blk = 0; blk < B; ++blk) {
      const auto r = edm(B).nominal(blk);
      EXPECT_EQ(edm(B).block_of(std::sqrt(r.lo * r.hi)), blk) << "B = " << B;
    }
  }
}

TEST(Partition, InferenceLevels) {  // paper App. H
  const auto s = edm(3);
  const auto three = s.inference_levels(3);
  ASSERT_EQ(three.size(), 3u);
  EXPECT_EQ(three[0], 80.0);
  EXPECT_PRINTED(three[1], "0.3012");
  EXPECT_NEAR(three[1], edm(2).boundaries()[1], 1e-14);
  EXPECT_EQ(three[2], 0.002);
  // One step per block, each block exactly once, in order 0, 1, 2.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(s.block_of(three[size_t(i)]), i);
  EXPECT_EQ(s.inference_levels(1), std::vector<double>{80.0});
  const auto ten = s.inference_levels(10);
  for (size_t i = 1; i < ten.size(); ++i) {
    EXPECT_LT(ten[i], ten[i - 1]);
    EXPECT_NEAR(kEdm.cdf(ten[i - 1]) - kEdm.cdf(ten[i]), (kEdm.cdf(80.0) - kEdm.cdf(0.002)) / 9, 1e-12);
  }
  EXPECT_THROW(s.inference_levels(0), std::invalid_argument);
}

// Fraction of `draws` at or below x.
double empirical_cdf(const std::vector<double>& draws, double x) {
  return double(std::count_if(draws.begin(), draws.end(), [x](double d) { return d <= x; })) / double(draws.size());
}

TEST(Partition, DistributionSamplesFollowTheTruncatedLogNormal) {
  const auto& s = kEdm;
  const auto p = edm(3, 0.05);
  std::mt19937_64 rng(42);
  const int n = 20000;
  for (int b = 0; b < 3; ++b) {
    SCOPED_TRACE("block " + std::to_string(b));
    const auto r = p.range(b);
    std::vector<double> draws(n);
    for (auto& d : draws) d = p.sample(b, WithinRange::Distribution, rng);
    for (double d : draws) {
      ASSERT_GE(d, r.lo);
      ASSERT_LE(d, r.hi);
    }
    // The empirical CDF at the distribution's quantiles (sd of each fraction: < 0.0036).
    const double q_lo = s.cdf(r.lo), q_hi = s.cdf(r.hi);
    for (double f : {0.1, 0.25, 0.5, 0.75, 0.9})
      EXPECT_NEAR(empirical_cdf(draws, s.quantile(q_lo + f * (q_hi - q_lo))), f, 0.02) << "f = " << f;
    // The median of the draws is sigma_at of the middle CDF value.
    std::nth_element(draws.begin(), draws.begin() + n / 2, draws.end());
    const double median = draws[size_t(n / 2)];
    EXPECT_NEAR(s.cdf(median), 0.5 * (q_lo + q_hi), 0.01 * (q_hi - q_lo));
  }
  // Block 2's range is log-uniformly much wider than its probability mass: most draws sit near
  // its top, far above the log-midpoint.
  const auto r2 = p.range(2);
  std::vector<double> draws(n);
  for (auto& d : draws) d = p.sample(2, WithinRange::Distribution, rng);
  EXPECT_LT(empirical_cdf(draws, std::sqrt(r2.lo * r2.hi)), 0.1);
}

TEST(Partition, UniformSamplesAreUniformInLogSigma) {
  const auto s = edm(3, 0.05);
  std::mt19937_64 rng(7);
  const int n = 20000;
  for (int b = 0; b < 3; ++b) {
    SCOPED_TRACE("block " + std::to_string(b));
    const auto r = s.range(b);
    std::vector<double> draws(n);
    for (auto& d : draws) d = s.sample(b, WithinRange::Uniform, rng);
    for (double d : draws) {
      ASSERT_GE(d, r.lo * (1 - 1e-12));
      ASSERT_LE(d, r.hi * (1 + 1e-12));
    }
    for (double p : {0.1, 0.25, 0.5, 0.75, 0.9})
      EXPECT_NEAR(empirical_cdf(draws, std::exp(std::log(r.lo) + p * (std::log(r.hi) - std::log(r.lo)))), p, 0.02);
  }
}

TEST(NoiseDistribution, RejectsBadOptions) {
  NoiseOptions o;
  o.sigma_min = 1.0;
  o.sigma_max = 0.5;
  EXPECT_THROW(LogNormalSigma{o}, std::invalid_argument);
  o = NoiseOptions{};
  o.sigma_min = 0.0;
  EXPECT_THROW(LogNormalSigma{o}, std::invalid_argument);
  o = NoiseOptions{};
  o.p_std = 0.0;
  EXPECT_THROW(LogNormalSigma{o}, std::invalid_argument);
}

TEST(Precondition, MatchesTheTable) {  // Karras et al. 2022, Table 1; sigma_data = 0.5
  struct Row {
    double sigma;
    const char *w, *c_skip, *c_out, *c_in, *c_noise;
  };
  const std::vector<Row> table = {
      {0.002, "2.5e5", "1.000", "0.002", "2.00", "-1.55"}, {0.05, "404", "0.990", "0.050", "1.99", "-0.75"},
      {0.3, "15.1", "0.735", "0.257", "1.71", "-0.30"},    {1.0, "5", "0.2", "0.447", "0.894", "0"},
      {80.0, "4.0", "3.9e-5", "0.5", "0.0125", "1.10"},
  };
  for (const auto& row : table) {
    SCOPED_TRACE("sigma = " + std::to_string(row.sigma));
    const auto p = precondition(row.sigma, 0.5);
    EXPECT_PRINTED(p.weight, row.w);
    EXPECT_PRINTED(p.c_skip, row.c_skip);
    EXPECT_PRINTED(p.c_out, row.c_out);
    EXPECT_PRINTED(p.c_in, row.c_in);
    EXPECT_PRINTED(p.c_noise, row.c_noise);
  }
  // sigma = 1 is exact in closed form.
  const auto one = precondition(1.0, 0.5);
  EXPECT_NEAR(one.weight, 5.0, 1e-14);
  EXPECT_NEAR(one.c_skip, 0.2, 1e-15);
  EXPECT_NEAR(one.c_out, 1.0 / std::sqrt(5.0), 1e-15);
  EXPECT_NEAR(one.c_in, 2.0 / std::sqrt(5.0), 1e-15);
  EXPECT_EQ(one.c_noise, 0.0);
}

TEST(Precondition, SatisfiesEdmIdentities) {
  for (double sd : {0.5, 1.0}) {
    for (double sigma : {0.002, 0.1, 0.5, 2.0, 80.0}) {
      const auto p = precondition(sigma, sd);
      // Unit-variance network input and training target (Karras et al. 2022, App. B.6).
      EXPECT_NEAR(p.c_in * p.c_in * (sigma * sigma + sd * sd), 1.0, 1e-12);
      EXPECT_NEAR(p.c_skip + p.c_out * p.c_out / (sd * sd), 1.0, 1e-12);
      EXPECT_NEAR(p.weight * p.c_out * p.c_out, 1.0, 1e-9);  // lambda = 1 / c_out^2
    }
  }
}

TEST(Precondition, TensorVersionEqualsDoubleVersion) {
  const std::vector<double> sigmas = {0.002, 0.05, 0.3, 1.0, 2.5, 80.0};
  const auto t = torch::tensor(sigmas, torch::kFloat64);
  const auto pt = precondition(t, 0.5);
  const auto tf = torch::tensor(sigmas, torch::kFloat64).to(torch::kFloat32);
  const auto pf = precondition(tf, 0.5);
  // (a sigma that requires a gradient takes the tensor ops of the template; one without, on the
  // CPU, the double-precision loop)
  const auto pg = precondition(tf.clone().requires_grad_(true), 0.5);
  for (size_t i = 0; i < sigmas.size(); ++i) {
    SCOPED_TRACE("sigma = " + std::to_string(sigmas[i]));
    const auto p = precondition(sigmas[i], 0.5);
    const int64_t k = int64_t(i);
    EXPECT_NEAR(pt.weight[k].item<double>(), p.weight, 1e-12 * p.weight);
    EXPECT_NEAR(pt.c_skip[k].item<double>(), p.c_skip, 1e-15);
    EXPECT_NEAR(pt.c_out[k].item<double>(), p.c_out, 1e-15);
    EXPECT_NEAR(pt.c_in[k].item<double>(), p.c_in, 1e-15);
    EXPECT_NEAR(pt.c_noise[k].item<double>(), p.c_noise, 1e-15);
    // The float32 tensors used in training agree to float precision.
    EXPECT_NEAR(pf.weight[k].item<double>() / p.weight, 1.0, 1e-5);
    EXPECT_NEAR(pf.c_skip[k].item<double>(), p.c_skip, 1e-6);
    EXPECT_NEAR(pf.c_out[k].item<double>(), p.c_out, 1e-6);
    EXPECT_NEAR(pf.c_in[k].item<double>() / p.c_in, 1.0, 1e-6);
    EXPECT_NEAR(pf.c_noise[k].item<double>(), p.c_noise, 1e-6);
    EXPECT_NEAR(pg.weight[k].item<double>() / p.weight, 1.0, 1e-5);
    EXPECT_NEAR(pg.c_skip[k].item<double>(), p.c_skip, 1e-6);
    EXPECT_NEAR(pg.c_out[k].item<double>(), p.c_out, 1e-6);
    EXPECT_NEAR(pg.c_in[k].item<double>() / p.c_in, 1.0, 1e-6);
    EXPECT_NEAR(pg.c_noise[k].item<double>(), p.c_noise, 1e-6);
  }
  EXPECT_EQ(pt.weight.sizes(), t.sizes());
  EXPECT_EQ(pf.c_in.scalar_type(), torch::kFloat32);
}

TEST(EulerStep, PerfectDenoiserLandsOnTheLine) {
  torch::manual_seed(0);
  const auto y = torch::randn({5, 8}, torch::kFloat64);
  const auto z = y + 3.0 * torch::randn({5, 8}, torch::kFloat64);
  for (auto [s, s_next] : std::vector<std::pair<double, double>>{{80.0, 0.3012}, {0.3012, 0.002}, {3.0, 1.5}}) {
    const auto out = euler_step(z, y, s, s_next);
    EXPECT_TRUE(torch::allclose(out, y + (s_next / s) * (z - y), 1e-12, 1e-12)) << s << " -> " << s_next;
  }
  // The double version is the same formula; a step to sigma_next = 0 lands exactly on D.
  EXPECT_NEAR(euler_step(5.0, 2.0, 1.0, 0.5), 2.0 + 0.5 * 3.0, 1e-15);
  EXPECT_NEAR(euler_step(5.0, 2.0, 1.0, 0.0), 2.0, 1e-15);
  // The sign: a step down in sigma moves towards the denoised estimate, not away (docs/method.md).
  EXPECT_LT(std::abs(euler_step(5.0, 2.0, 1.0, 0.9) - 2.0), 3.0);
}

TEST(EulerStep, ChainOverInferenceScheduleEndsAtTarget) {
  const auto s = edm(3);
  torch::manual_seed(1);
  const auto y = torch::nn::functional::normalize(torch::randn({16, 32}, torch::kFloat64),
                                                  torch::nn::functional::NormalizeFuncOptions().dim(-1));
  const auto eps = torch::randn({16, 32}, torch::kFloat64);
  for (int n : {3, 4, 10}) {
    const auto sigmas = s.inference_levels(n);
    auto z = y + sigmas[0] * eps;
    for (size_t i = 0; i + 1 < sigmas.size(); ++i) z = euler_step(z, y, sigmas[i], sigmas[i + 1]);
    // With D = y every step keeps z on the line y + sigma * eps: it ends at y + 0.002 eps.
    EXPECT_TRUE(torch::allclose(z, y + 0.002 * eps, 1e-9, 1e-10)) << "n = " << n;
    EXPECT_LT((z - y).abs().max().item<double>(), 0.002 * eps.abs().max().item<double>() * (1 + 1e-9));
  }
}

// The same partition code over other distributions: log sigma uniform (boundaries geometric) and
// a masking time t uniform on [0, 1] (masked diffusion with alpha(t) = 1 - t: t_b = b/B, paper App. D).
TEST(Partition, LogUniformSigmaHasGeometricBoundaries) {
  const Partition p(std::make_shared<LogUniformSigma>(0.002, 80.0), 4, 0.0);
  const double ratio = std::pow(80.0 / 0.002, 0.25);
  for (int b = 0; b <= 4; ++b) EXPECT_NEAR(p.boundaries()[size_t(b)], 0.002 * std::pow(ratio, b), 1e-12 * 80);
  // Equal-probability inference levels are geometric too, descending, one per block for n = B.
  const auto levels = p.inference_levels(4);
  for (size_t i = 1; i < levels.size(); ++i) EXPECT_NEAR(levels[i - 1] / levels[i], std::pow(ratio, 4.0 / 3.0), 1e-9);
  EXPECT_EQ(p.block_of(80.0), 0);
  EXPECT_EQ(p.block_of(0.002), 3);
  // Sampling by the distribution is sampling log-uniformly: the two ways agree in law.
  std::mt19937_64 rng(3);
  std::vector<double> a(20000), u(20000);
  for (auto& d : a) d = p.sample(1, WithinRange::Distribution, rng);
  for (auto& d : u) d = p.sample(1, WithinRange::Uniform, rng);
  const auto r = p.range(1);
  for (double f : {0.25, 0.5, 0.75}) {
    const double x = std::exp(std::log(r.lo) + f * (std::log(r.hi) - std::log(r.lo)));
    EXPECT_NEAR(empirical_cdf(a, x), f, 0.02);
    EXPECT_NEAR(empirical_cdf(u, x), f, 0.02);
  }
}

TEST(Partition, MaskingTimeSplitsIntoEqualSteps) {
  const Partition p(std::make_shared<UniformTime>(), 4, 0.1);
  EXPECT_EQ(p.boundaries(), (std::vector<double>{0.0, 0.25, 0.5, 0.75, 1.0}));
  // Block 0 owns the most-masked times; the overlap widens linearly in t and is clipped to [0, 1].
  EXPECT_DOUBLE_EQ(p.nominal(0).lo, 0.75);
  EXPECT_DOUBLE_EQ(p.range(0).lo, 0.75 - 0.1 * 0.25);
  EXPECT_DOUBLE_EQ(p.range(0).hi, 1.0);
  EXPECT_DOUBLE_EQ(p.range(1).lo, 0.5 - 0.025);
  EXPECT_DOUBLE_EQ(p.range(1).hi, 0.75 + 0.025);
  EXPECT_DOUBLE_EQ(p.range(3).lo, 0.0);
  EXPECT_EQ(p.block_of(0.9), 0);
  EXPECT_EQ(p.block_of(0.3), 2);
  EXPECT_EQ(p.block_of(0.0), 3);
  const auto levels = p.inference_levels(5);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(levels[size_t(i)], 1.0 - 0.25 * i, 1e-15);
  std::mt19937_64 rng(5);
  std::vector<double> draws(20000);
  for (auto& d : draws) d = p.sample(2, WithinRange::Distribution, rng);
  const auto r = p.range(2);
  for (double d : draws) {
    ASSERT_GE(d, r.lo);
    ASSERT_LE(d, r.hi);
  }
  EXPECT_NEAR(empirical_cdf(draws, 0.5 * (r.lo + r.hi)), 0.5, 0.02);
  EXPECT_THROW(UniformTime(1.0, 0.0), std::invalid_argument);
}

}  // namespace
}  // namespace blocklab
