// `blocklab bench gemm`: blocklab's GEMM (util/gemm.h) against libtorch's mm on the products of one
// transformer layer's linear layers (qkv, proj, fc1, fc2: forward, dx, dW), alternating round by
// round in one process, so that the host's drifts hit both alike.
#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "util/error.h"
#include "util/gemm.h"
#include "util/stats.h"
#include "util/system.h"
#include "util/timing.h"

namespace blocklab {
namespace {

// C [m, n] = A [m, k] B [k, n], A stored transposed when `ta` (a weight gradient's dy^T), B when
// `tb` (the forward product's W^T): how dense() calls it.
struct Product {
  std::string name;
  int64_t m, n, k;
  bool ta, tb;
};

std::vector<Product> layer_products(int64_t rows, int64_t d, int64_t mlp) {
  std::vector<Product> out;
  for (const auto& [layer, in, width] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
           {"qkv", d, 3 * d}, {"proj", d, d}, {"fc1", d, mlp * d}, {"fc2", mlp * d, d}}) {
    out.push_back({layer + " y = x W^T", rows, width, in, false, true});
    out.push_back({layer + " dx = dy W", rows, in, width, false, false});
    out.push_back({layer + " dW = dy^T x", width, in, rows, true, false});
  }
  return out;
}

// The seconds one call of f takes: the mean of `reps` calls back to back, or with `cold`, of a few
// calls each after writing a buffer larger than the last-level cache (the operands are then read
// from memory, as a training step's products read what other layers pushed out of the caches).
template <typename F>
double seconds_per_call(F&& f, int reps, bool cold) {
  if (!cold) return seconds_of(f, reps) / reps;
  static std::vector<float> flush(size_t(64) << 20 >> 2);  // 64 MiB
  constexpr int kColdCalls = 4;
  double total = 0;
  for (int i = 0; i < kColdCalls; ++i) {
    for (size_t j = 0; j < flush.size(); j += 16) flush[j] += 1.0f;  // one write per 64-byte line
    total += seconds_of(f);
  }
  return total / kColdCalls;
}

}  // namespace

int cmd_bench_gemm(const BenchGemmArgs& a) {
  if (!gemm::available()) throw UserError("bench gemm: this CPU has no AVX-512, so blocklab uses libtorch's mm");
  set_threads(a.threads);
  torch::NoGradGuard no_grad;
  fmt::print("bench gemm: one layer's products, rows={} d={} MLP {}x, {} thread(s), BLAS {}; {} rounds, "
             "blocklab's GEMM and libtorch's mm alternating{}\n",
             a.rows, a.hidden, a.mlp_ratio, a.threads, blas_core(), a.rounds,
             a.cold ? "; every call with cold caches (--cold)" : "");
  fmt::print("{:<16} {:>16} {:>10} {:>10} {:>8} {:>13}\n", "product", "m x n x k", "blocklab", "libtorch", "ratio",
             "rounds' range");
  std::vector<double> ratios;
  double time_ours = 0, time_theirs = 0;
  for (const auto& p : layer_products(a.rows, a.hidden, a.mlp_ratio)) {
    const auto as = p.ta ? torch::randn({p.k, p.m}) : torch::randn({p.m, p.k});
    const auto bs = p.tb ? torch::randn({p.n, p.k}) : torch::randn({p.k, p.n});
    auto c = torch::empty({p.m, p.n});
    const auto at = p.ta ? as.t() : as, bt = p.tb ? bs.t() : bs;
    const auto ours = [&] {
      gemm::sgemm(p.m, p.n, p.k, {as.data_ptr<float>(), as.size(1), p.ta}, {bs.data_ptr<float>(), bs.size(1), p.tb},
                  nullptr, c.data_ptr<float>(), p.n);
    };
    const auto theirs = [&] { torch::mm_out(c, at, bt); };
    const double flop = 2.0 * double(p.m) * double(p.n) * double(p.k);
    const int reps = std::max(2, int(2e8 / flop));  // ~2-4 ms per arm and round
    ours();
    theirs();
    std::vector<double> t_ours, t_theirs, r;
    for (int round = 0; round < a.rounds; ++round) {
      t_ours.push_back(seconds_per_call(ours, reps, a.cold));
      t_theirs.push_back(seconds_per_call(theirs, reps, a.cold));
      r.push_back(t_ours.back() / t_theirs.back());
    }
    const double mo = median(t_ours), mt = median(t_theirs), mr = median(r);
    time_ours += mo;
    time_theirs += mt;
    ratios.push_back(mr);
    fmt::print("{:<16} {:>16} {:>7.1f} GF {:>7.1f} GF {:>8.3f} {:>6.3f}-{:.3f}\n", p.name,
               fmt::format("{}x{}x{}", p.m, p.n, p.k), flop / mo / 1e9, flop / mt / 1e9, mr,
               *std::min_element(r.begin(), r.end()), *std::max_element(r.begin(), r.end()));
  }
  fmt::print("all twelve: {:.3f} of libtorch's time (sum of medians: {:.2f} ms against {:.2f} ms)\n",
             time_ours / time_theirs, 1e3 * time_ours, 1e3 * time_theirs);
  fmt::print("ratio = median over rounds of blocklab's time / libtorch's in the same round; GF = GFLOP/s\n");
  return 0;
}

}  // namespace blocklab
