// Commands that run this executable again in child processes (demo's two trainings, launch's
// ranks, bench memory's rows), or another program spoken to in lines (bench twin's Python twin).
#pragma once
#include <sys/types.h>

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace blocklab {

/// Starts this executable with `args` (args[0] is the program's name) and this process's
/// environment, in which `set` replaces or adds variables. UserError saying `what` if it cannot.
pid_t spawn_self(std::vector<std::string> args, const std::string& what,
                 const std::map<std::string, std::string>& set = {});

/// Waits for child `pid` (through interrupting signals); its wait status.
int wait_for(pid_t pid);

/// Whether a wait status is a clean exit (status 0).
bool succeeded(int status);

/// A child program spoken to in lines: its stdin and stdout are pipes to this process, its stderr
/// goes to a file, so that nothing it prints there mixes with this process's output.
class LineChild {
 public:
  /// Starts args[0] (searched in PATH) with `args` and this environment, in which `set` replaces or
  /// adds variables. UserError saying `what` and why if it cannot be started.
  LineChild(const std::vector<std::string>& args, const std::string& what,
            const std::map<std::string, std::string>& set, const std::string& stderr_path);
  ~LineChild();
  LineChild(const LineChild&) = delete;
  LineChild& operator=(const LineChild&) = delete;

  /// Writes one line; false if the child has closed its stdin (ended).
  bool send(const std::string& line);
  /// The next line it writes, without the newline; nullopt once it has closed its stdout.
  std::optional<std::string> receive();
  /// Closes its stdin (which tells a line-reading child to end) and waits: its wait status.
  int finish();

 private:
  pid_t pid_ = 0;
  int status_ = 0;             // its wait status, once finished
  std::FILE* to_ = nullptr;    // its stdin
  std::FILE* from_ = nullptr;  // its stdout
};

}  // namespace blocklab
