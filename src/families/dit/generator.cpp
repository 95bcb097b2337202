#include "families/dit/generator.h"

#include <chrono>
#include <random>

#include <fmt/format.h>

#include "io/png.h"
#include "schedule/precond.h"
#include "util/error.h"
#include "util/progress.h"
#include "util/seed.h"

namespace blocklab {

DiTOptions dit_options(const Config& cfg, const DataShape& shape, const std::vector<int64_t>& held) {
  DiTOptions o{image_transformer_options(cfg, shape, cfg.dit.patch, "dit.patch")};
  o.held = held;
  return o;
}

SamplingOptions SamplingOptions::of(const Config& cfg) {
  return {cfg.inference_steps(), cfg.dit.sampler, cfg.dit.schedule, cfg.dit.guidance};
}

nlohmann::json SamplingOptions::to_json() const {
  return {{"steps", steps}, {"sampler", to_string(sampler)}, {"schedule", to_string(schedule)}, {"guidance", guidance}};
}

std::string SamplingOptions::describe() const {
  return fmt::format("{}, {} steps on {} levels, guidance {}", to_string(sampler), steps, to_string(schedule), guidance);
}

ImageGenerator::ImageGenerator(const Config& cfg, const DataShape& shape, double pixel_mean, double pixel_std,
                               const torch::Device& device, const std::vector<int64_t>& held)
    : cfg_(cfg),
      dit_(DiT(dit_options(cfg, shape, held))),
      partition_(std::make_shared<LogNormalSigma>(cfg.diffusion.noise), cfg.model.blocks, cfg.diffusion.overlap),
      whole_(std::make_shared<LogNormalSigma>(cfg.diffusion.noise), 1, 0.0) {
  torch::NoGradGuard no_grad;
  for (const auto& m : dit_->modules(/*include_self=*/false))
    if (auto io = std::dynamic_pointer_cast<DiTSharedImpl>(m)) {  // the shared modules, or each block's copy
      io->pixel_mean.fill_(pixel_mean);
      io->pixel_std.fill_(pixel_std);
    }
  dit_->to(device);
}

torch::Tensor ImageGenerator::to_model(const torch::Tensor& standardized) const {
  return standardized * cfg_.diffusion.noise.sigma_data;
}

torch::Tensor ImageGenerator::to_pixels(const torch::Tensor& x) const {
  auto s = dit_->any_io();
  auto unit = x / cfg_.diffusion.noise.sigma_data * s->pixel_std + s->pixel_mean;  // [0, 1]
  return (unit * 255.0).round().clamp(0, 255).to(torch::kUInt8).cpu();
}

torch::Tensor ImageGenerator::denoise(const torch::Tensor& z, const torch::Tensor& sigma, const torch::Tensor& labels,
                                      int block) {
  const auto pc = precondition(sigma, cfg_.diffusion.noise.sigma_data);  // each [N]
  auto per_image = [](const torch::Tensor& c) { return c.view({-1, 1, 1, 1}); };
  auto cond = dit_->condition(pc.c_noise, labels, block < 0 ? 0 : block);
  const int64_t first = block < 0 ? 0 : block, last = block < 0 ? dit_->opt.blocks : block + 1;
  auto f = dit_->forward(per_image(pc.c_in) * z, cond, first, last);
  return per_image(pc.c_skip) * z + per_image(pc.c_out) * f;
}

torch::Tensor ImageGenerator::sample_sigmas(int block, int64_t n, uint64_t seed, const torch::Device& device) const {
  // End-to-end: EDM's log-normal over the whole range. A block: its own widened range, drawn as
  // diffusion.sigma_sampling says (the paper: the log-normal truncated to the range).
  return draw_levels(partition_, whole_, block, n, seed, cfg_.diffusion.sigma_sampling, device);
}

Loss ImageGenerator::loss(const Batch& batch, int block, uint64_t seed) {
  auto x = to_model(batch.x);
  const int64_t n = x.size(0);
  auto sigma = sample_sigmas(block, n, seed, x.device());
  // Classifier-free guidance needs the unconditional model too: drop labels at random
  // (torch's generator, seeded by the step).
  auto drop = torch::rand({n}, x.options()) < cfg_.dit.label_dropout;
  auto labels = torch::where(drop, torch::full_like(batch.y, dit_->opt.null_label()), batch.y);
  auto z = x + sigma.view({-1, 1, 1, 1}) * torch::randn_like(x);
  auto l2 = (denoise(z, sigma, labels, block) - x).pow(2).mean({1, 2, 3});  // [N]
  auto w = precondition(sigma, cfg_.diffusion.noise.sigma_data).weight;     // lambda(sigma) [N]
  return weighted_loss(l2, w, cfg_.diffusion.weighting);
}

std::vector<double> ImageGenerator::levels(const SamplingOptions& opt) const {
  const auto& n = cfg_.diffusion.noise;
  if (opt.schedule == SigmaSchedule::Karras) return karras_sigmas(opt.steps, n.sigma_min, n.sigma_max);
  return partition_.inference_levels(opt.steps);
}

int ImageGenerator::block_of(double sigma) const { return cfg_.blocks_mode() ? partition_.block_of(sigma) : -1; }

torch::Tensor ImageGenerator::guided_denoise(const torch::Tensor& z, double sigma, const torch::Tensor& labels, int block,
                                            double guidance) {
  const int64_t n = z.size(0);
  if (guidance == 1.0) return denoise(z, torch::full({n}, sigma, z.options()), labels, block);
  auto null = torch::full_like(labels, dit_->opt.null_label());
  auto d = denoise(torch::cat({z, z}), torch::full({2 * n}, sigma, z.options()), torch::cat({labels, null}), block);
  auto conditional = d.narrow(0, 0, n), unconditional = d.narrow(0, n, n);
  return unconditional + guidance * (conditional - unconditional);
}

Generated ImageGenerator::generate(const torch::Tensor& labels, const SamplingOptions& opt, uint64_t seed,
                                   int64_t batch, const std::string& progress) {
  torch::NoGradGuard no_grad;
  const auto& o = dit_->opt;
  const auto device = dit_->any_io()->pos_embed.device();
  const auto sigmas = levels(opt);
  const bool guided = opt.guidance != 1.0;
  const int64_t total = labels.size(0), batches = (total + batch - 1) / batch;
  std::vector<DenoiserCall> calls;
  std::vector<torch::Tensor> out;
  std::unique_ptr<Progress> bar;
  if (!progress.empty()) bar = std::make_unique<Progress>(total, progress, 0, /*plain=*/false);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < batches; ++i) {
    const int64_t lo = i * batch, n = std::min(batch, total - lo);
    auto y = labels.narrow(0, lo, n).to(device);
    auto denoise_at = [&](const torch::Tensor& z, double sigma, int block) {
      return guided_denoise(z, sigma, y, block, opt.guidance);
    };
    // Noise of image j depends on (seed, its batch of `batch`) only.
    torch::manual_seed(derive_seed(seed, Stream::Eval, uint64_t(i)));
    auto z = torch::randn({n, o.channels, o.height, o.width}, torch::TensorOptions().device(device)) * sigmas.front();
    calls.clear();
    auto x = sample_ode(sigmas, z, opt.sampler, denoise_at, [this](double s) { return block_of(s); }, &calls);
    out.push_back(to_pixels(x));
    if (bar) bar->update(lo + n, "");
  }
  if (bar) bar->finish();
  Generated g;
  g.images = torch::cat(out);
  g.ms_per_image = 1000.0 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(total);
  for (const auto& c : calls) {
    g.denoiser_calls_per_image += guided ? 2 : 1;
    g.layer_evaluations_per_image += double((guided ? 2 : 1) * (c.block < 0 ? o.layers : o.layers / o.blocks));
  }
  return g;
}

