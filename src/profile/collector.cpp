#include "profile/collector.h"

#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>

#include <ATen/record_function.h>
#include <torch/csrc/profiler/api.h>
#include <torch/torch.h>

#include "util/error.h"

namespace blocklab {

namespace {

using Stub = torch::profiler::impl::ProfilerEventStub;

const torch::profiler::impl::ProfilerStubs& cuda_stubs() { return *torch::profiler::impl::cudaStubs(); }

// Argument encoding in a flat arena, [kind, n, v0..vn-1] per argument: no allocation per op.
void encode(const c10::IValue& v, std::vector<int64_t>& a) {
  using K = OpInput::Kind;
  auto put = [&](K kind, auto begin, auto end, int64_t n) {
    a.push_back(int64_t(kind));
    a.push_back(n);
    for (auto it = begin; it != end; ++it) a.push_back(int64_t(*it));
  };
  auto put_none = [&](K kind) {
    a.push_back(int64_t(kind));
    a.push_back(0);
  };
  if (v.isTensor()) {
    const auto& t = v.toTensor();
    if (!t.defined()) return put_none(K::None);
    const auto s = t.sizes();
    return put(K::Tensor, s.begin(), s.end(), int64_t(s.size()));
  }
  if (v.isIntList()) {
    const auto l = v.toIntList();
    return put(K::IntList, l.begin(), l.end(), int64_t(l.size()));
  }
  if (v.isBoolList()) {
    const auto l = v.toBoolList();
    return put(K::IntList, l.begin(), l.end(), int64_t(l.size()));
  }
  if (v.isInt() || v.isBool()) {
    const int64_t x = v.isInt() ? v.toInt() : int64_t(v.toBool());
    a.push_back(int64_t(K::Scalar));
    a.push_back(1);
    a.push_back(x);
    return;
  }
  if (v.isNone()) return put_none(K::None);
  if (v.isTensorList()) {
    a.push_back(int64_t(K::TensorList));
    a.push_back(1);
    a.push_back(int64_t(v.toTensorList().size()));
    return;
  }
  put_none(K::Other);
}

// Ops recorded without the ops they call. libtorch 1.13's CPU bmm multiplies small matrices in a
// loop of select/as_strided/resolve_conj calls - 4000 dispatcher calls for one [512,18,18] bmm,
// 94% of all events of a ViT step - and observing each would cost more than the step. Inside
// these ops RecordFunction is switched off on the thread (the loop then runs at full speed) and
// the whole loop is the op's self time, which is where it belongs.
bool opaque(std::string_view name) {
  static const char* const names[] = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm",
                                      "aten::mv", "aten::addmv", "aten::dot", "aten::vdot"};
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

}  // namespace

// One op or range as recorded: its name an id in the thread's table, its inputs a span of the arena.
struct RawEvent {
  uint32_t name;  // id in the thread's name table
  bool range;
  int64_t seq;
  int64_t start = 0, end = -1;
  size_t arena_begin = 0, arena_end = 0;
};

// What one thread recorded in one session. Only its thread writes it while the session runs, so
// the callbacks take no lock; `busy` lets stop() wait for a callback in flight.
struct ThreadBuffer {
  uint64_t generation = 0;
  uint64_t thread = 0;
  std::atomic<bool> busy{false};
  std::vector<RawEvent> events;
  std::vector<int64_t> arena;
  std::vector<size_t> open;  // started, not yet ended; innermost last (RecordFunctions nest)
  std::vector<Stub> cuda_start, cuda_end;
  // Names: a table, and a small cache keyed by the name's address (checked by content, as a
  // RecordFunction may build its name in a temporary string).
  std::deque<std::string> names;
  std::unordered_map<std::string_view, uint32_t> ids;
  std::vector<char> is_opaque;
  struct Cached {
    const char* ptr = nullptr;
    uint32_t id = 0;
  };
  std::array<Cached, 512> cache{};

