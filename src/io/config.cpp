#include "io/config.h"

#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "util/error.h"

namespace blocklab {
namespace {

// The names of an enum's values, as written in configs.
template <typename E>
using Names = std::vector<std::pair<const char*, E>>;

const Names<Mode> kModes = {{"e2e", Mode::E2E}, {"blocks", Mode::Blocks}};
const Names<FamilyKind> kFamilies = {{"classifier", FamilyKind::Classifier},
                                     {"dit", FamilyKind::Dit},
                                     {"mdm", FamilyKind::Mdm},
                                     {"ar", FamilyKind::Ar}};
const Names<Sampler> kSamplers = {{"euler", Sampler::Euler}, {"heun", Sampler::Heun}};
const Names<SigmaSchedule> kSchedules = {{"cdf", SigmaSchedule::Cdf}, {"karras", SigmaSchedule::Karras}};
const Names<Weighting> kWeightings = {{"per_sample", Weighting::PerSample},
                                      {"batch_mean", Weighting::BatchMean},
                                      {"normalized", Weighting::Normalized},
                                      {"none", Weighting::None}};
const Names<WithinRange> kWithinRange = {{"lognormal", WithinRange::Distribution},
                                         {"log_uniform", WithinRange::Uniform}};
const Names<LrSchedule> kLrSchedules = {{"cosine", LrSchedule::Cosine}, {"constant", LrSchedule::Constant}};
const Names<Decay> kDecays = {{"all", Decay::All}, {"matrices", Decay::Matrices}};
const Names<BlockSchedule> kBlockSchedules = {
    {"interleaved", BlockSchedule::Interleaved}, {"resident", BlockSchedule::Resident}, {"rounds", BlockSchedule::Rounds}};
const Names<SharedModules> kSharedModules = {{"synced", SharedModules::Synced},
                                             {"independent", SharedModules::Independent}};
const Names<LabelToken> kLabelTokens = {{"as_cls", LabelToken::AsCls}, {"beside_cls", LabelToken::BesideCls}};

template <typename E>
const char* name_of(const Names<E>& names, E value) {
  for (const auto& [n, v] : names)
    if (v == value) return n;
  return "?";
}

// One configurable key: how to read it from a TOML node, how to write it back, its help, and
// the family whose section it belongs to (none for the shared sections).
struct Field {
  std::string key;  // "section.name"
  std::string help;
  std::function<std::string(Config&, const toml::node&)> assign;  // returns an error or ""
  std::function<void(const Config&, toml::table&)> emit;
  std::function<std::string(const Config&)> show;
  std::optional<FamilyKind> family;
  bool evaluation = false;  // may change at `blocklab eval` (the sampler, the test data, the machine)
  std::string section() const { return key.substr(0, key.find('.')); }
};

template <typename T>
using Check = std::function<std::string(const T&)>;

template <typename T>
Check<T> at_least(T lo) {
  return [lo](const T& v) { return v >= lo ? "" : fmt::format("must be >= {}, got {}", lo, v); };
}
template <typename T>
Check<T> above(T lo) {
  return [lo](const T& v) { return v > lo ? "" : fmt::format("must be > {}, got {}", lo, v); };
}
template <typename T>
Check<T> between(T lo, T hi) {
  return [lo, hi](const T& v) { return v >= lo && v <= hi ? "" : fmt::format("must lie in [{}, {}], got {}", lo, hi, v); };
}

// Reads a node into T. Integers are range-checked in 64 bits before narrowing and floats must be
// finite, so no value wraps or slips through as inf/nan.
template <typename T>
std::string read_value(const toml::node& node, T& out) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (!node.is_string()) return "expected a string";
    out = *node.value<std::string>();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!node.is_number()) return "expected a number";
    out = *node.value<double>();
    if (!std::isfinite(out)) return fmt::format("must be a finite number, got {}", out);
  } else {
    if (!node.is_integer()) return "expected an integer";
    const int64_t v = *node.value<int64_t>();
    if (v < int64_t(std::numeric_limits<T>::min()) || v > int64_t(std::numeric_limits<T>::max()))
      return fmt::format("{} is out of range", v);
    out = T(v);
  }
  return "";
}

