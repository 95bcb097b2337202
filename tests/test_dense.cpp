// blocklab's float32 GEMM (src/util/gemm.h) against a float64 product with Higham's bound on the
// rounding of a k-term dot product, |error| <= gamma_k |A| |B| (Higham 2002, eq. 3.13); all
// transpositions, sizes that are not multiples of a register tile or of a depth block, a bias, a C
// inside a larger matrix. Then dense() (src/models/dense.h),
// values and the three gradients against torch::nn::functional::linear in float64.
#include "test_util.h"

#include <fmt/format.h>

#include "models/dense.h"
#include "util/gemm.h"
#include "util/simd.h"

namespace blocklab {
namespace {

struct Shape {
  int64_t m, n, k;
};

// blocklab's GEMM needs AVX-512. On a CPU without it the GEMM tests check instead that it refuses
// with an error naming AVX-512 (dense() then takes libtorch's linear, tested below), and stop.
bool gemm_runs_here() {
  if (gemm::available()) return true;
  float one = 1, c = 0;
  try {
    gemm::sgemm(1, 1, 1, {&one, 1}, {&one, 1}, nullptr, &c, 1);
    ADD_FAILURE() << "gemm::sgemm ran on a CPU without AVX-512";
  } catch (const c10::Error& e) {
    EXPECT_TRUE(test::Contains(e.what_without_backtrace(), "AVX-512"));
  }
  return false;
}

// A (m x k) and B (k x n) as stored for the given transpositions, the float64 product + bias, and
// the rounding bound gamma_k |A| |B| + |bias| u.
struct Case {
  torch::Tensor a_stored, b_stored, bias, want, bound;
};
Case make_case(const Shape& s, bool ta, bool tb) {
  Case c;
  c.a_stored = ta ? torch::randn({s.k, s.m}) : torch::randn({s.m, s.k});
  c.b_stored = tb ? torch::randn({s.n, s.k}) : torch::randn({s.k, s.n});
  c.bias = torch::randn({s.n});
  const auto a = (ta ? c.a_stored.t() : c.a_stored).to(torch::kDouble), b = (tb ? c.b_stored.t() : c.b_stored).to(torch::kDouble);
  c.want = a.mm(b) + c.bias.to(torch::kDouble);
  const double u = std::ldexp(1.0, -24), gamma = (s.k + 1) * u / (1 - (s.k + 1) * u);  // k products, k sums, the bias
  c.bound = gamma * (a.abs().mm(b.abs()) + c.bias.to(torch::kDouble).abs());
  return c;
}

TEST(Gemm, MatchesTheFloat64ProductWithinTheRoundingBound) {
  if (!gemm_runs_here()) return;
  torch::manual_seed(7);
  const std::vector<Shape> shapes = {{1, 1, 1},   {1, 33, 7},   {13, 1, 5},   {12, 32, 256}, {37, 70, 300},
                                     {121, 17, 64}, {250, 95, 513}, {7, 1030, 9}, {64, 48, 2},
                                     {20, 40, 33}};  // last strips of 1-4, 5-8 and 9-12 rows (the 4-, 8- and 12-row tiles)
  for (const auto& s : shapes)
    for (const bool ta : {false, true})
      for (const bool tb : {false, true}) {
        SCOPED_TRACE(fmt::format("m={} n={} k={} A{} B{}", s.m, s.n, s.k, ta ? "^T" : "", tb ? "^T" : ""));
        const auto c = make_case(s, ta, tb);
        auto out = torch::full({s.m, s.n}, std::nanf(""));
        gemm::sgemm(s.m, s.n, s.k, {c.a_stored.data_ptr<float>(), c.a_stored.size(1), ta},
                    {c.b_stored.data_ptr<float>(), c.b_stored.size(1), tb}, c.bias.data_ptr<float>(), out.data_ptr<float>(),
                    s.n);
        const auto excess = (out.to(torch::kDouble) - c.want).abs() - c.bound;
        EXPECT_LE(excess.max().item<double>(), 0.0);
        // and the bound is not vacuous: a missing or doubled bias (|b| ~ 0.8) or a lost term exceeds it
        EXPECT_LT(c.bound.max().item<double>(), 0.05);
      }
}

// A transposed A's row sums, taken as it is packed (dense()'s bias gradient), over several row
// blocks, depth blocks and column blocks (each row summed once, not once per column block):
// within Higham's bound of the float64 sums; a row-major A is refused.
TEST(Gemm, RowSumsOfATransposedA) {
  if (!gemm_runs_here()) return;
  torch::manual_seed(14);
  for (const Shape& s : std::vector<Shape>{{250, 1030, 300}, {13, 5, 1}, {7, 40, 0}}) {
    SCOPED_TRACE(fmt::format("m={} n={} k={}", s.m, s.n, s.k));
    const auto a_stored = torch::randn({s.k, s.m}), b = torch::randn({s.k, s.n});
    auto c = torch::empty({s.m, s.n}), sums = torch::full({s.m}, std::nanf(""));
    gemm::sgemm(s.m, s.n, s.k, {a_stored.data_ptr<float>(), s.m, true}, {b.data_ptr<float>(), s.n}, nullptr,
                c.data_ptr<float>(), s.n, sums.data_ptr<float>());
    const auto a64 = a_stored.to(torch::kDouble);
    const double u = std::ldexp(1.0, -24), gamma = s.k * u / (1 - s.k * u);
    const auto excess = (sums.to(torch::kDouble) - a64.sum(0)).abs() - gamma * a64.abs().sum(0);
    EXPECT_LE(excess.max().item<double>(), 0.0);
    EXPECT_LE((c.to(torch::kDouble) - a64.t().mm(b.to(torch::kDouble))).abs().max().item<double>(), 1e-3);
  }
  float one = 1, c = 0, sum = 0;
  EXPECT_THROW(gemm::sgemm(1, 1, 1, {&one, 1}, {&one, 1}, nullptr, &c, 1, &sum), c10::Error);
}

TEST(Gemm, WritesOnlyItsBlockOfALargerMatrixWithoutBias) {
  if (!gemm_runs_here()) return;
  torch::manual_seed(8);
  const auto a = torch::randn({29, 40}), b = torch::randn({40, 45});
  auto big = torch::full({31, 50}, 5.0f);  // C is big[1:30, 2:47], row stride 50
  gemm::sgemm(29, 45, 40, {a.data_ptr<float>(), 40}, {b.data_ptr<float>(), 45}, nullptr, big.data_ptr<float>() + 50 + 2, 50);
  const auto inner = big.narrow(0, 1, 29).narrow(1, 2, 45);
  EXPECT_TRUE(torch::allclose(inner.to(torch::kDouble), a.to(torch::kDouble).mm(b.to(torch::kDouble)), 0, 1e-4));
  auto outside = big.clone();
  outside.narrow(0, 1, 29).narrow(1, 2, 45).fill_(5.0f);
  EXPECT_TRUE(torch::equal(outside, torch::full({31, 50}, 5.0f)));
}

TEST(Gemm, ResultsDoNotDependOnTheThreadCount) {
  if (!gemm_runs_here()) return;
  torch::manual_seed(9);
  const auto a = torch::randn({500, 300}), b = torch::randn({300, 70});
  const auto run = [&](int threads) {
    const int before = at::get_num_threads();
    at::set_num_threads(threads);
    auto c = torch::empty({500, 70});
    gemm::sgemm(500, 70, 300, {a.data_ptr<float>(), 300}, {b.data_ptr<float>(), 70}, nullptr, c.data_ptr<float>(), 70);
    at::set_num_threads(before);
    return c;
  };
  EXPECT_TRUE(torch::equal(run(1), run(2)));
}

// dense() in float32 against libtorch's linear in float64: the output and the gradients of x, W, b.
TEST(Dense, ValuesAndGradientsMatchLinearInFloat64) {
  torch::manual_seed(10);
  struct Input {
    std::vector<int64_t> x;
    int64_t out;
    bool bias, transposed_x;
  };
  for (const auto& in : std::vector<Input>{{{4, 9, 24}, 72, true, false},
                                           {{3, 17}, 5, false, false},
                                           {{1, 1, 64}, 64, true, false},
                                           {{6, 10, 33}, 40, true, true}}) {
    SCOPED_TRACE(fmt::format("x {} out {} bias {} transposed {}", fmt::join(in.x, "x"), in.out, in.bias, in.transposed_x));
    auto x0 = torch::randn(in.x);
    if (in.transposed_x) x0 = x0.transpose(0, 1).contiguous().transpose(0, 1);  // the same values, not contiguous
    const auto w0 = torch::randn({in.out, in.x.back()}) * 0.2, b0 = in.bias ? torch::randn({in.out}) : torch::Tensor();
    const auto run = [&](bool fused, torch::ScalarType type) {
      simd::set_fused_kernels(fused);
      auto x = x0.to(type).clone().set_requires_grad(true), w = w0.to(type).clone().set_requires_grad(true);
      auto b = in.bias ? b0.to(type).clone().set_requires_grad(true) : torch::Tensor();
      const auto y = dense(x, w, b);
      torch::manual_seed(11);  // the same upstream gradient for every run
      const auto up = torch::randn(y.sizes()).to(type);
      (y * up).sum().backward();
      simd::set_fused_kernels(true);
      return std::vector<torch::Tensor>{y, x.grad(), w.grad(), in.bias ? b.grad() : torch::zeros({1}, type)};
    };
    const auto got = run(true, torch::kFloat), want = run(false, torch::kDouble), plain = run(false, torch::kFloat);
    const char* names[] = {"y", "dx", "dW", "db"};
    for (int i = 0; i < 4; ++i) {
      SCOPED_TRACE(names[i]);
      const double scale = want[i].abs().max().item<double>();
      EXPECT_LE((got[i].to(torch::kDouble) - want[i]).abs().max().item<double>(), 2e-5 * std::max(1.0, scale));
      // libtorch's float32 linear is no closer than that: the tolerance is float32 rounding
      EXPECT_LE((plain[i].to(torch::kDouble) - want[i]).abs().max().item<double>(), 2e-5 * std::max(1.0, scale));
    }
    EXPECT_EQ(got[0].sizes(), want[0].sizes());
  }
}

TEST(Dense, TakesLibtorchsLinearForOtherTypesAndWhenSwitchedOff) {
  torch::manual_seed(12);
  const auto x = torch::randn({5, 8}, torch::kDouble), w = torch::randn({3, 8}, torch::kDouble);
  EXPECT_TRUE(torch::equal(dense(x, w), torch::nn::functional::linear(x, w)));
  const auto xf = x.to(torch::kFloat), wf = w.to(torch::kFloat);
  simd::set_fused_kernels(false);
  const auto off = dense(xf, wf);
  simd::set_fused_kernels(true);
  EXPECT_TRUE(torch::equal(off, torch::nn::functional::linear(xf, wf)));
}

}  // namespace
}  // namespace blocklab
