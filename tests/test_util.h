// Shared helpers of the blocklab test suite: temporary directories, synthetic IDX files, a small
// learnable data set, assertions on UserError messages, and where the repository and CLI live.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "families/classifier/classifier.h"
#include "io/config.h"
#include "train/adamw.h"
#include "train/step.h"
#include "train/trainer.h"
#include "util/error.h"

namespace blocklab::test {

namespace fs = std::filesystem;

/// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "blocklab_test_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

/// Writes bytes through zlib (a gzip stream).
inline void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("gzopen failed: " + path);
  if (!bytes.empty() && gzwrite(f, bytes.data(), unsigned(bytes.size())) != int(bytes.size())) {
    gzclose(f);
    throw std::runtime_error("gzwrite failed: " + path);
  }
  gzclose(f);
}

/// The bytes of an IDX file of unsigned bytes: magic 0x0000080N, N big-endian u32 dims, data.
inline std::string idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data,
                             uint8_t type_code = 0x08) {
  std::string out = {'\0', '\0', char(type_code), char(dims.size())};
  for (uint32_t d : dims)
    for (int shift : {24, 16, 8, 0}) out.push_back(char((d >> shift) & 0xff));
  out.append(reinterpret_cast<const char*>(data.data()), data.size());
  return out;
}

/// Writes an IDX file, gzipped when `gz`.
inline void write_idx(const std::string& path, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data,
                      bool gz) {
  const auto bytes = idx_bytes(dims, data);
  if (gz) write_gz(path, bytes);
  else write_bytes(path, bytes);
}

/// A learnable 10-class data set of 28x28 images. Class c has a fixed random binary 7x7 texture,
/// tiled over the whole image (so every patch of the ViT sees it): bright pixels where the texture
/// is on, dark ones elsewhere, each pixel drawn with noise. Labels are drawn at random.
struct SyntheticSplit {
  std::vector<uint8_t> images;  // n * 28 * 28
  std::vector<uint8_t> labels;  // n
};

inline SyntheticSplit make_synthetic_split(int n, uint64_t seed) {
  std::mt19937_64 template_rng(12345);  // the same textures for every split
  std::bernoulli_distribution half(0.5);
  bool textures[10][49];
  for (auto& t : textures)
    for (bool& on : t) on = half(template_rng);
  SyntheticSplit s;
  s.images.resize(size_t(n) * 28 * 28);
  s.labels.resize(size_t(n));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dark(0, 110), bright(140, 255), cls(0, 9);
  for (int i = 0; i < n; ++i) {
    const int c = cls(rng);
    s.labels[size_t(i)] = uint8_t(c);
    uint8_t* img = &s.images[size_t(i) * 28 * 28];
    for (int r = 0; r < 28; ++r)
      for (int q = 0; q < 28; ++q) img[r * 28 + q] = uint8_t(textures[c][(r % 7) * 7 + q % 7] ? bright(rng) : dark(rng));
  }
  return s;
}

/// Writes train (n_train) and t10k (n_test) IDX files (gzipped) of the synthetic data set into dir.
inline void write_synthetic_dataset(const std::string& dir, int n_train, int n_test, uint64_t seed = 7) {
  auto write_split = [&](const std::string& prefix, int n, uint64_t s) {
    const auto split = make_synthetic_split(n, s);
    write_idx(dir + "/" + prefix + "-images-idx3-ubyte.gz", {uint32_t(n), 28, 28}, split.images, true);
    write_idx(dir + "/" + prefix + "-labels-idx1-ubyte.gz", {uint32_t(n)}, split.labels, true);
  };
  write_split("train", n_train, seed);
  write_split("t10k", n_test, seed + 1000);
}

/// The synthetic data set (600 train, 200 test images), written once per process.
inline const std::string& synthetic_data_dir() {
  static TempDir dir;
  static bool written = false;
  if (!written) {
    write_synthetic_dataset(dir.path(), 600, 200);
    written = true;
  }
  return dir.path();
}

