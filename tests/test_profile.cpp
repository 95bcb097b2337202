// The profiler: FLOP counts for known shapes (from the formulas and from ops recorded while they
// ran), the event tree and self times, shapes shared across steps, the Chrome trace (valid JSON,
// well nested), the table's self times against the wall time, MFU arithmetic, and the peak file.
// Nothing here asserts a speed: timings only have to be consistent with each other.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "io/atomic_file.h"
#include "profile/collector.h"
#include "profile/flops.h"
#include "profile/peak.h"
#include "profile/profile_run.h"
#include "profile/range.h"
#include "profile/report.h"
#include "test_util.h"

namespace blocklab {
namespace {

using test::TempDir;
using test::ThrowsUserError;
using T = OpInput;
namespace F = torch::nn::functional;

// ---- FLOP formulas ----------------------------------------------------------------------------

TEST(ProfileFlops, MatrixProductsOfKnownShapes) {
  const int64_t M = 7, K = 5, N = 3, B = 4;
  EXPECT_EQ(op_flops("aten::mm", {T::tensor({M, K}), T::tensor({K, N})}), 2 * M * K * N);
  // addmm(bias, mat1, mat2): the product's multiply-adds; the bias add is not counted.
  EXPECT_EQ(op_flops("aten::addmm", {T::tensor({N}), T::tensor({M, K}), T::tensor({K, N}), T::scalar(1), T::scalar(1)}),
            2 * M * K * N);
  EXPECT_EQ(op_flops("aten::bmm", {T::tensor({B, M, K}), T::tensor({B, K, N})}), 2 * B * M * K * N);
  EXPECT_EQ(op_flops("aten::baddbmm", {T::tensor({B, M, N}), T::tensor({B, M, K}), T::tensor({B, K, N})}),
            2 * B * M * K * N);
  // matmul broadcasts batch dimensions and promotes 1-D operands.
  EXPECT_EQ(op_flops("aten::matmul", {T::tensor({2, 1, M, K}), T::tensor({3, K, N})}), 2 * 6 * M * K * N);
  EXPECT_EQ(op_flops("aten::matmul", {T::tensor({K}), T::tensor({K, N})}), 2 * K * N);
  EXPECT_EQ(op_flops("aten::matmul", {T::tensor({M, K}), T::tensor({K})}), 2 * M * K);
  // linear(input [..., in], weight [out, in]): every leading dimension is a row.
  EXPECT_EQ(op_flops("aten::linear", {T::tensor({B, M, K}), T::tensor({N, K}), T::tensor({N})}), 2 * B * M * K * N);
  // Not counted, or not fitting the schema: 0.
  // blocklab's dense: x [M, K], W [N, K]; backward with the number of products it computes
  EXPECT_EQ(op_flops("blocklab::dense", {T::tensor({M, K}), T::tensor({N, K})}), 2 * M * K * N);
  EXPECT_EQ(op_flops("blocklab::dense_activation", {T::tensor({M, K}), T::tensor({N, K})}), 2 * M * K * N);
  EXPECT_EQ(op_flops("blocklab::dense_backward", {T::tensor({M, K}), T::tensor({N, K}), T::scalar(2)}), 4 * M * K * N);
  EXPECT_EQ(op_flops("blocklab::dense_backward", {T::tensor({M, K}), T::tensor({N, K}), T::scalar(1)}), 2 * M * K * N);
  EXPECT_EQ(op_flops("aten::add", {T::tensor({M, K}), T::tensor({M, K})}), 0);
  EXPECT_FALSE(counts_flops("aten::add"));
  EXPECT_TRUE(counts_flops("aten::bmm"));
  EXPECT_EQ(op_flops("aten::mm", {T::tensor({M, K})}), 0);
  EXPECT_EQ(op_flops("aten::bmm", {T::tensor({M, K}), T::tensor({K, N})}), 0);
}

TEST(ProfileFlops, ConvolutionsOfKnownShapes) {
  // conv2d(input [N,C,H,W], weight [O,C/g,kh,kw], bias, stride, padding, dilation, groups)
  const int64_t n = 2, c = 3, h = 28, w = 28, o = 8, k = 7;
  const auto conv = [&](std::vector<int64_t> stride, std::vector<int64_t> pad, int64_t groups) {
    return op_flops("aten::conv2d", {T::tensor({n, c, h, w}), T::tensor({o, c / groups, k, k}), T::tensor({o}),
                                     T::ints(stride), T::ints(pad), T::ints({1, 1}), T::scalar(groups)});
  };
  EXPECT_EQ(conv({7, 7}, {0, 0}, 1), 2 * n * (4 * 4) * o * c * k * k);    // patch embedding: 4x4 outputs
  EXPECT_EQ(conv({1, 1}, {3, 3}, 1), 2 * n * (28 * 28) * o * c * k * k);  // "same" padding
  EXPECT_EQ(conv({1, 1}, {0, 0}, 1), 2 * n * (22 * 22) * o * c * k * k);
  // aten::convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
  EXPECT_EQ(op_flops("aten::convolution", {T::tensor({n, c, h, w}), T::tensor({o, c, k, k}), T::tensor({o}),
                                           T::ints({7, 7}), T::ints({0, 0}), T::ints({1, 1}), T::scalar(0),
                                           T::ints({0, 0}), T::scalar(1)}),
            2 * n * 16 * o * c * k * k);
  // Backward: grad_input and grad_weight each cost the forward's FLOPs, as output_mask asks.
  const std::vector<OpInput> bwd = {T::tensor({n, o, 4, 4}), T::tensor({n, c, h, w}), T::tensor({o, c, k, k}),
                                    T::ints({o}),             T::ints({7, 7}),         T::ints({0, 0}),
                                    T::ints({1, 1}),          T::scalar(0),            T::ints({0, 0}),
                                    T::scalar(1),             T::ints({0, 1, 1})};
  EXPECT_EQ(op_flops("aten::convolution_backward", bwd), 2 * n * 16 * o * c * k * k);
  auto both = bwd;
  both[10] = T::ints({1, 1, 1});
  EXPECT_EQ(op_flops("aten::convolution_backward", both), 2 * 2 * n * 16 * o * c * k * k);
}

// ---- recorded ops -----------------------------------------------------------------------------

const OpEvent* find_op(const std::vector<OpEvent>& events, const std::string& name) {
  for (const auto& e : events)
    if (e.name == name) return &e;
  return nullptr;
}

TEST(ProfileCollector, RecordsShapesAndFlopsOfRealOps) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({6, 5}), b = torch::randn({5, 4});
  auto x = torch::randn({2, 3, 5}), w = torch::randn({4, 5}), bias = torch::randn({4});
  auto q = torch::randn({8, 18, 16}), k = torch::randn({8, 16, 18});
  auto img = torch::randn({2, 1, 28, 28}), kern = torch::randn({8, 1, 7, 7});
  OpCollector c;
  c.start();
  {
    Range r("outer");
    torch::mm(a, b);
    torch::linear(x, w, bias);  // the ATen op (torch::nn::functional::linear calls matmul or addmm itself)
    torch::bmm(q, k);
    F::conv2d(img, kern, F::Conv2dFuncOptions().stride(7));
  }
  const auto events = c.stop();
  EXPECT_FALSE(c.running());