  uint32_t intern(const char* name) {
    if (!name) name = "";
    auto& c = cache[(reinterpret_cast<uintptr_t>(name) >> 4) % cache.size()];
    if (c.ptr == name && std::strcmp(names[c.id].c_str(), name) == 0) return c.id;
    const std::string_view key(name);
    uint32_t id;
    if (auto it = ids.find(key); it != ids.end()) {
      id = it->second;
    } else {
      names.emplace_back(key);
      is_opaque.push_back(opaque(key));
      id = uint32_t(names.size() - 1);
      ids.emplace(std::string_view(names.back()), id);
    }
    c = {name, id};
    return id;
  }
};

namespace {

struct Global {
  std::atomic<uint64_t> generation{0};  // of the running session; 0: none
  std::chrono::steady_clock::time_point t0;
  bool cuda = false;
  std::mutex mu;  // guards buffers and the start/stop of sessions
  std::vector<std::shared_ptr<ThreadBuffer>> buffers;
  uint64_t last_generation = 0;
};
Global g;
thread_local std::shared_ptr<ThreadBuffer> t_buffer;

// Room for a few training steps, touched now so that page faults do not land in the ops' times.
std::shared_ptr<ThreadBuffer> new_buffer() {
  auto b = std::make_shared<ThreadBuffer>();
  b->events.resize(1 << 15);
  b->events.clear();
  b->arena.resize(1 << 18);
  b->arena.clear();
  b->open.reserve(64);
  return b;
}

// This thread's buffer for session `gen`: `prepared`, or a new one.
ThreadBuffer* attach(uint64_t gen, std::shared_ptr<ThreadBuffer> prepared = nullptr) {
  auto b = prepared ? std::move(prepared) : new_buffer();
  b->generation = gen;
  b->thread = at::RecordFunction::currentThreadId();
  std::lock_guard<std::mutex> lock(g.mu);
  g.buffers.push_back(b);
  t_buffer = b;
  return b.get();
}

struct Reenable : at::ObserverContext {};  // returned by opaque ops: their end switches RecordFunction back on

int64_t since_t0(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t - g.t0).count();
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  const uint64_t gen = g.generation.load(std::memory_order_acquire);
  if (gen == 0) return nullptr;
  ThreadBuffer* b = t_buffer.get();
  if (!b || b->generation != gen) b = attach(gen);
  b->busy.store(true);
  if (g.generation.load() != gen) {  // stop() began meanwhile
    b->busy.store(false);
    return nullptr;
  }
  RawEvent e;
  e.name = b->intern(fn.name());
  e.range = fn.scope() == at::RecordScope::USER_SCOPE;
  e.seq = fn.seqNr();
  e.arena_begin = b->arena.size();
  if (!e.range && fn.needsInputs())
    for (const auto& v : fn.inputs()) encode(v, b->arena);
  e.arena_end = b->arena.size();
  const bool hide_children = !e.range && b->is_opaque[e.name] && at::isRecordFunctionEnabled();
  if (hide_children) at::enableRecordFunction(false);
  b->open.push_back(b->events.size());
  if (g.cuda) {
    b->cuda_start.emplace_back();
    b->cuda_end.emplace_back();
    cuda_stubs().record(nullptr, &b->cuda_start.back(), nullptr);
  }
  e.start = since_t0(std::chrono::steady_clock::now());  // last: the recording above is not charged to the op
  b->events.push_back(e);
  b->busy.store(false, std::memory_order_release);
  return hide_children ? std::make_unique<Reenable>() : nullptr;
}

void on_end(const at::RecordFunction&, at::ObserverContext* ctx) {
  const auto t = std::chrono::steady_clock::now();  // first: what follows is not charged to the op
  const uint64_t gen = g.generation.load(std::memory_order_acquire);
  ThreadBuffer* b = t_buffer.get();
  if (gen != 0 && b && b->generation == gen && !b->open.empty()) {
    b->busy.store(true);
    if (g.generation.load() == gen) {
      const size_t i = b->open.back();
      b->open.pop_back();
      b->events[i].end = since_t0(t);
      if (g.cuda) cuda_stubs().record(nullptr, &b->cuda_end[i], nullptr);
    }
    b->busy.store(false, std::memory_order_release);
  }
  if (ctx) at::enableRecordFunction(true);
}

}  // namespace

struct CollectorSession {
  uint64_t generation = 0;
  at::CallbackHandle handle = 0;
  bool shapes = true;
  Stub cuda_ref;
};

namespace {

// With inputs, the dispatcher boxes every op's arguments for the callback - most of the
// profiler's cost per op (1.13: ~0.15 us of ~0.4 us), so shapes can be switched off mid-session.
at::CallbackHandle add_callback(bool shapes) {
  return at::addGlobalCallback(at::RecordFunctionCallback(on_start, on_end)
                                   .needsInputs(shapes)
                                   .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION,
                                            at::RecordScope::USER_SCOPE}));
}

}  // namespace

// The calling thread's buffer is allocated here, not in start(), and kept from one session to the
// next: allocated between training steps, its 3.5 MB took the memory the allocator had cached for
// the steps' largest tensors, whose next allocation then faulted its pages in (the first profiled
// step ran at 1.5-2x the others).
OpCollector::OpCollector(CollectorOptions opt) : opt_(opt), buffer_(new_buffer()) {}

OpCollector::~OpCollector() {
  if (running()) stop();
}