/// Passes if `text` contains `needle`.
inline ::testing::AssertionResult Contains(const std::string& text, const std::string& needle) {
  if (text.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << needle << "\"";
}

/// Passes if `fn` throws blocklab::UserError whose message contains every one of `needles`.
inline ::testing::AssertionResult ThrowsUserError(const std::function<void()>& fn,
                                                  const std::vector<std::string>& needles,
                                                  std::string* message = nullptr) {
  try {
    fn();
  } catch (const UserError& e) {
    const std::string what = e.what();
    if (message) *message = what;
    for (const auto& n : needles)
      if (what.find(n) == std::string::npos)
        return ::testing::AssertionFailure() << "UserError \"" << what << "\" does not contain \"" << n << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-UserError exception: " << e.what();
  } catch (...) {
    return ::testing::AssertionFailure() << "threw a non-standard exception";
  }
  return ::testing::AssertionFailure() << "did not throw";
}

/// The directory of the running test binary.
inline fs::path self_dir() {
  std::error_code ec;
  auto exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

/// The repository root: the first directory upwards (from the working directory, then from the
/// test binary) that holds configs/vit-fmnist.toml. Empty if none.
inline std::string repo_root() {
  for (fs::path start : {fs::current_path(), self_dir()}) {
    for (fs::path p = fs::absolute(start); !p.empty(); p = p.parent_path()) {
      if (fs::exists(p / "configs" / "vit-fmnist.toml")) return p.string();
      if (p == p.parent_path()) break;
    }
  }
  return "";
}

/// The CLI binary: $BLOCKLAB_BIN (set by ctest), else `blocklab` next to the test binary. Empty if none.
inline std::string blocklab_bin() {
  if (const char* env = std::getenv("BLOCKLAB_BIN"); env && *env && fs::exists(env)) return env;
  auto candidate = self_dir() / "blocklab";
  return fs::exists(candidate) ? candidate.string() : "";
}

/// The shape of Fashion-MNIST and of the synthetic data set: 28x28 grey images, 10 classes.
inline DataShape fashion_shape() { return {1, 28, 28, 10}; }

/// A small, fast configuration for the synthetic data set; `mode` is "e2e" or "blocks".
inline Config tiny_config(const std::string& mode, const std::string& data_dir) {
  Config c;
  c.set("model.mode=" + mode);
  c.model.layers = 3;
  c.model.blocks = 3;
  c.model.hidden = 32;
  c.model.heads = 2;
  c.classifier.patch = 7;
  c.model.mlp_ratio = 2;
  c.model.cond_dim = 16;
  c.train.batch_size = 32;
  c.train.epochs = 4;
  c.train.lr = 3e-3;
  c.train.min_lr = 1e-4;
  c.train.warmup = 0.05;
  c.train.threads = 1;
  c.train.log_every = 10;
  c.train.checkpoint_every = 1000;
  c.train.seed = 3;
  c.data.dir = data_dir;
  return c;
}

/// Parameters of a module by name, cloned (a snapshot).
inline std::map<std::string, torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

inline bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

/// Options of an in-process training run into `dir`, with plain progress lines tagged `tag`.
inline TrainOptions train_options(const std::string& dir, const std::string& tag = "train") {
  TrainOptions o;
  o.out_dir = dir;
  o.plain_progress = true;
  o.tag = tag;
  return o;
}

/// The block that global step `step` trains in a blocks run of B blocks and seed `seed`.
inline int block_at(int64_t step, int B, int64_t seed) {
  Config c;
  c.model.layers = B;
  c.model.blocks = B;
  c.train.seed = seed;
  return block_for_step(c, step);
}

// A model, its task, optimizer and step runner, kept together (StepRunner holds references).
struct Rig {
  Rig(Config config, uint64_t init_seed, int64_t total_steps) : cfg(std::move(config)) {
    torch::manual_seed(init_seed);
    model = ViT(vit_options(cfg, fashion_shape()));
    task = std::make_unique<DenoisingClassifier>(cfg, model);
    opt = std::make_unique<AdamW>(make_optimizer(*model, cfg));
    runner = std::make_unique<StepRunner>(*task, *opt, cfg, total_steps);
  }
  Config cfg;
  ViT model{nullptr};
  std::unique_ptr<DenoisingClassifier> task;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<StepRunner> runner;
};

// ------------------------------------------------------------------------- the CLI as a process

struct CliResult {
  int exit_code = -1;
  std::string err;
};

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs the CLI with `args` (already quoted), capturing stderr.
inline CliResult run_cli(const std::string& args, const TempDir& scratch) {
  CliResult r;
  const auto bin = test::blocklab_bin();
  if (bin.empty()) {
    ADD_FAILURE() << "blocklab binary not found: set BLOCKLAB_BIN or build it next to the test binary";
    return r;
  }
  const auto err_file = scratch.file("stderr.txt");
  const std::string cmd = quote(bin) + " " + args + " >/dev/null 2>" + quote(err_file);
  const int status = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = test::read_bytes(err_file);
  return r;
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

// A failed command: non-zero exit, one "error: " line naming `needle`, no C++ stack trace.
inline void expect_one_line_error(const CliResult& r, const std::vector<std::string>& needles, bool only_line) {
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.exit_code, 1) << "a user error exits with 1: " << r.err;
  const auto lines = lines_of(r.err);
  ASSERT_FALSE(lines.empty());
  if (only_line) EXPECT_EQ(lines.size(), 1u) << r.err;
  int errors = 0;
  for (const auto& l : lines) errors += l.rfind("error: ", 0) == 0;
  EXPECT_EQ(errors, 1) << r.err;
  EXPECT_EQ(lines.back().rfind("error: ", 0), 0u) << r.err;
  for (const auto& n : needles) EXPECT_TRUE(Contains(lines.back(), n));
  EXPECT_FALSE(Contains(r.err, "Exception raised from")) << "stack trace in: " << r.err;
  EXPECT_FALSE(Contains(r.err, "frame #")) << "stack trace in: " << r.err;
}

}  // namespace blocklab::test