template <typename T, typename Access>
Field field(std::string key, Access access, std::string help, Check<T> check = {}) {
  Field f;
  f.key = key;
  f.help = std::move(help);
  f.assign = [access, check](Config& c, const toml::node& node) -> std::string {
    T value{};
    if (auto err = read_value(node, value); !err.empty()) return err;
    if (check)
      if (auto err = check(value); !err.empty()) return err;
    access(c) = value;
    return "";
  };
  const auto name = key.substr(key.find('.') + 1);
  f.emit = [access, name](const Config& c, toml::table& section) {
    const T& v = access(const_cast<Config&>(c));
    if constexpr (std::is_same_v<T, int>) section.insert(name, int64_t(v));
    else section.insert(name, v);
  };
  f.show = [access](const Config& c) {
    const T& v = access(const_cast<Config&>(c));
    if constexpr (std::is_same_v<T, std::string>) return "\"" + v + "\"";
    else return fmt::format("{}", v);
  };
  return f;
}

// A key whose value is one of a fixed set of names, stored as an enum.
template <typename E, typename Access>
Field choice(std::string key, Access access, std::string help, const Names<E>& names) {
  Field f;
  f.key = key;
  f.help = std::move(help);
  f.assign = [access, &names](Config& c, const toml::node& node) -> std::string {
    std::string value;
    if (auto err = read_value(node, value); !err.empty()) return err;
    std::string list;
    for (const auto& [n, v] : names) {
      if (value == n) {
        access(c) = v;
        return "";
      }
      list += (list.empty() ? "\"" : ", \"") + std::string(n) + "\"";
    }
    return fmt::format("must be one of {}, got \"{}\"", list, value);
  };
  const auto name = key.substr(key.find('.') + 1);
  f.emit = [access, name, &names](const Config& c, toml::table& section) {
    section.insert(name, std::string(name_of(names, access(const_cast<Config&>(c)))));
  };
  f.show = [access, &names](const Config& c) {
    return fmt::format("\"{}\"", name_of(names, access(const_cast<Config&>(c))));
  };
  return f;
}

Field of_family(Field f, FamilyKind family) {
  f.family = family;
  return f;
}

Field at_evaluation(Field f) {
  f.evaluation = true;
  return f;
}

