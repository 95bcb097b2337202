// AdamW (Loshchilov & Hutter 2019) over named parameters, with a step count per parameter.
// A parameter without a gradient is skipped entirely: no decay, no moment update, no step.
// That is what makes bias correction per-block in blocks mode (docs/method.md), and the named
// state is what a checkpoint (or, later, an offloaded block) saves and restores.
#pragma once
#include <torch/torch.h>

#include "io/safetensors.h"

namespace blocklab {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

/// The factor that scales gradients of global norm `total` to at most `max_norm` (no limit when
/// max_norm <= 0): exactly 1 under the limit. The one clipping rule (training, the probe).
double clip_factor(double total, double max_norm);

class AdamW {
 public:
  /// `decay[i]`: whether weight decay reaches params[i] (empty: all of them).
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, AdamWOptions opt, std::vector<bool> decay = {});

  /// Global L2 norm of all defined gradients; scales them to at most max_norm if max_norm > 0.
  double clip_grad_norm(double max_norm);
  /// Scales every defined gradient to global norm at most max_norm (if > 0), given their norm `total`.
  void clip_to(double total, double max_norm);
  void step(double lr);
  /// Resets gradients to undefined, so that the next step sees only what backward reaches.
  void zero_grad();

  /// State as `<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.step`.
  TensorMap state_dict() const;
  void load_state_dict(const TensorMap& state, const std::string& source);
  const std::vector<std::pair<std::string, torch::Tensor>>& params() const { return params_; }
  int64_t steps_of(const std::string& name) const;  // -1 for an unknown name
  int64_t steps_at(size_t index) const { return state_[index].step; }  // of params()[index]
  bool decays(const std::string& name) const;       // whether weight decay reaches it
  /// The most steps any parameter whose name starts with `prefix` has taken (0 if none).
  int64_t max_steps_under(const std::string& prefix) const;

 private:
  struct State {
    torch::Tensor exp_avg, exp_avg_sq;
    int64_t step = 0;
  };
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::vector<State> state_;
  std::vector<bool> decay_;
  AdamWOptions opt_;
};

}  // namespace blocklab