  const auto* mm = find_op(events, "aten::mm");
  ASSERT_NE(mm, nullptr);
  ASSERT_EQ(mm->inputs.size(), 2u);
  EXPECT_EQ(mm->inputs[0].v, (std::vector<int64_t>{6, 5}));
  EXPECT_EQ(shapes_string(mm->inputs), "[6, 5], [5, 4]");
  EXPECT_EQ(op_flops(mm->name, mm->inputs), 2 * 6 * 5 * 4);
  const auto* lin = find_op(events, "aten::linear");
  ASSERT_NE(lin, nullptr);
  EXPECT_EQ(op_flops(lin->name, lin->inputs), 2 * 6 * 5 * 4);
  const auto* bmm = find_op(events, "aten::bmm");
  ASSERT_NE(bmm, nullptr);
  EXPECT_EQ(op_flops(bmm->name, bmm->inputs), 2 * 8 * 18 * 16 * 18);
  const auto* conv = find_op(events, "aten::conv2d");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(op_flops(conv->name, conv->inputs), 2 * 2 * 16 * 8 * 1 * 49);

  // The range is there, around every op; bmm's internal per-matrix loop is not recorded.
  const auto* outer = find_op(events, "outer");
  ASSERT_NE(outer, nullptr);
  EXPECT_TRUE(outer->range);
  for (const auto& e : events) {
    EXPECT_GE(e.dur_ns(), 0) << e.name;
    if (e.range) continue;
    EXPECT_GE(e.start_ns, outer->start_ns) << e.name;
    EXPECT_LE(e.end_ns, outer->end_ns) << e.name;
    const bool inside_bmm = e.start_ns > bmm->start_ns && e.end_ns <= bmm->end_ns && e.thread == bmm->thread;
    EXPECT_FALSE(inside_bmm) << e.name << " recorded inside aten::bmm";
  }
  // RecordFunction is on again after the bmm.
  EXPECT_TRUE(at::isRecordFunctionEnabled());
}

TEST(ProfileCollector, OneAtATimeAndStopWithoutStartIsAnError) {
  OpCollector a, b;
  a.start();
  EXPECT_TRUE(ThrowsUserError([&] { b.start(); }, {"already running"}));
  a.stop();
  EXPECT_TRUE(ThrowsUserError([&] { a.stop(); }, {"not running"}));
  b.start();  // free again
  b.stop();
}

// One collector, two sessions: it keeps its thread's buffer from one to the next (so that a session
// allocates nothing between the steps it records), and the second holds only its own events.
TEST(ProfileCollector, ASecondSessionHoldsOnlyItsOwnEvents) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({6, 5}), b = torch::randn({5, 4});
  OpCollector c;
  c.start();
  {
    Range r("first");
    torch::mm(a, b);
  }
  const auto first = c.stop();
  ASSERT_NE(find_op(first, "first"), nullptr);
  ASSERT_NE(find_op(first, "aten::mm"), nullptr);
  c.start();
  {
    Range r("second");
    torch::mm(b.t(), a.t());
  }
  const auto second = c.stop();
  EXPECT_EQ(find_op(second, "first"), nullptr);
  ASSERT_NE(find_op(second, "second"), nullptr);
  const auto* mm = find_op(second, "aten::mm");
  ASSERT_NE(mm, nullptr);
  EXPECT_EQ(shapes_string(mm->inputs), "[4, 5], [5, 6]");
  EXPECT_EQ(std::count_if(second.begin(), second.end(), [](const OpEvent& e) { return e.name == "aten::mm"; }), 1);
}

