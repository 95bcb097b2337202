// The histogram of `probe random-step`: one panel per target and radius, the random steps' loss
// changes as grey bars, the update's change as a red line, zero as a dashed one, with the range
// and the z-score written in a tiny built-in pixel font (no font library on the machine).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "eval/probe.h"

namespace blocklab {

struct ProbePanel {
  std::string title;  // "e2e r=1"
  RandomStepRow row;
};

/// An RGB image [H, W, 3] uint8: the panels in a grid of `columns`, a legend line on top.
torch::Tensor random_step_histogram(const std::vector<ProbePanel>& panels, int64_t columns);

}  // namespace blocklab
