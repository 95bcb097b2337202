// The run configuration: one struct, one table of fields (key, default, help, check) in
// config.cpp. TOML files and `--set section.key=value` overrides both go through that table,
// so unknown keys, wrong types and impossible values are refused with the key's name. Options
// with a fixed set of values are parsed once into enums; nothing compares option strings later.
//
// Sections: [model], [diffusion], [train] and [data] serve every family; a family's own keys live
// in a section named after it ([classifier]) and are refused when another family is selected.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "schedule/noise.h"
#include "schedule/sampler.h"

namespace blocklab {

enum class Mode { E2E, Blocks };
enum class FamilyKind { Classifier, Dit, Mdm, Ar };
enum class Weighting { PerSample, BatchMean, Normalized, None };
enum class LrSchedule { Cosine, Constant };
enum class Decay { All, Matrices };
enum class LabelToken { AsCls, BesideCls };
/// Blocks mode: the order of block updates in one process, and what stays in memory.
enum class BlockSchedule {
  Interleaved,  // every round of B steps visits each block once, in a shuffled order; all blocks resident
  Resident,     // only the active block resident: a block trains train.block_run updates, then the next
  Rounds,       // every block's update of a round from the same weights, shared gradients summed: what a
                // `blocklab launch` computes, in one process (its reference)
};
/// Blocks mode: the input/output modules the blocks use.
enum class SharedModules {
  Synced,       // one copy, trained by every block's updates (summed across ranks when blocks run in parallel)
  Independent,  // each block owns a copy; the classifier's target space is fixed; blocks exchange nothing
};

/// The option names as they appear in configs ("e2e", "classifier", ...).
const char* to_string(Mode m);
const char* to_string(FamilyKind f);
const char* to_string(Sampler s);
const char* to_string(SigmaSchedule s);
const char* to_string(BlockSchedule s);
const char* to_string(SharedModules s);

struct ModelConfig {
  FamilyKind family = FamilyKind::Classifier;  // which kind of model; its own keys live in its section
  Mode mode = Mode::Blocks;     // E2E: backprop through all layers; Blocks: DiffusionBlocks
  int layers = 6;               // L transformer layers in all
  int blocks = 3;               // B blocks of L/B consecutive layers
  int hidden = 64;              // d, token width
  int heads = 4;
  int mlp_ratio = 4;
  int cond_dim = 64;            // width of the noise-level embedding; the reference code uses hidden/6
};

struct DiffusionConfig {
  NoiseOptions noise;
  double overlap = 0.05;                           // gamma: widening of each block's range in log sigma
  Weighting weighting = Weighting::PerSample;      // how lambda(sigma) weights the per-example losses
  WithinRange sigma_sampling = WithinRange::Uniform;  // within a block's range: log-normal or log-uniform
  int inference_steps = 0;                         // Euler steps at inference; 0 means one per block (n = B)
};

struct TrainConfig {
  double epochs = 5;            // passes over the data per block (blocks mode runs B times the steps)
  int batch_size = 128;
  double lr = 1e-3;
  LrSchedule lr_schedule = LrSchedule::Cosine;  // after linear warm-up
  double min_lr = 1e-5;
  double warmup = 0.02;         // fraction of all steps spent in linear warm-up
  double weight_decay = 0.01;
  Decay decay = Decay::All;     // which parameters weight decay reaches
  double grad_clip = 1.0;       // global gradient-norm clip; 0 disables
  int64_t seed = 0;
  int log_every = 50;           // steps between metrics.jsonl lines
  int checkpoint_every = 1000;  // steps between checkpoints (and one at the end)
  int eval_every = 0;           // steps between evaluations during training, logged to metrics.jsonl (0: at the end only)
  int threads = 1;              // intra-op threads; 1 is the robust default on 2 shared cores
  std::string device = "cpu";   // "cpu" or "cuda"
  double ema_decay = -1;        // exponential moving average of the weights; 0 off, -1 the family's default
  BlockSchedule schedule = BlockSchedule::Interleaved;  // blocks mode (docs/distributed.md)
  SharedModules shared = SharedModules::Synced;
  int block_run = 100;          // resident schedule: updates of one block before the next is loaded
  double dist_timeout = 30;     // seconds a rank may be dead or stuck before the whole job stops
};

struct DataConfig {
  std::string dir = "/usr/share/datasets/fashion-mnist";  // the image families' data files
  std::string path = "/usr/share/games/fortunes";         // the language models' text: a UTF-8 file or folder
  int seq_len = 128;                                       // language models: bytes per window
  double val_fraction = 0.05;                              // language models: documents held out for validation
  int train_limit = 0;  // use only the first N training examples (0: all)
  int test_limit = 0;   // evaluate on the first N test examples (0: all)
};

/// [classifier]: the ViT classifier family (docs/method.md).
struct ClassifierConfig {
  int patch = 7;                                  // patch size in pixels; must divide the images' sides
  LabelToken label_token = LabelToken::BesideCls; // blocks mode: where the noisy label vector enters
  double label_smoothing = 0.0;
  double inference_temperature = 0.0;  // softmax temperature of the embedding passed between steps:
                                       // 1 is E[y|z] (the reference sampler), 0 the argmax class's embedding
};

/// [dit]: the class-conditional DiT image generator (paper §5.2; docs/method.md).
struct DitConfig {
  int patch = 4;                    // patch size in pixels; must divide the image sides
  double label_dropout = 0.1;       // training labels replaced by "no label", for classifier-free guidance
  // Sampling (all may change at `blocklab eval`, `sample`, `fd`):
  Sampler sampler = Sampler::Euler;
  SigmaSchedule schedule = SigmaSchedule::Cdf;  // cdf: equal-probability levels (App. H); karras: EDM's rho = 7
  double guidance = 1.0;            // classifier-free guidance scale; 1 is the plain conditional model
  int eval_samples = 1000;          // images generated for the Fréchet distance at the end of training
};

/// [mdm]: the masked-diffusion language model (MD4/MDLM, paper §5.3, App. D; docs/language-models.md).
struct MdmConfig {
  int eval_times = 8;  // masking times t of the validation ELBO, (k + 1/2) / K: the same for every model
};

/// [ar]: the autoregressive language model (paper §5.4; docs/language-models.md).
struct ArConfig {
  double step_temperature = 0.0;  // blocks mode: softmax temperature of the byte embedding passed between
                                  // denoising steps (0: the argmax byte's, the paper's greedy steps; 1: E[y|z])
};

struct Config {
  ModelConfig model;
  DiffusionConfig diffusion;
  TrainConfig train;
  DataConfig data;
  ClassifierConfig classifier;
  DitConfig dit;
  MdmConfig mdm;
  ArConfig ar;

