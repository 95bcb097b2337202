#include "profile/peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <torch/torch.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BLOCKLAB_X86 1
#endif

#include "io/atomic_file.h"
#include "util/error.h"
#include "util/gemm.h"
#include "util/simd.h"
#include "util/system.h"
#include "util/timing.h"

namespace blocklab {

namespace {

using Clock = std::chrono::steady_clock;

// Runs fn(worker) on `threads` workers (the calling thread is worker 0), all released together;
// returns the seconds from the release until the last worker finished.
double run_parallel(int threads, const std::function<void(int)>& fn) {
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  auto wait_all = [&] {
    ready.fetch_add(1);
    while (ready.load() < threads) std::this_thread::yield();
  };
  for (int w = 1; w < threads; ++w) pool.emplace_back([&, w] {
    wait_all();
    fn(w);
  });
  wait_all();
  const auto t0 = Clock::now();
  fn(0);
  for (auto& t : pool) t.join();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- FMA loops: 12 independent chains x = x * a + b, so the FMA units, not the latency of one
// chain, bound the rate. Explicit intrinsics in functions compiled for the ISA (the rest of the
// program stays baseline x86-64); no relaxed floating-point flags needed, nothing to reassociate.
constexpr int kChains = 12;

#ifdef BLOCKLAB_X86
__attribute__((target("avx2,fma"))) float fma_avx2(int64_t iters) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  __m256 x[kChains];
  for (int c = 0; c < kChains; ++c) x[c] = _mm256_set1_ps(0.5f + 0.01f * float(c));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) x[c] = _mm256_fmadd_ps(x[c], a, b);
  }
  __m256 s = x[0];
  for (int c = 1; c < kChains; ++c) s = _mm256_add_ps(s, x[c]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  float total = 0;
  for (float v : out) total += v;
  return total;
}

__attribute__((target("avx512f"))) float fma_avx512(int64_t iters) {
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  __m512 x[kChains];
  for (int c = 0; c < kChains; ++c) x[c] = _mm512_set1_ps(0.5f + 0.01f * float(c));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) x[c] = _mm512_fmadd_ps(x[c], a, b);
  }
  __m512 s = x[0];
  for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, x[c]);
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  float total = 0;
  for (float v : out) total += v;
  return total;
}
#endif

// Anywhere else: GCC vector extensions, multiply then add (2 FLOPs per lane either way).
typedef float v4sf __attribute__((vector_size(16)));
float fma_generic(int64_t iters) {
  const v4sf a = {0.999999f, 0.999999f, 0.999999f, 0.999999f}, b = {1e-6f, 1e-6f, 1e-6f, 1e-6f};
  v4sf x[kChains];
  for (int c = 0; c < kChains; ++c) x[c] = a * (0.5f + 0.01f * float(c));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) x[c] = x[c] * a + b;
  }
  float total = 0;
  for (int c = 0; c < kChains; ++c)
    for (int l = 0; l < 4; ++l) total += x[c][l];
  return total;
}

struct FmaKernel {
  std::string isa;
  int lanes;
  float (*fn)(int64_t);
};

std::vector<FmaKernel> fma_kernels() {
  std::vector<FmaKernel> k;
#ifdef BLOCKLAB_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) k.push_back({"avx512", 16, fma_avx512});
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) k.push_back({"avx2", 8, fma_avx2});
#endif
  k.push_back({"generic", 4, fma_generic});
  return k;
}

volatile float g_sink;  // keeps the loops' results alive

}  // namespace

double fma_loop_gflops(int threads, double seconds, std::string isa, std::string* isa_used) {
  const auto kernels = fma_kernels();
  auto it = isa.empty() ? kernels.begin()
                        : std::find_if(kernels.begin(), kernels.end(), [&](const FmaKernel& k) { return k.isa == isa; });
  if (it == kernels.end()) return 0;
  const auto& k = *it;
  if (isa_used) *isa_used = k.isa;
  // Calibrate on one thread, then run every thread for about `seconds`.
  int64_t iters = 1 << 16;
  double t = 0;
  while ((t = run_parallel(1, [&](int) { g_sink = k.fn(iters); })) < 0.02) iters *= 4;
  iters = std::max<int64_t>(1, int64_t(double(iters) * seconds / t));
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double s = run_parallel(threads, [&](int) { g_sink = k.fn(iters); });
    best = std::max(best, double(iters) * kChains * k.lanes * 2 * threads / s / 1e9);
  }
  return best;
}

