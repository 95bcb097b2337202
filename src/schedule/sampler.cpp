#include "schedule/sampler.h"

#include <cmath>
#include <stdexcept>

namespace blocklab {

std::vector<double> karras_sigmas(int n, double sigma_min, double sigma_max, double rho) {
  if (n < 1) throw std::invalid_argument("number of sampling steps must be >= 1");
  if (n == 1) return {sigma_max};
  const double hi = std::pow(sigma_max, 1.0 / rho), lo = std::pow(sigma_min, 1.0 / rho);
  std::vector<double> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[size_t(i)] = std::pow(hi + double(i) / (n - 1) * (lo - hi), rho);
  out.front() = sigma_max;  // exact ends, free of pow round-off
  out.back() = sigma_min;
  return out;
}

torch::Tensor sample_ode(const std::vector<double>& levels, torch::Tensor z, Sampler sampler, const DenoiseFn& denoise,
                         const std::function<int(double)>& block_of, std::vector<DenoiserCall>* calls) {
  auto D = [&](const torch::Tensor& x, double sigma) {
    const int block = block_of(sigma);
    if (calls) calls->push_back({sigma, block});
    return denoise(x, sigma, block);
  };
  for (size_t i = 0; i < levels.size(); ++i) {
    const double s = levels[i], next = i + 1 < levels.size() ? levels[i + 1] : 0.0;
    const auto slope = (z - D(z, s)) / s;  // dz/dsigma of the probability-flow ODE
    auto euler = z + (next - s) * slope;
    if (sampler == Sampler::Heun && next > 0) {
      const auto slope_next = (euler - D(euler, next)) / next;  // by the block that owns `next`
      euler = z + (next - s) * 0.5 * (slope + slope_next);
    }
    z = euler;
  }
  return z;
}

}  // namespace blocklab