// A forward and backward of linear counted once per FLOP: linear (forward), then the two mm of
// AddmmBackward0 (dX, dW) - the addmm/matmul inside linear are not counted again.
TEST(ProfileReport, StepFlopsCountEachProductOnce) {
  const int64_t B = 16, K = 12, N = 8;
  auto x = torch::randn({B, K}).requires_grad_(true);
  auto w = torch::randn({N, K}).requires_grad_(true), bias = torch::randn({N}).requires_grad_(true);
  OpCollector c;
  c.start();
  {
    Range step("step");
    F::linear(x, w, bias).sum().backward();
  }
  const auto p = analyze(c.stop());
  int64_t flops = 0;
  for (size_t i = 0; i < p.events.size(); ++i)
    if (p.flop_root[i]) flops += p.flops[i];
  EXPECT_EQ(flops, 3 * 2 * B * K * N);
  const auto steps = step_table(p);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].flops, 3 * 2 * B * K * N);
  EXPECT_TRUE(steps[0].shapes);
}

// ---- the tree and self times ------------------------------------------------------------------

OpEvent ev(const std::string& name, int64_t start, int64_t end, bool range = false, uint64_t thread = 1) {
  OpEvent e;
  e.name = name;
  e.start_ns = start;
  e.end_ns = end;
  e.range = range;
  e.thread = thread;
  if (!range) e.inputs = {T::tensor({4, 4}), T::tensor({4, 4})};
  return e;
}