#define BL_FIELD(T, key, member, ...) field<T>(key, [](Config& c) -> T& { return c.member; }, __VA_ARGS__)
#define BL_CHOICE(key, member, help, names) \
  choice(key, [](Config& c) -> auto& { return c.member; }, help, names)

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      BL_CHOICE("model.family", model.family, "the kind of model: classifier (ViT), dit (image generator), mdm (masked-diffusion LM) or ar (autoregressive LM)", kFamilies),
      BL_CHOICE("model.mode", model.mode, "e2e: backprop through all layers; blocks: DiffusionBlocks", kModes),
      BL_FIELD(int, "model.layers", model.layers, "transformer layers L", between(1, 1024)),
      BL_FIELD(int, "model.blocks", model.blocks, "blocks B (must divide L)", between(1, 1024)),
      BL_FIELD(int, "model.hidden", model.hidden, "token width d", between(8, 65536)),
      BL_FIELD(int, "model.heads", model.heads, "attention heads (must divide d)", between(1, 4096)),
      BL_FIELD(int, "model.mlp_ratio", model.mlp_ratio, "MLP width as a multiple of d", between(1, 64)),
      BL_FIELD(int, "model.cond_dim", model.cond_dim, "noise-level embedding width", between(1, 65536)),
      BL_FIELD(double, "diffusion.p_mean", diffusion.noise.p_mean, "mean of log sigma"),
      BL_FIELD(double, "diffusion.p_std", diffusion.noise.p_std, "std of log sigma", above(0.0)),
      BL_FIELD(double, "diffusion.sigma_min", diffusion.noise.sigma_min, "lowest noise level", above(0.0)),
      BL_FIELD(double, "diffusion.sigma_max", diffusion.noise.sigma_max, "highest noise level", above(0.0)),
      BL_FIELD(double, "diffusion.sigma_data", diffusion.noise.sigma_data, "EDM sigma_data", above(0.0)),
      BL_FIELD(double, "diffusion.overlap", diffusion.overlap, "gamma, block range widening in log sigma",
               between(0.0, 1.0)),
      BL_CHOICE("diffusion.weighting", diffusion.weighting,
                "per_sample: lambda(sigma_i)*loss_i (paper Eq. 6); batch_mean: mean(lambda)*mean(loss) (reference "
                "code); normalized: per_sample divided by the batch's sum of lambda; none: plain loss",
                kWeightings),
      BL_CHOICE("diffusion.sigma_sampling", diffusion.sigma_sampling,
                "sigma within a block's range: lognormal (paper) or log_uniform", kWithinRange),
      at_evaluation(BL_FIELD(int, "diffusion.inference_steps", diffusion.inference_steps,
                             "denoising steps at inference (0: the family's default: one per block for the classifier, 32 for dit, 64 unmasking steps per window for mdm, 4 per byte for ar)",
                             between(0, 1000))),
      BL_FIELD(double, "train.epochs", train.epochs, "epochs of updates (per block in blocks mode)",
               between(1e-9, 1e6)),
      BL_FIELD(int, "train.batch_size", train.batch_size, "examples per step", between(1, 1 << 20)),
      BL_FIELD(double, "train.lr", train.lr, "peak learning rate (AdamW)", above(0.0)),
      BL_CHOICE("train.lr_schedule", train.lr_schedule, "after warm-up: cosine or constant", kLrSchedules),
      BL_FIELD(double, "train.min_lr", train.min_lr, "final learning rate of the cosine", at_least(0.0)),
      BL_FIELD(double, "train.warmup", train.warmup, "fraction of steps in linear warm-up", between(0.0, 1.0)),
      BL_FIELD(double, "train.weight_decay", train.weight_decay, "AdamW decoupled weight decay", at_least(0.0)),
      BL_CHOICE("train.decay", train.decay,
                "what weight decay reaches: all parameters, or matrices (Linear/Conv weights) only", kDecays),
      BL_FIELD(double, "train.grad_clip", train.grad_clip, "global gradient-norm clip (0: off)", at_least(0.0)),
      BL_FIELD(int64_t, "train.seed", train.seed, "seed of data order, init and noise", at_least<int64_t>(0)),
      BL_FIELD(int, "train.log_every", train.log_every, "steps between metrics lines", at_least(1)),
      BL_FIELD(int, "train.checkpoint_every", train.checkpoint_every, "steps between checkpoints", at_least(1)),
      BL_FIELD(int, "train.eval_every", train.eval_every,
               "steps between evaluations on the test split during training, logged to metrics.jsonl (0: at the end only)",
               at_least(0)),
      at_evaluation(BL_FIELD(int, "train.threads", train.threads, "intra-op CPU threads", between(1, 256))),
      at_evaluation(BL_FIELD(std::string, "train.device", train.device, "cpu or cuda",
                             Check<std::string>([](const std::string& v) {
                               return v == "cpu" || v == "cuda" ? ""
                                                                : fmt::format("must be \"cpu\" or \"cuda\", got \"{}\"", v);
                             }))),
      BL_FIELD(double, "train.ema_decay", train.ema_decay,
               "EMA of the weights, what sampling uses (0: off; -1: the family's default, 0.999 for dit, off otherwise)",
               between(-1.0, 0.999999)),
      BL_CHOICE("train.schedule", train.schedule,
                "blocks mode: interleaved (all blocks resident, shuffled rounds), resident (only the active block in "
                "memory, runs of train.block_run updates) or rounds (every block from the same weights, shared "
                "gradients summed: what `blocklab launch` computes)",
                kBlockSchedules),
      BL_CHOICE("train.shared", train.shared,
                "blocks mode: synced (one copy of the input/output modules) or independent (a copy per block, fixed "
                "target space, nothing exchanged)",
                kSharedModules),
      BL_FIELD(int, "train.block_run", train.block_run, "resident schedule: updates of a block before switching",
               at_least(1)),
      at_evaluation(BL_FIELD(double, "train.dist_timeout", train.dist_timeout,
                             "seconds a rank may be dead or stuck before a distributed run stops", between(1.0, 86400.0))),
      at_evaluation(BL_FIELD(std::string, "data.dir", data.dir, "image families: folder with the IDX files")),
      at_evaluation(BL_FIELD(std::string, "data.path", data.path,
                             "language models: UTF-8 text file or folder (fortune files: one document per '%' entry)")),
      BL_FIELD(int, "data.seq_len", data.seq_len, "language models: bytes per training window", between(4, 1 << 16)),
      at_evaluation(BL_FIELD(double, "data.val_fraction", data.val_fraction,
                             "language models: fraction of documents held out for validation (by a hash of each)",
                             between(0.001, 0.5))),
      BL_FIELD(int, "data.train_limit", data.train_limit, "use the first N training examples (0: all)", at_least(0)),
      at_evaluation(BL_FIELD(int, "data.test_limit", data.test_limit, "evaluate on the first N test examples (0: all)",
                             at_least(0))),
      of_family(BL_FIELD(int, "classifier.patch", classifier.patch, "patch size in pixels (must divide the image sides)",
                         between(1, 4096)),
                FamilyKind::Classifier),
      of_family(BL_CHOICE("classifier.label_token", classifier.label_token,
                          "noisy label in the class-token slot (as_cls, reference code) or beside a class token "
                          "(beside_cls, paper App. B)",
                          kLabelTokens),
                FamilyKind::Classifier),
      of_family(BL_FIELD(double, "classifier.label_smoothing", classifier.label_smoothing,
                         "cross-entropy label smoothing", between(0.0, 0.99)),
                FamilyKind::Classifier),
      at_evaluation(of_family(BL_FIELD(double, "classifier.inference_temperature", classifier.inference_temperature,
                                       "softmax temperature of the embedding passed between steps (1: E[y|z]; 0: argmax)",
                                       between(0.0, 1e6)),
                              FamilyKind::Classifier)),
      of_family(BL_FIELD(int, "dit.patch", dit.patch, "patch size in pixels (must divide the image sides)",
                         between(1, 4096)),
                FamilyKind::Dit),
      of_family(BL_FIELD(double, "dit.label_dropout", dit.label_dropout,
                         "fraction of training labels replaced by 'no label' (classifier-free guidance)", between(0.0, 1.0)),
                FamilyKind::Dit),
      at_evaluation(of_family(BL_CHOICE("dit.sampler", dit.sampler, "euler or heun (EDM's second order)", kSamplers),
                              FamilyKind::Dit)),
      at_evaluation(of_family(BL_CHOICE("dit.schedule", dit.schedule,
                                        "sampling levels: cdf (equal probability, each block ~n/B steps) or karras (rho=7)",
                                        kSchedules),
                              FamilyKind::Dit)),
      at_evaluation(of_family(BL_FIELD(double, "dit.guidance", dit.guidance,
                                       "classifier-free guidance scale (1: conditional model, no guidance)",
                                       between(0.0, 100.0)),
                              FamilyKind::Dit)),
      at_evaluation(of_family(BL_FIELD(int, "dit.eval_samples", dit.eval_samples,
                                       "images generated for the Fréchet distance at the end of training",
                                       between(2, 1000000)),
                              FamilyKind::Dit)),
      at_evaluation(of_family(BL_FIELD(int, "mdm.eval_times", mdm.eval_times,
                                       "masking times t = (k+1/2)/K of the validation ELBO (bits per byte)",
                                       between(1, 1000)),
                              FamilyKind::Mdm)),
      at_evaluation(of_family(BL_FIELD(double, "ar.step_temperature", ar.step_temperature,
                                       "blocks mode: temperature of the byte embedding passed between denoising steps "
                                       "(0: argmax, the paper's greedy steps; 1: E[y|z])",
                                       between(0.0, 1e6)),
                              FamilyKind::Ar)),
  };
  return table;
}
#undef BL_FIELD
#undef BL_CHOICE

