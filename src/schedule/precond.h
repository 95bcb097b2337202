// EDM preconditioning (Karras et al. 2022, Table 1), written as the paper's table.
// A template so that the same lines serve a double (tests, tables) and a per-sample tensor.
#pragma once
#include <torch/torch.h>

#include <cmath>

namespace blocklab {

/// The four preconditioning coefficients and the loss weight lambda(sigma) for noise level sigma.
template <typename T>
struct Precond {
  T c_skip, c_out, c_in, c_noise, weight;
};

/// D(z; sigma) = c_skip * z + c_out * F(c_in * z; c_noise), trained with weight lambda(sigma).
template <typename T>
Precond<T> precondition(const T& sigma, double sigma_data) {
  using std::log;
  using std::sqrt;  // for tensors, ADL finds at::sqrt and at::log
  const T s2 = sigma * sigma;
  const double d2 = sigma_data * sigma_data;
  return {
      /*c_skip=*/d2 / (s2 + d2),
      /*c_out=*/sigma * sigma_data / sqrt(s2 + d2),
      /*c_in=*/1.0 / sqrt(s2 + d2),
      /*c_noise=*/0.25 * log(sigma),
      /*weight=*/(s2 + d2) / (s2 * d2),
  };
}

/// The same for a per-sample tensor sigma [N]. On the CPU, when no gradient flows to sigma (a
/// training step's sampled levels), the table above in double precision sample by sample, into one
/// tensor: one pass instead of ~16 libtorch ops on [N] tensors, each a few microseconds of dispatch
/// in a step. Elsewhere the template's tensor ops.
Precond<torch::Tensor> precondition(const torch::Tensor& sigma, double sigma_data);

}  // namespace blocklab