TEST(ProfileReport, TreeAndSelfTimes) {
  // step [0,100): data [0,10) { copy_ [2,6) }, forward [10,60) { linear [12,50) { addmm [20,45) } },
  // backward [60,100) { mm [61,70) }; plus an op on another thread during backward, which no range
  // of its own thread holds: it belongs to the innermost range around its start.
  std::vector<OpEvent> e = {ev("step", 0, 100, true),       ev("data", 0, 10, true),   ev("aten::copy_", 2, 6),
                            ev("forward/block1", 10, 60, true), ev("aten::linear", 12, 50), ev("aten::addmm", 20, 45),
                            ev("backward", 60, 100, true),   ev("aten::mm", 61, 70),     ev("aten::mm", 72, 90, false, 2)};
  e[4].inputs = {T::tensor({4, 4}), T::tensor({4, 4}), T::tensor({4})};
  e[5].inputs = {T::tensor({4}), T::tensor({4, 4}), T::tensor({4, 4})};
  const auto p = analyze(e);
  const std::vector<int> parent = {-1, 0, 1, 0, 3, 4, 0, 6, 6};
  EXPECT_EQ(p.parent, parent);
  const std::vector<int64_t> self = {0, 6, 4, 12, 13, 25, 13, 9, 18};
  EXPECT_EQ(p.self_ns, self);
  int64_t total = 0;
  for (auto s : p.self_ns) total += s;
  EXPECT_EQ(total, 100);  // the self times of a tree add up to its root
  EXPECT_TRUE(p.flop_root[4]);   // linear
  EXPECT_FALSE(p.flop_root[5]);  // addmm inside linear: counted by linear
  EXPECT_TRUE(p.flop_root[7]);
  EXPECT_TRUE(p.flop_root[8]);
  for (size_t i = 0; i < e.size(); ++i) EXPECT_EQ(p.step[i], 0) << e[i].name;

  const auto steps = step_table(p);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].block, 1);
  EXPECT_EQ(steps[0].flops, 3 * 2 * 4 * 4 * 4);
  const auto phases = phase_table(p);
  ASSERT_EQ(phases.size(), 3u);
  EXPECT_EQ(phases[1].name, "forward/block1");
  EXPECT_EQ(phases[1].self_ns, 12);
  EXPECT_EQ(phases[1].flops, 2 * 4 * 4 * 4);
  // The table groups by name and shapes: the two mm calls have the same shapes.
  const auto table = op_table(p);
  int64_t table_self = 0;
  for (const auto& r : table) table_self += r.self_ns;
  EXPECT_EQ(table_self, 100);
  EXPECT_EQ(table.front().name, "aten::mm");
  EXPECT_EQ(table.front().calls, 2);
  EXPECT_EQ(table.front().self_ns, 27);
}

TEST(ProfileReport, ShapesOfTheFirstStepAreSharedWithIdenticalSteps) {
  auto bare = [](OpEvent e) {
    e.inputs.clear();
    return e;
  };
  std::vector<OpEvent> e = {ev("step", 0, 10, true),        ev("aten::mm", 1, 5),        ev("aten::add", 5, 9),
                            ev("step", 10, 20, true),       bare(ev("aten::mm", 11, 15)), bare(ev("aten::add", 15, 19)),
                            ev("step", 20, 30, true),       bare(ev("aten::add", 21, 25)), bare(ev("aten::mm", 25, 29))};
  e[2].inputs = {T::tensor({3})};
  EXPECT_EQ(copy_shapes_across_steps(e), 1);  // the third step's ops come in another order
  EXPECT_EQ(e[4].inputs.size(), 2u);
  EXPECT_EQ(e[5].inputs.size(), 1u);
  EXPECT_TRUE(e[7].inputs.empty());
  const auto steps = step_table(analyze(e));
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_TRUE(steps[0].shapes && steps[1].shapes);
  EXPECT_FALSE(steps[2].shapes);
  EXPECT_EQ(steps[1].flops, 2 * 4 * 4 * 4);
}