double gemm_kernel_gflops(const std::string& kernel, int threads, int64_t n, int reps) {
  const bool own = kernel == kBlocklabGemm;
  if (own && !gemm::available()) return 0;
  const int before = at::get_num_threads();
  set_threads(threads);
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
  const auto product = [&] {
    if (own)
      gemm::sgemm(n, n, n, {a.data_ptr<float>(), n}, {b.data_ptr<float>(), n}, nullptr, c.data_ptr<float>(), n);
    else
      torch::mm_out(c, a, b);
  };
  product();  // warm-up: buffers, page faults
  double best = 0;
  for (int r = 0; r < reps; ++r) best = std::max(best, 2.0 * double(n) * double(n) * double(n) / seconds_of(product) / 1e9);
  set_threads(before);
  return best;
}

GemmPeak gemm_peak(int threads, int64_t n, int reps) {
  GemmPeak p;
  p.mm_gflops = p.gflops = gemm_kernel_gflops(kLibtorchMm, threads, n, reps);
  p.kernel = kLibtorchMm;
  if (simd::fused_kernels_enabled()) {
    const double own = gemm_kernel_gflops(kBlocklabGemm, threads, n, reps);
    if (own > p.gflops) p = {own, p.mm_gflops, kBlocklabGemm};
  }
  return p;
}

std::pair<double, double> stream_gbs(int threads, double mib, int reps) {
  const auto n = int64_t(mib * double(1 << 20) / sizeof(float));
  std::unique_ptr<float[]> a(new float[size_t(n)]), b(new float[size_t(n)]), c(new float[size_t(n)]);
  auto chunk = [&](int w) {
    const int64_t per = (n + threads - 1) / threads;
    return std::make_pair(std::min(n, per * w), std::min(n, per * (w + 1)));
  };
  run_parallel(threads, [&](int w) {  // first touch by the worker that streams the chunk
    const auto [lo, hi] = chunk(w);
    for (int64_t i = lo; i < hi; ++i) a[i] = 0.f, b[i] = 1.f, c[i] = 2.f;
  });
  double copy = 0, triad = 0;
  const float s = 3.f;
  for (int r = 0; r < reps; ++r) {
    const double tc = run_parallel(threads, [&](int w) {
      const auto [lo, hi] = chunk(w);
      float* __restrict dst = a.get();
      const float* __restrict src = b.get();
      for (int64_t i = lo; i < hi; ++i) dst[i] = src[i];
    });
    copy = std::max(copy, 2.0 * double(n) * sizeof(float) / tc / 1e9);
    const double tt = run_parallel(threads, [&](int w) {
      const auto [lo, hi] = chunk(w);
      float* __restrict dst = a.get();
      const float* __restrict x = b.get();
      const float* __restrict y = c.get();
      for (int64_t i = lo; i < hi; ++i) dst[i] = x[i] + s * y[i];
    });
    triad = std::max(triad, 3.0 * double(n) * sizeof(float) / tt / 1e9);
  }
  g_sink = a[size_t(n / 2)];
  return {copy, triad};
}

PeakEntry measure_peak(int threads, bool quick) {
  PeakEntry e;
  e.threads = threads;
  e.fma_gflops = fma_loop_gflops(threads, quick ? 0.1 : 0.4, "", &e.fma_isa);
  e.fma_avx2_gflops = e.fma_isa == "avx2" ? e.fma_gflops : fma_loop_gflops(threads, quick ? 0.1 : 0.4, "avx2");
  e.gemm_n = quick ? 1024 : 2048;
  const auto gemm = gemm_peak(threads, e.gemm_n, quick ? 3 : 5);
  e.gemm_gflops = gemm.gflops;
  e.mm_gflops = gemm.mm_gflops;
  e.gemm_kernel = gemm.kernel;
  e.stream_mib = quick ? 64 : 256;
  std::tie(e.copy_gbs, e.triad_gbs) = stream_gbs(threads, e.stream_mib, quick ? 3 : 5);
  return e;
}

