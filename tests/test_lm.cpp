// The language-model families: byte corpora, masks, KV caches against full forward passes, the
// ELBO and cross-entropy of useless models against their known values, block isolation, and
// small runs that must learn a periodic text.
#include "test_util.h"

#include "data/text_data.h"
#include "eval/text_quality.h"
#include "families/lm/ar.h"
#include "families/lm/mdm.h"
#include "cli/run_loader.h"
#include "families/registry.h"

namespace blocklab {
namespace {

using test::TempDir;
using test::ThrowsUserError;

Config lm_config(const std::string& family, const std::string& mode, const std::string& path = "") {
  Config c;
  c.set("model.family=" + family);
  c.set("model.mode=" + mode);
  c.model.layers = 3;
  c.model.blocks = 3;
  c.model.hidden = 32;
  c.model.heads = 2;
  c.model.mlp_ratio = 2;
  c.model.cond_dim = 16;
  c.data.seq_len = 24;
  c.data.path = path;
  c.train.batch_size = 16;
  c.train.threads = 1;
  c.train.seed = 5;
  return c;
}

DataShape text_shape(int64_t seq_len) {
  DataShape s;
  s.vocab = 256;
  s.seq_len = seq_len;
  return s;
}

// Every parameter moved off its (partly zero) initialization, so that every path carries signal.
void perturb(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto& p : m.parameters()) p.add_(0.2 * torch::randn_like(p));
}

torch::Tensor random_bytes(int64_t n, int64_t t, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, 256, {n, t}, torch::kInt64);
}

// A corpus whose paragraphs walk through the alphabet from different letters: fully predictable
// after a few bytes.
std::string periodic_corpus(int docs) {
  std::string text;
  const std::string letters = "abcdefghij";
  for (int d = 0; d < docs; ++d) {
    std::string doc;
    for (int i = 0; i < 40 + d % 13; ++i) doc += letters[size_t((d + i) % 10)];
    text += doc + "\n\n";
  }
  return text;
}

TEST(TextData, FortuneEntriesAndParagraphsAreDocumentsSplitByTheirHash) {
  TempDir dir;
  test::write_bytes(dir.file("quotes"), "first fortune\nline two\n%\nsecond fortune\n%\n");
  test::write_bytes(dir.file("story.txt"), "para one\n\npara two\nstill two\n\n\n");
  test::write_bytes(dir.file("quotes.dat"), std::string("\0\0\1binary", 9));
  std::filesystem::create_symlink(dir.file("quotes"), dir.file("quotes.u8"));  // read once
  const auto docs = read_documents(dir.path());
  EXPECT_EQ(docs, (std::vector<std::string>{"first fortune\nline two", "second fortune", "para one", "para two\nstill two"}));
  // Which split a document lands in depends on its bytes only.
  const auto data = TextData::load(dir.path(), 4, 0.5);
  for (const auto& d : docs) {
    const auto& other = data.text(is_validation_document(d, 0.5) ? Split::Train : Split::Test);
    EXPECT_NE(data.text(is_validation_document(d, 0.5) ? Split::Test : Split::Train).find(d), std::string::npos) << d;
    EXPECT_EQ(other.find(d), std::string::npos) << d;
  }
  EXPECT_EQ(data.text(Split::Train).find('%'), std::string::npos);
  EXPECT_EQ(data.text(Split::Test).find('%'), std::string::npos);
  // Windows are the split's bytes in order.
  const auto b = data.batch(Split::Train, torch::tensor({1}, torch::kInt64), torch::kCPU);
  EXPECT_EQ(tokens_to_bytes(b.x[0]), data.text(Split::Train).substr(4, 4));
  EXPECT_EQ(data.shape().vocab, 256);
  EXPECT_EQ(data.size(Split::Train), int64_t(data.text(Split::Train).size() / 4));
}

