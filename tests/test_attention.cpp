// The fused CPU attention (src/models/attention.h) against libtorch's unfused ops: values and
// gradients in float64 (to rounding) and float32 (tolerances below), over odd sequence lengths,
// head widths that are not multiples of a vector, queries and keys of different lengths, masks,
// batch 1, and inputs laid out as the layers' packed projection leaves them.
#include "test_util.h"

#include <fmt/format.h>

#include "models/attention.h"
#include "util/simd.h"

namespace blocklab {
namespace {

struct Shape {
  int64_t n, h, tq, tk, d;
};

// An additive mask [tq, tk] with -inf where a query may not look: causal over the last tq keys
// (every query sees at least one key), or a random pattern with the diagonal kept.
torch::Tensor make_mask(const Shape& s, bool causal, torch::ScalarType type) {
  auto allowed = torch::ones({s.tq, s.tk}, torch::kBool);
  if (causal) {
    allowed = torch::arange(s.tk).unsqueeze(0) <= (torch::arange(s.tq) + (s.tk - s.tq)).unsqueeze(1);
  } else {
    allowed = torch::rand({s.tq, s.tk}) < 0.6;
    for (int64_t i = 0; i < std::min(s.tq, s.tk); ++i) allowed[i][i] = true;
    allowed.select(1, 0).fill_(true);
  }
  return torch::zeros({s.tq, s.tk}, type).masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
}

// q, k, v as the layer makes them: views into one packed [N, T, 3, H, D] projection (when tq ==
// tk), else separate contiguous tensors.
std::vector<torch::Tensor> inputs(const Shape& s, torch::ScalarType type) {
  if (s.tq == s.tk) {
    auto packed = torch::randn({s.n, s.tq, 3, s.h, s.d}, type).permute({2, 0, 3, 1, 4});
    return {packed[0], packed[1], packed[2]};
  }
  return {torch::randn({s.n, s.h, s.tq, s.d}, type), torch::randn({s.n, s.h, s.tk, s.d}, type),
          torch::randn({s.n, s.h, s.tk, s.d}, type)};
}

double max_relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item<double>();
}

void compare(const Shape& s, int masking, torch::ScalarType type, double tolerance) {
  SCOPED_TRACE(fmt::format("N={} H={} Tq={} Tk={} D={} mask={} {}", s.n, s.h, s.tq, s.tk, s.d, masking,
                           type == torch::kDouble ? "float64" : "float32"));
  auto raw = inputs(s, type);
  const auto mask = masking == 0 ? torch::Tensor() : make_mask(s, masking == 1, type);
  std::vector<torch::Tensor> fused_in, ref_in;
  for (const auto& t : raw) {
    fused_in.push_back(t.detach().clone().set_requires_grad(true));
    ref_in.push_back(t.detach().clone().set_requires_grad(true));
  }
  const auto out = attention(fused_in[0], fused_in[1], fused_in[2], mask);
  const auto ref = attention_reference(ref_in[0], ref_in[1], ref_in[2], mask);
  ASSERT_EQ(out.sizes(), ref.sizes());
  EXPECT_LT(max_relative_error(out, ref), tolerance) << "forward";
  const auto upstream = torch::randn(ref.sizes(), type);
  (out * upstream).sum().backward();
  (ref * upstream).sum().backward();
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i) EXPECT_LT(max_relative_error(fused_in[size_t(i)].grad(), ref_in[size_t(i)].grad()), tolerance) << names[i];
  // Without autograd the kernel gives the same values.
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(attention(raw[0], raw[1], raw[2], mask), out.detach()));
}

TEST(Attention, FusedMatchesLibtorchInValuesAndGradients) {
  torch::manual_seed(7);
  const std::vector<Shape> shapes = {
      {1, 1, 1, 1, 1},      // the smallest
      {2, 4, 18, 18, 16},   // the ViT's (16 patches, class and label tokens)
      {1, 3, 7, 7, 5},      // batch 1, odd length, a head width no vector divides
      {3, 2, 17, 17, 33},   // widths just past a vector
      {2, 2, 1, 9, 12},     // one query against cached keys (generation)
      {2, 3, 6, 11, 24},    // more keys than queries
      {1, 2, 64, 64, 32},   // a longer sequence
      {3, 7, 18, 18, 64},   // pairs filling more than one vector of pairs, the last group part-empty
  };
  // Both kernels on every shape: one head's queries along the lanes, and (sample, head) pairs.
  for (auto kernel : {AttentionKernel::PerHead, AttentionKernel::PairLanes}) {
    SCOPED_TRACE(kernel == AttentionKernel::PerHead ? "one head at a time" : "pairs along the lanes");
    set_attention_kernel(kernel);
    for (const auto& s : shapes)
      for (int masking : {0, 1, 2}) {
        compare(s, masking, torch::kDouble, 1e-12);
        compare(s, masking, torch::kFloat, 2e-5);
        if (!simd::has_avx512()) continue;
        simd::set_wide_vectors(false);  // float32 in Vec's 8 lanes, as on a CPU without AVX-512
        compare(s, masking, torch::kFloat, 2e-5);
        simd::set_wide_vectors(true);
      }
  }
  set_attention_kernel(AttentionKernel::Auto);
}

// The padding of the saved probabilities follows the lanes: a backward after the lanes changed
// is refused, naming the switch, rather than reading P wrongly.
TEST(Attention, BackwardRefusesOtherLanesThanItsForward) {
  if (!simd::has_avx512()) {
    EXPECT_FALSE(simd::wide_vectors());
    return;
  }
  torch::manual_seed(9);
  auto q = torch::randn({1, 2, 5, 16}).set_requires_grad(true);
  const auto out = attention(q, q, q);
  simd::set_wide_vectors(false);
  try {
    out.sum().backward();
    ADD_FAILURE() << "backward ran with other lanes than its forward";
  } catch (const c10::Error& e) {
    EXPECT_TRUE(test::Contains(e.what_without_backtrace(), "set_wide_vectors"));
  }
  simd::set_wide_vectors(true);
}

TEST(Attention, SwitchedOffItIsLibtorchsPath) {
  torch::manual_seed(8);
  const Shape s{2, 2, 5, 5, 8};
  const auto in = inputs(s, torch::kFloat);
  simd::set_fused_kernels(false);
  const auto off = attention(in[0], in[1], in[2]);
  simd::set_fused_kernels(true);
  EXPECT_TRUE(torch::equal(off, attention_reference(in[0], in[1], in[2])));
  EXPECT_TRUE(simd::fused_kernels_enabled());
  EXPECT_FALSE(simd::kernel_isa().empty());
}

}  // namespace
}  // namespace blocklab
