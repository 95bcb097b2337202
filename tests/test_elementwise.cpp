// The fused element-wise kernels against libtorch's ops, values and gradients in float64 (to
// rounding) and float32 (tolerance below): adaLN's modulate(), gated_add() and the two in one
// pass, gated_add_modulate() (src/models/modulation.h), with per-sample and per-token
// modulations, widths that are not multiples of a vector, one token, batch 1, and modulations that
// are views into one projection (as AdaLN's chunks are); the MLP's GELU and adaLN's SiLU with
// their biases (bias_activation(), src/models/activation.h); a transformer's input sequence
// (token_sequence(), src/models/tokens.h); rows to unit length (unit_rows(), src/models/unit_rows.h);
// the classifier's readout (readout(), src/models/readout.h) and loss (cross_entropy(),
// src/models/cross_entropy.h); the kernels' exponential (src/util/simd.h).
#include "test_util.h"

#include <fmt/format.h>

#include "models/activation.h"
#include "models/cross_entropy.h"
#include "models/modulation.h"
#include "models/readout.h"
#include "models/tokens.h"
#include "models/unit_rows.h"
#include "util/simd.h"

namespace blocklab {
namespace {

struct ModShape {
  int64_t n, t, d;
  bool per_token;
};

double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item<double>();
}

// Two modulations [N, 1 or T, D] as views into one [N, 1 or T, 3D] projection, and x [N, T, D].
std::vector<torch::Tensor> modulation_inputs(const ModShape& s, torch::ScalarType type) {
  auto projection = torch::randn({s.n, s.per_token ? s.t : 1, 3 * s.d}, type);
  auto parts = projection.chunk(3, 2);
  return {torch::randn({s.n, s.t, s.d}, type) * 3 + 1, parts[0], parts[1], torch::randn({s.n, s.t, s.d}, type)};
}

// f(inputs) fused and unfused: values, then the gradients of every input for the same upstream.
void compare_op(const char* name, const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& f,
                const std::vector<torch::Tensor>& raw, double tolerance) {
  SCOPED_TRACE(name);
  std::vector<torch::Tensor> fused_in, ref_in;
  for (const auto& t : raw) {
    fused_in.push_back(t.detach().clone().set_requires_grad(true));
    ref_in.push_back(t.detach().clone().set_requires_grad(true));
  }
  const auto out = f(fused_in);
  simd::set_fused_kernels(false);
  const auto ref = f(ref_in);
  simd::set_fused_kernels(true);
  ASSERT_EQ(out.sizes(), ref.sizes());
  EXPECT_LT(relative_error(out, ref), tolerance) << "forward";
  const auto upstream = torch::randn(ref.sizes(), ref.options());
  (out * upstream).sum().backward();
  (ref * upstream).sum().backward();
  for (size_t i = 0; i < raw.size(); ++i) {
    ASSERT_TRUE(fused_in[i].grad().defined()) << "input " << i;
    EXPECT_EQ(fused_in[i].grad().sizes(), raw[i].sizes()) << "input " << i;
    EXPECT_LT(relative_error(fused_in[i].grad(), ref_in[i].grad()), tolerance) << "gradient of input " << i;
  }
  torch::NoGradGuard no_grad;  // without autograd: the same values
  EXPECT_TRUE(torch::equal(f(raw), out.detach()));
}

TEST(Modulation, FusedMatchesLibtorchInValuesAndGradients) {
  torch::manual_seed(11);
  const std::vector<ModShape> shapes = {
      {2, 18, 64, false},  // the ViT's tokens and width, per-sample modulation
      {3, 7, 64, true},    // per-token modulation (language models)
      {1, 5, 13, false},   // batch 1, a width no vector divides
      {2, 1, 3, true},     // one token, narrower than a vector
      {4, 9, 40, false},   // whole vectors of both types (5 of floats, 10 of doubles)
  };
  for (const auto& s : shapes)
    for (auto type : {torch::kDouble, torch::kFloat}) {
      SCOPED_TRACE(fmt::format("N={} T={} D={} {} {}", s.n, s.t, s.d, s.per_token ? "per token" : "per sample",
                               type == torch::kDouble ? "float64" : "float32"));
      const double tolerance = type == torch::kDouble ? 1e-12 : 2e-5;
      const auto in = modulation_inputs(s, type);
      compare_op("modulate", [](const auto& v) { return modulate(v[0], v[1], v[2]); }, {in[0], in[1], in[2]}, tolerance);
      compare_op("gated_add", [](const auto& v) { return gated_add(v[0], v[1], v[2]); }, {in[0], in[1], in[3]}, tolerance);
      // Both outputs of the fused pair, each with its own upstream gradient (h's other use, the
      // next residual add, and the modulation's): their sum is taken inside the kernel.
      const auto scale = torch::randn_like(in[2]) * 0.5;
      const auto pair = [](const auto& v) {
        const auto out = gated_add_modulate(v[0], v[1], v[2], v[3], v[4]);
        return torch::cat({out[0], out[1] * 0.7}, 1);
      };
      compare_op("gated_add_modulate", pair, {in[0], in[1], in[3], in[2], scale}, tolerance);
      if (type == torch::kDouble || !simd::has_avx512()) continue;
      simd::set_wide_vectors(false);  // float32 in Vec's 8 lanes, as on a CPU without AVX-512
      compare_op("modulate 8 lanes", [](const auto& v) { return modulate(v[0], v[1], v[2]); }, {in[0], in[1], in[2]}, tolerance);
      compare_op("gated_add_modulate 8 lanes", pair, {in[0], in[1], in[3], in[2], scale}, tolerance);
      simd::set_wide_vectors(true);
    }
}

TEST(BiasActivation, FusedMatchesLibtorchInValuesAndGradients) {
  torch::manual_seed(12);
  // [tokens..., F] with F a multiple of a vector, and one with a tail; values out to |x| ~ 12 (GELU:
  // Phi saturates and the density underflows) and, for SiLU, out to |x| ~ 100 (the sigmoid's
  // exponential past float's range).
  for (auto act : {Activation::Gelu, Activation::Silu})
    for (const auto& sizes : std::vector<std::vector<int64_t>>{{4, 18, 256}, {3, 37}, {1, 1, 5}})
      for (auto type : {torch::kDouble, torch::kFloat}) {
        const char* name = act == Activation::Gelu ? "gelu" : "silu";
        SCOPED_TRACE(fmt::format("{} F={} {}", name, sizes.back(), type == torch::kDouble ? "float64" : "float32"));
        auto x = torch::randn(sizes, type) * 3;
        if (act == Activation::Silu) x.view(-1).narrow(0, 0, 2).copy_(torch::tensor({-100.0, 100.0}, type));
        const auto bias = torch::randn({sizes.back()}, type);
        const auto f = [act](const auto& v) { return bias_activation(act, v[0], v[1]); };
        // float32: GELU's erf approximation (|error| < 1.5e-7, Abramowitz & Stegun 7.1.26) against
        // libtorch's, in 16 lanes where the CPU has AVX-512 and in Vec's 8.
        compare_op(name, f, {x, bias}, type == torch::kDouble ? 1e-12 : 1e-6);
        if (type == torch::kDouble || !simd::has_avx512()) continue;
        simd::set_wide_vectors(false);
        compare_op("8 lanes", f, {x, bias}, 1e-6);
        simd::set_wide_vectors(true);
      }
}

// A transformer's input sequence (src/models/tokens.h): no lead token, a noisy label, and a class
// token expanded from one parameter beside it; widths with and without a vector's tail; batch 1.
TEST(TokenSequence, FusedMatchesLibtorchInValuesAndGradients) {
  torch::manual_seed(13);
  for (int64_t lead : {0, 1, 2})
    for (const auto& [n, p, d] : std::vector<std::array<int64_t, 3>>{{3, 16, 64}, {1, 5, 7}})
      for (auto type : {torch::kDouble, torch::kFloat}) {
        SCOPED_TRACE(fmt::format("lead {} N={} d={} {}", lead, n, d, type == torch::kDouble ? "float64" : "float32"));
        std::vector<torch::Tensor> in{torch::randn({n, p, d}, type), torch::randn({1, lead + p, d}, type)};
        if (lead >= 1) in.push_back(torch::randn({n, d}, type));  // the label
        if (lead >= 2) in.push_back(torch::randn({1, d}, type));  // the class token, expanded below
        const auto f = [n, d](const std::vector<torch::Tensor>& v) {
          std::vector<torch::Tensor> leads(v.begin() + 2, v.end());
          if (leads.size() == 2) leads[1] = leads[1].expand({n, d});
          return token_sequence(leads, v[0], v[1]);
        };
        compare_op("tokens", f, in, type == torch::kDouble ? 1e-12 : 1e-6);
      }
}

// Rows to unit length (src/models/unit_rows.h), the denoising targets' normalization: batches of
// embeddings, a width with no vector's worth, a 3-d input, and a row shorter than epsilon (all zero
// and 1e-14 small: the clamp's division, dy / epsilon, and no gradient through the norm).
TEST(UnitRows, FusedMatchesLibtorchInValuesAndGradients) {
  torch::manual_seed(14);
  for (const auto& sizes : std::vector<std::vector<int64_t>>{{128, 64}, {5, 3}, {2, 7, 33}})
    for (auto type : {torch::kDouble, torch::kFloat}) {
      SCOPED_TRACE(fmt::format("D={} {}", sizes.back(), type == torch::kDouble ? "float64" : "float32"));
      compare_op("unit rows", [](const auto& v) { return unit_rows(v[0]); }, {torch::randn(sizes, type) * 2},
                 type == torch::kDouble ? 1e-12 : 1e-6);
    }
  for (double scale : {0.0, 1e-14}) {
    SCOPED_TRACE(fmt::format("a row of norm {}", scale));
    auto x = (torch::randn({3, 8}, torch::kDouble) * torch::tensor({1.0, scale, 1.0}, torch::kDouble).unsqueeze(1))
                 .set_requires_grad(true);
    const auto y = unit_rows(x);
    EXPECT_LT(y[1].abs().max().item<double>(), 1e-1);  // divided by epsilon, not by its norm
    const auto dy = torch::randn({3, 8}, torch::kDouble);
    (y * dy).sum().backward();
    EXPECT_TRUE(torch::allclose(x.grad()[1], dy[1] / 1e-12, 1e-12, 0));
    auto ref_x = x.detach().clone().set_requires_grad(true);
    (unit_rows_reference(ref_x) * dy).sum().backward();
    EXPECT_TRUE(torch::allclose(x.grad(), ref_x.grad(), 1e-10, 0));
  }
}

// The classifier's readout (src/models/readout.h): token 0's final LayerNorm, EDM's output
// combination and the output adaLN in one pass, against libtorch's ops: the default shape with the
// skip (blocks mode), without it (end-to-end), a width no vector divides, one token and batch 1. The
// norm's weight and bias are inputs too (random, not LayerNorm's ones and zeros); c_out and c_skip
// are the noise level's constants and take no gradient.
TEST(Readout, FusedMatchesLibtorchInValuesAndGradients) {
  torch::manual_seed(15);
  struct Shape {
    int64_t n, t, d;
    bool skip;
  };
  for (const auto& s : std::vector<Shape>{{128, 18, 64, true}, {4, 17, 64, false}, {3, 5, 13, true}, {1, 1, 7, true}})
    for (auto type : {torch::kDouble, torch::kFloat}) {
      SCOPED_TRACE(fmt::format("N={} T={} D={} {} {}", s.n, s.t, s.d, s.skip ? "skip" : "no skip",
                               type == torch::kDouble ? "float64" : "float32"));
      const auto c_out = torch::rand({s.n}, type) + 0.1, c_skip = torch::rand({s.n}, type);
      torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({s.d}).eps(1e-6));
      norm->to(type);
      const auto f = [&](const std::vector<torch::Tensor>& v) {
        norm->weight = v[1];
        norm->bias = v[2];
        return readout(v[0], norm, v[3], s.skip ? ReadoutSkip{c_out, c_skip, v[4]} : ReadoutSkip{});
      };
      std::vector<torch::Tensor> in = {torch::randn({s.n, s.t, s.d}, type) * 2 + 0.5, torch::randn({s.d}, type),
                                       torch::randn({s.d}, type), torch::randn({s.n, 2 * s.d}, type)};
      if (s.skip) in.push_back(torch::randn({s.n, s.d}, type));
      compare_op("readout", f, in, type == torch::kDouble ? 1e-12 : 2e-5);
    }
}

