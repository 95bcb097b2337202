// The Fréchet distance between two sets of features, each summarized by its mean and covariance
// (Heusel et al. 2017): |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S2^1/2 S1 S2^1/2)^1/2).
// Computed in float64 through symmetric eigendecompositions only (never the eigenvalues of the
// non-symmetric product S1 S2), with eigenvalues that rounding pushed below zero clamped to zero.
#pragma once
#include <torch/torch.h>

namespace blocklab {

struct FeatureStats {
  torch::Tensor mean;  // [D] float64
  torch::Tensor cov;   // [D, D] float64, unbiased (N - 1)
  int64_t count = 0;
};

/// Mean and covariance of features [N, D], N >= 2.
FeatureStats feature_stats(const torch::Tensor& features);

double frechet_distance(const FeatureStats& a, const FeatureStats& b);

/// The symmetric square root of a symmetric positive semi-definite matrix.
torch::Tensor sqrt_psd(const torch::Tensor& m);

}  // namespace blocklab
