#include "profile/linear.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>

#include <fmt/format.h>
#include <torch/torch.h>

#include "util/error.h"
#include "util/stats.h"

namespace blocklab {

namespace {

using Clock = std::chrono::steady_clock;

// Median µs of `timed` over repeated calls; `prepare` runs untimed before each.
double time_us(const std::function<void()>& prepare, const std::function<void()>& timed, double seconds) {
  // Warm-up: lazy initialization (the autograd engine's first backward, BLAS buffers) and caches,
  // at least 3 calls and a fifth of the budget.
  const auto warm_end = Clock::now() + std::chrono::duration<double>(seconds / 5);
  for (int i = 0; i < 3 || (Clock::now() < warm_end && i < 2000); ++i) {
    prepare();
    timed();
  }
  std::vector<double> us;
  const auto t_end = Clock::now() + std::chrono::duration<double>(seconds);
  while (us.size() < 3 || (Clock::now() < t_end && us.size() < 20000)) {
    prepare();
    const auto t0 = Clock::now();
    timed();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return median(us);
}

struct Problem {
  torch::Tensor x, w, b, gy, tmp;
  Problem(int64_t batch, int64_t size) {
    x = torch::randn({batch, size}).requires_grad_(true);
    w = (torch::randn({size, size}) / std::sqrt(double(size))).requires_grad_(true);
    b = torch::randn({size}).requires_grad_(true);
    gy = torch::randn({batch, size});
    torch::NoGradGuard no_grad;
    tmp = torch::randn({batch, size});
  }
  void zero_grads() {
    for (auto* t : {&x, &w, &b}) t->mutable_grad().reset();
  }
};

struct Variant {
  std::string what;
  // FLOPs and minimal bytes for x [B, n], W [n, n] (4-byte floats).
  std::function<double(double B, double n)> flops, bytes;
  // Times one call on the problem.
  std::function<double(Problem&, double seconds)> time;
};

std::vector<Variant> variants() {
  auto fwd = [](std::function<torch::Tensor(Problem&)> f) {
    return [f](Problem& p, double s) {
      torch::Tensor y;
      return time_us([&] { y = torch::Tensor(); }, [&] { y = f(p); }, s);
    };
  };
  auto bwd = [](std::function<torch::Tensor(Problem&)> f) {
    return [f](Problem& p, double s) {
      torch::Tensor y;
      return time_us(
          [&] {
            p.zero_grads();
            y = f(p);
          },
          [&] { y.backward(p.gy); }, s);
    };
  };
  auto separate = [](Problem& p) { return torch::matmul(p.x, p.w) + p.b; };
  auto fused = [](Problem& p) { return torch::addmm(p.b, p.x, p.w); };
  auto bwd_flops = [](double B, double n) { return 4 * B * n * n + B * n; };  // dX, dW, db
  auto bwd_bytes = [](double B, double n) { return 4 * (3 * B * n + 2 * n * n + n); };
  return {
      {"fwd matmul", [](double B, double n) { return 2 * B * n * n; },
       [](double B, double n) { return 4 * (2 * B * n + n * n); }, fwd([](Problem& p) { return torch::matmul(p.x, p.w); })},
      {"fwd add", [](double B, double n) { return B * n; }, [](double B, double n) { return 4 * (2 * B * n + n); },
       fwd([](Problem& p) { return p.tmp + p.b; })},
      {"fwd matmul + add", [](double B, double n) { return 2 * B * n * n + B * n; },
       [](double B, double n) { return 4 * (4 * B * n + n * n + n); }, fwd(separate)},
      {"fwd addmm (fused)", [](double B, double n) { return 2 * B * n * n + B * n; },
       [](double B, double n) { return 4 * (2 * B * n + n * n + n); }, fwd(fused)},
      {"bwd matmul + add", bwd_flops, bwd_bytes, bwd(separate)},
      {"bwd addmm (fused)", bwd_flops, bwd_bytes, bwd(fused)},
  };
}

}  // namespace

std::string LinearRow::limit(const PeakEntry& peak) const {
  const double t_comp = peak.flops_roof() > 0 ? flops / peak.flops_roof() / 1e3 : 0;
  const double t_mem = peak.bandwidth_roof() > 0 ? bytes / peak.bandwidth_roof() / 1e3 : 0;
  if (fixed_us >= t_comp && fixed_us >= t_mem) return "overhead";
  return t_mem >= t_comp ? "memory" : "compute";
}

nlohmann::json LinearRow::to_json(const PeakEntry& peak) const {
  return {{"batch", batch},         {"size", size},          {"what", what},   {"us", us},
          {"fixed_us", fixed_us},   {"flops", flops},        {"bytes", bytes}, {"intensity", intensity()},
          {"gflops", gflops()},     {"gbs", gbs()},          {"limit", limit(peak)}};
}

std::vector<LinearRow> linear_walkthrough(const std::vector<int64_t>& sizes, const std::vector<int64_t>& batches_in,
                                          double seconds) {
  for (auto s : sizes)
    if (s < 1) throw UserError(fmt::format("--sizes: {} is not a positive size", s));
  for (auto b : batches_in)
    if (b < 0) throw UserError(fmt::format("--batch: {} is not a positive batch size", b));
  const auto batches = batches_in.empty() ? std::vector<int64_t>{0} : batches_in;
  torch::manual_seed(0);
  const auto vs = variants();
  // The fixed cost of each variant: the same calls on a 1x1 problem.
  std::map<std::string, double> fixed;
  {
    Problem tiny(1, 1);
    for (const auto& v : vs) fixed[v.what] = v.time(tiny, seconds);
  }
  std::vector<LinearRow> rows;
  for (int64_t size : sizes) {
    for (int64_t b : batches) {
      const int64_t batch = b > 0 ? b : std::min<int64_t>(size, 1024);
      Problem p(batch, size);
      for (const auto& v : vs) {
        LinearRow r;
        r.batch = batch;
        r.size = size;
        r.what = v.what;
        r.flops = v.flops(double(batch), double(size));
        r.bytes = v.bytes(double(batch), double(size));
        r.fixed_us = fixed[v.what];
        r.us = v.time(p, seconds);
        rows.push_back(r);
      }
    }
  }
  return rows;
}

void print_linear(const std::vector<LinearRow>& rows, const PeakEntry& peak, const std::string& peak_source) {
  fmt::print("y = x W + b, x: [batch, n], W: [n, n], fp32, {} thread{}\n", peak.threads, peak.threads == 1 ? "" : "s");
  if (peak.flops_roof() > 0)
    fmt::print("roofline: FMA roof {:.1f} GFLOP/s ({}), GEMM peak {:.1f} GFLOP/s, bandwidth {:.1f} GB/s  [{}]\n",
               peak.flops_roof(), peak.fma_isa, peak.gemm_gflops, peak.bandwidth_roof(), peak_source);
  fmt::print("FLOP/B: FLOPs per byte of minimal traffic; fixed: the same calls on a 1x1 problem; limit: the largest of\n"
             "fixed, bytes / bandwidth and FLOPs / FMA roof\n\n");
  fmt::print("{:>5} {:>5} {:<19} {:>10} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9}\n", "n", "batch", "", "us/call",
             "FLOP/B", "GFLOP/s", "GB/s", "%roof", "%GEMM", "fixed us", "limit");
  int64_t last = -1;
  for (const auto& r : rows) {
    if (last >= 0 && r.size != last) fmt::print("\n");
    last = r.size;
    fmt::print("{:>5} {:>5} {:<19} {:>10.2f} {:>8.2f} {:>8.1f} {:>8.1f} {:>7.1f} {:>7.1f} {:>8.2f} {:>9}\n", r.size,
               r.batch, r.what, r.us, r.intensity(), r.gflops(), r.gbs(),
               peak.flops_roof() > 0 ? 100 * r.gflops() / peak.flops_roof() : 0.0,
               peak.gemm_gflops > 0 ? 100 * r.gflops() / peak.gemm_gflops : 0.0, r.fixed_us, r.limit(peak));
  }
  // The fusion's gain per size: what the separate add costs on top of the matrix product.
  fmt::print("\nfused addmm vs matmul + add (forward):");
  std::map<std::pair<int64_t, int64_t>, std::pair<double, double>> pairs;
  for (const auto& r : rows) {
    if (r.what == "fwd matmul + add") pairs[{r.size, r.batch}].first = r.us;
    if (r.what == "fwd addmm (fused)") pairs[{r.size, r.batch}].second = r.us;
  }
  for (const auto& [k, v] : pairs)
    if (v.first > 0 && v.second > 0) fmt::print("  n={} {:.2f}x", k.first, v.first / v.second);
  fmt::print("\n");
}

}  // namespace blocklab
