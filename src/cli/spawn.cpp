#include "cli/spawn.h"

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>

#include <fmt/format.h>

#include "util/error.h"

extern char** environ;

namespace blocklab {

pid_t spawn_self(std::vector<std::string> args, const std::string& what, const std::map<std::string, std::string>& set) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    if (!set.count(entry.substr(0, entry.find('=')))) env.push_back(entry);  // getenv would read the first
  }
  for (const auto& [name, value] : set) env.push_back(name + "=" + value);
  auto pointers = [](std::vector<std::string>& strings) {
    std::vector<char*> p;
    for (auto& s : strings) p.push_back(s.data());
    p.push_back(nullptr);
    return p;
  };
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

}  // namespace blocklab
