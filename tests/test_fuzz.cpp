// Fuzzing the inputs a user hands blocklab: configs, IDX files and checkpoints, mutated at random
// for a bounded time. Every input must either work or be refused with a UserError (in process), or
// exit 0 or 1 with no signal and no stack trace (through the CLI). A failing input is saved and
// named. Runs ~6 s in the suite; longer on demand:
//   BLOCKLAB_FUZZ_SECONDS=300 build/blocklab_tests --gtest_filter='Fuzz.*'
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <random>

#include <fmt/format.h>

#include "io/config.h"
#include "io/idx.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace blocklab {
namespace {

using test::quote;
using test::TempDir;

double fuzz_seconds(double fallback) {
  const char* env = std::getenv("BLOCKLAB_FUZZ_SECONDS");
  return env && *env ? std::atof(env) : fallback;
}

// Values that have broken parsers before: wrapping integers, non-finite floats, wrong types.
const std::vector<std::string> kNasty = {
    "0", "-1", "1", "2147483648", "4294967424", "-4294967290", "9223372036854775807", "-9223372036854775808",
    "1e308", "-1e308", "inf", "-inf", "nan", "0.0", "-0.0", "1e-320", "\"\"", "\"e2e\"", "\"blocks\"",
    "\"classifier\"", "\"x\"", "[1, 2]", "{a = 1}", "true", "1979-05-27", "\"\\u0000\"", "3.5", "100000", "65536"};

// Mutates `text` once: replaces a value, drops or duplicates a line, or flips bytes.
std::string mutate_text(std::string text, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> kind(0, 4);
  std::vector<size_t> equals;
  for (size_t i = 0; i < text.size(); ++i)
    if (text[i] == '=') equals.push_back(i);
  switch (kind(rng)) {
    case 0:
    case 1: {  // a nasty value for a random key
      if (equals.empty()) break;
      const size_t at = equals[rng() % equals.size()] + 1, end = text.find('\n', at);
      text = text.substr(0, at) + " " + kNasty[rng() % kNasty.size()] + (end == std::string::npos ? "" : text.substr(end));
      break;
    }
    case 2: {  // drop a line
      const size_t at = rng() % (text.size() + 1), begin = text.rfind('\n', at), end = text.find('\n', at);
      if (begin != std::string::npos && end != std::string::npos) text.erase(begin, end - begin);
      break;
    }
    case 3: {  // duplicate a line
      const size_t at = rng() % (text.size() + 1), begin = text.rfind('\n', at), end = text.find('\n', at);
      if (begin != std::string::npos && end != std::string::npos) text.insert(end, text.substr(begin, end - begin));
      break;
    }
    default:
      for (int i = 0; i < 3 && !text.empty(); ++i) text[rng() % text.size()] = char(rng() & 0xff);
  }
  return text;
}

// Mutates binary `bytes`: flips, truncates, extends, or rewrites a 4-byte big-endian field.
std::string mutate_bytes(std::string bytes, std::mt19937_64& rng) {
  switch (rng() % 5) {
    case 0:
      for (int i = 0, n = 1 + int(rng() % 4); i < n && !bytes.empty(); ++i) bytes[rng() % bytes.size()] ^= char(1 << (rng() % 8));
      break;
    case 1:
      bytes.resize(rng() % (bytes.size() + 1));
      break;
    case 2:
      bytes.append(size_t(rng() % 64), char(rng() & 0xff));
      break;
    case 3:
      if (bytes.size() >= 16) {  // a header field: IDX dims, the safetensors header length
        const size_t at = rng() % 4 * 4;
        const uint32_t v = rng() % 3 == 0 ? 0xFFFFFFFFu : rng() % 2 ? uint32_t(1u << (rng() % 32)) : uint32_t(rng());
        for (int i = 0; i < 4; ++i) bytes[at + size_t(i)] = char((v >> (24 - 8 * i)) & 0xff);
      }
      break;
    default: {  // a number in a JSON header made absurd
      const size_t at = bytes.find_first_of("0123456789", 8 + rng() % std::max<size_t>(1, std::min<size_t>(bytes.size(), 2000)));
      if (at != std::string::npos && at < bytes.size()) bytes.insert(at, kNasty[rng() % 9]);
    }
  }
  return bytes;
}

// Runs `attempt` on mutated inputs until the time is up; fails (saving the input) on anything
// but success or a UserError. Returns the number of inputs tried.
int64_t fuzz(const std::string& what, double seconds, const std::function<std::string(std::mt19937_64&)>& make,
             const std::function<void(const std::string&)>& attempt, const TempDir& dir) {
  std::mt19937_64 rng(std::random_device{}());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int64_t tried = 0, refused = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto input = make(rng);
    ++tried;
    try {
      attempt(input);
    } catch (const UserError&) {
      ++refused;
    } catch (const std::exception& e) {
      const auto saved = dir.file(fmt::format("failing-{}-{}", what, tried));
      test::write_bytes(saved, input);
      ADD_FAILURE() << what << ": not a UserError: " << e.what() << " (input saved as " << saved << ")";
      return tried;
    }
  }
  fmt::print("fuzz {}: {} inputs, {} refused with a UserError, {} accepted\n", what, tried, refused, tried - refused);
  return tried;
}

