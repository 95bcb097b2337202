// Samplers of the probability-flow ODE over any denoiser (EDM, Karras et al. 2022, Alg. 1 and
// Eq. 5): Euler and Heun, on the CDF-uniform levels of a partition (each step run by the block
// that owns its level, paper App. H) or on EDM's rho schedule. What the DiT family samples with.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace blocklab {

enum class Sampler { Euler, Heun };
/// Which noise levels a sampler visits: equal-probability (CDF-uniform) levels of the training
/// distribution, so each block serves about n/B steps (paper App. H), or EDM's rho schedule.
enum class SigmaSchedule { Cdf, Karras };

/// EDM's schedule (Eq. 5): n levels from sigma_max down to sigma_min, spaced uniformly in sigma^(1/rho).
std::vector<double> karras_sigmas(int n, double sigma_min, double sigma_max, double rho = 7.0);

/// D(z; sigma) by the block that owns sigma (-1 end-to-end).
using DenoiseFn = std::function<torch::Tensor(const torch::Tensor& z, double sigma, int block)>;

/// One denoiser evaluation of a sampling run: at which level, by which block.
struct DenoiserCall {
  double sigma;
  int block;
};

/// Integrates from z at levels[0] through every level in `levels` (descending) and then to 0, as
/// EDM's Alg. 1 does: an Euler step, and for Heun a correction with D at the next level, evaluated
/// by the block that owns that level (`block_of`); the last step, to 0, is Euler. Euler calls D
/// once per level, Heun 2 n - 1 times. `calls` (optional) records every evaluation.
/// Heun is second order only for steps short against the ODE's curvature: on EDM's rho schedule it
/// beats Euler from ~16 steps (tests/test_sampling.cpp), but the CDF-uniform levels' first step
/// (80 -> 1.8 for n = 16) is so long that on Gaussian data Heun is there worse than Euler.
torch::Tensor sample_ode(const std::vector<double>& levels, torch::Tensor z, Sampler sampler, const DenoiseFn& denoise,
                         const std::function<int(double)>& block_of, std::vector<DenoiserCall>* calls = nullptr);

}  // namespace blocklab