  /// Loads a TOML file over the defaults. UserError naming file and key on any problem.
  static Config from_file(const std::string& path);
  /// The one way commands get a config: a file (or the built-in defaults when `path` is empty),
  /// then `--set` overrides in order, then validate().
  static Config load(const std::string& path, const std::vector<std::string>& overrides);
  /// load() for `blocklab eval`: overrides may change only what evaluation reads (the sampler, the
  /// test data, threads, device), never what defines the weights. UserError naming the key.
  static Config load_for_evaluation(const std::string& path, const std::vector<std::string>& overrides);
  /// Applies `section.key=value` (value in TOML syntax; bare words are strings).
  void set(const std::string& assignment);
  /// Cross-field checks (B divides L, heads divide hidden, a family's keys only with that family,
  /// ...). UserError naming the keys.
  void validate() const;
  /// The resolved configuration as TOML: every key of the shared sections and of the selected
  /// family's section.
  std::string to_toml() const;
  /// One line per key: name, default, help (for --help and docs).
  static std::string describe();

  /// Denoising steps at inference: the config's, or the family's default (the classifier one per
  /// block, the paper's B; the DiT 32).
  int inference_steps() const;
  /// The EMA decay in use: the config's, or the family's default (the DiT 0.999, the classifier off).
  double ema_decay() const;
  bool blocks_mode() const { return model.mode == Mode::Blocks; }
  bool language_model() const { return model.family == FamilyKind::Mdm || model.family == FamilyKind::Ar; }

  /// Family sections that a file or --set assigned to (validate() refuses another family's).
  std::set<std::string> family_sections_given;
};

}  // namespace blocklab
