#include "report/report.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "report/page_script.h"
#include "util/error.h"

namespace blocklab {

namespace {

namespace fs = std::filesystem;

std::string read_for_report(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(fmt::format("{}: cannot be read ({})", path, what));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Standard base64 (RFC 4648), for images inlined as data: URLs.
std::string base64(const std::string& bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k) v = (v << 8) | (k < n ? uint8_t(bytes[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kAlphabet[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

// The lines of one metrics.jsonl, appended to `rows`.
void read_metrics(const std::string& path, nlohmann::json& rows) {
  std::istringstream lines(read_for_report(path, "metrics"));
  int64_t number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    if (line.empty()) continue;
    auto row = nlohmann::json::parse(line, nullptr, false);
    if (row.is_discarded() || !row.is_object()) throw UserError(fmt::format("{}:{}: not a JSON object", path, number));
    rows.push_back(std::move(row));
  }
}

// The files of `dir` (not recursive) whose names end in `suffix`, sorted.
std::vector<fs::path> files_ending(const std::string& dir, const std::string& suffix) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto name = e.path().filename().string();
    if (e.is_regular_file() && name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// What the page shows of a profile directory (`blocklab profile`'s ops.json): the op table is cut
// to its kMaxOps rows of the most self time.
constexpr size_t kMaxOps = 400;
nlohmann::json read_profile(const std::string& dir) {
  const auto path = (fs::path(dir) / "ops.json").string();
  if (!fs::exists(path)) throw UserError(fmt::format("{}: not a profile directory (no ops.json; `blocklab profile` writes one)", dir));
  auto ops = nlohmann::json::parse(read_for_report(path, "profile"), nullptr, false);
  if (ops.is_discarded() || !ops.is_object() || !ops.contains("ops")) throw UserError(fmt::format("{}: not a profile's ops.json", path));
  nlohmann::json p = {{"dir", dir}, {"trace", (fs::path(dir) / "trace.json").string()}, {"total_ops", ops["ops"].size()}};
  for (const char* key : {"mode", "family", "model", "batch_size", "threads", "device", "blas_core", "clock", "steps",
                          "wall_ms", "self_sum_ms", "mfu", "phases", "commit"})
    if (ops.contains(key)) p[key] = ops[key];
  p["ops"] = nlohmann::json::array();
  for (size_t i = 0; i < std::min(kMaxOps, ops["ops"].size()); ++i) p["ops"].push_back(ops["ops"][i]);
  return p;
}

// Figures bigger than this are left out of the page (named there), which stays small enough to mail.
constexpr uintmax_t kMaxImageBytes = 4 << 20;
constexpr size_t kMaxTextBytes = 6000;

nlohmann::json read_run(const std::string& dir) {
  // Metrics: the run's, and those of blocks trained apart (blocks/K/metrics.jsonl, `--block`, launch).
  std::vector<std::string> metric_files;
  if (fs::exists(fs::path(dir) / "metrics.jsonl")) metric_files.push_back((fs::path(dir) / "metrics.jsonl").string());
  if (fs::is_directory(fs::path(dir) / "blocks"))
    for (int b = 0; fs::exists(fs::path(dir) / "blocks" / std::to_string(b)); ++b)
      if (fs::exists(fs::path(dir) / "blocks" / std::to_string(b) / "metrics.jsonl"))
        metric_files.push_back((fs::path(dir) / "blocks" / std::to_string(b) / "metrics.jsonl").string());
  if (metric_files.empty()) throw UserError(fmt::format("{}: not a run directory (no metrics.jsonl)", dir));
  nlohmann::json run;
  const auto normal = fs::path(dir).lexically_normal();
  run["name"] = (normal.filename().empty() ? normal.parent_path() : normal).filename().string();
  const auto summary_path = (fs::path(dir) / "summary.json").string();
  run["summary"] = fs::exists(summary_path) ? nlohmann::json::parse(read_for_report(summary_path, "summary"), nullptr, false)
                                            : nlohmann::json::object();
  if (run["summary"].is_discarded()) throw UserError(fmt::format("{}: not valid JSON", summary_path));
  // What the family made for a person: generated text and images (PNG, inlined).
  run["texts"] = nlohmann::json::array();
  for (const char* name : {"samples.txt", "judge-samples.txt"}) {
    const auto path = (fs::path(dir) / name).string();
    if (fs::exists(path)) run["texts"].push_back({{"file", name}, {"text", read_for_report(path, "samples").substr(0, kMaxTextBytes)}});
  }
  run["images"] = nlohmann::json::array();
  for (const auto& png : files_ending(dir, ".png")) {
    nlohmann::json image = {{"file", png.filename().string()}, {"bytes", fs::file_size(png)}};
    if (fs::file_size(png) <= kMaxImageBytes) image["src"] = "data:image/png;base64," + base64(read_for_report(png.string(), "image"));
    run["images"].push_back(image);
  }
  std::vector<fs::path> profiles;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("profile", 0) == 0 && fs::exists(e.path() / "ops.json"))
      profiles.push_back(e.path());
  std::sort(profiles.begin(), profiles.end());
  run["profiles"] = nlohmann::json::array();
  for (const auto& p : profiles) run["profiles"].push_back(read_profile(p.string()));
  run["metrics"] = nlohmann::json::array();
  for (const auto& path : metric_files) read_metrics(path, run["metrics"]);
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
table.sortable, table.confusion { border-collapse: collapse; font-size: 12px; margin-bottom: 1em; }
.sortable td, .sortable th, .confusion td { border: 1px solid #ddd; padding: 1px 6px; text-align: right; }
.sortable th { cursor: pointer; background: #f3f3f3; user-select: none; }
.sortable th.down::after { content: " \25BC"; } .sortable th.up::after { content: " \25B2"; }
.sortable td.text { text-align: left; font-family: ui-monospace, monospace; }
.confusion td.cell { min-width: 3em; }
img.figure { width: 640px; max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }
h3 { font-size: 1em; }
.samples { white-space: pre-wrap; font: 12px ui-monospace, monospace; background: #f7f7f7; padding: 8px; max-height: 300px; overflow-y: auto; }
)css";

}  // namespace

void check_report_library() {
  const std::string lib = std::string(kDygraphsDir) + "/dygraph.min.js";
  if (!std::filesystem::exists(lib))
    throw UserError(fmt::format("{}: missing; install Debian's libjs-dygraphs (scripts/install-deps.sh)", lib));
}

std::string render_report(const std::vector<std::string>& run_dirs, const std::vector<std::string>& profile_dirs) {
  check_report_library();
  const std::string lib = std::string(kDygraphsDir) + "/dygraph.min.js", css = std::string(kDygraphsDir) + "/dygraph.min.css";
  nlohmann::json data;
  data["runs"] = nlohmann::json::array();
  std::string names;
  for (const auto& dir : run_dirs) {
    data["runs"].push_back(read_run(dir));
    names += (names.empty() ? "" : ", ") + data["runs"].back()["name"].get<std::string>();
  }
  data["profiles"] = nlohmann::json::array();
  for (auto& run : data["runs"]) {
    for (auto& p : run["profiles"]) {
      p["run"] = run["name"];
      data["profiles"].push_back(std::move(p));
    }
    run.erase("profiles");
  }
  for (const auto& dir : profile_dirs) data["profiles"].push_back(read_profile(dir));
  std::string page;
  page += "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>blocklab report: " + names + "</title>\n";
  page += "<style>" + read_for_report(css, "libjs-dygraphs") + kStyle + "</style>\n";
  page += "<script>" + read_for_report(lib, "libjs-dygraphs") + "</script>\n</head><body>\n";
  page += "<h1>blocklab report: " + names + "</h1>\n";
  page += "<h2>Training</h2><div class=\"plots\"><div id=\"plot-loss\"></div><div id=\"plot-loss-time\"></div>"
          "<div id=\"plot-lr\"></div><div id=\"plot-grad\"></div></div>\n";
  page += "<div id=\"evaluations\"></div>\n";
  page += "<h2>Summary</h2><p>Numbers in brackets: the difference to the first run.</p><table id=\"summary\"></table>\n";
  page += "<div id=\"made\"></div>\n<div id=\"profiles\"></div>\n";
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