TEST(TextData, RefusesMissingEmptyOrShortCorpusNamingThePath) {
  TempDir dir;
  EXPECT_TRUE(ThrowsUserError([&] { TextData::load(dir.file("nope"), 8, 0.1); }, {"data.path", dir.file("nope"), "no such"}));
  test::write_bytes(dir.file("empty.txt"), "\n\n  \n");
  EXPECT_TRUE(ThrowsUserError([&] { TextData::load(dir.file("empty.txt"), 8, 0.1); }, {dir.file("empty.txt"), "no text"}));
  test::write_bytes(dir.file("short.txt"), "tiny\n\nalso tiny\n");
  EXPECT_TRUE(ThrowsUserError([&] { TextData::load(dir.file("short.txt"), 1000, 0.5); },
                              {dir.file("short.txt"), "fewer than one window", "data.seq_len = 1000"}));
  test::write_bytes(dir.file("bin"), std::string("a\0b", 3));
  EXPECT_TRUE(ThrowsUserError([&] { TextData::load(dir.file("bin"), 8, 0.1); }, {dir.file("bin"), "binary"}));
}

TEST(LanguageModel, MasksAreCausalAndBlockCausal) {
  const auto opt = torch::TensorOptions().dtype(torch::kFloat64);
  const double inf = std::numeric_limits<double>::infinity();
  auto expected = torch::full({6, 6}, -inf, opt);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j <= i; ++j) {
      expected[i][j] = 0.0;      // clean i sees clean j <= i
      expected[3 + i][j] = 0.0;  // noisy i sees the context of byte i+1: clean 0..i
    }
    expected[3 + i][3 + i] = 0.0;  // and itself, no other noisy token
  }
  EXPECT_TRUE(torch::equal(clean_noisy_mask(3, opt), expected));
  EXPECT_TRUE(torch::equal(causal_mask(3, opt), expected.narrow(0, 0, 3).narrow(1, 0, 3)));
}

TEST(LanguageModel, UselessModelsScoreEightBitsPerByte) {
  // A fresh model's head is zero: every byte has probability 1/256, 8 bits. The next-byte
  // cross-entropy is then exactly 8; the ELBO estimate is 8 in expectation ((1/t) E[masked]/T = 1).
  const auto x = random_bytes(64, 24, 1);
  for (const char* mode : {"e2e", "blocks"}) {
    AutoregressiveLM ar(lm_config("ar", mode), text_shape(24), torch::kCPU);
    EXPECT_NEAR(ar.bits(x).mean().item<double>(), 8.0, 1e-4) << mode;
    MaskedDiffusionLM mdm(lm_config("mdm", mode), text_shape(24), torch::kCPU);
    torch::manual_seed(2);
    EXPECT_NEAR(mdm.bits(x).mean().item<double>(), 8.0, 0.15) << mode;
  }
}

TEST(LanguageModel, KVCacheGivesTheFullForwardLogits) {
  AutoregressiveLM ar(lm_config("ar", "e2e"), text_shape(24), torch::kCPU);
  perturb(*ar.lm(), 3);
  torch::NoGradGuard no_grad;
  const auto x = random_bytes(2, 12, 4);
  const auto full = ar.next_byte_logits(x);
  auto& lm = ar.lm();
  BlockCaches caches;
  auto cond = lm->clean_condition();
  auto h = lm->run(lm->embed(x.narrow(1, 0, 5)), cond, causal_mask(5, torch::TensorOptions()), lm->positions(0, 5), 0, 3,
                   &caches);
  EXPECT_TRUE(torch::allclose(lm->logits(lm->features(h, cond)), full.narrow(1, 0, 5), 1e-4, 1e-4));
  for (int64_t j = 5; j < 12; ++j) {
    h = lm->run(lm->embed(x.narrow(1, j, 1)), cond, {}, lm->positions(j, 1), 0, 3, &caches);
    EXPECT_TRUE(torch::allclose(lm->logits(lm->features(h, cond)).squeeze(1), full.select(1, j), 1e-4, 1e-4)) << j;
  }
}

