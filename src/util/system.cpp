#include "util/system.h"

#include <dlfcn.h>
#include <unistd.h>

#include <torch/torch.h>

#include "util/error.h"

namespace blocklab {

std::string blas_core() {
  using CoreName = char* (*)();
  auto fn = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!fn) return "not OpenBLAS (reference BLAS is 30-60x slower: apt-get install libopenblas-dev)";
  return fn();
}

void set_threads(int threads) {
  at::set_num_threads(threads);
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(threads);
}

int64_t physical_memory_bytes() { return int64_t(::sysconf(_SC_PHYS_PAGES)) * int64_t(::sysconf(_SC_PAGESIZE)); }

std::string cache_dir() {
  if (const char* p = std::getenv("BLOCKLAB_CACHE"); p && *p) return p;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/blocklab";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/blocklab";
  return ".blocklab-cache";
}

std::string resolve_device(const std::string& requested) {
  if (requested == "cpu") return "cpu";
  if (requested == "cuda") {
    if (!torch::cuda::is_available())
      throw UserError("train.device = \"cuda\" but this libtorch build sees no CUDA device "
                      "(build against a CUDA libtorch with CMAKE_PREFIX_PATH)");
    return "cuda";
  }
  throw UserError("unknown device \"" + requested + "\" (expected cpu or cuda)");
}

}  // namespace blocklab
