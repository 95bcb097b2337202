#include "eval/evaluate.h"

#include <chrono>
#include <cmath>

#include <fmt/format.h>

namespace blocklab {

namespace {
constexpr int64_t kEvalBatch = 1000;
constexpr uint64_t kEvalSeedOffset = 0x5eed;  // inference noise: fixed per run, apart from training's

double accuracy_of(const std::vector<torch::Tensor>& correct, int64_t n) {
  int64_t c = 0;
  for (const auto& t : correct) c += t.sum().item<int64_t>();
  return double(c) / double(n);
}
}  // namespace

double probe_sigma(const NoiseSchedule& schedule, int blocks, int block, int inference_steps) {
  for (double s : schedule.inference_sigmas(inference_steps))
    if (schedule.block_of(s, blocks) == block) return s;
  const auto r = schedule.block_range(blocks, block, /*overlap=*/0.0);
  return std::sqrt(r.lo * r.hi);
}

EvalReport evaluate(DenoisingClassifier& task, const Config& cfg, const ImageData& data, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  task.model()->eval();
  const int64_t n = data.test.size();
  const bool blocks = cfg.blocks_mode();
  const int steps = cfg.inference_steps(), B = cfg.model.blocks;
  EvalReport r;
  r.images = n;
  const bool also_t1 = blocks && cfg.diffusion.inference_temperature != 1.0;
  std::vector<std::vector<torch::Tensor>> step_correct(blocks ? steps : 1), teacher_correct(blocks ? B : 0);
  std::vector<torch::Tensor> t1_correct;
  std::vector<double> probes;  // the noise level each block is teacher-forced at
  for (int b = 0; b < int(teacher_correct.size()); ++b) probes.push_back(probe_sigma(task.schedule(), B, b, steps));
  double seconds = 0;
  for (int64_t start = 0; start < n; start += kEvalBatch) {
    auto idx = torch::arange(start, std::min(n, start + kEvalBatch), torch::kInt64);
    auto batch = data.batch(data.test, idx, device);
    // Each batch's inference noise is drawn from (seed, batch), the same for every sampler, so
    // the temperature-1 pass below is a paired comparison.
    const uint64_t noise_seed = uint64_t(cfg.train.seed) + kEvalSeedOffset + uint64_t(start);
    torch::manual_seed(noise_seed);
    const auto t0 = std::chrono::steady_clock::now();
    if (!blocks) {
      auto pred = task.model()->forward(batch.images).argmax(-1);
      step_correct[0].push_back((pred == batch.labels).cpu());
    } else {
      auto out = task.predict_steps(batch.images, steps);
      for (int i = 0; i < steps; ++i) step_correct[i].push_back((out.logits[i].argmax(-1) == batch.labels).cpu());
      r.step_sigmas = out.sigmas;
      r.step_blocks = out.blocks;
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (also_t1) {
      torch::manual_seed(noise_seed);
      t1_correct.push_back((task.predict_steps(batch.images, steps, 1.0).logits.back().argmax(-1) == batch.labels).cpu());
    }
    for (int b = 0; b < int(teacher_correct.size()); ++b) {
      auto logits = task.teacher_forced_logits(batch.images, batch.labels, b, probes[size_t(b)]);
      teacher_correct[b].push_back((logits.argmax(-1) == batch.labels).cpu());
    }
  }
  for (const auto& c : step_correct) r.step_accuracy.push_back(accuracy_of(c, n));
  r.accuracy = r.step_accuracy.back();
  if (also_t1) r.accuracy_expected_embedding = accuracy_of(t1_correct, n);
  if (!blocks) r.step_accuracy.clear();
  r.teacher_sigmas = probes;
  for (const auto& c : teacher_correct) r.teacher_forced.push_back(accuracy_of(c, n));
  r.ms_per_image = 1000.0 * seconds / double(n);
  task.model()->train();
  return r;
}

nlohmann::json EvalReport::to_json() const {
  nlohmann::json j = {{"test_images", images}, {"test_accuracy", accuracy}, {"inference_ms_per_image", ms_per_image}};
  if (!step_accuracy.empty()) {
    j["inference_steps"] = nlohmann::json::array();
    for (size_t i = 0; i < step_accuracy.size(); ++i)
      j["inference_steps"].push_back({{"sigma", step_sigmas[i]}, {"block", step_blocks[i]}, {"accuracy", step_accuracy[i]}});
    if (!std::isnan(accuracy_expected_embedding)) j["test_accuracy_expected_embedding"] = accuracy_expected_embedding;
    j["teacher_forced"] = nlohmann::json::array();
    for (size_t b = 0; b < teacher_forced.size(); ++b)
      j["teacher_forced"].push_back({{"block", b}, {"sigma", teacher_sigmas[b]}, {"accuracy", teacher_forced[b]}});
  }
  return j;
}

std::string EvalReport::table() const {
  std::string out = fmt::format("test accuracy {:.2f}% on {} images, inference {:.3f} ms/image\n", 100 * accuracy,
                                images, ms_per_image);
  if (!std::isnan(accuracy_expected_embedding))
    out += fmt::format("  with E[y|z] passed between steps (temperature 1, the reference sampler): {:.2f}%\n",
                       100 * accuracy_expected_embedding);
  for (size_t i = 0; i < step_accuracy.size(); ++i)
    out += fmt::format("  after step {} (block {}, sigma {:.4g}): {:.2f}%\n", i, step_blocks[i], step_sigmas[i],
                       100 * step_accuracy[i]);
  for (size_t b = 0; b < teacher_forced.size(); ++b)
    out += fmt::format("  block {} teacher-forced at sigma {:.4g}: {:.2f}%\n", b, teacher_sigmas[b],
                       100 * teacher_forced[b]);
  return out;
}

}  // namespace blocklab
