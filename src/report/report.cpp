#include "report/report.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "report/page_script.h"
#include "util/error.h"

namespace blocklab {

namespace {

std::string read_for_report(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(fmt::format("{}: cannot be read ({})", path, what));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

nlohmann::json read_run(const std::string& dir) {
  namespace fs = std::filesystem;
  const auto metrics_path = (fs::path(dir) / "metrics.jsonl").string();
  if (!fs::exists(metrics_path)) throw UserError(fmt::format("{}: not a run directory (no metrics.jsonl)", dir));
  nlohmann::json run;
  run["name"] = fs::path(dir).lexically_normal().filename().string();
  if (run["name"].get<std::string>().empty()) run["name"] = fs::path(dir).lexically_normal().parent_path().filename().string();
  const auto summary_path = (fs::path(dir) / "summary.json").string();
  run["summary"] = fs::exists(summary_path) ? nlohmann::json::parse(read_for_report(summary_path, "summary"), nullptr, false)
                                            : nlohmann::json::object();
  if (run["summary"].is_discarded()) throw UserError(fmt::format("{}: not valid JSON", summary_path));
  // What the family made that a person reads: the language models' judged samples.
  const auto samples = (fs::path(dir) / "judge-samples.txt").string();
  if (fs::exists(samples)) run["text_samples"] = read_for_report(samples, "samples").substr(0, 6000);
  run["metrics"] = nlohmann::json::array();
  std::istringstream lines(read_for_report(metrics_path, "metrics"));
  int64_t number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    if (line.empty()) continue;
    auto row = nlohmann::json::parse(line, nullptr, false);
    if (row.is_discarded() || !row.is_object())
      throw UserError(fmt::format("{}:{}: not a JSON object", metrics_path, number));
    run["metrics"].push_back(std::move(row));
  }
  return run;
}

// JSON inside <script>: "</" would end the element.
std::string script_safe(const std::string& json) {
  std::string out;
  out.reserve(json.size());
  for (size_t i = 0; i < json.size(); ++i) {
    out += json[i];
    if (json[i] == '<' && i + 1 < json.size() && json[i + 1] == '/') out += "\\";
  }
  return out;
}

constexpr const char* kStyle = R"css(
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
.plots { display: flex; flex-wrap: wrap; gap: 1.5em; }
table#summary { border-collapse: collapse; } #summary td { border: 1px solid #ccc; padding: 2px 8px; }
#summary tr:first-child td { font-weight: bold; background: #f3f3f3; }
#metrics { height: 420px; overflow-y: scroll; border: 1px solid #ccc; position: relative; }
#metrics-space { position: relative; }
.row { position: absolute; left: 0; right: 0; height: 22px; line-height: 22px; padding: 0 6px; white-space: pre;
       font: 12px ui-monospace, monospace; border-bottom: 1px solid #eee; cursor: pointer; overflow: hidden; box-sizing: border-box; }
.row.open { height: auto; background: #fafaf0; line-height: 16px; }
#scrub { width: 100%; }
.samples { white-space: pre-wrap; font: 12px ui-monospace, monospace; background: #f7f7f7; padding: 8px; max-height: 300px; overflow-y: auto; }
)css";

}  // namespace

std::string render_report(const std::vector<std::string>& run_dirs) {
  const std::string lib = std::string(kDygraphsDir) + "/dygraph.min.js", css = std::string(kDygraphsDir) + "/dygraph.min.css";
  if (!std::filesystem::exists(lib))
    throw UserError(fmt::format("{}: missing; install Debian's libjs-dygraphs (scripts/install-deps.sh)", lib));
  nlohmann::json data;
  data["runs"] = nlohmann::json::array();
  std::string names;
  for (const auto& dir : run_dirs) {
    data["runs"].push_back(read_run(dir));
    names += (names.empty() ? "" : ", ") + data["runs"].back()["name"].get<std::string>();
  }
  std::string page;
  page += "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>blocklab report: " + names + "</title>\n";
  page += "<style>" + read_for_report(css, "libjs-dygraphs") + kStyle + "</style>\n";
  page += "<script>" + read_for_report(lib, "libjs-dygraphs") + "</script>\n</head><body>\n";
  page += "<h1>blocklab report: " + names + "</h1>\n";
  page += "<h2>Training</h2><div class=\"plots\"><div id=\"plot-loss\"></div><div id=\"plot-loss-time\"></div>"
          "<div id=\"plot-lr\"></div><div id=\"plot-grad\"></div></div>\n";
  page += "<h2>Summary</h2><p>Numbers in brackets: the difference to the first run.</p><table id=\"summary\"></table>\n";
  page += "<div id=\"samples\"></div>\n";
  page += "<h2>Metrics</h2><p>Every line of metrics.jsonl; click a row for all of it. The slider moves through the rows.</p>"
          "<input type=\"range\" id=\"scrub\" min=\"0\" value=\"0\"><div id=\"metrics\"><div id=\"metrics-space\"></div></div>\n";
  page += "<pre id=\"selftest\"></pre>\n";
  // Model-made text need not be UTF-8: invalid bytes become U+FFFD rather than an error.
  const auto json = data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  page += "<script type=\"application/json\" id=\"data\">" + script_safe(json) + "</script>\n";
  page += "<script>" + std::string(kReportScript) + "</script>\n</body></html>\n";
  return page;
}

}  // namespace blocklab