TEST(ProfileReport, UtilizationPerStepAndBlock) {
  const std::vector<StepRow> steps = {{0, 0, 2'000'000, 200'000'000, true},
                                      {1, 1, 4'000'000, 200'000'000, true},
                                      {2, 0, 2'000'000, 200'000'000, true},
                                      {3, 1, 1'000'000, 0, false}};  // no shapes: left out
  const auto u = utilization(steps, /*peak=*/200, /*gemm=*/100, /*gemm_around=*/150);
  ASSERT_EQ(u.size(), 3u);
  EXPECT_EQ(u[0].what, "step");
  EXPECT_EQ(u[0].steps, 3);
  EXPECT_DOUBLE_EQ(u[0].gflops, 600e6 / 8e6);  // FLOP per ns = GFLOP/s
  EXPECT_DOUBLE_EQ(u[0].mfu, 75.0 / 200);
  EXPECT_DOUBLE_EQ(u[0].mfu_gemm, 75.0 / 100);
  EXPECT_DOUBLE_EQ(u[0].mfu_gemm_around, 75.0 / 150);
  EXPECT_DOUBLE_EQ(utilization(steps, 200, 100)[0].mfu_gemm_around, 0.0);  // not measured
  EXPECT_EQ(u[1].what, "block 0");
  EXPECT_DOUBLE_EQ(u[1].ms_per_step, 2.0);
  EXPECT_DOUBLE_EQ(u[1].gflops, 100.0);
  EXPECT_EQ(u[2].what, "block 1");
  EXPECT_EQ(u[2].steps, 1);
  EXPECT_DOUBLE_EQ(u[2].mfu, 50.0 / 200);
}

// ---- a profiled training step: trace, table, MFU ----------------------------------------------

struct ProfiledRun {
  TempDir dir;
  ProfileOptions opt;
  ProfileResult result;
  nlohmann::json trace, ops;
};

const ProfiledRun& profiled_run() {
  static ProfiledRun* run = [] {
    auto* r = new ProfiledRun;
    r->opt.cfg = test::tiny_config("blocks", "");
    r->opt.cfg.validate();
    r->opt.steps = 3;  // one round: each of the 3 blocks once
    r->opt.peak.threads = 1;
    r->opt.peak.fma_gflops = 100;
    r->opt.peak.gemm_gflops = 50;
    r->opt.peak_source = "test";
    r->opt.peak_around_n = 96;  // the GEMM peak around the steps, on small matrices
    r->result = run_profile(r->opt);
    write_profile(r->result, r->opt, r->dir.path());
    r->trace = nlohmann::json::parse(read_file(r->dir.file("trace.json")));  // throws if not JSON
    r->ops = nlohmann::json::parse(read_file(r->dir.file("ops.json")));
    return r;
  }();
  return *run;
}

