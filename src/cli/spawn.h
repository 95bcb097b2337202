// Commands that run this executable again in child processes (demo's two trainings, launch's
// ranks, bench memory's rows).
#pragma once
#include <sys/types.h>

#include <map>
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

}  // namespace blocklab
