// `blocklab bench attention`: the fused attention's two kernels (one head's queries along the
// vector lanes; (sample, head) pairs along the lanes) and libtorch's unfused ops, forward and
// backward, on the attention shapes of the recipes here, alternating round by round in one
// process so that the host's drifts hit all three alike.
#include <algorithm>

#include <fmt/format.h>

#include "cli/commands.h"
#include "models/attention.h"
#include "util/simd.h"
#include "util/stats.h"
#include "util/system.h"
#include "util/timing.h"

namespace blocklab {
namespace {

struct AttentionShape {
  std::string name;
  int64_t n, h, t, d;
  bool causal;
};

// The recipes' attention calls (configs/): batch, heads, tokens, head width.
std::vector<AttentionShape> recipe_shapes() {
  return {{"ViT default, e2e", 128, 4, 17, 16, false},
          {"ViT default, block", 128, 4, 18, 16, false},
          {"ViT L=12 d=256, block", 128, 4, 18, 64, false},
          {"DiT fmnist", 128, 4, 49, 24, false},
          {"MDM fortunes", 32, 4, 128, 32, false},
          {"AR fortunes, causal", 32, 4, 256, 32, true}};
}

enum class AttentionArm { PerHead, Pairs, Libtorch };

// One forward and one backward (the gradients of q, k and v for a given dO), in seconds.
struct PassTimes {
  double forward, backward;
};

PassTimes time_arm(AttentionArm arm, const std::vector<torch::Tensor>& in, const torch::Tensor& mask, const torch::Tensor& dout,
                int reps) {
  simd::set_fused_kernels(arm != AttentionArm::Libtorch);
  set_attention_kernel(arm == AttentionArm::Pairs ? AttentionKernel::PairLanes : AttentionKernel::PerHead);
  PassTimes t{0, 0};
  for (int r = 0; r < reps; ++r) {
    torch::Tensor out;
    t.forward += seconds_of([&] { out = attention(in[0], in[1], in[2], mask); });
    t.backward += seconds_of([&] { torch::autograd::grad({out}, in, {dout}); });
  }
  simd::set_fused_kernels(true);
  set_attention_kernel(AttentionKernel::Auto);
  return {t.forward / reps, t.backward / reps};
}

}  // namespace

int cmd_bench_attention(const BenchAttentionArgs& a) {
  set_threads(a.threads);
  fmt::print("bench attention: float32, {} thread(s), kernels {}; {} rounds, the three arms alternating; "
             "ms per call, forward + backward (forward / backward)\n",
             a.threads, simd::kernel_isa(), a.rounds);
  fmt::print("{:<24} {:>16} {:>20} {:>20} {:>20} {:>13} {:>7}\n", "shape", "N H T D", "one head at a time",
             "pairs along lanes", "libtorch's ops", "pairs / head", "auto");
  for (const auto& s : recipe_shapes()) {
    torch::manual_seed(0);
    auto packed = torch::randn({s.n, s.t, 3, s.h, s.d}).permute({2, 0, 3, 1, 4});  // as the layer's projection
    std::vector<torch::Tensor> in;
    for (int i = 0; i < 3; ++i) in.push_back(packed[i].detach().clone().set_requires_grad(true));
    const auto mask = s.causal ? torch::full({s.t, s.t}, -std::numeric_limits<float>::infinity()).triu(1) : torch::Tensor();
    const auto dout = torch::randn({s.n, s.h, s.t, s.d});
    const double flop = 4.0 * double(s.n * s.h) * double(s.t * s.t * s.d);  // two products forward
    const int reps = std::max(1, int(2e7 / flop));                            // ~2-10 ms per arm and round
    std::vector<double> ms[3], fwd[3], bwd[3], ratio;
    for (int arm = 0; arm < 3; ++arm) time_arm(AttentionArm(arm), in, mask, dout, 1);  // warm-up
    for (int round = 0; round < a.rounds; ++round) {
      for (int arm = 0; arm < 3; ++arm) {
        const auto t = time_arm(AttentionArm(arm), in, mask, dout, reps);
        fwd[arm].push_back(1e3 * t.forward);
        bwd[arm].push_back(1e3 * t.backward);
        ms[arm].push_back(1e3 * (t.forward + t.backward));
      }
      ratio.push_back(ms[1].back() / ms[0].back());
    }
    const auto cell = [&](int arm) {
      return fmt::format("{:.3f} ({:.2f}/{:.2f})", median(ms[arm]), median(fwd[arm]), median(bwd[arm]));
    };
    fmt::print("{:<24} {:>16} {:>20} {:>20} {:>20} {:>5.3f} {:.2f}-{:.2f} {:>7}\n", s.name,
               fmt::format("{} {} {} {}", s.n, s.h, s.t, s.d), cell(0), cell(1), cell(2), median(ratio),
               *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()),
               attention_kernel_for(s.t, s.d, torch::kFloat) == AttentionKernel::PairLanes ? "pairs" : "head");
  }
  fmt::print("pairs / head: median over rounds of the pairs' time / one head's in the same round, and the "
             "rounds' range; auto: the kernel attention() takes for the shape\n");
  return 0;
}

}  // namespace blocklab
