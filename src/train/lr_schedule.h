// Learning rate at a step: linear warm-up over `warmup` of all steps, then cosine to min_lr or
// constant. Expressed in fractions of the run, so blocks mode (B times the steps) stretches the
// warm-up by B as the reference recipe does, with nothing to remember.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "io/config.h"

namespace blocklab {

inline double learning_rate(const TrainConfig& t, int64_t step, int64_t total_steps) {
  const double progress = double(step) / double(std::max<int64_t>(total_steps, 1));
  if (t.warmup > 0 && progress < t.warmup) return t.lr * std::min(1.0, (progress + 1.0 / total_steps) / t.warmup);
  if (t.lr_schedule == LrSchedule::Constant) return t.lr;
  const double p = t.warmup < 1 ? (progress - t.warmup) / (1 - t.warmup) : 1.0;
  return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + std::cos(M_PI * std::min(p, 1.0)));
}

}  // namespace blocklab
