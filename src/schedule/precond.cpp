#include "schedule/precond.h"

#include "util/simd.h"

namespace blocklab {

Precond<torch::Tensor> precondition(const torch::Tensor& sigma, double sigma_data) {
  if (!simd::cpu_floating(sigma) || sigma.requires_grad() || sigma.dim() != 1)
    return precondition<torch::Tensor>(sigma, sigma_data);
  const int64_t n = sigma.size(0);
  const auto in = sigma.contiguous();
  auto out = torch::empty({5, n}, sigma.options());  // the five coefficients' rows
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "precondition", [&] {
    const scalar_t* s = in.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {
      const auto p = precondition(double(s[i]), sigma_data);
      o[i] = scalar_t(p.c_skip), o[n + i] = scalar_t(p.c_out), o[2 * n + i] = scalar_t(p.c_in);
      o[3 * n + i] = scalar_t(p.c_noise), o[4 * n + i] = scalar_t(p.weight);
    }
  });
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace blocklab
