#include "profile/report.h"

#include <algorithm>
#include <functional>
#include <map>
#include <unordered_map>

#include <fmt/format.h>

namespace blocklab {

double us(int64_t ns) { return double(ns) / 1000.0; }

Profile analyze(std::vector<OpEvent> events) {
  Profile p;
  const int n = int(events.size());
  p.events = std::move(events);
  auto& ev = p.events;
  p.parent.assign(size_t(n), -1);
  p.self_ns.assign(size_t(n), 0);
  p.flops.assign(size_t(n), 0);
  p.flop_root.assign(size_t(n), 0);
  p.step.assign(size_t(n), -1);

  // Per thread, in start order: a stack of open ranges and one of open ops.
  struct Stacks {
    std::vector<int> ranges, ops;
  };
  std::unordered_map<uint64_t, Stacks> threads;
  std::vector<int> orphan_ops;  // top-level ops on a thread without ranges (autograd device threads)
  auto pop_done = [&](std::vector<int>& s, int64_t t) {
    while (!s.empty() && ev[size_t(s.back())].end_ns <= t) s.pop_back();
  };
  auto clamp_into = [&](OpEvent& child, const OpEvent& parent) {  // CUDA-event times can round across
    child.start_ns = std::clamp(child.start_ns, parent.start_ns, parent.end_ns);
    child.end_ns = std::clamp(child.end_ns, child.start_ns, parent.end_ns);
  };
  for (int i = 0; i < n; ++i) {
    auto& e = ev[size_t(i)];
    auto& st = threads[e.thread];
    pop_done(st.ranges, e.start_ns);
    pop_done(st.ops, e.start_ns);
    if (e.range) {
      if (!st.ranges.empty()) p.parent[size_t(i)] = st.ranges.back();
      st.ranges.push_back(i);
    } else {
      if (!st.ops.empty()) p.parent[size_t(i)] = st.ops.back();
      else if (!st.ranges.empty()) p.parent[size_t(i)] = st.ranges.back();
      else orphan_ops.push_back(i);
      st.ops.push_back(i);
    }
    if (p.parent[size_t(i)] >= 0) clamp_into(e, ev[size_t(p.parent[size_t(i)])]);
  }
  // Ops of threads that opened no range: under the innermost range (of any thread) around their start.
  std::vector<int> ranges;
  for (int i = 0; i < n; ++i)
    if (ev[size_t(i)].range) ranges.push_back(i);
  for (int i : orphan_ops) {
    int best = -1, best_depth = -1;
    for (int r : ranges) {
      const auto& x = ev[size_t(r)];
      if (r > i || x.start_ns > ev[size_t(i)].start_ns || x.end_ns <= ev[size_t(i)].start_ns) continue;
      int depth = 0;
      for (int q = p.parent[size_t(r)]; q >= 0; q = p.parent[size_t(q)]) ++depth;
      if (depth > best_depth) best = r, best_depth = depth;
    }
    p.parent[size_t(i)] = best;
  }
  for (int i = 0; i < n; ++i) {
    const auto& e = ev[size_t(i)];
    p.self_ns[size_t(i)] += e.dur_ns();
    const int par = p.parent[size_t(i)];
    if (par >= 0) p.self_ns[size_t(par)] -= e.dur_ns();
    if (!e.range) p.flops[size_t(i)] = op_flops(e.name, e.inputs);
  }
  // Parents start before their children, so one pass in start order sees every parent first.
  std::vector<char> counted_above(size_t(n), 0);
  for (int i = 0; i < n; ++i) {
    const int par = p.parent[size_t(i)];
    if (par >= 0) {
      counted_above[size_t(i)] = counted_above[size_t(par)] || p.flops[size_t(par)] > 0;
      p.step[size_t(i)] = p.step[size_t(par)];
    }
    if (ev[size_t(i)].range && ev[size_t(i)].name == "step") p.step[size_t(i)] = i;
    p.flop_root[size_t(i)] = p.flops[size_t(i)] > 0 && !counted_above[size_t(i)];
  }
  return p;
}

int copy_shapes_across_steps(std::vector<OpEvent>& events) {
  struct Span {
    int64_t start, end;
    std::vector<size_t> ops;
    bool shaped = false;
  };
  std::vector<Span> spans;
  for (const auto& e : events)
    if (e.range && e.name == "step") spans.push_back({e.start_ns, e.end_ns, {}, false});
  size_t k = 0;
  for (size_t i = 0; i < events.size(); ++i) {  // events are in start order, steps one after another
    const auto& e = events[i];
    if (e.range) continue;
    while (k < spans.size() && spans[k].end <= e.start_ns) ++k;
    if (k == spans.size()) break;
    if (spans[k].start > e.start_ns) continue;
    spans[k].ops.push_back(i);
    spans[k].shaped |= !e.inputs.empty();
  }
  const Span* ref = nullptr;
  for (const auto& s : spans)
    if (s.shaped) {
      ref = &s;
      break;
    }
  int unmatched = 0;
  for (auto& s : spans) {
    if (s.shaped) continue;
    bool same = ref && s.ops.size() == ref->ops.size();
    for (size_t j = 0; same && j < s.ops.size(); ++j) same = events[s.ops[j]].name == events[ref->ops[j]].name;
    if (!same) {
      ++unmatched;
      continue;
    }
    for (size_t j = 0; j < s.ops.size(); ++j) events[s.ops[j]].inputs = events[ref->ops[j]].inputs;
  }
  return unmatched;
}

namespace {

// Events summed per (name, input shapes) when `by_shapes`, else per op name without ranges;
// sorted by self time.
std::vector<OpRow> grouped_rows(const Profile& p, bool by_shapes) {
  std::map<std::pair<std::string, std::string>, OpRow> rows;
  for (size_t i = 0; i < p.events.size(); ++i) {
    const auto& e = p.events[i];
    if (e.range && !by_shapes) continue;
    const auto shapes = by_shapes && !e.range ? shapes_string(e.inputs) : std::string();
    auto& r = rows[{(e.range ? "\x01" : "") + e.name, shapes}];
    r.name = e.name;
    r.shapes = shapes;
    r.range = e.range;
    r.calls += 1;
    r.self_ns += p.self_ns[i];
    r.total_ns += e.dur_ns();
    r.flops += p.flops[i];
  }
  std::vector<OpRow> out;
  for (auto& [key, r] : rows) out.push_back(std::move(r));
  std::stable_sort(out.begin(), out.end(), [](const OpRow& a, const OpRow& b) { return a.self_ns > b.self_ns; });
  return out;
}

}  // namespace

std::vector<OpRow> op_table(const Profile& p) { return grouped_rows(p, /*by_shapes=*/true); }
std::vector<OpRow> op_totals(const Profile& p) { return grouped_rows(p, /*by_shapes=*/false); }

std::vector<PhaseRow> phase_table(const Profile& p) {
  std::vector<PhaseRow> out;
  std::unordered_map<std::string, size_t> at;
  std::vector<int64_t> range_flops(p.events.size(), 0);
  for (size_t i = 0; i < p.events.size(); ++i) {
    if (!p.flop_root[i]) continue;
    for (int q = p.parent[i]; q >= 0; q = p.parent[size_t(q)])
      if (p.events[size_t(q)].range) range_flops[size_t(q)] += p.flops[i];
  }
  for (size_t i = 0; i < p.events.size(); ++i) {
    const auto& e = p.events[i];
    if (!e.range || e.name == "step") continue;
    auto it = at.find(e.name);
    if (it == at.end()) {
      it = at.emplace(e.name, out.size()).first;
      out.push_back({e.name});
    }
    auto& r = out[it->second];
    r.calls += 1;
    r.total_ns += e.dur_ns();
    r.self_ns += p.self_ns[i];
    r.flops += range_flops[i];
  }
  // The step's order: data, forward (per block), loss, backward, optimizer; others after.
  auto rank = [](const std::string& name) {
    static const std::vector<std::string> order = {"data", "forward", "loss", "backward", "optimizer"};
    for (size_t k = 0; k < order.size(); ++k)
      if (name == order[k] || name.rfind(order[k] + "/", 0) == 0) return int(k);
    return int(order.size());
  };
  std::stable_sort(out.begin(), out.end(), [&](const PhaseRow& a, const PhaseRow& b) {
    return std::make_pair(rank(a.name), a.name) < std::make_pair(rank(b.name), b.name);
  });
  return out;
}

std::vector<StepRow> step_table(const Profile& p) {
  std::vector<StepRow> out;
  std::unordered_map<int, size_t> at;
  for (size_t i = 0; i < p.events.size(); ++i) {
    const auto& e = p.events[i];
    if (e.range && e.name == "step") {
      at[int(i)] = out.size();
      out.push_back({int(out.size()), -1, e.dur_ns(), 0, false});
    }
  }
  for (size_t i = 0; i < p.events.size(); ++i) {
    const int s = p.step[i];
    if (s < 0 || !at.count(s)) continue;
    auto& row = out[at[s]];
    const auto& e = p.events[i];
    if (p.flop_root[i]) row.flops += p.flops[i];
    if (!e.range && !e.inputs.empty()) row.shapes = true;
    if (e.range && e.name.rfind("forward/block", 0) == 0) row.block = std::stoi(e.name.substr(13));
  }
  return out;
}

void set_rates(Utilization& u, double peak_gflops, double gemm_gflops, double gemm_around_gflops) {
  u.gflops = u.ms_per_step > 0 ? u.gflop_per_step / (u.ms_per_step / 1e3) : 0;
  u.mfu = peak_gflops > 0 ? u.gflops / peak_gflops : 0;
  u.mfu_gemm = gemm_gflops > 0 ? u.gflops / gemm_gflops : 0;
  u.mfu_gemm_around = gemm_around_gflops > 0 ? u.gflops / gemm_around_gflops : 0;
}

std::vector<Utilization> utilization(const std::vector<StepRow>& steps, double peak_gflops, double gemm_gflops,
                                     double gemm_around_gflops) {
  std::vector<Utilization> out;
  auto add = [&](const std::string& what, const std::function<bool(const StepRow&)>& keep) {
    Utilization u;
    u.what = what;
    int64_t ns = 0, flops = 0;
    for (const auto& s : steps)
      if (s.shapes && keep(s)) ++u.steps, ns += s.dur_ns, flops += s.flops;
    if (u.steps == 0 || ns <= 0) return;
    u.ms_per_step = double(ns) / 1e6 / u.steps;
    u.gflop_per_step = double(flops) / 1e9 / u.steps;
    set_rates(u, peak_gflops, gemm_gflops, gemm_around_gflops);
    out.push_back(u);
  };
  add("step", [](const StepRow&) { return true; });
  int max_block = -1;
  for (const auto& s : steps) max_block = std::max(max_block, s.block);
  for (int b = 0; b <= max_block; ++b) add(fmt::format("block {}", b), [b](const StepRow& s) { return s.block == b; });
  return out;
}

nlohmann::json chrome_trace(const Profile& p, const nlohmann::json& meta) {
  using nlohmann::json;
  json events = json::array();
  events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 1}, {"args", {{"name", "blocklab"}}}});
  events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 1}, {"tid", 0}, {"args", {{"name", "phases"}}}});
  events.push_back({{"ph", "M"}, {"name", "thread_sort_index"}, {"pid", 1}, {"tid", 0}, {"args", {{"sort_index", 0}}}});
  std::map<uint64_t, bool> op_threads;
  for (size_t i = 0; i < p.events.size(); ++i) {
    const auto& e = p.events[i];
    const uint64_t tid = e.range ? 0 : e.thread;
    if (!e.range) op_threads[tid] = true;
    json args = {{"self_us", us(p.self_ns[i])}};
    if (!e.range) {
      args["shapes"] = shapes_string(e.inputs);
      if (p.flops[i] > 0) {
        args["flops"] = p.flops[i];
        if (e.dur_ns() > 0) args["gflops"] = double(p.flops[i]) / double(e.dur_ns());
      }
      if (e.seq >= 0) args["seq"] = e.seq;
    }
    events.push_back({{"name", e.name},
                      {"cat", e.range ? "phase" : "op"},
                      {"ph", "X"},
                      {"ts", us(e.start_ns)},
                      {"dur", us(e.dur_ns())},
                      {"pid", 1},
                      {"tid", tid},
                      {"args", std::move(args)}});
  }
  for (const auto& [tid, _] : op_threads) {
    events.push_back(
        {{"ph", "M"}, {"name", "thread_name"}, {"pid", 1}, {"tid", tid}, {"args", {{"name", fmt::format("ops (thread {})", tid)}}}});
    events.push_back({{"ph", "M"}, {"name", "thread_sort_index"}, {"pid", 1}, {"tid", tid}, {"args", {{"sort_index", tid}}}});
  }
  return {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}, {"otherData", meta}};
}

}  // namespace blocklab
