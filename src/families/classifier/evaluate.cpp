#include "families/classifier/evaluate.h"

#include <chrono>

#include <fmt/format.h>

#include "util/seed.h"

namespace blocklab {

namespace {
constexpr int64_t kEvalBatch = 1000;

double accuracy_of(const std::vector<torch::Tensor>& correct, int64_t n) {
  int64_t c = 0;
  for (const auto& t : correct) c += t.sum().item<int64_t>();
  return double(c) / double(n);
}
}  // namespace

EvalReport evaluate_classifier(DenoisingClassifier& task, const Config& cfg, const Dataset& data, Split split,
                               uint64_t seed) {
  torch::NoGradGuard no_grad;
  task.model().eval();
  const torch::Device device = task.model().parameters().front().device();
  const int64_t n = data.size(split);
  const bool blocks = cfg.blocks_mode();
  const int steps = cfg.inference_steps(), B = cfg.model.blocks;
  EvalReport r;
  r.images = n;
  const bool also_t1 = blocks && cfg.classifier.inference_temperature != 1.0;
  std::vector<std::vector<torch::Tensor>> step_correct(blocks ? steps : 1), teacher_correct(blocks ? B : 0);
  std::vector<torch::Tensor> t1_correct;
  const int64_t classes = data.shape().classes;
  auto confusion = torch::zeros({classes * classes}, torch::kInt64);
  auto count = [&](const torch::Tensor& pred, const torch::Tensor& truth) {
    confusion += torch::bincount((truth * classes + pred).cpu(), {}, classes * classes);
  };
  for (int b = 0; b < int(teacher_correct.size()); ++b) r.teacher_sigmas.push_back(task.probe_sigma(b));
  double seconds = 0;
  for (int64_t start = 0, i = 0; start < n; start += kEvalBatch, ++i) {
    auto idx = torch::arange(start, std::min(n, start + kEvalBatch), torch::kInt64);
    auto batch = data.batch(split, idx, device);
    const uint64_t noise_seed = derive_seed(seed, Stream::Eval, uint64_t(i));
    torch::manual_seed(noise_seed);
    const auto t0 = std::chrono::steady_clock::now();
    if (!blocks) {
      auto pred = task.vit()->forward(batch.x).argmax(-1);
      step_correct[0].push_back((pred == batch.y).cpu());
      count(pred, batch.y);
    } else {
      auto out = task.predict_steps(batch.x, steps);
      for (int s = 0; s < steps; ++s) step_correct[size_t(s)].push_back((out.logits[size_t(s)].argmax(-1) == batch.y).cpu());
      r.step_sigmas = out.sigmas;
      r.step_blocks = out.blocks;
      count(out.logits.back().argmax(-1), batch.y);
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (also_t1) {  // the reference sampler on the same start noise: a paired comparison
      torch::manual_seed(noise_seed);
      t1_correct.push_back((task.predict_steps(batch.x, steps, 1.0).logits.back().argmax(-1) == batch.y).cpu());
    }
    // Teacher forcing draws from its own stream: its noise must not depend on what the sampler drew.
    torch::manual_seed(derive_seed(seed, Stream::TeacherForcing, uint64_t(i)));
    for (int b = 0; b < int(teacher_correct.size()); ++b) {
      auto logits = task.teacher_forced_logits(batch.x, batch.y, b, r.teacher_sigmas[size_t(b)]);
      teacher_correct[size_t(b)].push_back((logits.argmax(-1) == batch.y).cpu());
    }
  }
  for (const auto& c : step_correct) r.step_accuracy.push_back(accuracy_of(c, n));
  r.accuracy = r.step_accuracy.back();
  if (also_t1) r.accuracy_expected_embedding = accuracy_of(t1_correct, n);
  if (!blocks) r.step_accuracy.clear();
  for (const auto& c : teacher_correct) r.teacher_forced.push_back(accuracy_of(c, n));
  r.ms_per_image = 1000.0 * seconds / double(n);
  const auto counts = confusion.view({classes, classes});
  for (int64_t t = 0; t < classes; ++t)
    r.confusion.push_back(std::vector<int64_t>(counts[t].data_ptr<int64_t>(), counts[t].data_ptr<int64_t>() + classes));
  task.model().train();
  return r;
}

Evaluation EvalReport::to_evaluation() const {
  Evaluation e;
  e.headline = {"test accuracy", accuracy, /*higher_is_better=*/true, /*percent=*/true};
  e.examples = images;
  e.ms_per_example = ms_per_image;
  e.details = {{"test_accuracy", accuracy}, {"confusion", confusion}};
  if (!std::isnan(accuracy_expected_embedding)) {
    e.alternatives.push_back({"with E[y|z] between steps (temperature 1, the reference sampler)",
                              accuracy_expected_embedding, true, true});
    e.details["test_accuracy_expected_embedding"] = accuracy_expected_embedding;
  }
  if (!step_accuracy.empty()) {
    e.details["inference_steps"] = nlohmann::json::array();
    for (size_t i = 0; i < step_accuracy.size(); ++i) {
      e.details["inference_steps"].push_back(
          {{"sigma", step_sigmas[i]}, {"block", step_blocks[i]}, {"accuracy", step_accuracy[i]}});
      e.lines.push_back(fmt::format("after step at sigma {:<8.4g} (block {}): {:.2f}%", step_sigmas[i], step_blocks[i],
                                    100 * step_accuracy[i]));
    }
    e.details["teacher_forced"] = nlohmann::json::array();
    for (size_t b = 0; b < teacher_forced.size(); ++b) {
      e.details["teacher_forced"].push_back({{"block", b}, {"sigma", teacher_sigmas[b]}, {"accuracy", teacher_forced[b]}});
      e.lines.push_back(fmt::format("block {} teacher-forced at sigma {:.4g}: {:.2f}%", b, teacher_sigmas[b],
                                    100 * teacher_forced[b]));
    }
  }
  return e;
}

Evaluation DenoisingClassifier::evaluate(const Dataset& data, Split split, uint64_t seed) {
  return evaluate_classifier(*this, cfg_, data, split, seed).to_evaluation();
}

}  // namespace blocklab