// Cross-entropy per example (src/models/cross_entropy.h) against libtorch's: the classifier's
// batch, a 3-d input (one loss per token), two classes; with and without label smoothing; logits
// large enough that exp would overflow without the row's maximum taken out. A label out of range is
// an error, as libtorch's.
TEST(CrossEntropy, FusedMatchesLibtorchInValuesAndGradients) {
  torch::manual_seed(16);
  for (const auto& sizes : std::vector<std::vector<int64_t>>{{128, 10}, {2, 5, 7}, {3, 2}})
    for (double smoothing : {0.0, 0.1})
      for (auto type : {torch::kDouble, torch::kFloat}) {
        SCOPED_TRACE(fmt::format("K={} smoothing {} {}", sizes.back(), smoothing, type == torch::kDouble ? "float64" : "float32"));
        auto label_sizes = sizes;
        label_sizes.pop_back();
        const auto labels = torch::randint(sizes.back(), label_sizes, torch::kLong);
        compare_op("cross entropy", [&](const auto& v) { return cross_entropy(v[0], labels, smoothing); },
                   {torch::randn(sizes, type) * 40}, type == torch::kDouble ? 1e-12 : 1e-5);
      }
  EXPECT_THROW(cross_entropy(torch::randn({2, 3}), torch::tensor({0, 3}, torch::kLong)), c10::Error);
  EXPECT_THROW(cross_entropy(torch::randn({2, 3}), torch::tensor({-1, 0}, torch::kLong)), c10::Error);
}

