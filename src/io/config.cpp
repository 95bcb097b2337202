#include "io/config.h"

#include <functional>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "util/error.h"

namespace blocklab {
namespace {

// One configurable key: how to read it from a TOML node, how to write it back, its help.
struct Field {
  std::string key;  // "section.name"
  std::string help;
  std::function<std::string(Config&, const toml::node&)> assign;  // returns an error or ""
  std::function<void(const Config&, toml::table&)> emit;
  std::function<std::string(const Config&)> show;
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
Check<std::string> one_of(std::vector<std::string> options) {
  return [options](const std::string& v) {
    for (const auto& o : options)
      if (v == o) return std::string();
    std::string list;
    for (const auto& o : options) list += (list.empty() ? "\"" : ", \"") + o + "\"";
    return fmt::format("must be one of {}, got \"{}\"", list, v);
  };
}

template <typename T>
std::string read_value(const toml::node& node, T& out) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (!node.is_string()) return "expected a string";
    out = *node.value<std::string>();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!node.is_number()) return "expected a number";
    out = *node.value<double>();
  } else {
    if (!node.is_integer()) return "expected an integer";
    out = T(*node.value<int64_t>());
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

#define BL_FIELD(T, key, member, ...) field<T>(key, [](Config& c) -> T& { return c.member; }, __VA_ARGS__)

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      BL_FIELD(std::string, "model.mode", model.mode, "e2e: backprop through all layers; blocks: DiffusionBlocks",
               one_of({"e2e", "blocks"})),
      BL_FIELD(int, "model.layers", model.layers, "transformer layers L", at_least(1)),
      BL_FIELD(int, "model.blocks", model.blocks, "blocks B (must divide L)", at_least(1)),
      BL_FIELD(int, "model.hidden", model.hidden, "token width d", at_least(8)),
      BL_FIELD(int, "model.heads", model.heads, "attention heads (must divide d)", at_least(1)),
      BL_FIELD(int, "model.patch", model.patch, "patch size in pixels (must divide 28)", at_least(1)),
      BL_FIELD(int, "model.mlp_ratio", model.mlp_ratio, "MLP width as a multiple of d", at_least(1)),
      BL_FIELD(std::string, "model.label_token", model.label_token,
               "noisy label in the class-token slot (as_cls, reference code) or beside a class token (beside_cls, paper)",
               one_of({"as_cls", "beside_cls"})),
      BL_FIELD(int, "model.cond_dim", model.cond_dim, "noise-level embedding width", at_least(1)),
      BL_FIELD(double, "diffusion.p_mean", diffusion.noise.p_mean, "mean of log sigma"),
      BL_FIELD(double, "diffusion.p_std", diffusion.noise.p_std, "std of log sigma", above(0.0)),
      BL_FIELD(double, "diffusion.sigma_min", diffusion.noise.sigma_min, "lowest noise level", above(0.0)),
      BL_FIELD(double, "diffusion.sigma_max", diffusion.noise.sigma_max, "highest noise level", above(0.0)),
      BL_FIELD(double, "diffusion.sigma_data", diffusion.noise.sigma_data, "EDM sigma_data", above(0.0)),
      BL_FIELD(double, "diffusion.overlap", diffusion.overlap, "gamma, block range widening in log sigma",
               between(0.0, 1.0)),
      BL_FIELD(std::string, "diffusion.weighting", diffusion.weighting,
               "per_sample: w(sigma_i)*CE_i (paper); batch_mean: mean(w)*mean(CE) (reference code)",
               one_of({"per_sample", "batch_mean"})),
      BL_FIELD(std::string, "diffusion.sigma_sampling", diffusion.sigma_sampling,
               "sigma within a block's range: lognormal (paper) or log_uniform", one_of({"lognormal", "log_uniform"})),
      BL_FIELD(int, "diffusion.inference_steps", diffusion.inference_steps, "Euler steps at inference (0: one per block)",
               at_least(0)),
      BL_FIELD(double, "diffusion.inference_temperature", diffusion.inference_temperature,
               "softmax temperature of the embedding passed between steps (1: E[y|z]; 0: argmax)", at_least(0.0)),
      BL_FIELD(double, "train.epochs", train.epochs, "epochs of updates (per block in blocks mode)", above(0.0)),
      BL_FIELD(int, "train.batch_size", train.batch_size, "examples per step", at_least(1)),
      BL_FIELD(double, "train.lr", train.lr, "peak learning rate (AdamW)", above(0.0)),
      BL_FIELD(std::string, "train.lr_schedule", train.lr_schedule, "after warm-up: cosine or constant",
               one_of({"cosine", "constant"})),
      BL_FIELD(double, "train.min_lr", train.min_lr, "final learning rate of the cosine", at_least(0.0)),
      BL_FIELD(double, "train.warmup", train.warmup, "fraction of steps in linear warm-up", between(0.0, 1.0)),
      BL_FIELD(double, "train.weight_decay", train.weight_decay, "AdamW decoupled weight decay", at_least(0.0)),
      BL_FIELD(double, "train.grad_clip", train.grad_clip, "global gradient-norm clip (0: off)", at_least(0.0)),
      BL_FIELD(double, "train.label_smoothing", train.label_smoothing, "cross-entropy label smoothing",
               between(0.0, 0.99)),
      BL_FIELD(int64_t, "train.seed", train.seed, "seed of data order, init and noise", at_least<int64_t>(0)),
      BL_FIELD(int, "train.log_every", train.log_every, "steps between metrics lines", at_least(1)),
      BL_FIELD(int, "train.checkpoint_every", train.checkpoint_every, "steps between checkpoints", at_least(1)),
      BL_FIELD(int, "train.threads", train.threads, "intra-op CPU threads", between(1, 256)),
      BL_FIELD(std::string, "train.device", train.device, "cpu or cuda", one_of({"cpu", "cuda"})),
      BL_FIELD(std::string, "data.dir", data.dir, "folder with the IDX files (MNIST layout)"),
      BL_FIELD(int, "data.train_limit", data.train_limit, "use the first N training images (0: all)", at_least(0)),
      BL_FIELD(int, "data.test_limit", data.test_limit, "evaluate on the first N test images (0: all)", at_least(0)),
  };
  return table;
}
#undef BL_FIELD