const Field* find_field(const std::string& key) {
  for (const auto& f : fields())
    if (f.key == key) return &f;
  return nullptr;
}

void assign(Config& c, const std::string& key, const toml::node& node, const std::string& where) {
  const Field* f = find_field(key);
  if (!f) throw UserError(fmt::format("{}: unknown config key '{}' (`blocklab train --help` lists them)", where, key));
  if (auto err = f->assign(c, node); !err.empty()) throw UserError(fmt::format("{}: {}: {}", where, key, err));
  if (f->family) c.family_sections_given.insert(f->section());
}

}  // namespace

const char* to_string(Mode m) { return name_of(kModes, m); }
const char* to_string(FamilyKind f) { return name_of(kFamilies, f); }
const char* to_string(Sampler s) { return name_of(kSamplers, s); }
const char* to_string(SigmaSchedule s) { return name_of(kSchedules, s); }
const char* to_string(BlockSchedule s) { return name_of(kBlockSchedules, s); }
const char* to_string(SharedModules s) { return name_of(kSharedModules, s); }

int Config::inference_steps() const {
  if (diffusion.inference_steps > 0) return diffusion.inference_steps;
  switch (model.family) {
    case FamilyKind::Dit: return 32;
    case FamilyKind::Mdm: return 64;  // unmasking steps per window
    case FamilyKind::Ar: return 4;    // denoising steps per byte (paper §5.4)
    case FamilyKind::Classifier: break;
  }
  return model.blocks;
}

