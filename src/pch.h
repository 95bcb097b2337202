// Precompiled header: torch/torch.h costs ~16 s to parse; every translation unit reuses this.
#pragma once
#include <torch/torch.h>
