// Joining a distributed job: the variables of torchrun, Slurm and `blocklab launch` are read strictly,
// and every missing or malformed one is refused with a one-line message that names it.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "dist/world_env.h"
#include "util/error.h"

namespace blocklab {
namespace {

using Env = std::map<std::string, std::string>;

std::optional<WorldEnv> read_world(const Env& env) {
  return world_from_environment([&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

// Expects a one-line UserError that contains every fragment (the variable's name, mostly).
template <typename F>
void expect_user_error(F&& call, const std::vector<std::string>& fragments, const std::string& what) {
  try {
    call();
    ADD_FAILURE() << what << ": no UserError";
  } catch (const UserError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << what << ": " << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << what << ": " << msg << " lacks " << f;
  }
}

void expect_env_error(const Env& env, const std::vector<std::string>& fragments) {
  std::string what;
  for (const auto& [k, v] : env) what += k + "=" + v + " ";
  expect_user_error([&] { read_world(env); }, fragments, what);
}

const Env kTorchrun = {{"RANK", "2"},
                       {"WORLD_SIZE", "4"},
                       {"LOCAL_RANK", "1"},
                       {"MASTER_ADDR", "10.0.0.5"},
                       {"MASTER_PORT", "29400"}};
const Env kSlurm = {{"SLURM_PROCID", "1"},
                    {"SLURM_NTASKS", "3"},
                    {"SLURM_LOCALID", "0"},
                    {"SLURM_JOB_NODELIST", "node[07-09]"}};

Env with(Env env, const Env& changes) {
  for (const auto& [k, v] : changes) env[k] = v;
  return env;
}

Env without(Env env, const std::string& name) {
  env.erase(name);
  return env;
}

TEST(WorldEnv, ReadsTorchrunVariables) {
  const auto w = read_world(kTorchrun);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->launcher, "torchrun");
  EXPECT_EQ(w->rank, 2);
  EXPECT_EQ(w->world_size, 4);
  EXPECT_EQ(w->local_rank, 1);
  EXPECT_EQ(w->master_addr, "10.0.0.5");
  EXPECT_EQ(w->master_port, 29400);
  EXPECT_FALSE(w->agent_store);
  EXPECT_EQ(w->store_prefix, "");
  EXPECT_EQ(read_world(without(kTorchrun, "LOCAL_RANK"))->local_rank, 0);
}

TEST(WorldEnv, ReadsSlurmVariables) {
  const auto w = read_world(kSlurm);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->launcher, "slurm");
  EXPECT_EQ(w->rank, 1);
  EXPECT_EQ(w->world_size, 3);
  EXPECT_EQ(w->local_rank, 0);
  EXPECT_EQ(w->master_addr, "node07");  // the first node runs task 0
  EXPECT_EQ(w->master_port, 29500);
  EXPECT_FALSE(w->agent_store);
  EXPECT_EQ(read_world(without(kSlurm, "SLURM_LOCALID"))->local_rank, 0);

  const auto set = read_world(with(kSlurm, {{"MASTER_ADDR", "head.cluster"}, {"MASTER_PORT", "12345"}}));
  EXPECT_EQ(set->master_addr, "head.cluster");
  EXPECT_EQ(set->master_port, 12345);
  // With MASTER_ADDR set the node list is not needed.
  EXPECT_EQ(read_world(with(without(kSlurm, "SLURM_JOB_NODELIST"), {{"MASTER_ADDR", "h"}}))->master_addr, "h");
}

TEST(WorldEnv, TakesTheFirstHostOfSlurmNodeLists) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"host", "host"},
      {"a1,b2", "a1"},
      {"node[01-04,07],gpu5", "node01"},
      {"node[007-010]", "node007"},  // zero padding is part of the name
      {"node[3,1-2]", "node3"},      // the first entry as written, not the smallest
      {"gpu5,node[01-04]", "gpu5"},
      {"rack[3-4]-n[1-2]", "rack3-n1"},
      {"rack[3-4]-n[1-2],rack9-n1", "rack3-n1"},
      {"n-1.example.org", "n-1.example.org"},
  };
  for (const auto& [list, host] : cases) EXPECT_EQ(first_slurm_host(list), host) << list;
  EXPECT_EQ(read_world(with(kSlurm, {{"SLURM_JOB_NODELIST", "rack[3-4]-n[1-2]"}}))->master_addr, "rack3-n1");
}

TEST(WorldEnv, BlocklabLaunchTakesPrecedence) {
  // `blocklab launch` sets torchrun's variables as well; a job inside a Slurm allocation keeps SLURM_*.
  const auto w = read_world(with(with(kTorchrun, kSlurm), {{"BLOCKLAB_LAUNCH", "1"}}));
  ASSERT_TRUE(w);
  EXPECT_EQ(w->launcher, "blocklab");
  EXPECT_EQ(w->rank, 2);
  EXPECT_EQ(w->world_size, 4);
  EXPECT_EQ(w->master_addr, "10.0.0.5");
  // torchrun in a Slurm allocation: torchrun's ranks, not srun's.
  EXPECT_EQ(read_world(with(kTorchrun, kSlurm))->launcher, "torchrun");
  EXPECT_EQ(read_world(with(kTorchrun, kSlurm))->rank, 2);
  // The marker alone is not a job description.
  expect_env_error({{"BLOCKLAB_LAUNCH", "1"}}, {"RANK", "BLOCKLAB_LAUNCH"});
}

