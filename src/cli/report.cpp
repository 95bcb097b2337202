// `blocklab report`: an offline HTML page for run directories (src/report/report.h).
#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.h"
#include "io/atomic_file.h"
#include "report/report.h"

namespace blocklab {

int cmd_report(const ReportArgs& a) {
  const auto page = render_report(a.runs, a.profiles);
  write_file_atomic(a.out, page);
  fmt::print("{}: {} run(s), {:.1f} KiB\n", a.out, a.runs.size(), double(page.size()) / 1024.0);
  return 0;
}

}  // namespace blocklab
