#include "io/run_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "io/atomic_file.h"
#include "util/error.h"

namespace blocklab {

namespace fs = std::filesystem;

RunDir::RunDir(std::string root, bool create) : root_(std::move(root)) {
  std::error_code ec;
  if (create) fs::create_directories(root_, ec);
  if (ec) throw UserError(fmt::format("{}: cannot create run directory: {}", root_, ec.message()));
  if (!fs::is_directory(root_)) throw UserError(fmt::format("{}: not a run directory", root_));
}

std::string RunDir::file(const std::string& name) const { return (fs::path(root_) / name).string(); }
bool RunDir::has(const std::string& name) const { return fs::exists(file(name)); }

void RunDir::write_text(const std::string& name, const std::string& text) const { write_file_atomic(file(name), text); }

void RunDir::write_json(const std::string& name, const nlohmann::json& j) const { write_text(name, j.dump(2) + "\n"); }

nlohmann::json RunDir::read_json(const std::string& name) const {
  try {
    return nlohmann::json::parse(read_file(file(name)));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("{}: not valid JSON ({})", file(name), e.what()));
  }
}

std::shared_ptr<void> RunDir::lock() const {
  const auto path = file(".lock");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    const auto n = ::pread(fd, pid, sizeof(pid) - 1, 0);
    ::close(fd);
    throw UserError(fmt::format("{}: another blocklab process (pid {}) is training in this run directory", root_,
                                n > 0 ? std::string(pid, size_t(n)) : std::string("unknown")));
  }
  const auto me = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != ssize_t(me.size())) {
    ::close(fd);
    throw UserError(fmt::format("{}: cannot write: {}", path, std::strerror(errno)));
  }
  // Holding the lock, no live process of ours writes here: a temporary whose writer is gone is a
  // leftover of a crash (kill -9 during an atomic write), here or in a block's folder below.
  std::error_code ec;
  for (const auto& entry : fs::recursive_directory_iterator(root_, ec)) {
    const auto name = entry.path().filename().string();
    const auto at = name.rfind(".tmp.");
    if (at == std::string::npos) continue;
    const auto pid_text = name.substr(at + 5);
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::strtol(pid_text.c_str(), nullptr, 10);
    if (pid != ::getpid() && ::kill(pid_t(pid), 0) != 0 && errno == ESRCH) fs::remove(entry.path(), ec);
  }
  return std::shared_ptr<void>(nullptr, [fd](void*) { ::close(fd); });
}

void RunDir::append_metrics(const nlohmann::json& line) const {
  std::ofstream out(file("metrics.jsonl"), std::ios::app);
  out << line.dump() << "\n";
  out.flush();
  if (!out) throw UserError(fmt::format("{}: cannot append", file("metrics.jsonl")));
}

void RunDir::truncate_metrics(int64_t step) const {
  if (!has("metrics.jsonl")) return;
  std::istringstream in(read_file(file("metrics.jsonl")));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;  // a line cut short by a crash
    // The final evaluation's line is written again by whatever run reaches the end.
    if (j.value("step", int64_t(0)) <= step && !j.value("final", false)) kept += line + "\n";
  }
  write_text("metrics.jsonl", kept);
}

}  // namespace blocklab
