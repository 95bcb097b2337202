#include "families/family.h"

#include <random>

#include <fmt/format.h>

#include "util/error.h"
#include "util/simd.h"
#include "util/system.h"

namespace blocklab {

std::string Metric::show() const {
  return percent ? fmt::format("{:.2f}%", 100 * value) : fmt::format("{:.4g}", value);
}

std::string Metric::show_difference(double d) const {
  return percent ? fmt::format("{:+.2f} points", 100 * d) : fmt::format("{:+.4g}", d);
}

nlohmann::json Metric::to_json() const {
  return {{"name", name}, {"value", value}, {"higher_is_better", higher_is_better}, {"percent", percent}};
}

Metric Metric::from_json(const nlohmann::json& j) {
  return {j.at("name").get<std::string>(), j.at("value").get<double>(), j.at("higher_is_better").get<bool>(),
          j.value("percent", false)};
}

nlohmann::json Evaluation::to_json() const {
  nlohmann::json j = details;
  j["headline"] = headline.to_json();
  j["alternatives"] = nlohmann::json::array();
  for (const auto& m : alternatives) j["alternatives"].push_back(m.to_json());
  j["evaluation_lines"] = lines;
  j["test_examples"] = examples;
  j["inference_ms_per_example"] = ms_per_example;
  return j;
}

Evaluation Evaluation::from_json(const nlohmann::json& j) {
  Evaluation e;
  e.headline = Metric::from_json(j.at("headline"));
  for (const auto& m : j.value("alternatives", nlohmann::json::array())) e.alternatives.push_back(Metric::from_json(m));
  e.lines = j.value("evaluation_lines", std::vector<std::string>{});
  e.examples = j.value("test_examples", int64_t(0));
  e.ms_per_example = j.value("inference_ms_per_example", 0.0);
  return e;
}

std::string Evaluation::report() const {
  std::string out = fmt::format("{} {} on {} examples, inference {:.3f} ms/example\n", headline.name, headline.show(),
                                examples, ms_per_example);
  for (const auto& m : alternatives) out += fmt::format("  {}: {}\n", m.name, m.show());
  for (const auto& line : lines) out += "  " + line + "\n";
  return out;
}

std::string block_prefix(int64_t block) { return "blocks." + std::to_string(block) + "."; }

StackOptions stack_options(const Config& cfg) {
  StackOptions o;
  o.hidden = cfg.model.hidden;
  o.heads = cfg.model.heads;
  o.layers = cfg.model.layers;
  o.blocks = cfg.model.blocks;
  o.mlp_ratio = cfg.model.mlp_ratio;
  o.cond_dim = cfg.model.cond_dim;
  o.seed = uint64_t(cfg.train.seed);
  o.own_io = cfg.train.shared == SharedModules::Independent;
  return o;
}

torch::Tensor draw_levels(const Partition& blocks, const Partition& whole, int block, int64_t n, uint64_t seed,
                          WithinRange how, const torch::Device& device) {
  std::mt19937_64 rng(seed);
  std::vector<double> levels(static_cast<size_t>(n));
  for (auto& v : levels) v = block < 0 ? whole.sample(0, WithinRange::Distribution, rng) : blocks.sample(block, how, rng);
  return torch::tensor(levels, torch::kFloat64).to(device, torch::kFloat32);
}

ImageTransformerOptions image_transformer_options(const Config& cfg, const DataShape& shape, int64_t patch,
                                                  const char* patch_key, int64_t extra_tokens) {
  if (shape.height % patch != 0 || shape.width % patch != 0)
    throw UserError(fmt::format("{}x{} images: {} = {} must divide both sides", shape.height, shape.width, patch_key, patch));
  ImageTransformerOptions o;
  static_cast<StackOptions&>(o) = stack_options(cfg);
  o.height = shape.height;
  o.width = shape.width;
  o.channels = shape.channels;
  o.patch = patch;
  o.classes = shape.classes;
  refuse_what_cannot_fit(cfg, extra_tokens + o.num_patches());
  return o;
}

void refuse_what_cannot_fit(const Config& cfg, int64_t tokens) {
  // Weights, gradients and AdamW's two moments are four fp32 copies of the parameters (the layers
  // dominate: attention 4 d^2, MLP 2 r d^2, adaLN 6 d c per layer). An end-to-end step keeps per
  // layer and token about (10 + 2 r) d floats for backward, plus the attention matrices.
  const auto& m = cfg.model;
  const double d = double(m.hidden), t = double(tokens), r = double(m.mlp_ratio);
  const double weights = 16.0 * (4 * d * d + 2 * r * d * d + 6 * d * double(m.cond_dim)) * double(m.layers);
  const double saved = 4.0 * double(cfg.train.batch_size) * t * double(m.layers) * ((10.0 + 2.0 * r) * d + double(m.heads) * t);
  const double memory = double(physical_memory_bytes()), gib = double(1 << 30);
  if (weights > memory)
    throw UserError(fmt::format("model.layers = {}, model.hidden = {}: about {:.0f} GiB of weights, gradients and AdamW "
                                "state, more than this machine's {:.0f} GiB",
                                m.layers, m.hidden, weights / gib, memory / gib));
  if (saved > memory)
    throw UserError(fmt::format("train.batch_size = {}: a step would keep about {:.0f} GiB of activations for backward, "
                                "more than this machine's {:.0f} GiB",
                                cfg.train.batch_size, saved / gib, memory / gib));
}

namespace {

// The weighting's coefficients c_i, for which the loss is sum_i c_i l_i (and its gradient c_i):
// PerSample w_i / N, BatchMean mean(w) / N, Normalized w_i / sum(w), None 1 / N.
template <typename T>
void loss_coefficients(const T* w, int64_t n, Weighting how, T* c) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(w[i]);
  for (int64_t i = 0; i < n; ++i) {
    switch (how) {
      case Weighting::PerSample: c[i] = T(double(w[i]) / double(n)); break;
      case Weighting::BatchMean: c[i] = T(sum / double(n) / double(n)); break;
      case Weighting::Normalized: c[i] = T(double(w[i]) / sum); break;
      case Weighting::None: c[i] = T(1.0 / double(n)); break;
    }
  }
}

// The weighted loss and the plain mean in one pass forward and one node backward. Through
// libtorch's ops they were four ops and two nodes, ~20 us each at the end of a step whose layers
// have just pushed libtorch's code and data out of the caches (a mean of 128 floats: 2 us warm,
// 24 us cold).
class WeightedLoss : public torch::autograd::Function<WeightedLoss> {
 public:
  // per_example and weight [N], contiguous, of one floating type.
  static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& per_example,
                                              const torch::Tensor& weight, int64_t how) {
    auto c = torch::empty_like(per_example);
    double loss = 0, plain = 0;
    AT_DISPATCH_FLOATING_TYPES(per_example.scalar_type(), "weighted_loss", [&] {
      const int64_t n = per_example.numel();
      const scalar_t* l = per_example.data_ptr<scalar_t>();
      scalar_t* ci = c.data_ptr<scalar_t>();
      loss_coefficients(weight.data_ptr<scalar_t>(), n, Weighting(how), ci);
      for (int64_t i = 0; i < n; ++i) loss += double(ci[i]) * double(l[i]), plain += double(l[i]);
      plain /= double(n);
    });
    ctx->save_for_backward({c});
    auto plain_tensor = torch::scalar_tensor(plain, per_example.options());
    ctx->mark_non_differentiable({plain_tensor});
    return {torch::scalar_tensor(loss, per_example.options()), plain_tensor};
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto c = ctx->get_saved_variables()[0];
    auto dl = torch::empty_like(c);
    AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "weighted_loss backward", [&] {
      const scalar_t g = grads[0].contiguous().data_ptr<scalar_t>()[0];
      const scalar_t* ci = c.data_ptr<scalar_t>();
      scalar_t* out = dl.data_ptr<scalar_t>();
      for (int64_t i = 0, n = c.numel(); i < n; ++i) out[i] = g * ci[i];
    });
    return {dl, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

Loss weighted_loss(const torch::Tensor& per_example, const torch::Tensor& weight, Weighting how) {
  if (simd::fused_kernels_enabled() && simd::cpu_floating(per_example) && per_example.dim() == 1 &&
      per_example.numel() > 0 && weight.sizes() == per_example.sizes() &&
      weight.scalar_type() == per_example.scalar_type() && weight.device() == per_example.device() &&
      !weight.requires_grad()) {
    auto out = WeightedLoss::apply(per_example.contiguous(), weight.contiguous(), int64_t(how));
    return {out[0], out[1]};
  }
  const auto plain = per_example.mean().detach();
  switch (how) {
    case Weighting::PerSample: return {(weight * per_example).mean(), plain};  // E[lambda(sigma) loss] (paper Eq. 6)
    case Weighting::BatchMean: return {weight.mean() * per_example.mean(), plain};  // the reference code's broadcast (docs/method.md)
    case Weighting::Normalized: return {(weight * per_example).sum() / weight.sum().detach(), plain};
    case Weighting::None: return {per_example.mean(), plain};
  }
  throw std::logic_error("unknown weighting");
}

}  // namespace blocklab
