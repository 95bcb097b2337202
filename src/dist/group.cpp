#include "dist/group.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "util/error.h"

namespace blocklab {

namespace {

// After a failed collective, destroying the group blocks until its timeout; the rank reports and
// leaves at once instead (its last checkpoint is whole: every write is atomic).
[[noreturn]] void leave(int rank, const std::string& what, const std::exception& e) {
  fmt::print(stderr, "\nerror: rank {}: {} failed: {}: another rank died or stopped answering; the run stops. "
                     "Its checkpoints are intact: continue with --resume\n", rank, what, e.what());
  std::fflush(stderr);
  std::_Exit(1);
}

// The network interface Gloo talks over: GLOO_SOCKET_IFNAME as in PyTorch, loopback for a job on one
// machine, otherwise the address this host's name resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const WorldEnv& env) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost")
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

struct ProcessGroup::Impl {
  int rank = 0, size = 1;
  int world_rank = 0;  // for messages
  WorldEnv env;
  std::chrono::milliseconds timeout{0};
  torch::Device device{torch::kCPU};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;

  void join() {
    if (device.is_cuda()) {
#ifdef USE_C10D_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
#else
      throw UserError("this libtorch has no NCCL: a distributed run on CUDA needs a CUDA build of libtorch");
#endif
    } else {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices.push_back(gloo_device(env));
      group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
    }
  }
};

ProcessGroup::ProcessGroup(const WorldEnv& env, double timeout_seconds, const torch::Device& device)
    : impl_(std::make_unique<Impl>()) {
  impl_->rank = env.rank;
  impl_->size = env.world_size;
  impl_->world_rank = env.rank;
  impl_->env = env;
  impl_->device = device;
  const auto timeout = std::chrono::milliseconds(int64_t(timeout_seconds * 1000));
  impl_->timeout = timeout;
  try {
    c10d::TCPStoreOptions opts;
    opts.port = uint16_t(env.master_port);
    // Rank 0 hosts the store, unless a launcher does (ours, or torchrun's agent).
    opts.isServer = env.rank == 0 && !env.agent_store && env.launcher != "blocklab";
    opts.waitWorkers = false;
    opts.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
    if (!env.store_prefix.empty()) store = c10::make_intrusive<c10d::PrefixStore>(env.store_prefix, store);
    impl_->store = store;
    impl_->join();
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {
    throw UserError(fmt::format("rank {}: cannot join the run at {}:{} ({} ranks): {}", env.rank, env.master_addr,
                                env.master_port, env.world_size, e.what()));
  }
}

ProcessGroup::ProcessGroup(const ProcessGroup& parent, const std::string& name, int rank, int size)
    : impl_(std::make_unique<Impl>(*parent.impl_)) {
  impl_->rank = rank;
  impl_->size = size;
  impl_->store = c10::make_intrusive<c10d::PrefixStore>(name, parent.impl_->store);
  try {
    impl_->join();
  } catch (const std::exception& e) {
    leave(impl_->world_rank, "joining the group " + name, e);
  }
}

ProcessGroup::~ProcessGroup() = default;
int ProcessGroup::rank() const { return impl_->rank; }
int ProcessGroup::size() const { return impl_->size; }

void ProcessGroup::all_reduce(torch::Tensor& t, const std::string& what) {
  try {
    std::vector<torch::Tensor> tensors{t};
    impl_->group->allreduce(tensors)->wait();
  } catch (const std::exception& e) {
    leave(impl_->world_rank, "the all-reduce of " + what, e);
  }
}

void ProcessGroup::barrier(const std::string& what) {
  try {
    impl_->group->barrier()->wait();
  } catch (const std::exception& e) {
    leave(impl_->world_rank, "waiting for every rank " + what, e);
  }
}

void ProcessGroup::wait_for_all(const std::string& key) {
  try {
    impl_->store->set(fmt::format("{}/{}", key, impl_->rank), std::vector<uint8_t>{'1'});
    std::vector<std::string> keys;
    for (int r = 0; r < impl_->size; ++r) keys.push_back(fmt::format("{}/{}", key, r));
    impl_->store->wait(keys, std::chrono::hours(24 * 7));
  } catch (const std::exception& e) {
    leave(impl_->world_rank, "waiting for every rank to reach " + key, e);
  }
}

void ProcessGroup::publish(const std::string& key, const std::string& value) {
  // Best effort: progress is for messages, and independent blocks must not stop because the
  // store's host did (they meet again only at the end).
  try {
    impl_->store->set(fmt::format("{}/{}", key, impl_->rank), std::vector<uint8_t>(value.begin(), value.end()));
  } catch (const std::exception&) {
  }
}

struct StoreHost::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

StoreHost::StoreHost() : impl_(std::make_unique<Impl>()) {
  c10d::TCPStoreOptions opts;
  opts.port = 0;  // the kernel picks a free one
  opts.isServer = true;
  opts.waitWorkers = false;
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", opts);
  } catch (const std::exception& e) {
    throw UserError(fmt::format("launch: cannot open the rendezvous store on 127.0.0.1: {}", e.what()));
  }
}

StoreHost::~StoreHost() = default;
int StoreHost::port() const { return impl_->store->getPort(); }

std::string StoreHost::get(const std::string& key) {
  if (!impl_->store->check({key})) return "";
  const auto v = impl_->store->get(key);
  return std::string(v.begin(), v.end());
}

}  // namespace blocklab
