// Is an optimizer step better than a random step of the same length? (`blocklab probe random-step`)
//
// Given the parameters probed, a loss closure over them (fixed batches, fixed noise: the same
// function for every trial) and an update direction, this measures the loss change of the update
// and of N random Gaussian directions rescaled to the update's norm, at several radii. Nothing
// here knows of runs, families or files: the CLI (src/cli/probe.cpp) wires those, and the tests
// run it on a quadratic with a known Hessian. Formulas and sign conventions: docs/probe.md.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/adamw.h"

namespace blocklab {

/// The probed function at the parameters' current values: a scalar tensor, differentiable when
/// grad mode is on (for the gradient), evaluated under NoGradGuard for the trials.
using ProbeLoss = std::function<torch::Tensor()>;

/// One radius of one target: the update's loss change against the random steps'.
struct RandomStepRow {
  double radius = 1;                  // every step's length, in units of the update's norm
  double update_change = 0;           // L(theta + radius * update) - L0
  std::vector<double> random_changes; // L(theta + v_i) - L0, |v_i| = radius * |update|
  double mean = 0, std = 0;           // of random_changes (std with n - 1)
  double z = 0;                       // (update_change - mean) / std: negative = the update lowers the loss more
  double fraction_better = 0;         // share of random steps whose change is below update_change

  nlohmann::json to_json() const;
};

/// What the probe found for one set of parameters.
struct RandomStepResult {
  int64_t d = 0;             // parameters probed (elements)
  double l0 = 0;             // the loss before any step
  double update_norm = 0;    // global L2 norm of the update
  std::vector<RandomStepRow> rows;  // one per radius, in the order given
};

struct RandomStepOptions {
  std::vector<double> radii{1.0};
  int64_t directions = 100;
  uint64_t seed = 0;  // the random directions are a function of (seed, direction index) only
  /// Called after each trial: (radius index, directions done of this radius).
  std::function<void(size_t, int64_t)> progress;
};

/// The gradient of `loss` with respect to `params` (leaves that require grad), one tensor each;
/// undefined for a parameter the loss does not reach. Leaves the parameters' .grad untouched.
std::vector<torch::Tensor> probe_gradient(const std::vector<torch::Tensor>& params, const ProbeLoss& loss);

/// Scales `grads` in place to global L2 norm at most `max_norm` (if > 0), as training clips
/// (clip_factor); returns their norm before.
double probe_clip(std::vector<torch::Tensor>& grads, double max_norm);

/// The SGD update -lr * grads.
std::vector<torch::Tensor> sgd_update(const std::vector<torch::Tensor>& grads, double lr);

/// The step `opt` would take from its current state with `grads` on `params` (a subset of the
/// optimizer's parameters; the others get no gradient, so AdamW leaves them and their moments
/// alone): the parameters after opt.step(lr) minus before. The parameters are restored by copy
/// afterwards; the optimizer's moments and step counts do advance, so hand it a state loaded for
/// this one call.
std::vector<torch::Tensor> adamw_update(AdamW& opt, const std::vector<torch::Tensor>& params,
                                        const std::vector<torch::Tensor>& grads, double lr);

/// Global L2 norm of a list of tensors, accumulated in double.
double global_norm(const std::vector<torch::Tensor>& tensors);

/// a.b / (|a| |b|) over lists of tensors, in double (0 if either is zero). For small steps
/// z ~ -sqrt(d) cos(update, -gradient): the linear term's mean is zero and its spread |g| r|u| / sqrt(d).
double cosine(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b);

/// Random direction `index` over tensors shaped like `like`: standard Gaussian, drawn in double on
/// the CPU from (seed, index) so it does not depend on the device, rescaled to global norm `norm`
/// and cast to each tensor's dtype and device.
std::vector<torch::Tensor> random_direction(const std::vector<torch::Tensor>& like, uint64_t seed, int64_t index,
                                            double norm);

/// The probe: L0, then for every radius the loss after radius * update and after each of the
/// random directions, all from the same starting values, which are restored exactly (copy_ from
/// a saved copy) after every trial and at the end. `loss` runs under NoGradGuard.
RandomStepResult random_step_probe(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& update,
                                   const ProbeLoss& loss, const RandomStepOptions& options);

/// Mean, standard deviation, z and fraction of `row.random_changes` against `row.update_change`.
void summarize(RandomStepRow& row);

}  // namespace blocklab
