#include "schedule/noise.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace blocklab {

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

double normal_quantile(double p) {
  if (!(p > 0.0 && p < 1.0)) throw std::domain_error("normal_quantile: p must lie in (0, 1)");
  // Acklam's rational approximation (relative error 1.15e-9), then one Halley step on
  // normal_cdf, which brings it to double precision.
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double p_low = 0.02425;
  double x;
  if (p < p_low) {
    double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - p_low) {
    double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  double e = normal_cdf(x) - p;
  double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

NoiseDistribution::NoiseDistribution(double lo, double hi) : lo_(lo), hi_(hi) {
  if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi))
    throw std::invalid_argument("a noise distribution needs finite lo < hi");
}

LogNormalSigma::LogNormalSigma(const NoiseOptions& o)
    : NoiseDistribution(o.sigma_min, o.sigma_max), p_mean_(o.p_mean), p_std_(o.p_std) {
  if (!(o.sigma_min > 0)) throw std::invalid_argument("noise levels need sigma_min > 0");
  if (!(p_std_ > 0)) throw std::invalid_argument("the log-normal needs p_std > 0");
}
double LogNormalSigma::cdf(double sigma) const { return normal_cdf((std::log(sigma) - p_mean_) / p_std_); }
double LogNormalSigma::quantile(double q) const { return std::exp(p_mean_ + p_std_ * normal_quantile(q)); }
double LogNormalSigma::warp(double sigma) const { return std::log(sigma); }
double LogNormalSigma::unwarp(double u) const { return std::exp(u); }

LogUniformSigma::LogUniformSigma(double sigma_min, double sigma_max) : NoiseDistribution(sigma_min, sigma_max) {
  if (!(sigma_min > 0)) throw std::invalid_argument("noise levels need sigma_min > 0");
}
double LogUniformSigma::cdf(double sigma) const {
  return std::clamp((std::log(sigma) - std::log(lo())) / (std::log(hi()) - std::log(lo())), 0.0, 1.0);
}
double LogUniformSigma::quantile(double q) const { return std::exp(std::log(lo()) + q * (std::log(hi()) - std::log(lo()))); }
double LogUniformSigma::warp(double sigma) const { return std::log(sigma); }
double LogUniformSigma::unwarp(double u) const { return std::exp(u); }

UniformTime::UniformTime(double t_min, double t_max) : NoiseDistribution(t_min, t_max) {}
double UniformTime::cdf(double t) const { return std::clamp((t - lo()) / (hi() - lo()), 0.0, 1.0); }
double UniformTime::quantile(double q) const { return lo() + q * (hi() - lo()); }

Partition::Partition(std::shared_ptr<const NoiseDistribution> distribution, int blocks, double overlap)
    : dist_(std::move(distribution)), blocks_(blocks), overlap_(overlap) {
  if (blocks < 1) throw std::invalid_argument("number of blocks must be >= 1");
  const double q_lo = dist_->cdf(dist_->lo()), q_hi = dist_->cdf(dist_->hi());
  bounds_.resize(size_t(blocks) + 1);
  for (int b = 0; b <= blocks; ++b) bounds_[size_t(b)] = dist_->quantile(q_lo + (q_hi - q_lo) * b / blocks);
  bounds_.front() = dist_->lo();  // exact ends, free of quantile round-off
  bounds_.back() = dist_->hi();
}

LevelRange Partition::nominal(int block) const {
  if (block < 0 || block >= blocks_) throw std::out_of_range("block index out of range");
  // Boundaries ascend, blocks descend in noise: block 0 owns the top interval.
  return {bounds_[size_t(blocks_ - 1 - block)], bounds_[size_t(blocks_ - block)]};
}

LevelRange Partition::range(int block) const {
  const auto n = nominal(block);
  if (overlap_ == 0) return n;  // exactly the interval, free of warp round-off
  const double lo = dist_->warp(n.lo), hi = dist_->warp(n.hi), r = hi - lo;
  return {std::max(dist_->unwarp(lo - overlap_ * r), dist_->lo()), std::min(dist_->unwarp(hi + overlap_ * r), dist_->hi())};
}

int Partition::block_of(double level) const {
  // bucketize(right=true): the number of boundaries <= level.
  const int idx = int(std::upper_bound(bounds_.begin(), bounds_.end(), level) - bounds_.begin()) - 1;
  return std::clamp(blocks_ - 1 - idx, 0, blocks_ - 1);
}

std::vector<double> Partition::inference_levels(int n) const {
  if (n < 1) throw std::invalid_argument("number of inference steps must be >= 1");
  if (n == 1) return {dist_->hi()};
  const double q_lo = dist_->cdf(dist_->lo()), q_hi = dist_->cdf(dist_->hi());
  std::vector<double> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[size_t(i)] = dist_->quantile(q_hi - (q_hi - q_lo) * i / (n - 1));
  out.front() = dist_->hi();
  out.back() = dist_->lo();
  return out;
}

double Partition::sample(int block, WithinRange how, std::mt19937_64& rng) const {
  const auto r = range(block);
  if (how == WithinRange::Uniform) {
    std::uniform_real_distribution<double> u(dist_->warp(r.lo), dist_->warp(r.hi));
    return dist_->unwarp(u(rng));
  }
  std::uniform_real_distribution<double> u(dist_->cdf(r.lo), dist_->cdf(r.hi));
  return std::clamp(dist_->quantile(u(rng)), r.lo, r.hi);
}

}  // namespace blocklab
