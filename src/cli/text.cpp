// `blocklab generate` and `blocklab judge`: text from a trained language-model run, streamed to
// the terminal or scored by an independent end-to-end model (src/eval/text_quality.h).
#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/run_loader.h"
#include "data/text_data.h"
#include "eval/text_quality.h"
#include "families/lm/ar.h"
#include "util/error.h"

namespace blocklab {

namespace {

struct LoadedLM {
  LoadedRun loaded;
  LanguageModel* lm;
};

LoadedLM open_lm(const std::string& command, const std::string& run_dir, const std::vector<std::string>& overrides) {
  auto r = load_run(run_dir, overrides, WeightsChoice::Average);
  auto* lm = dynamic_cast<LanguageModel*>(r.family.get());
  if (!lm)
    throw UserError(fmt::format("{}: {} needs a language-model run (model.family = \"mdm\" or \"ar\"), this one is \"{}\"",
                                run_dir, command, to_string(r.cfg.model.family)));
  return {std::move(r), lm};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int cmd_generate(const GenerateArgs& a) {
  auto g = open_lm("generate", a.run_dir, a.overrides);
  fmt::print(stderr, "generate: {} {} {} mode, temperature {}, seed {}\n", g.loaded.run.root(),
             to_string(g.loaded.cfg.model.family), to_string(g.loaded.cfg.model.mode), a.temperature, a.seed);
  fmt::print("{}", a.prompt);
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  g.lm->generate({a.prompt}, a.bytes, {a.temperature, uint64_t(a.seed)}, [](const std::string& piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  const double s = seconds_since(t0);
  fmt::print("\n");
  fmt::print(stderr, "generate: {} bytes in {:.2f} s, {:.1f} bytes/s, {:.1f} layer evaluations per byte\n", a.bytes, s,
             double(a.bytes) / s, g.lm->layers_per_byte());
  return 0;
}

int cmd_judge(const JudgeArgs& a) {
  auto g = open_lm("judge", a.run_dir, a.overrides);
  auto j = open_lm("judge", a.judge_dir, {});
  auto* judge = dynamic_cast<AutoregressiveLM*>(j.lm);
  if (!judge || j.loaded.cfg.blocks_mode())
    throw UserError(fmt::format("{}: --judge needs an end-to-end autoregressive run (model.family = \"ar\", model.mode = \"e2e\")",
                                a.judge_dir));
  const auto& data = dynamic_cast<const TextData&>(*g.loaded.data);
  const int64_t windows = data.size(Split::Test), window = data.seq_len();
  if (a.prompt_bytes + a.bytes > std::min(window, judge->lm()->opt.seq_len))
    throw UserError(fmt::format("--prompt-bytes {} + --bytes {} must fit in a window of {} bytes", a.prompt_bytes, a.bytes,
                                std::min(window, judge->lm()->opt.seq_len)));
  // Prompts: the starts of validation windows spread over the split; references: what followed.
  std::vector<std::string> prompts, references, generated;
  const auto& text = data.text(Split::Test);
  for (int64_t i = 0; i < a.prompts; ++i) {
    const size_t at = size_t((i * windows / a.prompts) * window);
    prompts.push_back(text.substr(at, size_t(a.prompt_bytes)));
    references.push_back(text.substr(at + size_t(a.prompt_bytes), size_t(a.bytes)));
  }
  fmt::print(stderr, "judge: {} continuations of {} bytes after {}-byte validation prompts, temperature {}\n", a.prompts,
             a.bytes, a.prompt_bytes, a.temperature);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t lo = 0; lo < a.prompts; lo += a.batch) {
    std::vector<std::string> chunk(prompts.begin() + lo, prompts.begin() + std::min(a.prompts, lo + a.batch));
    for (auto& c : g.lm->generate(chunk, a.bytes, {a.temperature, uint64_t(a.seed + lo)})) generated.push_back(c);
    fmt::print(stderr, "judge: {}/{} generated\n", generated.size(), a.prompts);
  }
  const double seconds = seconds_since(t0);
  nlohmann::json r;
  r["judge_run"] = a.judge_dir;
  r["prompts"] = a.prompts;
  r["prompt_bytes"] = a.prompt_bytes;
  r["bytes"] = a.bytes;
  r["temperature"] = a.temperature;
  r["seed"] = a.seed;
  r["generated_bits_per_byte"] = judge_bits(*judge, prompts, generated);
  r["reference_bits_per_byte"] = judge_bits(*judge, prompts, references);
  r["generated_distinct_4grams"] = distinct_ngrams(generated, 4);
  r["reference_distinct_4grams"] = distinct_ngrams(references, 4);
  r["bytes_per_second_batched"] = double(a.prompts * a.bytes) / seconds;
  r["batch"] = a.batch;
  r["layer_evaluations_per_byte"] = g.lm->layers_per_byte();
  auto summary = g.loaded.run.has("summary.json") ? g.loaded.run.read_json("summary.json") : nlohmann::json::object();
  summary["judge"] = r;
  g.loaded.run.write_json("summary.json", summary);
  g.loaded.run.write_text("judge-samples.txt", samples_text(prompts, generated, references));
  fmt::print("generated: {:.3f} bits/byte under the judge, distinct 4-grams {:.3f}\n", r["generated_bits_per_byte"].get<double>(),
             r["generated_distinct_4grams"].get<double>());
  fmt::print("reference: {:.3f} bits/byte under the judge, distinct 4-grams {:.3f}\n", r["reference_bits_per_byte"].get<double>(),
             r["reference_distinct_4grams"].get<double>());
  fmt::print("{:.1f} bytes/s in batches of {}; samples in {}\n", r["bytes_per_second_batched"].get<double>(), a.batch,
             g.loaded.run.file("judge-samples.txt"));
  return 0;
}

}  // namespace blocklab
