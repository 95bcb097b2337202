// The Fréchet distance of generated images to a real split, in the features of blocklab's own
// feature network (eval/feature_net.h), with what is needed to read it honestly:
//  - the floor: the same distance from as many real training images, which no model beats;
//  - FD extrapolated to infinitely many samples: FD is biased upward by about b/N with N samples,
//    and b depends on the model (Chong & Forsyth 2020), so FD is fitted against 1/N over subsets
//    and read at 1/N = 0;
//  - the feature classifier's accuracy on the generated images of each class.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "data/image_data.h"
#include "eval/frechet.h"

namespace blocklab {

struct FrechetOptions {
  std::string save_features;  // if set: a safetensors file with both feature matrices
};

struct FrechetReport {
  double fd = 0, fd_infinity = 0;               // the generated images
  double fd_floor = 0, fd_floor_infinity = 0;   // as many real training images
  std::vector<std::pair<int64_t, double>> fd_by_samples;  // the fit's points (N, FD)
  std::vector<double> class_accuracy;           // feature classifier on generated class k
  double accuracy = 0;                          // over all generated images
  int64_t samples = 0, reference = 0;
  nlohmann::json features;                      // the feature network (eval/feature_net.h)

  nlohmann::json to_json() const;               // keys fd, fd_infinity, fd_floor, ... for summary.json
  std::vector<std::string> lines() const;       // readable findings
};

/// FD of the first N rows of `features` to `reference` at several N (1/N evenly spaced from 1/n
/// to 4/n), and its extrapolation.
struct FdCurve {
  double at_n = 0, infinity = 0;
  std::vector<std::pair<int64_t, double>> points;
};
FdCurve frechet_curve(const torch::Tensor& features, const FeatureStats& reference);

/// FD(N) = a + b / N by least squares over the points; returns a, FD at infinitely many samples.
double extrapolate_to_infinity(const std::vector<std::pair<int64_t, double>>& points);

/// Scores `generated` (uint8 [N, C, H, W], classes `labels` [N]) against the `reference` split.
FrechetReport frechet_report(const ImageData& data, Split reference, const torch::Tensor& generated,
                             const torch::Tensor& labels, const FrechetOptions& opt);

}  // namespace blocklab
