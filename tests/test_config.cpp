// The run configuration: the shipped recipe equals the defaults, and every kind of bad input is
// refused with a message that names the key (and the file and line where there is one).
#include <gtest/gtest.h>

#include <filesystem>

#include "io/config.h"
#include "test_util.h"

namespace blocklab {
namespace {

using test::Contains;
using test::TempDir;
using test::ThrowsUserError;

std::string write_config(const TempDir& dir, const std::string& name, const std::string& text) {
  const auto path = dir.file(name);
  test::write_bytes(path, text);
  return path;
}

TEST(Config, ShippedRecipeEqualsBuiltInDefaults) {
  const auto root = test::repo_root();
  ASSERT_FALSE(root.empty()) << "configs/vit-fmnist.toml not found above " << std::filesystem::current_path();
  const auto cfg = Config::from_file(root + "/configs/vit-fmnist.toml");
  EXPECT_EQ(cfg.to_toml(), Config().to_toml());
  EXPECT_EQ(cfg.model.mode, Mode::Blocks);
  EXPECT_EQ(cfg.model.family, FamilyKind::Classifier);
  EXPECT_EQ(cfg.model.layers, 6);
  EXPECT_EQ(cfg.model.blocks, 3);
  EXPECT_EQ(cfg.train.lr, 1e-3);
  EXPECT_EQ(cfg.inference_steps(), 3);
  EXPECT_TRUE(cfg.blocks_mode());
}

TEST(Config, ToTomlRoundTripsEveryKey) {
  TempDir dir;
  Config c;
  for (const char* s : {"model.mode=e2e", "model.layers=8", "model.blocks=4", "model.hidden=48", "model.heads=6",
                        "classifier.patch=4", "model.mlp_ratio=3", "model.cond_dim=12", "diffusion.p_mean=-1.1",
                        "diffusion.p_std=1.3", "diffusion.sigma_min=0.001", "diffusion.sigma_max=70",
                        "diffusion.sigma_data=0.6", "diffusion.overlap=0.1", "diffusion.weighting=batch_mean",
                        "diffusion.sigma_sampling=log_uniform", "diffusion.inference_steps=5", "train.epochs=1.5",
                        "train.batch_size=64", "train.lr=0.002", "train.lr_schedule=constant", "train.min_lr=0",
                        "train.warmup=0.1", "train.weight_decay=0.05", "train.decay=matrices", "train.grad_clip=0",
                        "classifier.label_smoothing=0.1",
                        "train.seed=12345678901", "train.log_every=7", "train.checkpoint_every=99", "train.threads=2",
                        "train.device=cuda", "data.dir=/some/where", "data.train_limit=1000", "data.test_limit=500",
                        "classifier.inference_temperature=0.5"})
    c.set(s);
  c.set(std::string("classifier.label_token=") +
        (Config().classifier.label_token == LabelToken::AsCls ? "beside_cls" : "as_cls"));
  c.validate();
  EXPECT_NE(c.to_toml(), Config().to_toml());
  const auto path = write_config(dir, "all.toml", c.to_toml());
  const auto back = Config::from_file(path);
  EXPECT_EQ(back.to_toml(), c.to_toml());
  EXPECT_EQ(back.model.mode, Mode::E2E);
  EXPECT_EQ(back.train.decay, Decay::Matrices);
  EXPECT_EQ(back.train.seed, 12345678901);
  EXPECT_EQ(back.diffusion.noise.p_mean, -1.1);
  EXPECT_EQ(back.data.dir, "/some/where");
  EXPECT_EQ(back.inference_steps(), 5);
  EXPECT_EQ(back.classifier.label_token, c.classifier.label_token);
  EXPECT_EQ(back.classifier.inference_temperature, 0.5);
  EXPECT_FALSE(back.blocks_mode());
  // describe() lists every key once.
  const auto d = Config::describe();
  for (const char* key : {"model.family", "model.mode", "diffusion.overlap", "train.lr", "data.dir", "train.device",
                          "classifier.patch"})
    EXPECT_TRUE(Contains(d, key));
}

TEST(Config, UnknownKeyIsNamed) {
  TempDir dir;
  const auto path = write_config(dir, "c.toml", "[model]\nlayers = 6\nlayerz = 6\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(path); }, {path, "model.layerz"}));
  const auto section = write_config(dir, "s.toml", "[modle]\nlayers = 6\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(section); }, {section, "modle.layers"}));
  const auto nested = write_config(dir, "n.toml", "[model.extra]\nx = 1\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(nested); }, {nested, "model.extra"}));
  const auto top = write_config(dir, "t.toml", "lr = 0.1\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(top); }, {top, "lr"}));
  Config c;
  std::string msg;
  EXPECT_TRUE(ThrowsUserError([&] { c.set("train.learning_rate=0.1"); }, {"train.learning_rate", "`blocklab train --help`"},
                              &msg));
  EXPECT_FALSE(Contains(msg, "--help-config")) << "points to an option that does not exist: " << msg;
  EXPECT_TRUE(ThrowsUserError([&] { c.set("lr=0.1"); }, {"lr"}));
}

TEST(Config, WrongTypeIsNamed) {
  TempDir dir;
  const auto path = write_config(dir, "c.toml", "[model]\nlayers = \"six\"\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(path); }, {path, "model.layers", "integer"}));
  const auto lr = write_config(dir, "lr.toml", "[train]\nlr = \"fast\"\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(lr); }, {lr, "train.lr", "number"}));
  const auto mode = write_config(dir, "m.toml", "[model]\nmode = 3\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(mode); }, {mode, "model.mode", "string"}));
  const auto frac = write_config(dir, "f.toml", "[model]\nlayers = 6.5\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(frac); }, {frac, "model.layers"}));
  // An integer where a float is expected is fine.
  const auto int_lr = write_config(dir, "i.toml", "[train]\nlr = 1\nmin_lr = 0\nepochs = 2\n");
  const auto c = Config::from_file(int_lr);
  EXPECT_EQ(c.train.lr, 1.0);
  EXPECT_EQ(c.train.epochs, 2.0);
}

TEST(Config, ImpossibleValuesAreNamed) {
  TempDir dir;
  // Cross-field: B must divide L. Both keys are named, in the file and via --set.
  const auto path = write_config(dir, "c.toml", "[model]\nlayers = 6\nblocks = 4\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(path); }, {"model.blocks", "model.layers"}));
  Config c;
  c.set("model.blocks=4");
  EXPECT_TRUE(ThrowsUserError([&] { c.validate(); }, {"model.blocks", "model.layers"}));
  c.set("model.blocks=2");
  c.validate();
  c.set("model.heads=5");
  EXPECT_TRUE(ThrowsUserError([&] { c.validate(); }, {"model.heads", "model.hidden"}));
  Config e;
  e.set("diffusion.sigma_min=100");
  EXPECT_TRUE(ThrowsUserError([&] { e.validate(); }, {"diffusion.sigma_min", "diffusion.sigma_max"}));
  Config f;
  f.set("train.lr=1e-6");
  EXPECT_TRUE(ThrowsUserError([&] { f.validate(); }, {"train.min_lr", "train.lr"}));
  // Single-field checks, each naming its key; the rejected value is not applied.
  Config g;
  EXPECT_TRUE(ThrowsUserError([&] { g.set("train.lr=-1"); }, {"train.lr", "-1"}));
  EXPECT_EQ(g.train.lr, 1e-3);
  EXPECT_TRUE(ThrowsUserError([&] { g.set("train.lr=0"); }, {"train.lr"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("model.mode=both"); }, {"model.mode", "both"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("diffusion.overlap=1.5"); }, {"diffusion.overlap"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("train.threads=0"); }, {"train.threads"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("train.seed=-1"); }, {"train.seed"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("train.device=tpu"); }, {"train.device"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("diffusion.weighting=mean"); }, {"diffusion.weighting"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("classifier.label_token=middle"); }, {"classifier.label_token", "middle"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("classifier.inference_temperature=-1"); }, {"classifier.inference_temperature"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("model.family=gpt"); }, {"model.family", "gpt"}));
  // A family's keys live in its own section only.
  EXPECT_TRUE(ThrowsUserError([&] { g.set("model.patch=4"); }, {"model.patch"}));
  EXPECT_TRUE(ThrowsUserError([&] { g.set("diffusion.inference_temperature=1"); }, {"diffusion.inference_temperature"}));
  const auto neg = write_config(dir, "neg.toml", "[train]\nbatch_size = 0\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(neg); }, {neg, "train.batch_size"}));
}

TEST(Config, NumbersAreRangeCheckedBeforeNarrowingAndFinite) {
  TempDir dir;
  Config c;
  // 2^32 + 128 would wrap to 128 in a 32-bit int.
  EXPECT_TRUE(ThrowsUserError([&] { c.set("train.batch_size=4294967424"); }, {"train.batch_size", "4294967424"}));
  EXPECT_EQ(c.train.batch_size, 128);
  const auto wrap = write_config(dir, "w.toml", "[model]\nlayers = -4294967290\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(wrap); }, {wrap, "model.layers"}));
  for (const char* bad : {"train.epochs=inf", "train.lr=nan", "diffusion.sigma_max=inf", "diffusion.p_mean=-inf"})
    EXPECT_TRUE(ThrowsUserError([&] { c.set(bad); }, {std::string(bad).substr(0, std::string(bad).find('=')), "finite"}))
        << bad;
  EXPECT_TRUE(ThrowsUserError([&] { c.set("diffusion.inference_steps=1000000000"); }, {"diffusion.inference_steps"}));
}

TEST(Config, TomlListsOnlyTheSelectedFamilysSection) {
  const auto toml = Config().to_toml();
  EXPECT_TRUE(Contains(toml, "[classifier]"));
  EXPECT_TRUE(Contains(toml, "family = 'classifier'"));
}

TEST(Config, SyntaxErrorNamesFileAndLine) {
  TempDir dir;
  const auto path = write_config(dir, "broken.toml", "[model]\nlayers = 6\nhidden = = 64\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(path); }, {path + ":3"}));
  const auto unclosed = write_config(dir, "unclosed.toml", "# comment\n\n[train\nlr = 0.1\n");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(unclosed); }, {unclosed + ":3"}));
  const auto missing = dir.file("absent.toml");
  EXPECT_TRUE(ThrowsUserError([&] { Config::from_file(missing); }, {missing}));
}

TEST(Config, SetTakesTomlValuesAndBareWords) {
  Config c;
  c.set("model.mode=e2e");  // a bare word for a string key
  EXPECT_EQ(c.model.mode, Mode::E2E);
  c.set("model.mode=\"blocks\"");  // or a TOML string
  EXPECT_EQ(c.model.mode, Mode::Blocks);
  c.set("data.dir=/tmp/some dir/x");
  EXPECT_EQ(c.data.dir, "/tmp/some dir/x");
  c.set("train.lr=2e-3");
  EXPECT_EQ(c.train.lr, 2e-3);
  c.set("train.epochs=5");
  EXPECT_EQ(c.train.epochs, 5.0);
  c.set("model.layers=12");
  EXPECT_EQ(c.model.layers, 12);
  EXPECT_TRUE(ThrowsUserError([&] { c.set("model.layers=abc"); }, {"model.layers"}));
  EXPECT_EQ(c.model.layers, 12);
  EXPECT_TRUE(ThrowsUserError([&] { c.set("model.layers=1.5"); }, {"model.layers"}));
  EXPECT_TRUE(ThrowsUserError([&] { c.set("train.lr=fast"); }, {"train.lr"}));
  EXPECT_TRUE(ThrowsUserError([&] { c.set("model.layers"); }, {"model.layers"}));
  EXPECT_TRUE(ThrowsUserError([&] { c.set("=3"); }, {"=3"}));
}

}  // namespace
}  // namespace blocklab
