// `blocklab launch --procs N CONFIG`: one training process per block on this machine, joined by
// libtorch's c10d (a TCPStore this launcher hosts on 127.0.0.1, a Gloo process group among the
// ranks). Each rank is `blocklab train CONFIG --distributed` with torchrun's variables set, so a
// launch runs exactly what a multi-machine job runs (docs/distributed.md). The launcher watches
// its ranks: when one fails or dies, it names it and its last update, stops the others, and exits 1.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/spawn.h"
#include "dist/group.h"
#include "io/config.h"
#include "util/error.h"

namespace blocklab {
namespace {

std::vector<pid_t> g_ranks;  // for the signal handler: what the launcher receives, its ranks receive
volatile std::sig_atomic_t g_launch_signal = 0;
void forward_to_ranks(int sig) {
  g_launch_signal = sig;
  for (pid_t pid : g_ranks)
    if (pid > 0) ::kill(pid, sig);
}

pid_t spawn_rank(const LaunchArgs& a, const std::string& out, int rank, int world, int port, int threads) {
  std::vector<std::string> args = {"blocklab", "train", a.config, "--out", out, "--distributed", "--plain-progress",
                                   "--tag", fmt::format("rank {}", rank), "--parent-pid", std::to_string(::getpid())};
  for (const auto& s : a.overrides) args.insert(args.end(), {"--set", s});
  if (a.resume) args.push_back("--resume");
  return spawn_self(args, fmt::format("rank {}", rank),
                    {{"RANK", std::to_string(rank)},
                     {"WORLD_SIZE", std::to_string(world)},
                     {"LOCAL_RANK", std::to_string(rank)},
                     {"MASTER_ADDR", "127.0.0.1"},
                     {"MASTER_PORT", std::to_string(port)},
                     {"BLOCKLAB_LAUNCH", "1"},
                     {"OMP_NUM_THREADS", std::to_string(threads)}});
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("exited with status {}", WEXITSTATUS(status));
}

}  // namespace

int cmd_launch(const LaunchArgs& a) {
  const Config cfg = Config::load(a.config, a.overrides);
  if (!cfg.blocks_mode() || a.procs % cfg.model.blocks != 0)
    throw UserError(fmt::format("launch: --procs {} for model.mode = \"{}\", model.blocks = {}: the same number of "
                                "processes for every block (procs = blocks x replicas)",
                                a.procs, to_string(cfg.model.mode), cfg.model.blocks));
  const std::string out = !a.out.empty() ? a.out
                                         : fmt::format("runs/{}-parallel", std::filesystem::path(a.config).stem().string());
  for (int b = 0; b < cfg.model.blocks && !a.resume; ++b)
    if (std::filesystem::exists(std::filesystem::path(out) / "blocks" / std::to_string(b) / "checkpoint.safetensors"))
      throw UserError(fmt::format("{}: holds a run already; pass --resume to continue it or choose another --out", out));
  std::string overrides;  // for the messages that say how to continue
  for (const auto& o : a.overrides) overrides += " --set " + o;
  StoreHost store;
  fmt::print(stderr, "launch: {} ranks ({} per block, shared modules {}), rendezvous 127.0.0.1:{}, run directory {}\n",
             a.procs, a.procs / cfg.model.blocks, to_string(cfg.train.shared), store.port(), out);

  const int signals[] = {SIGINT, SIGTERM, SIGHUP};
  for (int sig : signals) std::signal(sig, forward_to_ranks);
  g_ranks.assign(size_t(a.procs), 0);
  for (int r = 0; r < a.procs; ++r) g_ranks[size_t(r)] = spawn_rank(a, out, r, a.procs, store.port(), cfg.train.threads);

  auto progress = [&](int r) {
    const auto v = store.get(fmt::format("progress/{}", r));
    return v.empty() ? int64_t(0) : std::stoll(v);
  };
  // The first failure often drags others down with it (a peer's all-reduce fails at once): failures
  // are collected for a moment before the rest are stopped, and a rank killed by a signal, which did
  // not fail on its own, is named first.
  int running = a.procs;
  struct Failure {
    int rank, status;
  };
  std::vector<Failure> failures;
  std::vector<int64_t> last(size_t(a.procs));  // updates each rank had made when it ended
  auto stop_at = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    if (std::chrono::steady_clock::now() >= stop_at) {
      stop_at = std::chrono::steady_clock::time_point::max();
      for (pid_t p : g_ranks)
        if (p > 0) ::kill(p, SIGTERM);  // those waiting on a dead rank fail at once, the rest save a checkpoint
      std::thread([] {
        std::this_thread::sleep_for(std::chrono::seconds(5));
        for (pid_t p : g_ranks)
          if (p > 0) ::kill(p, SIGKILL);
      }).detach();
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid == 0 || (pid < 0 && errno == EINTR)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    if (pid < 0) break;
    const auto it = std::find(g_ranks.begin(), g_ranks.end(), pid);
    if (it == g_ranks.end()) continue;
    const int r = int(it - g_ranks.begin());
    *it = 0;
    --running;
    last[size_t(r)] = progress(r);
    if (succeeded(status)) continue;
    if (failures.empty() && !g_launch_signal) stop_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    if (stop_at != std::chrono::steady_clock::time_point::max() || failures.empty()) failures.push_back({r, status});
  }
  std::string failure;
  if (!failures.empty()) {
    auto first = failures.front();
    for (const auto& f : failures)
      if (WIFSIGNALED(f.status)) {
        first = f;
        break;
      }
    failure = fmt::format("rank {} (block {}) {} after update {}", first.rank, first.rank % cfg.model.blocks, describe_exit(first.status),
                          last[size_t(first.rank)]);
    // A rank behind the one that failed is the one the others waited for: stuck, or dead first.
    for (int r = 0; r < a.procs; ++r)
      if (r != first.rank)
        failure += fmt::format("; rank {} had made {} updates{}", r, last[size_t(r)],
                               last[size_t(r)] < last[size_t(first.rank)] ? " (behind: it stopped answering)" : "");
  }
  for (int sig : signals) std::signal(sig, SIG_DFL);
  if (g_launch_signal) {
    fmt::print(stderr, "launch: stopped by {}; continue with `blocklab launch --procs {} {}{} --out {} --resume`\n",
               strsignal(g_launch_signal), a.procs, a.config, overrides, out);
    return 128 + g_launch_signal;
  }
  if (!failure.empty())
    throw UserError(fmt::format("launch: {}. Each block's last checkpoint in {}/blocks/ is intact: continue with "
                                "`blocklab launch --procs {} {}{} --out {} --resume`",
                                failure, out, a.procs, a.config, overrides, out));
  fmt::print(stderr, "launch: {} ranks finished; {}/summary.json\n", a.procs, out);
  return 0;
}

}  // namespace blocklab