TEST(Fuzz, ConfigsIdxFilesAndCheckpointsInProcess) {
  TempDir dir;
  const double seconds = fuzz_seconds(4.0) / 3;
  const auto shipped = test::read_bytes(test::repo_root() + "/configs/vit-fmnist.toml");
  const auto path = dir.file("fuzz.toml");
  fuzz("config", seconds,
       [&](std::mt19937_64& rng) {
         auto t = shipped;
         for (int i = 0, n = 1 + int(rng() % 3); i < n; ++i) t = mutate_text(t, rng);
         return t;
       },
       [&](const std::string& text) {
         test::write_bytes(path, text);
         Config::from_file(path).to_toml();
       },
       dir);

  std::vector<uint8_t> pixels(6 * 28 * 28);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(i * 7);
  const auto idx = test::idx_bytes({6, 28, 28}, pixels);
  test::write_gz(dir.file("good.gz"), idx);
  const auto gz = test::read_bytes(dir.file("good.gz"));
  const auto idx_path = dir.file("fuzz.idx");
  fuzz("idx", seconds, [&](std::mt19937_64& rng) { return mutate_bytes(rng() % 2 ? idx : gz, rng); },
       [&](const std::string& bytes) {
         test::write_bytes(idx_path, bytes);
         read_idx(idx_path, 3);
       },
       dir);

  test::Rig rig(test::tiny_config("blocks", ""), 1, 10);
  torch::manual_seed(0);
  rig.runner->run({torch::randn({8, 1, 28, 28}), torch::randint(0, 10, {8}, torch::kInt64)}, 0);
  const auto ckpt_path = dir.file("fuzz.safetensors");
  save_checkpoint(ckpt_path, *rig.model, *rig.opt, {1, 0.5, nullptr, rig.cfg.to_toml()});
  const auto ckpt = test::read_bytes(ckpt_path);
  fuzz("checkpoint", seconds, [&](std::mt19937_64& rng) { return mutate_bytes(ckpt, rng); },
       [&](const std::string& bytes) {
         test::write_bytes(ckpt_path, bytes);
         load_checkpoint(ckpt_path, *rig.model, *rig.opt, rig.cfg.to_toml());
       },
       dir);
}

// Through the CLI: a mutated checkpoint resumed, and mutated data files trained on.
TEST(Fuzz, CommandLineExitsZeroOrOneWithoutStackTraces) {
  TempDir dir;
  Config cfg = test::tiny_config("blocks", dir.file("data"));
  cfg.train.epochs = 1;
  cfg.data.train_limit = 64;
  cfg.data.test_limit = 20;
  std::filesystem::create_directories(dir.file("data"));
  test::write_synthetic_dataset(dir.file("data"), 64, 20);
  const auto cfg_path = dir.file("tiny.toml");
  test::write_bytes(cfg_path, cfg.to_toml());
  const auto run = dir.file("run");
  auto r = test::run_cli("train " + quote(cfg_path) + " --plain-progress --stop-after 2 --out " + quote(run), dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ckpt = test::read_bytes(run + "/checkpoint.safetensors");
  const auto labels = test::read_bytes(dir.file("data/train-labels-idx1-ubyte.gz"));
  std::mt19937_64 rng(std::random_device{}());
  const int cases = std::max(2, int(fuzz_seconds(4.0) / 1.5));
  for (int i = 0; i < cases; ++i) {
    const bool data = i % 2;
    if (data) test::write_bytes(dir.file("data/train-labels-idx1-ubyte.gz"), mutate_bytes(labels, rng));
    else test::write_bytes(run + "/checkpoint.safetensors", mutate_bytes(ckpt, rng));
    r = test::run_cli("train " + quote(cfg_path) + " --plain-progress --resume --out " + quote(run), dir);
    const bool ok = r.exit_code == 0 || r.exit_code == 1;
    EXPECT_TRUE(ok) << "exit " << r.exit_code << ": " << r.err;
    EXPECT_EQ(r.err.find("Exception raised from"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("frame #"), std::string::npos) << r.err;
    test::write_bytes(dir.file("data/train-labels-idx1-ubyte.gz"), labels);
    test::write_bytes(run + "/checkpoint.safetensors", ckpt);
    std::filesystem::remove(run + "/summary.json");
    std::filesystem::remove(run + "/model.safetensors");
    if (!ok) break;
  }
  fmt::print("fuzz cli: {} resumed runs on mutated checkpoints and label files\n", cases);
}

}  // namespace
}  // namespace blocklab
