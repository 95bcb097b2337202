// Noise processes and the DiffusionBlocks partition of a noise range into blocks.
// Pure math in double precision, no model.
//
// A family's noise level is EDM's sigma (classifier, DiT, autoregressive LM) or a masking time t
// (masked-diffusion LM). The partition needs only a distribution's CDF and its inverse, so it is
// written once here (paper §3.3, App. C) and every family's blocks are cut by the same, tested code.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

namespace blocklab {

double normal_cdf(double x);
double normal_quantile(double p);  // inverse of normal_cdf, |error| < 1e-12

/// A distribution of noise levels truncated to [lo, hi], known by its CDF and the CDF's inverse.
class NoiseDistribution {
 public:
  virtual ~NoiseDistribution() = default;
  /// CDF of the untruncated distribution, and its inverse.
  virtual double cdf(double level) const = 0;
  virtual double quantile(double q) const = 0;
  /// The coordinate in which a block's range is widened and "uniform within a range" is meant:
  /// log sigma for noise scales, t itself for a masking time.
  virtual double warp(double level) const = 0;
  virtual double unwarp(double u) const = 0;
  double lo() const { return lo_; }
  double hi() const { return hi_; }

 protected:
  NoiseDistribution(double lo, double hi);

 private:
  double lo_, hi_;
};

/// EDM's noise levels (Karras et al. 2022): log sigma ~ N(p_mean, p_std^2), truncated to
/// [sigma_min, sigma_max]. Defaults are EDM's and the paper's (App. E).
struct NoiseOptions {
  double p_mean = -1.2;
  double p_std = 1.2;
  double sigma_min = 0.002;
  double sigma_max = 80.0;
  double sigma_data = 0.5;
};

class LogNormalSigma : public NoiseDistribution {
 public:
  explicit LogNormalSigma(const NoiseOptions& o);
  double cdf(double sigma) const override;
  double quantile(double q) const override;
  double warp(double sigma) const override;
  double unwarp(double u) const override;

 private:
  double p_mean_, p_std_;
};

/// log sigma uniform on [sigma_min, sigma_max]: every scale equally often.
class LogUniformSigma : public NoiseDistribution {
 public:
  LogUniformSigma(double sigma_min, double sigma_max);
  double cdf(double sigma) const override;
  double quantile(double q) const override;
  double warp(double sigma) const override;
  double unwarp(double u) const override;
};

/// A masking time t uniform on [t_min, t_max] (masked diffusion with the linear schedule
/// alpha(t) = 1 - t, paper App. D: equal decrements of alpha are equal steps of t).
class UniformTime : public NoiseDistribution {
 public:
  UniformTime(double t_min = 0.0, double t_max = 1.0);
  double cdf(double t) const override;
  double quantile(double q) const override;
  double warp(double t) const override { return t; }
  double unwarp(double u) const override { return u; }
};

/// A closed interval of noise levels.
struct LevelRange {
  double lo, hi;
};

/// How a block draws its training noise levels within its range: by the distribution itself
/// (inverse CDF, the paper) or uniformly in the warped coordinate (every level equally often).
enum class WithinRange { Distribution, Uniform };

/// The noise range cut into B intervals of equal probability (paper §3.3). Network block 0 (the
/// first layers) owns the highest noise levels, block B-1 the lowest.
class Partition {
 public:
  /// `overlap` is gamma of the paper's App. C: each block's range is widened by gamma times its
  /// width (in the warped coordinate) on both sides, clipped to [lo, hi].
  Partition(std::shared_ptr<const NoiseDistribution> distribution, int blocks, double overlap);

  int blocks() const { return blocks_; }
  const NoiseDistribution& distribution() const { return *dist_; }
  /// B+1 ascending boundaries: level_b = quantile(q_lo + b/B (q_hi - q_lo)).
  const std::vector<double>& boundaries() const { return bounds_; }
  /// Block b's own interval, and the widened one it trains on.
  LevelRange nominal(int block) const;
  LevelRange range(int block) const;
  /// The block that owns a level: bucketize(level, boundaries, right) - 1, reversed, clamped.
  int block_of(double level) const;
  /// n levels uniform in the truncated CDF, descending from hi to lo: the inference schedule
  /// (paper App. H). n = B gives one step per block.
  std::vector<double> inference_levels(int n) const;
  /// One training level for `block`, drawn in double.
  double sample(int block, WithinRange how, std::mt19937_64& rng) const;

 private:
  std::shared_ptr<const NoiseDistribution> dist_;
  int blocks_;
  double overlap_;
  std::vector<double> bounds_;
};

/// One Euler step of the probability-flow ODE in EDM's form (Karras et al. 2022, Alg. 1):
/// z' = z + (sigma_next - sigma) (z - D) / sigma. The paper's Eq. (3)-(5) print the opposite
/// sign, which moves away from D (docs/method.md).
template <typename T>
T euler_step(const T& z, const T& denoised, double sigma, double sigma_next) {
  return z + (z - denoised) * ((sigma_next - sigma) / sigma);
}

}  // namespace blocklab
