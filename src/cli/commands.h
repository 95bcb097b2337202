// The subcommands of the `blocklab` tool. Each parses nothing itself (main.cpp does, with
// CLI11) and returns the process exit code.
#pragma once
#include <string>
#include <vector>

namespace blocklab {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;  // section.key=value
  std::string out;                     // default: runs/<config name>-<mode>
  bool resume = false, plain = false;
  std::string label = "train";
  long long stop_after = -1;
};
int cmd_train(const TrainArgs& a);

int cmd_eval(const std::string& run_dir, const std::vector<std::string>& overrides);

struct DemoArgs {
  std::string out = "runs/demo";
  std::vector<std::string> overrides;
  bool sequential = false;
};
int cmd_demo(const DemoArgs& a);

struct BenchStepArgs {
  std::string config;  // optional; built-in defaults otherwise
  std::vector<std::string> overrides;
  int repeats = 10;
};
/// Memory and time of one training step, end-to-end against one block.
int cmd_bench_step(const BenchStepArgs& a);

}  // namespace blocklab