TEST(LanguageModel, BlockCachesGiveTheBlockCausalTrainingLogits) {
  // Generation's denoiser call (one noisy token after each block's cached clean context) equals
  // the training forward on [clean ; noisy] with the block-causal mask, at every position.
  AutoregressiveLM ar(lm_config("ar", "blocks"), text_shape(24), torch::kCPU);
  perturb(*ar.lm(), 5);
  torch::NoGradGuard no_grad;
  const auto context = random_bytes(2, 10, 6);
  torch::manual_seed(7);
  const auto z = torch::randn({2, 10, 32});
  const double sigma = 0.7;
  for (int block = 0; block < 3; ++block) {
    const auto full = ar.denoise_logits(context, z, torch::full({2}, sigma), block);
    for (int64_t at : {0, 4, 9}) {
      BlockCaches caches;
      auto& lm = ar.lm();
      lm->run(lm->embed(context.narrow(1, 0, at + 1)), lm->clean_condition(), causal_mask(at + 1, torch::TensorOptions()),
              lm->positions(0, at + 1), block, block + 1, &caches);
      const auto step = ar.next_byte_denoise(caches, z.narrow(1, at, 1), sigma, block, at);
      EXPECT_TRUE(torch::allclose(step.squeeze(1), full.select(1, at), 1e-4, 1e-4)) << "block " << block << " at " << at;
      EXPECT_EQ(caches[size_t(block)][0].length(), at + 1) << "a denoiser call leaves the cache as it was";
    }
  }
}

TEST(LanguageModel, BlockLossReachesOnlyItsBlockAndTheSharedModules) {
  for (const char* family : {"mdm", "ar"}) {
    auto cfg = lm_config(family, "blocks");
    auto f = make_family(cfg, std::make_shared<TextData>(std::string(200, 'a'), std::string(50, 'b'), 24, "t"), torch::kCPU);
    perturb(f->model(), 8);
    torch::manual_seed(9);
    f->loss({random_bytes(4, 24, 10), {}}, 1, 11).value.backward();
    for (const auto& p : f->model().named_parameters()) {
      const bool reached = p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0;
      const bool other_block = test::starts_with(p.key(), "blocks.0.") || test::starts_with(p.key(), "blocks.2.");
      if (other_block) EXPECT_FALSE(reached) << family << " " << p.key();
      if (test::starts_with(p.key(), "blocks.1.layers.0.fc2")) EXPECT_TRUE(reached) << family << " " << p.key();
      if (p.key() == "shared.tokens.weight") EXPECT_TRUE(reached) << family << " " << p.key();
    }
  }
}

TEST(Mdm, BlocksCutTheScheduleIntoEqualDecrementsAndTimesAreAntithetic) {
  MaskedDiffusionLM mdm(lm_config("mdm", "blocks"), text_shape(24), torch::kCPU);
  const auto& b = mdm.partition().boundaries();
  ASSERT_EQ(b.size(), 4u);
  for (int i = 0; i <= 3; ++i) EXPECT_NEAR(b[size_t(i)], i / 3.0, 1e-12);  // t_b = b/B (paper App. D)
  EXPECT_EQ(mdm.partition().block_of(0.9), 0);                               // the first block: mostly masked
  EXPECT_EQ(mdm.partition().block_of(0.1), 2);
  const auto r = mdm.partition().range(1);
  auto t = std::get<0>(mdm.sample_times(1, 8, 12, torch::kCPU).to(torch::kFloat64).sort());
  for (int i = 0; i < 8; ++i) {
    EXPECT_GE(t[i].item<double>(), r.lo - 1e-6);
    EXPECT_LE(t[i].item<double>(), r.hi + 1e-6);
    if (i > 0) EXPECT_NEAR((t[i] - t[i - 1]).item<double>(), (r.hi - r.lo) / 8, 1e-5);  // one per stratum
  }
}