double Config::ema_decay() const {
  if (train.ema_decay >= 0) return train.ema_decay;
  return model.family == FamilyKind::Dit ? 0.999 : 0.0;
}

Config Config::from_file(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    if (!src.begin) throw UserError(fmt::format("{}: {}", path, e.description()));
    throw UserError(fmt::format("{}:{}:{}: {}", path, src.begin.line, src.begin.column, e.description()));
  }
  Config c;
  for (const auto& [section, node] : root) {
    const auto* table = node.as_table();
    if (!table) throw UserError(fmt::format("{}: top-level key '{}' must be a [section]", path, section.str()));
    for (const auto& [key, value] : *table)
      assign(c, std::string(section.str()) + "." + std::string(key.str()), value, path);
  }
  c.validate();
  return c;
}

Config Config::load(const std::string& path, const std::vector<std::string>& overrides) {
  Config c = path.empty() ? Config{} : from_file(path);
  for (const auto& s : overrides) c.set(s);
  c.validate();
  return c;
}

void Config::set(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UserError(fmt::format("--set {}: expected section.key=value", assignment));
  const auto key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    parsed = toml::table{{"v", value}};  // a bare word: take it as a string
  }
  assign(*this, key, *parsed.get("v"), "--set");
}

Config Config::load_for_evaluation(const std::string& path, const std::vector<std::string>& overrides) {
  std::string allowed;
  for (const auto& f : fields())
    if (f.evaluation) allowed += (allowed.empty() ? "" : ", ") + f.key;
  for (const auto& s : overrides) {
    const auto key = s.substr(0, s.find('='));
    const Field* f = find_field(key);
    if (f && !f->evaluation)
      throw UserError(fmt::format("--set {}: {} defines the trained weights and cannot change at evaluation (these can: {})",
                                  s, key, allowed));
  }
  return load(path, overrides);
}

void Config::validate() const {
  auto fail = [](const std::string& msg) { throw UserError("config: " + msg); };
  for (const auto& f : fields())
    if (f.family && *f.family != model.family && family_sections_given.count(f.section()))
      fail(fmt::format("[{}] keys belong to model.family = \"{}\", but this config selects \"{}\"", f.section(),
                       to_string(*f.family), to_string(model.family)));
  if (model.layers % model.blocks != 0)
    fail(fmt::format("model.blocks = {} must divide model.layers = {}", model.blocks, model.layers));
  if (model.hidden % model.heads != 0)
    fail(fmt::format("model.heads = {} must divide model.hidden = {}", model.heads, model.hidden));
  if (!(diffusion.noise.sigma_min < diffusion.noise.sigma_max))
    fail(fmt::format("diffusion.sigma_min = {} must be below diffusion.sigma_max = {}", diffusion.noise.sigma_min,
                     diffusion.noise.sigma_max));
  if (model.mode == Mode::E2E &&
      (train.schedule != BlockSchedule::Interleaved || train.shared != SharedModules::Synced))
    fail(fmt::format("train.schedule = \"{}\" and train.shared = \"{}\" are for blocks mode; model.mode is \"e2e\"",
                     to_string(train.schedule), to_string(train.shared)));
  if (train.eval_every > 0 && blocks_mode() && train.schedule == BlockSchedule::Resident)
    fail("train.eval_every needs the whole model in memory; train.schedule = \"resident\" holds one block "
         "(evaluate afterwards with `blocklab eval`, or set train.eval_every = 0)");
  if (train.schedule == BlockSchedule::Rounds && train.shared == SharedModules::Independent)
    fail("train.schedule = \"rounds\" sums the shared modules' gradients; independent blocks have none to sum "
         "(use interleaved or resident)");
  if (language_model() && train.shared == SharedModules::Independent)
    fail("train.shared = \"independent\" is not implemented for the language models (use synced)");
  if (train.min_lr > train.lr) fail(fmt::format("train.min_lr = {} exceeds train.lr = {}", train.min_lr, train.lr));
}

std::string Config::to_toml() const {
  toml::table root;
  for (const auto& f : fields()) {
    if (f.family && *f.family != model.family) continue;
    const auto section = f.section();
    if (!root.contains(section)) root.insert(section, toml::table{});
    f.emit(*this, *root[section].as_table());
  }
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

std::string Config::describe() {
  const Config defaults;
  std::string out;
  for (const auto& f : fields()) out += fmt::format("  {:<32} {:<14} {}\n", f.key, f.show(defaults), f.help);
  return out;
}

}  // namespace blocklab
