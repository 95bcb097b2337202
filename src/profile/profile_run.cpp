#include "profile/profile_run.h"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "io/run_dir.h"
#include "profile/collector.h"
#include "profile/range.h"
#include "train/synthetic.h"
#include "util/error.h"
#include "util/system.h"
#include "util/timing.h"
#include "util/stats.h"

namespace blocklab {

namespace {

// Three rounds (of B block steps, or 3 end-to-end): every block has run and has Adam state, and the
// allocator has cached the memory of every tensor a step makes (the first steps fault fresh pages
// in, and a step profiled among them took up to 2x the others).
int steady_state_warmup(const Config& cfg) { return 3 * (cfg.blocks_mode() ? cfg.model.blocks : 1); }
int warmup_steps(const ProfileOptions& o) { return o.warmup >= 0 ? o.warmup : steady_state_warmup(o.cfg); }

std::string truncate(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(0, n - 3) + "..."; }

// The profiled steps' FLOPs per step over the unprofiled rounds' times: the median round's step
// time, and the median of the rounds' MFU against the GEMM peaks measured on either side of each
// (the first round's peak before it is the one after the profiled steps, `first_before`).
Utilization unprofiled_utilization(const Utilization& profiled, const std::vector<UnprofiledRound>& rounds,
                                   double first_before, int steps_per_round, const PeakEntry& peak) {
  Utilization u = profiled;
  u.what = "unprofiled";
  u.steps = int(rounds.size()) * steps_per_round;
  std::vector<double> ms, around;
  double before = first_before;
  for (const auto& round : rounds) {
    ms.push_back(round.ms_per_step);
    if (before > 0 && round.gemm_after > 0) {
      Utilization r = u;
      r.ms_per_step = round.ms_per_step;
      set_rates(r, 0, 0, (before + round.gemm_after) / 2);
      around.push_back(r.mfu_gemm_around);
    }
    before = round.gemm_after;
  }
  u.ms_per_step = median(ms);
  set_rates(u, peak.flops_roof(), peak.gemm_gflops, 0);
  u.mfu_gemm_around = median(around);
  return u;
}

}  // namespace

ProfileResult run_profile(const ProfileOptions& o) {
  if (o.steps < 1) throw UserError("--steps must be at least 1");
  SyntheticTraining train(o.cfg);
  ProfileResult r;
  r.cuda = train.cuda() && OpCollector::cuda_available();
  OpCollector collector({/*shapes=*/true, /*cuda_events=*/r.cuda});  // before the warm-up: its buffer too
  // The same kernel as the peak file's GEMM peak (libtorch's mm for a file without one). Measured
  // before the warm-up, whose steps then bring the step's data back into the caches.
  const bool around = o.peak_around_n > 0 && !train.cuda();
  if (around) {
    r.gemm_around_kernel = o.peak.gemm_kernel.empty() ? kLibtorchMm : o.peak.gemm_kernel;
    r.gemm_before = gemm_kernel_gflops(r.gemm_around_kernel, o.cfg.train.threads, o.peak_around_n, 3);
  }
  for (int i = 0; i < warmup_steps(o); ++i) train.step();
  DeviceTimer wall(r.cuda);
  collector.start();
  wall.start();
  for (int i = 0; i < o.steps; ++i) {
    {
      Range step("step");
      train.step();
    }
    if (i == 0) collector.record_shapes(false);  // the other steps take the first one's shapes
  }
  r.wall_ms = wall.elapsed_ms();
  auto events = collector.stop();
  const auto gemm_peak_now = [&] {
    return around ? gemm_kernel_gflops(r.gemm_around_kernel, o.cfg.train.threads, o.peak_around_n, 3) : 0.0;
  };
  r.gemm_after = gemm_peak_now();
  // Unprofiled rounds, each between two GEMM peaks (CPU only: on CUDA, host timing of a step
  // without synchronisation would not measure it). The first step after a peak finds the caches
  // full of its 2048^3 matrices, as no step of a training loop does: it runs untimed, and the
  // round's time is the median of its steps (as `bench step` times them).
  auto& rounds = r.rounds;
  for (int round = 0; round < (train.cuda() ? 0 : kUnprofiledRounds); ++round) {
    UnprofiledRound u{0, 0};
    train.step();
    std::vector<double> ms;
    for (int i = 0; i < o.steps; ++i) ms.push_back(seconds_of([&] { train.step(); }) * 1e3);
    u.ms_per_step = median(ms);
    u.gemm_after = gemm_peak_now();
    rounds.push_back(u);
  }
  r.steps_without_shapes = copy_shapes_across_steps(events);
  r.profile = analyze(std::move(events));
  r.table = op_table(r.profile);
  r.totals = op_totals(r.profile);
  r.phases = phase_table(r.profile);
  r.steps = step_table(r.profile);
  r.mfu = utilization(r.steps, o.peak.flops_roof(), o.peak.gemm_gflops, r.gemm_around());
  if (!rounds.empty() && !r.mfu.empty()) r.unprofiled = unprofiled_utilization(r.mfu.front(), rounds, r.gemm_after, o.steps, o.peak);
  return r;
}

std::vector<double> ProfileResult::gemm_peaks() const {
  if (gemm_around() <= 0) return {};
  std::vector<double> peaks = {gemm_before, gemm_after};
  for (const auto& round : rounds)
    if (round.gemm_after > 0) peaks.push_back(round.gemm_after);
  return peaks;
}

std::vector<Utilization> ProfileResult::mfu_rows() const {
  auto rows = mfu;
  if (unprofiled) rows.push_back(*unprofiled);
  return rows;
}

double ProfileResult::self_sum_ms() const {
  int64_t ns = 0;
  for (const auto& row : table) ns += row.self_ns;
  return double(ns) / 1e6;
}

nlohmann::json ProfileResult::ops_json(const ProfileOptions& o) const {
  using nlohmann::json;
  const double roof = o.peak.flops_roof();
  auto op_row = [&](const OpRow& r) {
    json j = {{"name", r.name},   {"kind", r.range ? "range (host time outside ops)" : "op"},
              {"shapes", r.shapes}, {"calls", r.calls},
              {"self_ms", double(r.self_ns) / 1e6}, {"total_ms", double(r.total_ns) / 1e6},
              {"flops", r.flops}};
    if (r.flops > 0) {
      j["gflops"] = r.gflops();
      if (roof > 0) j["peak_share"] = r.gflops() / roof;
    }
    return j;
  };
  json ops = json::array(), totals = json::array(), phases = json::array(), steps_j = json::array(),
       mfu_j = json::array();
  for (const auto& row : table) ops.push_back(op_row(row));
  for (const auto& row : this->totals) totals.push_back(op_row(row));
  for (const auto& ph : this->phases)
    phases.push_back({{"name", ph.name},
                      {"calls", ph.calls},
                      {"total_ms", double(ph.total_ns) / 1e6},
                      {"host_ms", double(ph.self_ns) / 1e6},
                      {"flops", ph.flops},
                      {"gflops", ph.total_ns > 0 ? double(ph.flops) / double(ph.total_ns) : 0.0}});
  for (const auto& s : this->steps)
    steps_j.push_back({{"index", s.index}, {"block", s.block}, {"ms", double(s.dur_ns) / 1e6}, {"flops", s.flops}});
  for (const auto& u : mfu_rows())
    mfu_j.push_back({{"what", u.what},
                     {"steps", u.steps},
                     {"ms_per_step", u.ms_per_step},
                     {"gflop_per_step", u.gflop_per_step},
                     {"gflops", u.gflops},
                     {"mfu", u.mfu},
                     {"mfu_vs_gemm_peak", u.mfu_gemm},
                     {"mfu_vs_gemm_peak_around", u.mfu_gemm_around}});
  json hottest = json::array();
  for (size_t i = 0; i < std::min<size_t>(3, this->totals.size()); ++i) hottest.push_back(this->totals[i].name);
  const auto& c = o.cfg;
  return {{"mode", to_string(c.model.mode)},
          {"family", to_string(c.model.family)},
          {"model", {{"layers", c.model.layers}, {"blocks", c.model.blocks}, {"hidden", c.model.hidden},
                     {"heads", c.model.heads}, {"mlp_ratio", c.model.mlp_ratio}}},
          {"batch_size", c.train.batch_size},
          {"threads", c.train.threads},
          {"device", c.train.device},
          {"blas_core", blas_core()},
          {"commit", build_commit()},
          {"clock", cuda ? "CUDA events" : "CPU steady clock"},
          {"steps", int(this->steps.size())},
          {"events", profile.events.size()},
          {"shapes", "recorded in the first profiled step, copied to the later steps with the same ops"},
          {"steps_without_shapes", steps_without_shapes},
          {"wall_ms", wall_ms},
          {"self_sum_ms", self_sum_ms()},
          {"peak", {{"source", o.peak_source}, {"entry", o.peak.to_json()}, {"flops_roof_gflops", roof}}},
          {"mfu", mfu_j},
          {"gemm_peak_around",
           {{"n", o.peak_around_n},
            {"kernel", gemm_around_kernel},
            {"before_gflops", gemm_before},
            {"after_gflops", gemm_after},
            {"all_gflops", gemm_peaks()}}},
          {"hottest_ops", hottest},
          {"phases", phases},
          {"per_step", steps_j},
          {"ops", ops},
          {"op_totals", totals}};
}

nlohmann::json ProfileResult::trace_json(const ProfileOptions& o) const {
  return chrome_trace(profile, {{"mode", to_string(o.cfg.model.mode)},
                                {"clock", cuda ? "CUDA events" : "CPU steady clock"},
                                {"wall_ms", wall_ms},
                                {"blas_core", blas_core()}});
}

void write_profile(const ProfileResult& r, const ProfileOptions& o, const std::string& dir) {
  RunDir out(dir);
  out.write_json("ops.json", r.ops_json(o));
  out.write_text("trace.json", r.trace_json(o).dump() + "\n");
}

void print_profile(const ProfileResult& r, const ProfileOptions& o, int top) {
  const auto& c = o.cfg;
  const double roof = o.peak.flops_roof();
  fmt::print("profile: {} mode, L={} B={} d={} heads={} batch={} threads={} device={} BLAS {}\n", to_string(c.model.mode),
             c.model.layers, c.model.blocks, c.model.hidden, c.model.heads, c.train.batch_size, c.train.threads,
             c.train.device, blas_core());
  if (roof > 0)
    fmt::print("peak ({} thread{}): FMA loop {:.1f} GFLOP/s ({}), GEMM {:.1f} GFLOP/s ({}), copy {:.1f} GB/s  [{}]\n",
               o.peak.threads, o.peak.threads == 1 ? "" : "s", o.peak.fma_gflops, o.peak.fma_isa,
               o.peak.gemm_gflops, o.peak.gemm_kernel, o.peak.copy_gbs, o.peak_source);
  else
    fmt::print("peak: unknown, shares of peak are not shown ({})\n", o.peak_source);
  const int n = int(r.steps.size());
  fmt::print("{} warm-up steps, {} profiled: {:.2f} ms ({:.2f} ms/step), {} events, times from {}\n\n", warmup_steps(o),
             n, r.wall_ms, r.wall_ms / std::max(1, n), r.profile.events.size(),
             r.cuda ? "CUDA events" : "the CPU steady clock");

  const double self_total = r.self_sum_ms();
  fmt::print("{:>9} {:>6} {:>9} {:>6} {:>8} {:>8} {:>6}  {}\n", "self ms", "self%", "total ms", "calls", "GFLOP",
             "GFLOP/s", "%peak", "op [input shapes]   (ranges: host time outside ops)");
  int shown = 0;
  for (const auto& row : r.table) {
    if (shown++ >= top) break;
    const std::string flops = row.flops > 0 ? fmt::format("{:.3f}", double(row.flops) / 1e9) : "";
    const std::string rate = row.flops > 0 ? fmt::format("{:.1f}", row.gflops()) : "";
    const std::string share = row.flops > 0 && roof > 0 ? fmt::format("{:.1f}", 100 * row.gflops() / roof) : "";
    const std::string what = row.range ? fmt::format("<{}> host", row.name)
                                       : truncate(row.name + (row.shapes.empty() ? "" : " " + row.shapes), 90);
    fmt::print("{:>9.3f} {:>6.2f} {:>9.3f} {:>6} {:>8} {:>8} {:>6}  {}\n", double(row.self_ns) / 1e6,
               100 * double(row.self_ns) / 1e6 / std::max(1e-9, self_total), double(row.total_ns) / 1e6, row.calls,
               flops, rate, share, what);
  }
  if (int(r.table.size()) > top) fmt::print("  ... {} more rows in ops.json\n", r.table.size() - size_t(top));
  fmt::print("self times add up to {:.3f} ms = {:.2f}% of the {:.3f} ms wall time (the rest: the loop between steps)\n\n",
             self_total, 100 * self_total / std::max(1e-9, r.wall_ms), r.wall_ms);

  fmt::print("{:<18} {:>6} {:>10} {:>7} {:>12} {:>9} {:>8}\n", "phase", "calls", "ms/call", "share",
             "host ms/call", "GFLOP", "GFLOP/s");
  double step_ms = 0;
  for (const auto& s : r.steps) step_ms += double(s.dur_ns) / 1e6;
  for (const auto& ph : r.phases) {
    const double total = double(ph.total_ns) / 1e6;
    fmt::print("{:<18} {:>6} {:>10.3f} {:>6.1f}% {:>12.3f} {:>9.3f} {:>8.1f}\n", ph.name, ph.calls, total / ph.calls,
               100 * total / std::max(1e-9, step_ms), double(ph.self_ns) / 1e6 / ph.calls,
               double(ph.flops) / 1e9 / ph.calls, ph.total_ns > 0 ? double(ph.flops) / double(ph.total_ns) : 0.0);
  }
  fmt::print("\nmodel FLOP utilization (matmul + conv FLOPs of forward and backward / step time / peak):\n");
  if (r.steps_without_shapes > 0)
    fmt::print("  ({} step(s) ran other ops than the first and have no shapes: left out of the FLOP counts)\n",
               r.steps_without_shapes);
  for (const auto& u : r.mfu_rows()) {
    fmt::print("  {:<10} {:>2} steps {:>8.2f} ms/step {:>7.3f} GFLOP/step {:>7.1f} GFLOP/s", u.what, u.steps,
               u.ms_per_step, u.gflop_per_step, u.gflops);
    if (roof > 0)
      fmt::print("   MFU {:>5.1f}% of the FMA roof, {:>5.1f}% of the GEMM peak", 100 * u.mfu, 100 * u.mfu_gemm);
    if (u.mfu_gemm_around > 0) fmt::print(", {:>5.1f}% of the GEMM peak around the steps", 100 * u.mfu_gemm_around);
    fmt::print("\n");
  }
  if (r.unprofiled && !r.mfu.empty())
    fmt::print("  (unprofiled: {0} rounds of 1 + {1} steps after the profiled ones, without the profiler, each round\n"
               "   between two GEMM peaks, its first step untimed (caches cold after the peak's matrices): the median\n"
               "   round's median step, the median of the rounds' MFU; the profiled steps took {2:+.1f}% of that\n"
               "   time: the observer's cost, and this host's drift)\n",
               kUnprofiledRounds, o.steps, 100 * (r.mfu.front().ms_per_step / r.unprofiled->ms_per_step - 1));
  if (r.gemm_around() > 0)
    fmt::print("  (GEMM peak, {0}, measured on {1}^3 just before and just after the profiled steps: {2:.1f} and {3:.1f}\n"
               "   GFLOP/s, against {4:.1f} in the peak file; this host's speed drifts, the mean of the two is the\n"
               "   yardstick of the same minutes)\n",
               r.gemm_around_kernel, o.peak_around_n, r.gemm_before, r.gemm_after, o.peak.gemm_gflops);
  // This host's speed can change within the run; an MFU against a yardstick that moved under it
  // is uncertain by as much, and says so rather than letting one number stand for the run.
  if (const auto peaks = r.gemm_peaks(); !peaks.empty()) {
    const auto [low, high] = std::minmax_element(peaks.begin(), peaks.end());
    constexpr double kSpeedChange = 1.10;
    if (*high > kSpeedChange * *low)
      fmt::print("  (the host changed speed during this run: its {} GEMM peak measurements ranged over {:.1f}-{:.1f}\n"
                 "   GFLOP/s; the MFU against the peak around the steps is uncertain by as much: run it again)\n",
                 peaks.size(), *low, *high);
  }
  fmt::print("\nhottest ops (self time, all shapes):");
  int64_t ops_self = 0;
  for (const auto& t : r.totals) ops_self += t.self_ns;
  for (size_t i = 0; i < std::min<size_t>(3, r.totals.size()); ++i) {
    const auto& t = r.totals[i];
    fmt::print(" {}. {} {:.1f}% ({:.3f} ms/step{})", i + 1, t.name, 100 * double(t.self_ns) / 1e6 / self_total,
               double(t.self_ns) / 1e6 / std::max(1, n),
               t.flops > 0 ? fmt::format(", {:.1f} GFLOP/s", t.gflops()) : "");
    fmt::print(i + 1 < std::min<size_t>(3, r.totals.size()) ? ";" : "\n");
  }
  fmt::print("ops take {:.1f}% of the step; host code outside ops the other {:.1f}%\n",
             100 * double(ops_self) / 1e6 / self_total, 100 - 100 * double(ops_self) / 1e6 / self_total);
}

OverheadResult measure_profiler_overhead(const Config& cfg, int rounds, int steps_per_round) {
  if (rounds < 1 || steps_per_round < 1) throw UserError("--rounds and --steps must be at least 1");
  SyntheticTraining train(cfg);
  const bool cuda = train.cuda() && OpCollector::cuda_available();
  OpCollector collector({/*shapes=*/true, /*cuda_events=*/cuda});  // one, before the warm-up, for every round
  for (int i = 0; i < steady_state_warmup(cfg); ++i) train.step();
  DeviceTimer timer(cuda);
  int64_t events = 0, profiled_steps = 0;
  // arm 0: no profiler; 1: as `blocklab profile` (shapes in the first step); 2: shapes in every step
  auto run = [&](int arm) {
    std::vector<double> ms;
    if (arm > 0) collector.start();
    for (int s = 0; s < steps_per_round; ++s) {
      timer.start();
      {
        Range step("step");
        train.step();
      }
      ms.push_back(timer.elapsed_ms());
      if (arm == 1 && s == 0) collector.record_shapes(false);
    }
    if (arm > 0) {
      events += int64_t(collector.stop().size());
      profiled_steps += steps_per_round;
    }
    return ms;
  };
  std::vector<double> all[3];
  std::vector<double> ratio1, ratio2;
  for (int r = 0; r < rounds; ++r) {
    std::vector<double> total(3);
    for (int k = 0; k < 3; ++k) {
      const int arm = (k + r) % 3;  // rotate the order every round
      const auto ms = run(arm);
      all[arm].insert(all[arm].end(), ms.begin(), ms.end());
      total[size_t(arm)] = std::accumulate(ms.begin(), ms.end(), 0.0);  // the first (shapes) step included
    }
    ratio1.push_back(total[1] / total[0]);
    ratio2.push_back(total[2] / total[0]);
  }
  OverheadResult out;
  out.rounds = rounds;
  out.steps_per_round = steps_per_round;
  out.plain_ms = median(all[0]);
  out.profiled_ms = median(all[1]);
  out.shapes_ms = median(all[2]);
  out.overhead = median(ratio1) - 1;
  out.shapes_overhead = median(ratio2) - 1;
  out.events_per_step = double(events) / double(std::max<int64_t>(1, profiled_steps));
  return out;
}

}  // namespace blocklab