TEST(LanguageModel, ShippedRecipesBuildAndTakeAFiniteStepInBothModes) {
  for (const char* name : {"mdm-fortunes", "ar-fortunes"}) {
    for (const char* mode : {"e2e", "blocks"}) {
      auto cfg = Config::load(test::repo_root() + "/configs/" + name + ".toml", {std::string("model.mode=") + mode});
      EXPECT_EQ(cfg.data.path, "/usr/share/games/fortunes");
      auto data = synthetic_dataset(cfg, 4);
      auto f = make_family(cfg, data, torch::kCPU);
      const auto batch = data->batch(Split::Train, torch::arange(2, torch::kInt64), torch::kCPU);
      const auto loss = f->loss(batch, cfg.blocks_mode() ? 0 : -1, 1);
      EXPECT_TRUE(std::isfinite(loss.value.item<double>())) << name << " " << mode;
    }
  }
}

TEST(TextQuality, DistinctNgramsAndAUselessJudge) {
  EXPECT_DOUBLE_EQ(distinct_ngrams({"abcdef"}, 4), 1.0);
  EXPECT_DOUBLE_EQ(distinct_ngrams({"aaaaaa"}, 4), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(distinct_ngrams({"abcd", "abcd"}, 4), 0.5);
  AutoregressiveLM judge(lm_config("ar", "e2e"), text_shape(24), torch::kCPU);
  EXPECT_NEAR(judge_bits(judge, {"ab", ""}, {"cdef", "xyz"}), 8.0, 1e-4);
}

// Trains `cfg` on the periodic corpus and returns its summary.
nlohmann::json train_periodic(Config cfg, const TempDir& dir, const std::string& name) {
  test::write_bytes(dir.file("corpus.txt"), periodic_corpus(120));
  cfg.data.path = dir.file("corpus.txt");
  cfg.data.val_fraction = 0.2;
  cfg.train.lr = 3e-3;
  cfg.train.log_every = 1000;
  return train(cfg, test::train_options(dir.file(name)));
}

// How many bytes of `text` are letters of the cycle a..j that follow their left neighbour (the first
// follows `left`) in the cycle's order. A random letter does so one time in ten.
int in_cycle_order(const std::string& text, char left) {
  int n = 0;
  for (char c : text) {
    n += c >= 'a' && c <= 'j' && c == (left == 'j' ? 'a' : left + 1);
    left = c;
  }
  return n;
}

// The run's model with its trained weights.
struct TrainedLM {
  LoadedRun run;
  LanguageModel& lm() { return dynamic_cast<LanguageModel&>(*run.family); }
};

TEST(LanguageModel, AutoregressiveRunsLearnAPeriodicTextAndContinueIt) {
  for (const char* mode : {"e2e", "blocks"}) {
    TempDir dir;
    auto cfg = lm_config("ar", mode);
    cfg.train.epochs = 30;
    const auto summary = train_periodic(cfg, dir, "ar");
    EXPECT_LT(summary.at("val_bpb").get<double>(), 1.0) << mode << " " << summary.dump();
    // Continuations of validation windows, for a person to read (and the report to show).
    const auto samples = test::read_bytes(dir.file("ar/samples.txt"));
    EXPECT_TRUE(test::Contains(samples, "=== prompt 0\n")) << samples;
    EXPECT_TRUE(test::Contains(samples, "--- generated\n")) << samples;
    TrainedLM t{load_run(dir.file("ar"), {}, WeightsChoice::Raw)};
    // Several prompts at once, each continuing its own phase of the cycle.
    const auto out = t.lm().generate({"cdefg", "efghi"}, 12, {0.0, 1});
    ASSERT_EQ(out.size(), 2u);
    if (std::string(mode) == "e2e") EXPECT_EQ(out, (std::vector<std::string>{"hijabcdefghi", "jabcdefghija"}));
    EXPECT_GE(in_cycle_order(out[0], 'g'), 10) << mode << " generated " << out[0];
    EXPECT_GE(in_cycle_order(out[1], 'i'), 10) << mode << " generated " << out[1];
  }
}

TEST(LanguageModel, MaskedDiffusionRunsLearnAPeriodicTextAndFillAWindow) {
  for (const char* mode : {"e2e", "blocks"}) {
    TempDir dir;
    auto cfg = lm_config("mdm", mode);
    cfg.train.epochs = 60;
    const auto summary = train_periodic(cfg, dir, "mdm");
    EXPECT_LT(summary.at("val_bpb").get<double>(), 2.5) << mode << " " << summary.dump();
    TrainedLM t{load_run(dir.file("mdm"), {}, WeightsChoice::Raw)};
    // Bytes revealed in random order by the blocks of their masking levels: all letters of the
    // text, and most neighbours in the cycle's order (a random letter follows its left neighbour
    // correctly one time in ten). Exact continuations depend on the BLAS kernels' rounding, and
    // one 12-byte sample can go astray (a run of newlines): counted over four prompts, one per
    // phase of the cycle, at least 28 of the 48 bytes follow their neighbour (chance: ~5).
    const std::vector<std::string> prompts = {"abcdefghijab", "cdefghijabcd", "efghijabcdef", "ghijabcdefgh"};
    const auto out = t.lm().generate(prompts, 12, {0.0, 1});
    ASSERT_EQ(out.size(), prompts.size());
    int in_order = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_EQ(out[i].size(), 12u);
      in_order += in_cycle_order(out[i], prompts[i].back());
    }
    EXPECT_GE(in_order, 28) << mode << " generated " << ::testing::PrintToString(out);
  }
}

