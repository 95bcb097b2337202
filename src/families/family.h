// The seam between the method and a kind of model. A family owns its data set, model, noise
// process, losses and evaluation; trainer, step, checkpoints, summary, demo and benchmarks know
// only this interface. How to add one: docs/architecture.md.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "io/config.h"
#include "models/layers.h"
#include "schedule/noise.h"

namespace blocklab {

struct Loss {
  torch::Tensor value;  // what backward runs on (weighted as the family's method says)
  torch::Tensor plain;  // the unweighted loss, detached, for logs
};

/// A named score of a model, and which way is better.
struct Metric {
  std::string name;  // "accuracy", "FID", ...
  double value = 0;
  bool higher_is_better = true;
  bool percent = false;  // shown as 87.93% and differences in points

  std::string show() const;                   // "87.93%" / "37.2"
  std::string show_difference(double d) const;  // "+1.29 points" / "+2.63"
  nlohmann::json to_json() const;
  static Metric from_json(const nlohmann::json& j);
};

/// What a family's evaluation found.
struct Evaluation {
  Metric headline;                   // the one number demo compares
  std::vector<Metric> alternatives;  // the same quantity by other samplers, compared to the headline of e2e too
  std::vector<std::string> lines;    // readable findings (per-step, per-block), printed and kept in the summary
  nlohmann::json details;            // everything else, merged into summary.json / eval.json
  int64_t examples = 0;
  double ms_per_example = 0;         // inference wall time
  /// What the family made for a person to look at, written beside summary.json (eval.json) and
  /// shown by `blocklab report`: file name -> contents ("samples.png", "samples.txt").
  std::map<std::string, std::string> files;

  nlohmann::json to_json() const;
  static Evaluation from_json(const nlohmann::json& j);
  /// Readable lines for the terminal: headline, alternatives, findings.
  std::string report() const;
};

class Family {
 public:
  virtual ~Family() = default;
  /// The model; parameters are named `shared.*` and `blocks.{K}.*` (K the block's own index).
  virtual torch::nn::Module& model() = 0;
  /// The training loss of one batch for block `block` (-1: end-to-end). The family draws its own
  /// noise levels and noise from `seed` (torch's generator is also seeded with it by the caller).
  virtual Loss loss(const Batch& batch, int block, uint64_t seed) = 0;
  /// Scores the model on `split` of `data`; everything random comes from `seed`.
  virtual Evaluation evaluate(const Dataset& data, Split split, uint64_t seed) = 0;
  /// From now on the model holds one block at a time, each loaded by `fill` when its turn comes
  /// (evaluating or sampling a run whose blocks were trained apart, in less memory).
  virtual void stream_blocks(BlockFiller fill) = 0;
};

/// Prefix of the parameter names that belong to block b: "blocks.b.".
std::string block_prefix(int64_t block);

/// The layer stack of `cfg` (widths, layers, blocks, init seed, shared or independent I/O).
StackOptions stack_options(const Config& cfg);

/// Training noise levels [N] (float) of `block` drawn in double from `seed`: end-to-end (block -1)
/// by the distribution over `whole`, a block within its widened range of `blocks` as `how` says.
torch::Tensor draw_levels(const Partition& blocks, const Partition& whole, int block, int64_t n, uint64_t seed,
                          WithinRange how, const torch::Device& device);

/// The image transformer of `cfg` for images of `shape` with patch `patch` (the family's key
/// `patch_key`, named when it does not tile the images); refuses what cannot fit in memory, for
/// `extra_tokens` tokens beside the patches.
ImageTransformerOptions image_transformer_options(const Config& cfg, const DataShape& shape, int64_t patch,
                                                  const char* patch_key, int64_t extra_tokens = 0);

/// Refuses, before anything is allocated, a transformer of `cfg` whose weights, gradients and
/// AdamW state, or whose end-to-end activations for `tokens` tokens per example, exceed the
/// machine's memory. UserError naming the keys.
void refuse_what_cannot_fit(const Config& cfg, int64_t tokens);

/// The batch's training loss from per-example losses [N] and their weights lambda(sigma) [N] (no
/// gradient), as diffusion.weighting says (paper Eq. 6 is PerSample; docs/gap-study.md compares
/// the others), and the per-example losses' plain mean. CPU float32/float64 runs one fused pass
/// (unless simd::set_fused_kernels(false)), anything else libtorch's ops.
Loss weighted_loss(const torch::Tensor& per_example, const torch::Tensor& weight, Weighting how);

}  // namespace blocklab
