#include "dist/world_env.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>

#include <fmt/format.h>

#include "util/error.h"

namespace blocklab {
// The helpers' names are unique across src/: the library is a unity build (CMakeLists.txt).
namespace {

using EnvGetter = std::function<const char*(const char*)>;

[[noreturn]] void env_fail(const std::string& what) { throw UserError("environment: " + what); }

// Digits only, the whole string, fitting an int: "+1", " 1", "1x" and "-1" are refused, not half-read.
std::optional<int> parse_env_int(const std::string& s) {
  int v = 0;
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  if (std::from_chars(s.data(), s.data() + s.size(), v).ec != std::errc()) return std::nullopt;  // overflow
  return v;
}

// The job's variables. `because` says why a missing one is required: which variables chose the launcher.
struct EnvVars {
  const EnvGetter& get;
  std::string because;

  bool has(const char* name) const { return get(name) != nullptr; }
  std::string required(const char* name) const {
    const char* v = get(name);
    if (!v) env_fail(fmt::format("{} is not set (needed because {})", name, because));
    return v;
  }
  std::string text(const char* name) const {
    std::string v = required(name);
    if (v.empty()) env_fail(fmt::format("{} is set but empty", name));
    return v;
  }
  int number(const char* name) const {
    const std::string v = required(name);
    if (auto n = parse_env_int(v)) return *n;
    env_fail(fmt::format("{}=\"{}\" is not a non-negative integer", name, v));
  }
  int number_or(const char* name, int fallback) const { return has(name) ? number(name) : fallback; }
  int port(const char* name) const {
    const int p = number(name);
    if (p < 1 || p > 65535) env_fail(fmt::format("{}=\"{}\" is not a port (1..65535)", name, p));
    return p;
  }
};

void read_rank_vars(const EnvVars& v, const char* rank, const char* size, const char* local, WorldEnv& w) {
  w.rank = v.number(rank);
  w.world_size = v.number(size);
  w.local_rank = v.number_or(local, 0);
  if (w.world_size < 1) env_fail(fmt::format("{}=\"{}\" must be at least 1", size, w.world_size));
  if (w.rank >= w.world_size)
    env_fail(fmt::format("{}=\"{}\" is not below {}=\"{}\"", rank, w.rank, size, w.world_size));
}

// torchrun's agent already serves a TCPStore at MASTER_ADDR:MASTER_PORT, so a rank that hosted one too
// could not bind the port. Python workers then prefix their keys with the restart attempt (torch's
// _create_c10d_store), so that a restarted group never reads a dead attempt's keys; we do the same.
void read_agent_store(const EnvVars& v, WorldEnv& w) {
  if (!v.has("TORCHELASTIC_USE_AGENT_STORE")) return;
  const std::string use = v.required("TORCHELASTIC_USE_AGENT_STORE");
  if (use != "True" && use != "False")
    env_fail(fmt::format("TORCHELASTIC_USE_AGENT_STORE=\"{}\" is not True or False", use));
  w.agent_store = use == "True";
  if (w.agent_store) w.store_prefix = fmt::format("/worker/attempt_{}", v.number_or("TORCHELASTIC_RESTART_COUNT", 0));
}

// The first name of a bracket entry "lo" or "lo-hi" (digits, lo <= hi), as written: zero padding is part
// of the host name ("01-04" -> "01"). nullopt when the entry is empty or malformed.
std::optional<std::string> nodelist_range_start(const std::string& entry) {
  const size_t dash = entry.find('-');
  const std::string lo = entry.substr(0, dash);
  const auto a = parse_env_int(lo);
  const auto b = dash == std::string::npos ? a : parse_env_int(entry.substr(dash + 1));
  if (!a || !b || *a > *b) return std::nullopt;
  return lo;
}

}  // namespace

std::string first_slurm_host(const std::string& list) {
  const auto bad = [&](const char* why) {
    return UserError(fmt::format("environment: SLURM_JOB_NODELIST=\"{}\" is not a Slurm node list ({})", list, why));
  };
  if (list.empty()) throw bad("empty");
  // One pass over the whole list, so that a malformed tail is refused too: outside brackets a comma ends
  // a host; a bracket lists ranges and stands for its first entry in the first host.
  std::string first, host;
  for (size_t i = 0; i <= list.size(); ++i) {
    if (i == list.size() || list[i] == ',') {
      if (host.empty()) throw bad("empty host name");
      if (first.empty()) first = host;
      host.clear();
    } else if (list[i] == '[') {
      const size_t close = list.find_first_of("[]", i + 1);
      if (close == std::string::npos || list[close] != ']') throw bad("unbalanced brackets");
      const std::string inside = list.substr(i + 1, close - i - 1);
      for (size_t b = 0, e; b <= inside.size(); b = e + 1) {
        e = std::min(inside.find(',', b), inside.size());
        const auto start = nodelist_range_start(inside.substr(b, e - b));
        if (!start) throw bad("empty or malformed range");
        if (b == 0) host += *start;
      }
      i = close;
    } else if (list[i] == ']') {
      throw bad("unbalanced brackets");
    } else {
      host += list[i];
    }
  }
  return first;
}

std::optional<WorldEnv> world_from_environment(const EnvGetter& get) {
  WorldEnv w;
  EnvVars v{get, ""};
  // `blocklab launch` sets torchrun's variables too; its marker wins so that the launcher is reported right.
  if (v.has("BLOCKLAB_LAUNCH")) {
    w.launcher = "blocklab";
    v.because = "BLOCKLAB_LAUNCH is set";
  } else if (v.has("RANK") && v.has("WORLD_SIZE")) {
    w.launcher = "torchrun";
    v.because = "RANK and WORLD_SIZE are set";
  } else if (v.has("SLURM_PROCID") && v.has("SLURM_NTASKS")) {
    w.launcher = "slurm";
    v.because = "SLURM_PROCID and SLURM_NTASKS are set";
  } else {
    return std::nullopt;
  }

  if (w.launcher == "slurm") {
    read_rank_vars(v, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", w);
    // srun sets no rendezvous address; rank 0 hosts the store, and srun starts task 0 on the first node.
    if (v.has("MASTER_ADDR")) {
      w.master_addr = v.text("MASTER_ADDR");
    } else {
      v.because += " and MASTER_ADDR is not";
      w.master_addr = first_slurm_host(v.text("SLURM_JOB_NODELIST"));
    }
    if (v.has("MASTER_PORT")) w.master_port = v.port("MASTER_PORT");
  } else {
    read_rank_vars(v, "RANK", "WORLD_SIZE", "LOCAL_RANK", w);
    w.master_addr = v.text("MASTER_ADDR");
    w.master_port = v.port("MASTER_PORT");
    if (w.launcher == "torchrun") read_agent_store(v, w);
  }
  return w;
}

std::optional<WorldEnv> world_from_environment() {
  return world_from_environment([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace blocklab