TEST(WorldEnv, AgentStorePrefixesKeysWithTheRestartCount) {
  const auto agent = with(kTorchrun, {{"TORCHELASTIC_USE_AGENT_STORE", "True"}});
  const auto w = read_world(with(agent, {{"TORCHELASTIC_RESTART_COUNT", "2"}}));
  EXPECT_TRUE(w->agent_store);
  EXPECT_EQ(w->store_prefix, "/worker/attempt_2");
  EXPECT_EQ(read_world(agent)->store_prefix, "/worker/attempt_0");  // unset: the first attempt

  const auto off = read_world(with(kTorchrun, {{"TORCHELASTIC_USE_AGENT_STORE", "False"}}));
  EXPECT_FALSE(off->agent_store);
  EXPECT_EQ(off->store_prefix, "");
  // Only torchrun's agent serves a store; `blocklab launch` never does.
  EXPECT_FALSE(read_world(with(agent, {{"BLOCKLAB_LAUNCH", "1"}}))->agent_store);
}

TEST(WorldEnv, NotInAJobIsNullopt) {
  EXPECT_FALSE(read_world({}));
  EXPECT_FALSE(read_world({{"HOME", "/root"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}));
  EXPECT_FALSE(read_world({{"RANK", "0"}}));  // a stray RANK alone is not torchrun
  EXPECT_FALSE(read_world({{"SLURM_PROCID", "0"}, {"SLURM_JOB_NODELIST", "a"}}));
}

// NAME="value", as the messages quote it.
std::string quoted(const std::string& name, const std::string& value) { return name + "=\"" + value + "\""; }

TEST(WorldEnv, RefusesMalformedIntegers) {
  expect_env_error(with(kTorchrun, {{"RANK", "x"}}), {"environment: RANK=\"x\" is not a non-negative integer"});
  // Strict: the whole string, digits only, fitting an int.
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "1x", "0x1", "1.0", "99999999999"}) {
    for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"})
      expect_env_error(with(kTorchrun, {{name, bad}}), {quoted(name, bad), "not a non-negative integer"});
    for (const char* name : {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "MASTER_PORT"})
      expect_env_error(with(kSlurm, {{name, bad}}), {quoted(name, bad), "not a non-negative integer"});
    expect_env_error(with(kTorchrun, {{"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RESTART_COUNT", bad}}),
                     {quoted("TORCHELASTIC_RESTART_COUNT", bad)});
  }
}

TEST(WorldEnv, RefusesInconsistentRanksAndPorts) {
  expect_env_error(with(kTorchrun, {{"RANK", "4"}}), {"RANK=\"4\"", "WORLD_SIZE=\"4\""});
  expect_env_error(with(kTorchrun, {{"RANK", "0"}, {"WORLD_SIZE", "0"}}), {"WORLD_SIZE=\"0\"", "at least 1"});
  expect_env_error(with(kSlurm, {{"SLURM_PROCID", "3"}}), {"SLURM_PROCID=\"3\"", "SLURM_NTASKS=\"3\""});
  expect_env_error(with(kSlurm, {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "0"}}), {"SLURM_NTASKS=\"0\""});
  for (const char* port : {"0", "65536"}) {
    expect_env_error(with(kTorchrun, {{"MASTER_PORT", port}}), {quoted("MASTER_PORT", port), "1..65535"});
    expect_env_error(with(kSlurm, {{"MASTER_PORT", port}}), {quoted("MASTER_PORT", port), "1..65535"});
  }
  EXPECT_EQ(read_world(with(kTorchrun, {{"MASTER_PORT", "65535"}}))->master_port, 65535);
  EXPECT_EQ(read_world(with(kTorchrun, {{"MASTER_PORT", "1"}}))->master_port, 1);
  expect_env_error(with(kTorchrun, {{"TORCHELASTIC_USE_AGENT_STORE", "1"}}),
                   {"TORCHELASTIC_USE_AGENT_STORE=\"1\"", "True or False"});
}

TEST(WorldEnv, RefusesMissingOrEmptyRendezvousVariables) {
  expect_env_error(without(kTorchrun, "MASTER_ADDR"), {"MASTER_ADDR is not set", "RANK and WORLD_SIZE"});
  expect_env_error(without(kTorchrun, "MASTER_PORT"), {"MASTER_PORT is not set"});
  expect_env_error(with(kTorchrun, {{"MASTER_ADDR", ""}}), {"MASTER_ADDR is set but empty"});
  expect_env_error(with(kSlurm, {{"MASTER_ADDR", ""}}), {"MASTER_ADDR is set but empty"});
  expect_env_error(without(kSlurm, "SLURM_JOB_NODELIST"), {"SLURM_JOB_NODELIST is not set", "MASTER_ADDR"});
  expect_env_error(with(kSlurm, {{"SLURM_JOB_NODELIST", "node[1-2"}}), {"SLURM_JOB_NODELIST=\"node[1-2\""});
  const Env blocklab = with(kTorchrun, {{"BLOCKLAB_LAUNCH", "1"}});
  for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"})
    expect_env_error(without(blocklab, name), {std::string(name) + " is not set", "BLOCKLAB_LAUNCH"});
}

TEST(WorldEnv, RefusesMalformedSlurmNodeLists) {
  for (const std::string bad : {"", ",", "a,", ",a", "a,,b", "node[1-2", "node]1", "node[1-2]]", "node[1[2]]",
                                "node[]", "node[1-]", "node[-2]", "node[1,]", "node[,1]", "node[3-1]", "node[a-b]",
                                "node[1-2-3]", "a,b[1-"})
    expect_user_error([&] { first_slurm_host(bad); }, {"SLURM_JOB_NODELIST", quoted("SLURM_JOB_NODELIST", bad)}, bad);
}

}  // namespace
}  // namespace blocklab