nlohmann::json PeakEntry::to_json() const {
  return {{"threads", threads},
          {"gemm_gflops", gemm_gflops},
          {"gemm_kernel", gemm_kernel},
          {"mm_gflops", mm_gflops},
          {"gemm_n", gemm_n},
          {"fma_gflops", fma_gflops},
          {"fma_isa", fma_isa},
          {"fma_avx2_gflops", fma_avx2_gflops},
          {"copy_gbs", copy_gbs},
          {"triad_gbs", triad_gbs},
          {"stream_mib", stream_mib}};
}

PeakEntry PeakEntry::from_json(const nlohmann::json& j) {
  PeakEntry e;
  e.threads = j.at("threads").get<int>();
  e.gemm_gflops = j.at("gemm_gflops").get<double>();
  e.gemm_kernel = j.value("gemm_kernel", std::string());
  e.mm_gflops = j.value("mm_gflops", e.gemm_gflops);
  e.gemm_n = j.value("gemm_n", int64_t(0));
  e.fma_gflops = j.at("fma_gflops").get<double>();
  e.fma_isa = j.value("fma_isa", std::string());
  e.fma_avx2_gflops = j.value("fma_avx2_gflops", 0.0);
  e.copy_gbs = j.at("copy_gbs").get<double>();
  e.triad_gbs = j.at("triad_gbs").get<double>();
  e.stream_mib = j.value("stream_mib", 0.0);
  return e;
}

const PeakEntry* PeakTable::for_threads(int threads) const {
  for (const auto& e : entries)
    if (e.threads == threads) return &e;
  return nullptr;
}

nlohmann::json PeakTable::to_json() const {
  nlohmann::json j = {{"blas_core", blas_core}, {"measured_at", measured_at}, {"entries", nlohmann::json::array()}};
  for (const auto& e : entries) j["entries"].push_back(e.to_json());
  return j;
}

PeakTable PeakTable::from_json(const nlohmann::json& j, const std::string& source) {
  try {
    PeakTable t;
    t.blas_core = j.value("blas_core", std::string());
    t.measured_at = j.value("measured_at", std::string());
    for (const auto& e : j.at("entries")) t.entries.push_back(PeakEntry::from_json(e));
    return t;
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("{}: not a peak file of `blocklab bench peak` ({})", source, e.what()));
  }
}

std::string default_peak_path() {
  if (const char* p = std::getenv("BLOCKLAB_PEAK"); p && *p) return p;
  return cache_dir() + "/peak.json";
}

PeakTable load_peak(const std::string& path) {
  const std::string text = read_file(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("{}: not valid JSON ({})", path, e.what()));
  }
  return PeakTable::from_json(j, path);
}

void save_peak(const PeakTable& table, const std::string& path) {
  const auto dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) throw UserError(fmt::format("{}: cannot create directory: {}", dir.string(), ec.message()));
  write_file_atomic(path, table.to_json().dump(2) + "\n");
}

PeakEntry resolve_peak(int threads, const std::string& path_in, std::string* source) {
  const std::string path = path_in.empty() ? default_peak_path() : path_in;
  std::string why;
  if (std::filesystem::exists(path)) {
    const auto table = load_peak(path);
    const auto* e = table.for_threads(threads);
    if (e && e->gemm_kernel.empty()) {  // written before blocklab had its own GEMM: its GEMM peak is libtorch's
      why = fmt::format("{} predates blocklab's GEMM", path);
    } else if (e) {
      std::string note = fmt::format("{} (measured {})", path, table.measured_at);
      const auto core = blas_core();
      if (!table.blas_core.empty() && table.blas_core != core)
        note += fmt::format("; BLAS core then {}, now {}: re-run `blocklab bench peak`", table.blas_core, core);
      if (source) *source = note;
      return *e;
    } else {
      why = fmt::format("{} has no entry for {} thread(s)", path, threads);
    }
  } else {
    why = fmt::format("no peak file at {}", path);
  }
  if (!path_in.empty() && !std::filesystem::exists(path)) throw UserError(fmt::format("{}: no such peak file", path));
  auto e = measure_peak(threads, /*quick=*/true);
  if (source) *source = why + ": measured a quick peak now (`blocklab bench peak` measures a careful one)";
  return e;
}

}  // namespace blocklab
