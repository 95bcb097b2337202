#include "cli/spawn.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "util/error.h"

extern char** environ;

namespace blocklab {
namespace {

// This process's environment, in which `set` replaces or adds variables.
std::vector<std::string> environment_with(const std::map<std::string, std::string>& set) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    if (!set.count(entry.substr(0, entry.find('=')))) env.push_back(entry);  // getenv would read the first
  }
  for (const auto& [name, value] : set) env.push_back(name + "=" + value);
  return env;
}

// The null-terminated pointer array posix_spawn takes; `strings` must outlive it.
std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> p;
  for (auto& s : strings) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

}  // namespace

pid_t spawn_self(std::vector<std::string> args, const std::string& what, const std::map<std::string, std::string>& set) {
  auto env = environment_with(set);
  auto argv = pointers(args), envp = pointers(env);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data()) != 0)
    throw UserError(fmt::format("cannot start {}", what));
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

bool succeeded(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

LineChild::LineChild(const std::vector<std::string>& args, const std::string& what,
                     const std::map<std::string, std::string>& set, const std::string& stderr_path) {
  // A child that has died must become an error message here, not a SIGPIPE that ends this
  // process silently when it writes the next line.
  std::signal(SIGPIPE, SIG_IGN);
  int in[2], out[2];  // [read end, write end]; close-on-exec, so the child keeps only its dup2 copies
  if (::pipe2(in, O_CLOEXEC) != 0) throw UserError(fmt::format("cannot start {}: {}", what, std::strerror(errno)));
  if (::pipe2(out, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(in[0]), ::close(in[1]);
    throw UserError(fmt::format("cannot start {}: {}", what, std::strerror(err)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  auto argv_strings = args;
  auto env = environment_with(set);
  auto argv = pointers(argv_strings), envp = pointers(env);
  const int rc = posix_spawnp(&pid_, args.at(0).c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(in[0]), ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]), ::close(out[0]);
    pid_ = 0;
    throw UserError(fmt::format("cannot start {}: {}: {}", what, args[0], std::strerror(rc)));
  }
  to_ = ::fdopen(in[1], "w");
  from_ = ::fdopen(out[0], "r");
}

LineChild::~LineChild() { finish(); }

bool LineChild::send(const std::string& line) {
  if (!to_) return false;
  return std::fputs((line + "\n").c_str(), to_) >= 0 && std::fflush(to_) == 0;
}

std::optional<std::string> LineChild::receive() {
  if (!from_) return std::nullopt;
  char* buffer = nullptr;
  size_t capacity = 0;
  const ssize_t n = ::getline(&buffer, &capacity, from_);
  if (n < 0) {
    std::free(buffer);
    return std::nullopt;
  }
  std::string line(buffer, size_t(n));
  std::free(buffer);
  if (!line.empty() && line.back() == '\n') line.pop_back();
  return line;
}

int LineChild::finish() {
  if (to_) std::fclose(to_), to_ = nullptr;
  if (from_) std::fclose(from_), from_ = nullptr;
  if (pid_ > 0) status_ = wait_for(pid_), pid_ = 0;
  return status_;
}

}  // namespace blocklab
