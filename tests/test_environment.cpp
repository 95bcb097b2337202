// Process-wide settings of the test binary: one intra-op thread, as the training runs use
// (the CI machine has two slow cores, and results must not depend on the thread count).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "util/system.h"

namespace {

class SingleThread : public ::testing::Environment {
 public:
  void SetUp() override { blocklab::set_threads(1); }
};

const auto* const kSingleThread = ::testing::AddGlobalTestEnvironment(new SingleThread);

}  // namespace