// The kernels' exponential (util/simd.h) against std::exp over [-100, 0]: within 2 ulp from
// kExpLow up (and every result there a normal float: a subnormal costs a microcode assist), exactly 0
// below (exp_nonpositive) or e^kExpLow (exp_clamped_lanes), 0 for -inf, and NaN kept.
TEST(Simd, ExponentialMatchesStdExp) {
  using V = simd::Vec<float>;
  constexpr float kLow = simd::kExpLow;
  double worst_ulps = 0;
  for (int i = 0; i <= 100000; i += int(simd::kLanes<float>)) {
    V x;
    for (int l = 0; l < simd::kLanes<float>; ++l) x[l] = -100.0f * float(i + l) / 100000.0f;
    const V e = simd::exp_nonpositive(x), c = simd::exp_clamped_lanes(x);
    for (int l = 0; l < simd::kLanes<float>; ++l) {
      if (x[l] < kLow) {
        EXPECT_EQ(e[l], 0.0f) << x[l];
        EXPECT_NEAR(c[l], std::exp(double(kLow)), 1e-44) << x[l];
        EXPECT_GE(c[l], std::numeric_limits<float>::min()) << x[l];
        continue;
      }
      const double want = std::exp(double(x[l]));
      EXPECT_GE(e[l], std::numeric_limits<float>::min()) << x[l];
      worst_ulps = std::max(worst_ulps, std::abs(e[l] - want) / (std::nextafter(float(want), 1.0f) - float(want)));
      EXPECT_EQ(e[l], c[l]) << x[l];
    }
  }
  EXPECT_LE(worst_ulps, 2.0);
  V special{};
  special[0] = -std::numeric_limits<float>::infinity();
  special[1] = std::nanf("");
  const V e = simd::exp_nonpositive(special);
  EXPECT_EQ(e[0], 0.0f);
  EXPECT_TRUE(std::isnan(e[1]));
  EXPECT_EQ(e[2], 1.0f);
}

