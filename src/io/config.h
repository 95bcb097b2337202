// The run configuration: one struct, one table of fields (key, default, help, check) in
// config.cpp. TOML files and `--set section.key=value` overrides both go through that table,
// so unknown keys, wrong types and impossible values are refused with the key's name.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "schedule/noise.h"

namespace blocklab {

struct ModelConfig {
  std::string mode = "blocks";  // "e2e" (backprop through all layers) or "blocks" (DiffusionBlocks)
  int layers = 6;               // L transformer layers in all
  int blocks = 3;               // B blocks of L/B consecutive layers
  int hidden = 64;              // d, token width (also the label-embedding width)
  int heads = 4;
  int patch = 7;                // 28x28 images -> (28/patch)^2 patch tokens
  int mlp_ratio = 4;
  std::string label_token = "beside_cls";  // blocks mode: noisy label "as_cls" (reference code) or "beside_cls" (paper)
  int cond_dim = 64;            // width of the noise-level embedding; the reference uses hidden/6
};

struct DiffusionConfig {
  NoiseOptions noise;
  double overlap = 0.05;                   // gamma: widening of each block's range in log sigma
  std::string weighting = "per_sample";    // "per_sample" (paper Eq. 6) or "batch_mean" (reference code, D1)
  std::string sigma_sampling = "log_uniform";  // within a block's range: "lognormal" (paper) or "log_uniform"
  int inference_steps = 0;                 // Euler steps at inference; 0 means one per block (n = B)
  double inference_temperature = 0.0;      // softmax temperature of the embedding passed between steps:
                                           // 1 is E[y|z] (the reference), 0 the argmax class's embedding
};

struct TrainConfig {
  double epochs = 5;            // passes over the data per block (blocks mode runs B times the steps)
  int batch_size = 128;
  double lr = 1e-3;
  std::string lr_schedule = "cosine";  // "cosine" (to min_lr) or "constant", after linear warm-up
  double min_lr = 1e-5;
  double warmup = 0.02;         // fraction of all steps spent in linear warm-up
  double weight_decay = 0.01;
  double grad_clip = 1.0;       // global gradient-norm clip; 0 disables
  double label_smoothing = 0.0;
  int64_t seed = 0;
  int log_every = 50;           // steps between metrics.jsonl lines
  int checkpoint_every = 1000;  // steps between checkpoints (and one at the end)
  int threads = 1;              // intra-op threads; 1 is the robust default on 2 shared cores
  std::string device = "cpu";   // "cpu" or "cuda"
};

struct DataConfig {
  std::string dir = "/usr/share/datasets/fashion-mnist";  // IDX files, gzipped or not
  int train_limit = 0;  // use only the first N training images (0: all)
  int test_limit = 0;   // evaluate on the first N test images (0: all)
};

struct Config {
  ModelConfig model;
  DiffusionConfig diffusion;
  TrainConfig train;
  DataConfig data;

  /// Loads a TOML file over the defaults. UserError naming file and key on any problem.
  static Config from_file(const std::string& path);
  /// Applies `section.key=value` (value in TOML syntax; bare words are strings).
  void set(const std::string& assignment);
  /// Cross-field checks (B divides L, heads divide hidden, ...). UserError naming the keys.
  void validate() const;
  /// The resolved configuration as TOML, every key present.
  std::string to_toml() const;
  /// One line per key: name, default, help (for --help and docs).
  static std::string describe();

  int inference_steps() const { return diffusion.inference_steps > 0 ? diffusion.inference_steps : model.blocks; }
  bool blocks_mode() const { return model.mode == "blocks"; }
};

}  // namespace blocklab
