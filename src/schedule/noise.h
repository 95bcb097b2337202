// EDM noise distribution and the DiffusionBlocks partition of the noise range.
// Pure math in double precision, no model: every number here is checked against the
// reference tables in tests/test_schedule.cpp (reference §1.2-1.4, §1.7).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace blocklab {

/// The log-normal EDM noise distribution, log sigma ~ N(p_mean, p_std^2), truncated to
/// [sigma_min, sigma_max]. Defaults are EDM's (Karras et al. 2022) and the paper's App. E.
struct NoiseOptions {
  double p_mean = -1.2;
  double p_std = 1.2;
  double sigma_min = 0.002;
  double sigma_max = 80.0;
  double sigma_data = 0.5;
};

/// A closed interval of noise levels.
struct SigmaRange {
  double lo;
  double hi;
};

double normal_cdf(double x);
double normal_quantile(double p);  // inverse of normal_cdf, |error| < 1e-12

class NoiseSchedule {
 public:
  explicit NoiseSchedule(NoiseOptions options = {});
  const NoiseOptions& options() const { return opt_; }

  /// CDF of the (untruncated) log-normal at sigma, and its inverse.
  double cdf(double sigma) const;
  double sigma_at(double q) const;

  /// B+1 ascending boundaries that split the truncated distribution into B intervals of
  /// equal probability (paper §3.3): sigma_b = exp(p_mean + p_std * Phi^-1(q_b)).
  std::vector<double> boundaries(int num_blocks) const;

  /// The range block `b` trains on: its interval widened by `overlap` (gamma) in log space
  /// on both sides and clipped to [sigma_min, sigma_max] (paper App. C).
  /// Network block 0 (the first layers) owns the highest-noise interval.
  SigmaRange block_range(int num_blocks, int block, double overlap) const;

  /// The block that owns sigma: bucketize(sigma, boundaries, right) - 1, reversed, clamped.
  int block_of(double sigma, int num_blocks) const;

  /// n noise levels spaced uniformly in the truncated CDF, descending from sigma_max to
  /// sigma_min: the inference schedule (reference §1.7). n = B gives one step per block.
  std::vector<double> inference_sigmas(int n) const;

  /// Draws sigma from the log-normal truncated to `range` by inverse CDF (reference §1.5).
  double sample_lognormal(SigmaRange range, std::mt19937_64& rng) const;
  /// Draws log sigma uniformly over `range`: every noise level of the block equally often.
  double sample_log_uniform(SigmaRange range, std::mt19937_64& rng) const;

 private:
  NoiseOptions opt_;
};

/// One Euler step of the probability-flow ODE in its EDM form (reference §1.1, §6 D5):
/// z' = z + (sigma_next - sigma) * (z - D) / sigma. The paper's printed sign is wrong.
template <typename T>
T euler_step(const T& z, const T& denoised, double sigma, double sigma_next) {
  return z + (z - denoised) * ((sigma_next - sigma) / sigma);
}

}  // namespace blocklab