bool OpCollector::running() const { return session_ != nullptr; }

bool OpCollector::cuda_available() { return cuda_stubs().enabled() && torch::cuda::is_available(); }

void OpCollector::start() {
  if (session_) throw UserError("this profiler is already running");
  if (opt_.cuda_events && !cuda_available())
    throw UserError("CUDA event timing asked for, but this libtorch has no CUDA profiler support or no device");
  auto s = std::make_unique<CollectorSession>();
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (g.generation.load() != 0) throw UserError("a profiler is already running in this process (one at a time)");
    g.buffers.clear();
    g.cuda = opt_.cuda_events;
    if (g.cuda) {
      cuda_stubs().synchronize();
      cuda_stubs().record(nullptr, &s->cuda_ref, nullptr);
    }
    s->generation = ++g.last_generation;
  }
  attach(s->generation, std::move(buffer_));  // the calling thread's, allocated before the clock starts
  {
    std::lock_guard<std::mutex> lock(g.mu);
    g.t0 = std::chrono::steady_clock::now();
    g.generation.store(s->generation, std::memory_order_release);
  }
  s->handle = add_callback(opt_.shapes);
  s->shapes = opt_.shapes;
  session_ = std::move(s);
}

void OpCollector::record_shapes(bool on) {
  if (!session_ || session_->shapes == on) return;
  // RecordFunctions already open keep the callbacks they started with (the same functions).
  at::removeCallback(session_->handle);
  session_->handle = add_callback(on);
  session_->shapes = on;
}

std::vector<OpEvent> OpCollector::stop() {
  if (!session_) throw UserError("the profiler is not running");
  at::removeCallback(session_->handle);
  if (g.cuda) cuda_stubs().synchronize();
  std::vector<std::shared_ptr<ThreadBuffer>> buffers;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    g.generation.store(0);
    buffers.swap(g.buffers);
  }
  for (const auto& b : buffers)
    while (b->busy.load()) std::this_thread::yield();
  // This thread's buffer is read below, then kept for the next start() (other threads drop theirs
  // at their next event).
  auto mine = std::move(t_buffer);
  auto s = std::move(session_);
  std::vector<OpEvent> out;
  for (const auto& b : buffers) {
    for (size_t k = 0; k < b->events.size(); ++k) {
      const auto& r = b->events[k];
      if (r.end < 0) continue;  // still open
      OpEvent e;
      e.name = b->names[r.name];
      e.range = r.range;
      e.thread = b->thread;
      e.seq = r.seq;
      if (g.cuda) {  // the GPU timeline: µs since the reference event, as ns
        e.start_ns = int64_t(double(cuda_stubs().elapsed(&s->cuda_ref, &b->cuda_start[k])) * 1000.0);
        e.end_ns = std::max(e.start_ns, int64_t(double(cuda_stubs().elapsed(&s->cuda_ref, &b->cuda_end[k])) * 1000.0));
      } else {
        e.start_ns = r.start;
        e.end_ns = r.end;
      }
      for (size_t i = r.arena_begin; i + 1 < r.arena_end;) {
        OpInput in;
        in.kind = OpInput::Kind(b->arena[i]);
        const auto n = size_t(b->arena[i + 1]);
        in.v.assign(b->arena.begin() + long(i + 2), b->arena.begin() + long(i + 2 + n));
        e.inputs.push_back(std::move(in));
        i += 2 + n;
      }
      out.push_back(std::move(e));
    }
  }
  if (mine) {  // emptied, its memory kept: a next session allocates nothing while the steps run
    mine->events.clear();
    mine->arena.clear();
    mine->open.clear();
    mine->cuda_start.clear();
    mine->cuda_end.clear();
    buffer_ = std::move(mine);
  }
  // One timeline in start order; each thread's own order is kept for equal times (a parent starts
  // before its children even when the clock cannot tell them apart).
  std::stable_sort(out.begin(), out.end(), [](const OpEvent& a, const OpEvent& b) { return a.start_ns < b.start_ns; });
  return out;
}

DeviceTimer::DeviceTimer(bool cuda) : cuda_(cuda) {}
DeviceTimer::~DeviceTimer() = default;

void DeviceTimer::start() {
  if (cuda_) {
    cuda_stubs().record(nullptr, &ev0_, nullptr);
  } else {
    t0_ = std::chrono::steady_clock::now();
  }
}

double DeviceTimer::elapsed_ms() {
  if (cuda_) {
    Stub ev1;
    cuda_stubs().record(nullptr, &ev1, nullptr);
    return double(cuda_stubs().elapsed(&ev0_, &ev1)) / 1000.0;  // elapsed() waits for both, returns µs
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
}

}  // namespace blocklab