TEST(ProfileTrace, IsValidChromeTraceWithWellNestedRows) {
  const auto& run = profiled_run();
  const auto& t = run.trace;
  ASSERT_TRUE(t.contains("traceEvents"));
  ASSERT_TRUE(t["traceEvents"].is_array());
  std::map<int64_t, std::vector<nlohmann::json>> rows;
  std::map<int64_t, std::string> row_names;
  for (const auto& e : t["traceEvents"]) {
    ASSERT_TRUE(e.contains("ph") && e.contains("name") && e.contains("pid")) << e.dump();
    if (e["ph"] == "M") {
      if (e["name"] == "thread_name") row_names[e["tid"].get<int64_t>()] = e["args"]["name"].get<std::string>();
      continue;
    }
    ASSERT_EQ(e["ph"], "X") << e.dump();
    ASSERT_TRUE(e["ts"].is_number() && e["dur"].is_number()) << e.dump();
    EXPECT_GE(e["dur"].get<double>(), 0.0) << e.dump();
    rows[e["tid"].get<int64_t>()].push_back(e);
  }
  // Phases on their own row (tid 0, named, sorted first); ops on the others.
  ASSERT_TRUE(rows.count(0));
  EXPECT_EQ(row_names[0], "phases");
  EXPECT_GE(rows.size(), 2u);
  std::set<std::string> phase_names;
  for (const auto& e : rows[0]) {
    EXPECT_EQ(e["cat"], "phase");
    phase_names.insert(e["name"].get<std::string>());
  }
  for (const char* want : {"step", "data", "forward/block0", "forward/block1", "forward/block2", "loss", "backward",
                           "optimizer"})
    EXPECT_TRUE(phase_names.count(want)) << want;
  for (const auto& [tid, events] : rows) {
    if (tid == 0) continue;
    EXPECT_TRUE(row_names.count(tid)) << tid;
    for (const auto& e : events) EXPECT_EQ(e["cat"], "op");
  }
  // Well nested: on every row, each event lies inside the enclosing one (1 ns slack for the
  // decimal microseconds).
  const double eps = 1e-3;
  size_t nested = 0;
  for (auto& [tid, events] : rows) {
    std::stable_sort(events.begin(), events.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
      const double ta = a["ts"].get<double>(), tb = b["ts"].get<double>();
      return ta < tb || (ta == tb && a["dur"].get<double>() > b["dur"].get<double>());
    });
    std::vector<std::pair<double, double>> stack;  // [ts, end] of the open ancestors
    for (const auto& e : events) {
      const double ts = e["ts"].get<double>(), end = ts + e["dur"].get<double>();
      while (!stack.empty() && stack.back().second <= ts + eps) stack.pop_back();
      if (!stack.empty()) {
        EXPECT_GE(ts, stack.back().first - eps) << e.dump();
        EXPECT_LE(end, stack.back().second + eps) << "row " << tid << ": " << e.dump() << " overlaps its parent";
        ++nested;
      }
      stack.push_back({ts, end});
    }
  }
  EXPECT_GT(nested, 100u);  // ops inside ops, phases inside steps
  // Every phase of a step lies inside it, and the steps do not overlap.
  double last_end = -1;
  for (const auto& e : rows[0]) {
    if (e["name"] != "step") continue;
    EXPECT_GE(e["ts"].get<double>(), last_end);
    last_end = e["ts"].get<double>() + e["dur"].get<double>();
  }
}

TEST(ProfileTable, SelfTimesSumToTheWallTime) {
  const auto& r = profiled_run().result;
  // By construction the self times add up exactly to the duration of the outermost ranges, the
  // steps. The wall time is taken around the loop by a separate clock and also holds the loop
  // between steps: starting the timer, opening and closing each step's range - a few
  // microseconds per step. Tolerance: 2% of the wall time plus 50 us per step, generous for that,
  // yet a tree that lost a subtree (an op attached nowhere) or counted a child twice would be
  // off by the child's whole time - tens of percent for any sizable op.
  const double tolerance = 0.02 * r.wall_ms + 0.05 * double(r.steps.size());
  EXPECT_NEAR(r.self_sum_ms(), r.wall_ms, tolerance);
  EXPECT_LE(r.self_sum_ms(), r.wall_ms + 1e-6);  // the steps lie inside the timed loop
  for (const auto& row : r.table) EXPECT_GE(row.self_ns, 0) << row.name;
  // ops.json holds the same table.
  const auto& ops = profiled_run().ops;
  double sum = 0;
  for (const auto& row : ops["ops"]) sum += row["self_ms"].get<double>();
  EXPECT_NEAR(sum, r.self_sum_ms(), 1e-6);
  EXPECT_NEAR(ops["wall_ms"].get<double>(), r.wall_ms, 1e-9);
}

