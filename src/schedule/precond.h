// EDM preconditioning (Karras et al. 2022, Table 1), written as the paper's table.
// A template so that the same lines serve a double (tests, tables) and a per-sample tensor.
#pragma once
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

}  // namespace blocklab
