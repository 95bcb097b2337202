// `blocklab report` in a real browser: the page's own self-test (#selftest) runs in headless
// Chromium on the report of a tiny run beside a synthetic 100,000-row one, and writes what it
// found into the DOM: the Fenwick tree against a linear scan, the plots' series, the virtual
// table's rendered window after a scroll to row 50,000, and any console error.
#include "test_util.h"

#include <cstdio>

#include <fmt/format.h>

#include "io/png.h"
#include "profile/profile_run.h"
#include "report/report.h"

namespace blocklab {
namespace {

using test::TempDir;

std::string chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (std::filesystem::exists(p)) return p;
  return "";
}

std::string run_command(const std::string& cmd) {
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[65536];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  pclose(pipe);
  return out;
}

void write_synthetic_run(const std::string& dir, int rows) {
  std::filesystem::create_directories(dir);
  std::string lines;
  for (int i = 0; i < rows; ++i)
    lines += fmt::format("{{\"block\":{},\"step\":{},\"loss\":{},\"lr\":0.001,\"grad_norm\":1.0,\"seconds\":{}}}\n", i % 3,
                         i / 3 + 1, 5.0 / (1.0 + i / 3000.0), 0.01 * i);
  test::write_bytes(dir + "/metrics.jsonl", lines);
  test::write_bytes(dir + "/summary.json", R"({"family":"classifier","mode":"blocks","steps":33334})");
}

TEST(Report, OpensOfflineInARealBrowserWithPlotsAndAVirtualTable) {
  const auto browser = chromium();
  ASSERT_FALSE(browser.empty()) << "no chromium: scripts/install-deps.sh installs Debian's chromium";
  TempDir dir;
  auto cfg = test::tiny_config("blocks", test::synthetic_data_dir());
  cfg.train.epochs = 1;
  cfg.train.log_every = 2;
  cfg.train.eval_every = 20;  // evaluations at steps 20, 40 and the final one at 54
  cfg.data.test_limit = 100;
  train(cfg, test::train_options(dir.file("tiny")));
  // A profile inside the run directory, as `blocklab profile RUN` writes it.
  ProfileOptions profile;
  profile.cfg = cfg;
  profile.steps = 3;
  write_profile(run_profile(profile), profile, dir.file("tiny/profile-blocks"));
  write_synthetic_run(dir.file("big"), 100000);
  test::write_bytes(dir.file("big/judge-samples.txt"), "=== prompt 0\nQ: What do you call <a fish> & chips?\n\xff\xc3 (bytes a model made)\n");
  test::write_bytes(dir.file("big/samples.png"), png_bytes(torch::arange(60 * 80, torch::kInt64).remainder(256).to(torch::kUInt8).view({60, 80})));
  const auto page = render_report({dir.file("tiny"), dir.file("big")});
  EXPECT_EQ(page.find("src=\"http"), std::string::npos) << "nothing may be fetched";
  test::write_bytes(dir.file("report.html"), page);
  const auto dom = run_command(test::quote(browser) +
                               " --headless --no-sandbox --disable-gpu --virtual-time-budget=20000 --dump-dom " +
                               test::quote("file://" + dir.file("report.html") + "#selftest") + " 2>/dev/null");
  const auto at = dom.find("<pre id=\"selftest\">");
  ASSERT_NE(at, std::string::npos) << dom.substr(0, 500);
  const auto end = dom.find("</pre>", at);
  const auto result = nlohmann::json::parse(dom.substr(at + 19, end - at - 19), nullptr, false);
  ASSERT_FALSE(result.is_discarded()) << dom.substr(at, 500);
  EXPECT_TRUE(result.at("fenwick_matches_linear_scan").get<bool>());
  EXPECT_TRUE(result.at("errors").empty()) << result.dump();
  EXPECT_EQ(result.at("sample_boxes").get<int>(), 1) << "the language model's generated text";
  EXPECT_NE(dom.find("Q: What do you call &lt;a fish&gt; &amp; chips?"), std::string::npos) << "shown as text, escaped";
  // Four plots of the training lines (3 blocks per run), then the evaluations: the headline and the
  // reference sampler's accuracy, 3 points each.
  ASSERT_EQ(result.at("plots").size(), 5u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(result.at("plots")[size_t(i)].at("series").get<int>(), 3 + 3) << result.at("plots")[size_t(i)].dump();
  EXPECT_EQ(result.at("plots")[4].at("title"), "test accuracy against step");
  EXPECT_EQ(result.at("plots")[4].at("series").get<int>(), 2);
  EXPECT_EQ(result.at("plots")[4].at("points").get<int>(), 3);
  // The image, decoded by the browser; the confusion matrix of the classifier; the profile's op
  // table, which sorts by a clicked column.
  ASSERT_EQ(result.at("images").size(), 1u);
  EXPECT_EQ(result.at("images")[0].at("width").get<int>(), 80);
  EXPECT_EQ(result.at("images")[0].at("height").get<int>(), 60);
  EXPECT_EQ(result.at("confusion_cells").get<int>(), 10 * 10);
  EXPECT_GT(result.at("op_rows").get<int>(), 10);
  EXPECT_TRUE(result.at("op_table_sorts").get<bool>());
  const int64_t tiny_rows = int64_t(test::lines_of(test::read_bytes(dir.file("tiny/metrics.jsonl"))).size());
  EXPECT_EQ(result.at("rows").get<int64_t>(), tiny_rows + 100000);
  EXPECT_EQ(result.at("first_rendered_row").get<int64_t>(), 50000);
  EXPECT_GT(result.at("rendered_rows").get<int64_t>(), 5);
  EXPECT_LT(result.at("rendered_rows").get<int64_t>(), 100) << "only the rows in view exist";
  // A screenshot for a person to look at, beside the test binary.
  const auto shot = (test::self_dir() / "report-test.png").string();
  std::filesystem::remove(shot);
  run_command(test::quote(browser) + " --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1300,1500 "
              "--virtual-time-budget=20000 --screenshot=" + test::quote(shot) + " " +
              test::quote("file://" + dir.file("report.html")) + " >/dev/null 2>&1");
  EXPECT_GT(std::filesystem::exists(shot) ? std::filesystem::file_size(shot) : 0, 20000u) << shot;
}

TEST(Report, RefusesWhatIsNotARun) {
  TempDir dir;
  std::filesystem::create_directories(dir.file("run"));
  test::write_bytes(dir.file("run/metrics.jsonl"), "{\"step\":1}\n");
  EXPECT_TRUE(test::ThrowsUserError([&] { render_report({dir.file("run")}, {dir.file("run")}); }, {dir.file("run"), "ops.json"}));
  EXPECT_TRUE(test::ThrowsUserError([&] { render_report({dir.path()}); }, {dir.path(), "metrics.jsonl"}));
  test::write_bytes(dir.file("metrics.jsonl"), "{\"step\":1}\nnot json\n");
  EXPECT_TRUE(test::ThrowsUserError([&] { render_report({dir.path()}); }, {dir.file("metrics.jsonl") + ":2"}));
}

}  // namespace
}  // namespace blocklab
