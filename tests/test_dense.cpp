// blocklab's float32 GEMM (src/util/gemm.h) against a float64 product with Higham's bound on the
// rounding of a k-term dot product, |error| <= gamma_k |A| |B| (Higham 2002, eq. 3.13); all
// transpositions, sizes that are not multiples of a register tile or of a depth block, a bias, a C
// inside a larger matrix. Then dense() (src/models/dense.h),
// values and the three gradients against torch::nn::functional::linear in float64.
#include "test_util.h"

#include <fmt/format.h>

#include "models/activation.h"
#include "models/dense.h"
#include "util/activation_math.h"
#include "util/gemm.h"
#include "util/simd.h"

namespace blocklab {
namespace {

struct DenseShape {
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
Case make_case(const DenseShape& s, bool ta, bool tb) {
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
  const std::vector<DenseShape> shapes = {{1, 1, 1},   {1, 33, 7},   {13, 1, 5},   {12, 32, 256}, {37, 70, 300},
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
  for (const DenseShape& s : std::vector<DenseShape>{{250, 1030, 300}, {13, 5, 1}, {7, 40, 0}}) {
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

// The epilogues on the product's values h = A B + bias (util/gemm.h), over edge tiles and several
// depth blocks (applied once, on C's final values): an activation's value and slope against
// float64 GELU and SiLU at the same h (the rounding of erf's A&S formula and of exp, < 3e-7 of
// max(1, |value|); a slope of the wrong function or a missed element is off by far more), the
// same values with the slope not kept, and a product with another matrix, which must equal h *
// factor exactly (one rounding, as the product without an epilogue times the factor).
TEST(Gemm, EpiloguesApplyAnActivationOrAProductToTheFinalValues) {
  if (!gemm_runs_here()) return;
  torch::manual_seed(15);
  const auto gelu64 = [](const torch::Tensor& h) {
    const auto cdf = 0.5 * (1 + torch::erf(h * M_SQRT1_2)), pdf = torch::exp(-0.5 * h * h) / std::sqrt(2 * M_PI);
    return std::pair{h * cdf, cdf + h * pdf};
  };
  const auto silu64 = [](const torch::Tensor& h) {
    const auto s = torch::sigmoid(h);
    return std::pair{h * s, s * (1 + h * (1 - s))};
  };
  for (const DenseShape& s : std::vector<DenseShape>{{37, 70, 300}, {12, 32, 64}, {250, 95, 513}, {5, 3, 2}})
    for (const bool ta : {false, true}) {
      SCOPED_TRACE(fmt::format("m={} n={} k={} A{}", s.m, s.n, s.k, ta ? "^T" : ""));
      const auto a = (ta ? torch::randn({s.k, s.m}) : torch::randn({s.m, s.k})) / std::sqrt(double(s.k));
      const auto b = torch::randn({s.k, s.n}), bias = torch::randn({s.n});
      const auto product = [&](float* c, const gemm::Epilogue& e) {
        gemm::sgemm(s.m, s.n, s.k, {a.data_ptr<float>(), a.size(1), ta}, {b.data_ptr<float>(), s.n}, bias.data_ptr<float>(),
                    c, s.n, nullptr, e);
      };
      auto h = torch::empty({s.m, s.n});
      product(h.data_ptr<float>(), {});
      const auto h64 = h.to(torch::kDouble);
      for (const auto act : {Activation::Gelu, Activation::Silu}) {
        SCOPED_TRACE(act == Activation::Gelu ? "GELU" : "SiLU");
        auto y = torch::full({s.m, s.n}, std::nanf("")), slope = y.clone(), y_only = y.clone();
        product(y.data_ptr<float>(), gemm::Epilogue::activate(act, slope.data_ptr<float>()));
        product(y_only.data_ptr<float>(), gemm::Epilogue::activate(act, nullptr));
        const auto [want_y, want_slope] = act == Activation::Gelu ? gelu64(h64) : silu64(h64);
        const auto off = [](const torch::Tensor& got, const torch::Tensor& want) {
          return ((got.to(torch::kDouble) - want).abs() / want.abs().clamp_min(1)).max().item<double>();
        };
        EXPECT_LT(off(y, want_y), 3e-7);
        EXPECT_LT(off(slope, want_slope), 3e-7);
        EXPECT_TRUE(torch::equal(y_only, y));
      }
      const auto factor = torch::randn({s.m, s.n});
      auto scaled = torch::full({s.m, s.n}, std::nanf(""));
      product(scaled.data_ptr<float>(), gemm::Epilogue::multiply(factor.data_ptr<float>()));
      EXPECT_TRUE(torch::equal(scaled, h * factor));
    }
  float one = 1, c = 0;
  EXPECT_THROW(gemm::sgemm(1, 1, 1, {&one, 1}, {&one, 1}, nullptr, &c, 1, nullptr, gemm::Epilogue::multiply(nullptr)),
               c10::Error);
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

// mlp(): fc2(GELU(fc1(x))) (and SiLU) in one autograd function on the GEMM against the same
// layers in libtorch's float64 ops: the output and the gradients of x and all four parameters;
// without autograd, the same output; with only the second layer trainable, its gradients alone.
TEST(Dense, MlpValuesAndGradientsMatchTheLayersInFloat64) {
  torch::manual_seed(16);
  for (const auto act : {Activation::Gelu, Activation::Silu})
    for (const auto& x_shape : std::vector<std::vector<int64_t>>{{4, 9, 24}, {1, 1, 16}, {3, 70}}) {
      SCOPED_TRACE(fmt::format("{} x {}", act == Activation::Gelu ? "GELU" : "SiLU", fmt::join(x_shape, "x")));
      const int64_t in = x_shape.back(), hidden = 4 * in + 3, out = in;
      torch::nn::Linear fc1(in, hidden), fc2(hidden, out);
      const auto x0 = torch::randn(x_shape);
      const auto run = [&](bool fused, torch::ScalarType type) {
        simd::set_fused_kernels(fused);
        torch::nn::Linear f1(in, hidden), f2(hidden, out);
        {
          torch::NoGradGuard no_grad;
          for (auto [to, from] : {std::pair{f1, fc1}, std::pair{f2, fc2}}) {
            to->weight.copy_(from->weight);
            to->bias.copy_(from->bias);
          }
        }
        f1->to(type);
        f2->to(type);
        auto x = x0.to(type).clone().set_requires_grad(true);
        const auto y = mlp(x, f1, f2, act);
        torch::manual_seed(17);
        (y * torch::randn(y.sizes()).to(type)).sum().backward();
        std::vector<torch::Tensor> r = {y, x.grad(), f1->weight.grad(), f1->bias.grad(), f2->weight.grad(), f2->bias.grad()};
        if (fused) {
          torch::NoGradGuard no_grad;
          EXPECT_TRUE(torch::equal(mlp(x, f1, f2, act), y)) << "without autograd";
          f1->weight.set_requires_grad(false);
          f1->bias.set_requires_grad(false);
          f2->weight.mutable_grad() = torch::Tensor();
          f2->bias.mutable_grad() = torch::Tensor();
        }
        if (fused) {
          const auto y2 = mlp(x0, f1, f2, act);  // x needs no gradient, nor does fc1
          torch::manual_seed(17);
          (y2 * torch::randn(y2.sizes())).sum().backward();
          EXPECT_TRUE(torch::equal(f2->weight.grad(), r[4]));
          EXPECT_TRUE(torch::equal(f2->bias.grad(), r[5]));
        }
        simd::set_fused_kernels(true);
        return r;
      };
      const auto got = run(true, torch::kFloat), want = run(false, torch::kDouble);
      const char* names[] = {"y", "dx", "dW1", "db1", "dW2", "db2"};
      for (int i = 0; i < 6; ++i) {
        SCOPED_TRACE(names[i]);
        ASSERT_EQ(got[i].sizes(), want[i].sizes());
        const double scale = want[i].abs().max().item<double>();
        EXPECT_LE((got[i].to(torch::kDouble) - want[i]).abs().max().item<double>(), 2e-5 * std::max(1.0, scale));
      }
    }
}

// Layers without biases: the fused MLP against the same layers on libtorch's ops.
TEST(Dense, MlpWithoutBiasesMatchesTheLayers) {
  torch::manual_seed(18);
  using torch::nn::LinearOptions;
  torch::nn::Linear fc1(LinearOptions(12, 40).bias(false)), fc2(LinearOptions(40, 12).bias(false));
  auto x = torch::randn({5, 12}, torch::requires_grad());
  const auto run = [&](bool fused) {
    simd::set_fused_kernels(fused);
    x.mutable_grad() = torch::Tensor();
    const auto y = mlp(x, fc1, fc2, Activation::Gelu);
    y.pow(2).sum().backward();
    simd::set_fused_kernels(true);
    return std::pair{y, x.grad().clone()};
  };
  const auto [y, dx] = run(true);
  const auto [y_ref, dx_ref] = run(false);
  EXPECT_TRUE(torch::allclose(y, y_ref, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(dx, dx_ref, 1e-5, 1e-6));
}

// set_mlp_fused(false): the layers one by one on the same kernels (what `bench step
// --separate-mlp` times against the fused MLP), the same values as composing them by hand.
TEST(Dense, MlpSwitchedToSeparateLayersComposesThem) {
  torch::manual_seed(19);
  torch::nn::Linear fc1(16, 64), fc2(64, 16);
  const auto x = torch::randn({3, 7, 16});
  set_mlp_fused(false);
  const auto separate = mlp(x, fc1, fc2, Activation::Gelu);
  set_mlp_fused(true);
  EXPECT_TRUE(torch::equal(separate, dense(bias_activation(Activation::Gelu, dense(x, fc1->weight), fc1->bias), fc2)));
  EXPECT_TRUE(torch::allclose(mlp(x, fc1, fc2, Activation::Gelu), separate, 1e-5, 1e-6));
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
