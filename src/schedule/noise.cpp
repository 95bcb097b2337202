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

NoiseSchedule::NoiseSchedule(NoiseOptions options) : opt_(options) {
  if (!(opt_.sigma_min > 0 && opt_.sigma_min < opt_.sigma_max))
    throw std::invalid_argument("noise schedule needs 0 < sigma_min < sigma_max");
  if (!(opt_.p_std > 0)) throw std::invalid_argument("noise schedule needs p_std > 0");
}

double NoiseSchedule::cdf(double sigma) const {
  return normal_cdf((std::log(sigma) - opt_.p_mean) / opt_.p_std);
}

double NoiseSchedule::sigma_at(double q) const {
  return std::exp(opt_.p_mean + opt_.p_std * normal_quantile(q));
}

std::vector<double> NoiseSchedule::boundaries(int num_blocks) const {
  if (num_blocks < 1) throw std::invalid_argument("number of blocks must be >= 1");
  const double q_min = cdf(opt_.sigma_min), q_max = cdf(opt_.sigma_max);
  std::vector<double> out(num_blocks + 1);
  for (int b = 0; b <= num_blocks; ++b)
    out[b] = sigma_at(q_min + (q_max - q_min) * b / num_blocks);
  out.front() = opt_.sigma_min;  // exact ends, free of quantile round-off
  out.back() = opt_.sigma_max;
  return out;
}

SigmaRange NoiseSchedule::block_range(int num_blocks, int block, double overlap) const {
  if (block < 0 || block >= num_blocks) throw std::out_of_range("block index out of range");
  const auto bounds = boundaries(num_blocks);
  // Block 0 owns the top interval: boundaries are ascending, blocks descend in sigma.
  const double lo = bounds[num_blocks - 1 - block], hi = bounds[num_blocks - block];
  const double r = std::log(hi) - std::log(lo);
  return {std::max(std::exp(std::log(lo) - overlap * r), opt_.sigma_min),
          std::min(std::exp(std::log(hi) + overlap * r), opt_.sigma_max)};
}

int NoiseSchedule::block_of(double sigma, int num_blocks) const {
  const auto bounds = boundaries(num_blocks);
  // bucketize(right=true): the number of boundaries <= sigma.
  const int idx = int(std::upper_bound(bounds.begin(), bounds.end(), sigma) - bounds.begin()) - 1;
  return std::clamp(num_blocks - 1 - idx, 0, num_blocks - 1);
}

std::vector<double> NoiseSchedule::inference_sigmas(int n) const {
  if (n < 1) throw std::invalid_argument("number of inference steps must be >= 1");
  if (n == 1) return {opt_.sigma_max};
  const double q_min = cdf(opt_.sigma_min), q_max = cdf(opt_.sigma_max);
  std::vector<double> out(n);
  for (int i = 0; i < n; ++i) out[i] = sigma_at(q_max - (q_max - q_min) * i / (n - 1));
  out.front() = opt_.sigma_max;
  out.back() = opt_.sigma_min;
  return out;
}

double NoiseSchedule::sample_lognormal(SigmaRange range, std::mt19937_64& rng) const {
  std::uniform_real_distribution<double> u(cdf(range.lo), cdf(range.hi));
  return std::clamp(sigma_at(u(rng)), range.lo, range.hi);
}

double NoiseSchedule::sample_log_uniform(SigmaRange range, std::mt19937_64& rng) const {
  std::uniform_real_distribution<double> u(std::log(range.lo), std::log(range.hi));
  return std::exp(u(rng));
}

}  // namespace blocklab