TEST(ProfileTable, StepsCarryTheirBlockFlopsAndMfu) {
  const auto& run = profiled_run();
  const auto& r = run.result;
  ASSERT_EQ(r.steps.size(), 3u);
  EXPECT_EQ(r.steps_without_shapes, 0);
  std::set<int> blocks;
  for (const auto& s : r.steps) {
    blocks.insert(s.block);
    EXPECT_TRUE(s.shapes);
    EXPECT_GT(s.flops, 0);
    EXPECT_EQ(s.flops, r.steps[0].flops) << "every block has the same shapes";
  }
  EXPECT_EQ(blocks, (std::set<int>{0, 1, 2}));
  // MFU for all steps, then one line per block; consistent with the FLOPs and times.
  ASSERT_EQ(r.mfu.size(), 4u);
  const auto& all = r.mfu[0];
  EXPECT_EQ(all.steps, 3);
  double ns = 0;
  for (const auto& s : r.steps) ns += double(s.dur_ns);
  EXPECT_NEAR(all.gflops, 3.0 * double(r.steps[0].flops) / ns, 1e-9 * all.gflops);
  EXPECT_NEAR(all.mfu, all.gflops / 100, 1e-12);
  EXPECT_NEAR(all.mfu_gemm, all.gflops / 50, 1e-12);
  ASSERT_GT(r.gemm_before, 0);
  ASSERT_GT(r.gemm_after, 0);
  EXPECT_NEAR(all.mfu_gemm_around, all.gflops / ((r.gemm_before + r.gemm_after) / 2), 1e-12);
  // The counted products of one block-step of the tiny model (d=32, 2 heads, MLP 64, cond 16,
  // batch N=32, T=18 tokens: class, label, 16 patches), forward:
  //   noise MLP 2N(256*16 + 16*16) = 278528; patch conv 2N*16*32*49 = 1605632; adaLN 2N*16*192 =
  //   196608; qkv 2NT*32*96 = 3538944; q k^T and att v 2 * 2N*2*18*16*18 = 1327104; proj
  //   2NT*32*32 = 1179648; fc1, fc2 2 * 2NT*32*64 = 4718592; output adaLN 2N*16*64 = 65536;
  //   head 2N*32*10 = 20480; in all 12931072.
  // Backward: a weight gradient for each, an input gradient for each but the noise MLP's first
  // layer and the patch conv (their inputs need none): 2 * 12931072 - 262144 - 1605632.
  EXPECT_EQ(r.steps[0].flops, 12931072 + 2 * 12931072 - 262144 - 1605632);
  const auto& ops = run.ops;
  EXPECT_EQ(ops["mode"], "blocks");
  // Then the unprofiled rounds: the same FLOPs per step over their own (median) step time.
  ASSERT_TRUE(r.unprofiled.has_value());
  const auto& plain = *r.unprofiled;
  EXPECT_EQ(plain.steps, kUnprofiledRounds * 3);
  EXPECT_DOUBLE_EQ(plain.gflop_per_step, all.gflop_per_step);
  EXPECT_GT(plain.ms_per_step, 0);
  EXPECT_NEAR(plain.gflops, plain.gflop_per_step / plain.ms_per_step * 1e3, 1e-9 * plain.gflops);
  EXPECT_NEAR(plain.mfu_gemm, plain.gflops / 50, 1e-12);
  EXPECT_GT(plain.mfu_gemm_around, 0);
  EXPECT_EQ(ops["mfu"].size(), 5u);
  EXPECT_EQ(ops["mfu"][4]["what"], "unprofiled");
  EXPECT_DOUBLE_EQ(ops["mfu"][0]["mfu_vs_gemm_peak_around"].get<double>(), all.mfu_gemm_around);
  EXPECT_EQ(ops["gemm_peak_around"]["n"], 96);
  EXPECT_DOUBLE_EQ(ops["gemm_peak_around"]["before_gflops"].get<double>(), r.gemm_before);
  // every peak of the run: before and after the profiled steps, after each unprofiled round
  const auto peaks = ops["gemm_peak_around"]["all_gflops"];
  ASSERT_EQ(peaks.size(), size_t(2 + kUnprofiledRounds));
  EXPECT_DOUBLE_EQ(peaks[0].get<double>(), r.gemm_before);
  EXPECT_DOUBLE_EQ(peaks[1].get<double>(), r.gemm_after);
  EXPECT_DOUBLE_EQ(peaks[2 + kUnprofiledRounds - 1].get<double>(), r.rounds.back().gemm_after);
  for (const auto& p : peaks) EXPECT_GT(p.get<double>(), 0);
  EXPECT_EQ(ops["gemm_peak_around"]["kernel"], kLibtorchMm);  // the test's peak names no kernel: libtorch's mm
  EXPECT_EQ(ops["hottest_ops"].size(), 3u);
  double phase_flops = 0;
  for (const auto& ph : ops["phases"]) phase_flops += ph["flops"].get<double>();
  EXPECT_DOUBLE_EQ(phase_flops, 3.0 * double(r.steps[0].flops));
}

