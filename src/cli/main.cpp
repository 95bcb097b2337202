// blocklab: train networks end-to-end or one block at a time (DiffusionBlocks).
// This file only parses the command line; the subcommands live in src/cli/*.cpp.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/commands.h"
#include "io/config.h"
#include "util/error.h"

#ifdef BLOCKLAB_JEMALLOC
// Keep freed pages: returning them costs page faults on every fresh activation buffer.
extern "C" const char* malloc_conf = "dirty_decay_ms:-1,muzzy_decay_ms:-1";
#endif

int main(int argc, char** argv) {
  using namespace blocklab;
  CLI::App app{"blocklab: train deep networks end-to-end or block-wise (DiffusionBlocks)"};
  app.require_subcommand(1);
  app.footer("Run `blocklab COMMAND --help` for a command's options.");

  TrainArgs train;
  auto* t = app.add_subcommand("train", "train a model from a TOML config");
  t->add_option("config", train.config, "config file, e.g. configs/vit-fmnist.toml")->required()->check(CLI::ExistingFile);
  t->add_option("--set", train.overrides, "override a key: section.key=value (repeatable)");
  t->add_option("--out", train.out, "run directory (default runs/<config>-<mode>)");
  t->add_flag("--resume", train.resume, "continue the run in --out from its last checkpoint");
  t->add_flag("--plain-progress", train.plain, "periodic progress lines instead of a bar");
  t->add_option("--label", train.label, "prefix of progress lines")->group("");
  t->add_option("--stop-after", train.stop_after, "stop with a checkpoint after N steps")->group("");
  t->footer("Config keys (section.key, default, meaning):\n" + Config::describe());

  std::string run_dir;
  std::vector<std::string> eval_overrides;
  auto* e = app.add_subcommand("eval", "evaluate a finished run on the test set");
  e->add_option("run_dir", run_dir, "run directory written by `blocklab train`")->required();
  e->add_option("--set", eval_overrides, "override a key, e.g. diffusion.inference_steps=4");

  DemoArgs demo;
  auto* d = app.add_subcommand("demo", "train the default recipe end-to-end and block-wise, then compare");
  d->add_option("--out", demo.out, "output directory (default runs/demo)");
  d->add_option("--set", demo.overrides, "override a key of the default recipe (repeatable)");
  d->add_flag("--sequential", demo.sequential, "run the two trainings one after the other, not side by side");

  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  BenchStepArgs bstep;
  auto* bs = bench->add_subcommand("step", "memory and time of one training step: end-to-end vs one block");
  bs->add_option("--config", bstep.config, "config file (default: the built-in recipe)")->check(CLI::ExistingFile);
  bs->add_option("--set", bstep.overrides, "override a key, e.g. model.layers=12 (repeatable)");
  bs->add_option("--repeats", bstep.repeats, "measured steps per mode (and block)")->check(CLI::PositiveNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& err) {
    return app.exit(err);
  }
  try {
    if (*t) return cmd_train(train);
    if (*e) return cmd_eval(run_dir, eval_overrides);
    if (*d) return cmd_demo(demo);
    if (*bs) return cmd_bench_step(bstep);
  } catch (const UserError& err) {
    fmt::print(stderr, "error: {}\n", err.what());
    return 1;
  } catch (const c10::Error& err) {
    fmt::print(stderr, "error: {}\n", err.what_without_backtrace());
    return 2;
  } catch (const std::exception& err) {
    fmt::print(stderr, "error: {}\n", err.what());
    return 2;
  }
  return 0;
}