Scored ImageGenerator::score(const ImageData& data, Split split, int64_t n, const SamplingOptions& opt, uint64_t seed,
                             const FrechetOptions& fd, const std::string& progress) {
  const auto labels = torch::arange(n, torch::kInt64) % dit_->opt.classes;  // every class equally
  Scored s;
  s.generated = generate(labels, opt, seed, 250, progress);
  s.report = frechet_report(data, split, s.generated.images, labels, fd);
  s.summary = s.report.to_json();
  s.summary["fd_sampler"] = opt.to_json();
  s.summary["fd_sampler"]["seed"] = seed;
  s.summary["sampling_layer_evaluations_per_image"] = s.generated.layer_evaluations_per_image;
  s.summary["sampling_ms_per_image"] = s.generated.ms_per_image;
  s.lines = s.report.lines();
  s.lines.push_back(fmt::format("sampling: {}: {:.0f} layer evaluations and {:.1f} ms per image", opt.describe(),
                                s.generated.layer_evaluations_per_image, s.generated.ms_per_image));
  return s;
}

Evaluation ImageGenerator::evaluate(const Dataset& data, Split split, uint64_t seed) {
  const auto* images = dynamic_cast<const ImageData*>(&data);
  if (!images) throw std::logic_error("the DiT family evaluates against image data");
  const auto s = score(*images, split, cfg_.dit.eval_samples, SamplingOptions::of(cfg_), seed);
  Evaluation e;
  e.headline = {"FD", s.report.fd, /*higher_is_better=*/false, /*percent=*/false};
  e.alternatives.push_back({"FD extrapolated to infinitely many samples", s.report.fd_infinity, false, false});
  e.lines = s.lines;
  e.details = s.summary;
  e.examples = s.report.samples;
  e.ms_per_example = s.generated.ms_per_image;
  // The first samples as a grid, a column per class (sample i is of class i % classes).
  const int64_t classes = dit_->opt.classes, rows = std::min<int64_t>(8, s.generated.images.size(0) / classes);
  if (rows > 0) e.files["samples.png"] = png_bytes(image_grid(s.generated.images.narrow(0, 0, rows * classes), classes, 0, 255));
  return e;
}

}  // namespace blocklab
