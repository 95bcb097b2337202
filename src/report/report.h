// `blocklab report`: one self-contained HTML page for one or more run directories (plots of the
// metrics by dygraphs, the summaries side by side, the raw metrics in a virtual table). Nothing
// is fetched when the page opens: data, script and style are inline.
#pragma once
#include <string>
#include <vector>

namespace blocklab {

/// Where the page's charting library comes from (Debian's libjs-dygraphs).
inline constexpr const char* kDygraphsDir = "/usr/share/javascript/dygraphs";

/// UserError unless the charting library the page inlines is installed.
void check_report_library();

/// The page for `run_dirs` (each needs metrics.jsonl; summary.json when present). UserError naming
/// the file on a missing run, a malformed line, or a missing charting library.
/// Profiles (`blocklab profile` directories, with ops.json) found in a run directory as
/// profile*/ are shown with it; `profile_dirs` adds others.
std::string render_report(const std::vector<std::string>& run_dirs, const std::vector<std::string>& profile_dirs = {});

}  // namespace blocklab