// stdout of a CLI command (stderr discarded) and its exit code.
std::pair<int, std::string> cli_output(const std::string& args) {
  const std::string cmd = test::quote(test::blocklab_bin()) + " " + args + " 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(LanguageModel, GenerateJudgeAndBadCorpusFromTheCommandLine) {
  TempDir dir;
  auto cfg = lm_config("ar", "e2e");
  cfg.train.epochs = 30;
  train_periodic(cfg, dir, "ar");
  const auto run = test::quote(dir.file("ar"));
  const auto [code, out] = cli_output("generate " + run + " --prompt cdefg --bytes 12 --temperature 0");
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "cdefghijabcdefghi\n");  // the prompt, then the continuation, streamed
  // The run judged by itself: its own continuations are nearly certain to it, and vary as the text does.
  const auto judged = cli_output("judge " + run + " --judge " + run + " --prompts 6 --prompt-bytes 8 --bytes 12 --temperature 0");
  EXPECT_EQ(judged.first, 0) << judged.second;
  const auto j = nlohmann::json::parse(test::read_bytes(dir.file("ar/summary.json"))).at("judge");
  EXPECT_LT(j.at("generated_bits_per_byte").get<double>(), 0.5) << j.dump();
  EXPECT_GT(j.at("reference_distinct_4grams").get<double>(), 0.0);
  EXPECT_GT(j.at("bytes_per_second_batched").get<double>(), 0.0);
  // A corpus that is not there: one line naming it, exit 1.
  test::write_bytes(dir.file("lm.toml"), cfg.to_toml());
  const auto r = test::run_cli("train " + test::quote(dir.file("lm.toml")) + " --set data.path=" +
                                   test::quote(dir.file("missing")) + " --out " + test::quote(dir.file("bad")),
                               dir);
  test::expect_one_line_error(r, {"data.path", dir.file("missing")}, /*only_line=*/false);  // after the run header
  EXPECT_FALSE(std::filesystem::exists(dir.file("bad/summary.json")));
}

}  // namespace
}  // namespace blocklab
