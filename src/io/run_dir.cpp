#include "io/run_dir.h"

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
    if (j.value("step", int64_t(0)) <= step) kept += line + "\n";
  }
  write_text("metrics.jsonl", kept);
}

}  // namespace blocklab
