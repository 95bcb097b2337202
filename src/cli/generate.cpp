// `blocklab sample` and `blocklab fd`: images from a trained DiT run, as a PNG grid or scored by
// Fréchet distance (src/eval/fd.h) into the run's summary.json.
#include <cmath>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/run_loader.h"
#include "data/image_data.h"
#include "families/dit/generator.h"
#include "io/png.h"
#include "util/error.h"

namespace blocklab {

namespace {

// The sampler flags become evaluation overrides, so they are checked like config keys.
std::vector<std::string> sampler_overrides(const SamplerArgs& a) {
  std::vector<std::string> out = a.overrides;
  if (a.steps > 0) out.push_back(fmt::format("diffusion.inference_steps={}", a.steps));
  if (!a.sampler.empty()) out.push_back("dit.sampler=" + a.sampler);
  if (!a.schedule.empty()) out.push_back("dit.schedule=" + a.schedule);
  if (a.guidance) out.push_back(fmt::format("dit.guidance={}", *a.guidance));
  return out;
}

struct GeneratorRun {
  LoadedRun loaded;
  ImageGenerator* generator;
  SamplingOptions sampling;
};

GeneratorRun open_generator(const std::string& command, const SamplerArgs& a) {
  auto r = load_run(a.run_dir, sampler_overrides(a), a.raw_weights ? WeightsChoice::Raw : WeightsChoice::Average);
  auto* g = dynamic_cast<ImageGenerator*>(r.family.get());
  if (!g)
    throw UserError(fmt::format("{}: {} needs a run of model.family = \"dit\", this one is \"{}\"", a.run_dir, command,
                                to_string(r.cfg.model.family)));
  const auto opt = SamplingOptions::of(r.cfg);
  return {std::move(r), g, opt};
}

std::string describe(const GeneratorRun& g, const SamplerArgs& a) {
  return fmt::format("{} {} mode, {} weights: {}, seed {}", g.loaded.run.root(), to_string(g.loaded.cfg.model.mode),
                     g.loaded.averaged ? "EMA" : "raw", g.sampling.describe(), a.seed);
}

}  // namespace

int cmd_sample(const SampleArgs& a) {
  auto g = open_generator("sample", a.sampler);
  const int64_t classes = g.generator->dit()->opt.classes;
  if (a.label >= classes)
    throw UserError(fmt::format("--class {}: this run's data has classes 0..{}", a.label, classes - 1));
  torch::Tensor labels;
  int64_t columns;
  if (a.label >= 0) {  // one class: a square-ish grid
    columns = int64_t(std::ceil(std::sqrt(double(a.n))));
    labels = torch::full({int64_t(a.n)}, int64_t(a.label), torch::kInt64);
  } else {  // one class per row; n rounded up to fill the rows
    columns = (a.n + classes - 1) / classes;
    labels = torch::arange(classes * columns, torch::kInt64).div(columns, "floor");
    if (labels.size(0) != a.n)
      fmt::print(stderr, "sample: {} images, one class per row: {} rows of {}\n", labels.size(0), classes, columns);
  }
  fmt::print(stderr, "sample: {}\n", describe(g, a.sampler));
  const auto out = g.generator->generate(labels, g.sampling, uint64_t(a.sampler.seed), 250, "sample");
  write_png(a.out, image_grid(out.images, columns, 0, 255));
  fmt::print("{}: {} images; {:.0f} layer evaluations ({:.0f} denoiser calls) and {:.1f} ms per image\n", a.out,
             labels.size(0), out.layer_evaluations_per_image, out.denoiser_calls_per_image, out.ms_per_image);
  return 0;
}

int cmd_fd(const FdArgs& a) {
  auto g = open_generator("fd", a.sampler);
  const auto& data = dynamic_cast<const ImageData&>(*g.loaded.data);
  fmt::print(stderr, "fd: {} images from {}\n", a.n, describe(g, a.sampler));
  auto scored = g.generator->score(data, Split::Test, a.n, g.sampling, uint64_t(a.sampler.seed),
                                   FrechetOptions{a.save_features}, "fd generate");
  auto& result = scored.summary;
  result["fd_sampler"]["weights"] = g.loaded.averaged ? "ema" : "raw";
  auto summary = g.loaded.run.has("summary.json") ? g.loaded.run.read_json("summary.json") : nlohmann::json::object();
  // The raw weights' score sits beside the average's, not over it.
  if (a.sampler.raw_weights) summary["fd_raw_weights"] = result;
  else summary.update(result);
  g.loaded.run.write_json("summary.json", summary);
  for (const auto& line : scored.lines) fmt::print("{}\n", line);
  fmt::print("written to {}\n", g.loaded.run.file("summary.json"));
  return 0;
}

}  // namespace blocklab