TEST(Modulation, NormalisesEachToken) {
  // With no modulation every token has mean 0 and variance 1 - eps-sized (LayerNorm's definition).
  auto x = torch::randn({3, 5, 64}, torch::kDouble) * 4 + 2;
  auto zero = torch::zeros({3, 1, 64}, torch::kDouble);
  const auto y = modulate(x, zero, zero);
  EXPECT_LT(y.mean(-1).abs().max().item<double>(), 1e-12);
  const auto var = y.pow(2).mean(-1);
  const auto want = x.var(-1, /*unbiased=*/false) / (x.var(-1, false) + kNormEpsilon);
  EXPECT_LT((var - want).abs().max().item<double>(), 1e-12);
}

// FlushSubnormals (util/simd.h): inside its scope a product that would be subnormal is 0 and a
// subnormal input reads as 0; after it, both are back (the thread's mode is restored).
float multiply(float a, float b) {
  volatile float x = a, y = b;  // (computed at run time, under the mode of the moment)
  return x * y;
}
TEST(Simd, FlushSubnormalsHoldsOnlyInItsScope) {
  const float tiny = std::numeric_limits<float>::min();
  {
    const simd::FlushSubnormals flush;
    EXPECT_EQ(multiply(tiny, 0.25f), 0.0f);      // the result flushed
    EXPECT_EQ(multiply(tiny / 4, 8.0f), 0.0f);   // the input read as 0
    EXPECT_EQ(multiply(tiny, 2.0f), 2 * tiny);   // normal floats as ever
  }
  EXPECT_EQ(multiply(tiny, 0.25f), tiny / 4);
  EXPECT_EQ(multiply(tiny / 4, 8.0f), 2 * tiny);
}

}  // namespace
}  // namespace blocklab
