// Where this process sits in a distributed job, read from the variables its launcher sets:
// torchrun (also `blocklab launch`, which sets the same ones) or Slurm's srun. docs/distributed.md
// lists them. No libtorch here: the process group is built from this elsewhere.
#pragma once
#include <functional>
#include <optional>
#include <string>

namespace blocklab {

/// Where this process sits in a distributed job, read from the launcher's environment.
struct WorldEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher;    // "torchrun", "slurm" or "blocklab"
  bool agent_store = false;  // torchrun with TORCHELASTIC_USE_AGENT_STORE=True: no rank hosts the TCPStore
  std::string store_prefix;  // under the agent store: "/worker/attempt_<TORCHELASTIC_RESTART_COUNT>", else ""
};

/// Reads the job's variables through `get` (a getenv replacement, for tests; nullptr when unset).
/// Order: BLOCKLAB_LAUNCH set -> "blocklab" (with torchrun's variables); else RANK and WORLD_SIZE set ->
/// "torchrun" (RANK, WORLD_SIZE, LOCAL_RANK (default 0), MASTER_ADDR, MASTER_PORT); else SLURM_PROCID and
/// SLURM_NTASKS set -> "slurm" (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (default 0), MASTER_ADDR or else
/// the first host of SLURM_JOB_NODELIST, MASTER_PORT or else 29500); else std::nullopt (not in a job).
/// UserError naming the variable and its value on any missing, malformed or inconsistent value.
std::optional<WorldEnv> world_from_environment(const std::function<const char*(const char*)>& get);
/// The same with the process's real environment (std::getenv).
std::optional<WorldEnv> world_from_environment();

/// The first host name of a Slurm node list: "node[01-04,07],gpu5" -> "node01", "rack[3-4]-n[1-2]" ->
/// "rack3-n1". UserError naming SLURM_JOB_NODELIST and the value on an empty or malformed list.
std::string first_slurm_host(const std::string& nodelist);

}  // namespace blocklab