// ---- peaks ------------------------------------------------------------------------------------

TEST(ProfilePeak, FmaLoopRunsAndThePeakFileRoundTrips) {
  std::string isa;
  const double gflops = fma_loop_gflops(1, 0.02, "", &isa);
  EXPECT_TRUE(std::isfinite(gflops));
  EXPECT_GT(gflops, 0);
  EXPECT_FALSE(isa.empty());
  EXPECT_GT(fma_loop_gflops(1, 0.01, "generic"), 0);
  EXPECT_EQ(fma_loop_gflops(1, 0.01, "no-such-isa"), 0);
  const auto [copy, triad] = stream_gbs(1, 4, 1);
  EXPECT_GT(copy, 0);
  EXPECT_GT(triad, 0);

  TempDir dir;
  PeakTable t;
  t.blas_core = "Haswell";
  t.measured_at = "2025-01-01T00:00:00Z";
  PeakEntry e;
  e.threads = 2;
  e.gemm_gflops = 150;
  e.gemm_kernel = "blocklab AVX-512";
  e.fma_gflops = 300;
  e.fma_isa = "avx512";
  e.copy_gbs = 20;
  e.triad_gbs = 22;
  t.entries.push_back(e);
  const auto path = dir.file("sub/peak.json");
  save_peak(t, path);
  const auto back = load_peak(path);
  ASSERT_NE(back.for_threads(2), nullptr);
  EXPECT_EQ(back.for_threads(1), nullptr);
  EXPECT_DOUBLE_EQ(back.for_threads(2)->flops_roof(), 300);
  EXPECT_DOUBLE_EQ(back.for_threads(2)->bandwidth_roof(), 22);
  std::string source;
  EXPECT_DOUBLE_EQ(resolve_peak(2, path, &source).gemm_gflops, 150);
  EXPECT_TRUE(test::Contains(source, path));
  // A file from before blocklab's own GEMM (no "gemm_kernel"): its GEMM peak was libtorch's mm
  // only, so a quick peak is measured instead, and says which GEMM it took.
  auto old = t.to_json();
  old["entries"][0].erase("gemm_kernel");
  old["entries"][0]["threads"] = 1;
  write_file_atomic(dir.file("old.json"), old.dump());
  const auto fresh = resolve_peak(1, dir.file("old.json"), &source);
  EXPECT_TRUE(test::Contains(source, "predates blocklab's GEMM"));
  EXPECT_NE(fresh.gemm_gflops, 150);
  EXPECT_FALSE(fresh.gemm_kernel.empty());
  EXPECT_GE(fresh.gemm_gflops, fresh.mm_gflops);

  write_file_atomic(dir.file("bad.json"), "{\"entries\": 3}");
  EXPECT_TRUE(ThrowsUserError([&] { load_peak(dir.file("bad.json")); }, {"bad.json", "bench peak"}));
  EXPECT_TRUE(ThrowsUserError([&] { resolve_peak(1, dir.file("missing.json"), nullptr); }, {"missing.json"}));
}

}  // namespace
}  // namespace blocklab