const Field* find_field(const std::string& key) {
  for (const auto& f : fields())
    if (f.key == key) return &f;
  return nullptr;
}

void assign(Config& c, const std::string& key, const toml::node& node, const std::string& where) {
  const Field* f = find_field(key);
  if (!f) throw UserError(fmt::format("{}: unknown config key '{}' (see `blocklab train --help-config`)", where, key));
  if (auto err = f->assign(c, node); !err.empty()) throw UserError(fmt::format("{}: {}: {}", where, key, err));
}

}  // namespace

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

void Config::validate() const {
  auto fail = [](const std::string& msg) { throw UserError("config: " + msg); };
  if (model.layers % model.blocks != 0)
    fail(fmt::format("model.blocks = {} must divide model.layers = {}", model.blocks, model.layers));
  if (model.hidden % model.heads != 0)
    fail(fmt::format("model.heads = {} must divide model.hidden = {}", model.heads, model.hidden));
  if (28 % model.patch != 0) fail(fmt::format("model.patch = {} must divide the image size 28", model.patch));
  if (!(diffusion.noise.sigma_min < diffusion.noise.sigma_max))
    fail(fmt::format("diffusion.sigma_min = {} must be below diffusion.sigma_max = {}", diffusion.noise.sigma_min,
                     diffusion.noise.sigma_max));
  if (train.min_lr > train.lr) fail(fmt::format("train.min_lr = {} exceeds train.lr = {}", train.min_lr, train.lr));
}

std::string Config::to_toml() const {
  toml::table root;
  for (const auto& f : fields()) {
    const auto section = f.key.substr(0, f.key.find('.'));
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
