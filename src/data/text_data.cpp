#include "data/text_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "util/error.h"

namespace blocklab {

namespace fs = std::filesystem;

namespace {

std::string read_whole(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw UserError(fmt::format("data.path: {}: cannot be read", p.string()));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Fortune files separate entries by lines holding only '%'; other text is cut at blank lines.
void split_documents(const std::string& text, std::vector<std::string>& out) {
  const bool fortunes = text.rfind("%\n", 0) == 0 || text.find("\n%\n") != std::string::npos;
  std::string doc;
  auto flush = [&] {
    const auto end = doc.find_last_not_of(" \t\r\n");
    if (end != std::string::npos) out.push_back(doc.substr(0, end + 1));
    doc.clear();
  };
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const bool boundary = fortunes ? line == "%" : line.find_first_not_of(" \t\r") == std::string::npos;
    if (boundary) flush();
    else doc += line + "\n";
  }
  flush();
}

int64_t windows_of(const std::string& text, int64_t seq_len) { return int64_t(text.size()) / seq_len; }

}  // namespace

std::vector<std::string> read_documents(const std::string& path) {
  std::error_code ec;
  const fs::path root(path);
  if (!fs::exists(root, ec)) throw UserError(fmt::format("data.path: {}: no such file or folder", path));
  std::vector<fs::path> files;
  if (fs::is_directory(root, ec)) {
    std::set<fs::path> seen;
    std::vector<fs::path> all;
    for (const auto& e : fs::recursive_directory_iterator(root, ec))
      if (e.is_regular_file()) all.push_back(e.path());
    std::sort(all.begin(), all.end());
    for (const auto& p : all)
      if (seen.insert(fs::canonical(p, ec)).second) files.push_back(p);
  } else {
    files.push_back(root);
  }
  std::vector<std::string> docs;
  for (const auto& f : files) {
    const auto text = read_whole(f);
    if (text.find('\0') != std::string::npos) {
      if (files.size() == 1) throw UserError(fmt::format("data.path: {}: a binary file, not text", f.string()));
      continue;  // e.g. the fortune package's .dat indexes
    }
    split_documents(text, docs);
  }
  if (docs.empty()) throw UserError(fmt::format("data.path: {}: no text in it", path));
  return docs;
}

bool is_validation_document(const std::string& doc, double fraction) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a, 64 bits
  for (unsigned char c : doc) h = (h ^ c) * 1099511628211ull;
  return double(h % 1000000) / 1e6 < fraction;
}

TextData TextData::load(const std::string& path, int64_t seq_len, double val_fraction, int64_t train_limit,
                        int64_t test_limit) {
  std::string train, validation;
  for (const auto& doc : read_documents(path)) (is_validation_document(doc, val_fraction) ? validation : train) += doc + "\n\n";
  auto refuse_short = [&](const std::string& text, const char* split) {
    if (windows_of(text, seq_len) == 0)
      throw UserError(fmt::format("data.path: {}: its {} text has {} bytes, fewer than one window of data.seq_len = {}",
                                  path, split, text.size(), seq_len));
  };
  refuse_short(train, "training");
  refuse_short(validation, "validation (raise data.val_fraction?)");
  TextData data(std::move(train), std::move(validation), seq_len, path);
  if (train_limit > 0) data.train_windows_ = std::min(data.train_windows_, train_limit);
  if (test_limit > 0) data.validation_windows_ = std::min(data.validation_windows_, test_limit);
  return data;
}

TextData::TextData(std::string train, std::string validation, int64_t seq_len, std::string source)
    : train_(std::move(train)), validation_(std::move(validation)), seq_len_(seq_len), source_(std::move(source)) {
  train_windows_ = windows_of(train_, seq_len_);
  validation_windows_ = windows_of(validation_, seq_len_);
}

int64_t TextData::size(Split split) const { return split == Split::Train ? train_windows_ : validation_windows_; }

Batch TextData::batch(Split split, const torch::Tensor& indices, const torch::Device& device) const {
  const auto& text = this->text(split);
  const auto idx = indices.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t n = idx.size(0);
  auto x = torch::empty({n, seq_len_}, torch::kInt64);
  auto* out = x.data_ptr<int64_t>();
  const auto* ids = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(ids[i] >= 0 && ids[i] < size(split), "window ", ids[i], " out of range");
    const auto* src = reinterpret_cast<const unsigned char*>(text.data()) + ids[i] * seq_len_;
    for (int64_t j = 0; j < seq_len_; ++j) out[i * seq_len_ + j] = src[j];
  }
  return {x.to(device), torch::Tensor()};
}

DataShape TextData::shape() const {
  DataShape s;
  s.vocab = kBytes;
  s.seq_len = seq_len_;
  return s;
}

torch::Tensor bytes_to_tokens(const std::string& text) {
  auto t = torch::empty({int64_t(text.size())}, torch::kInt64);
  auto* p = t.data_ptr<int64_t>();
  for (size_t i = 0; i < text.size(); ++i) p[i] = static_cast<unsigned char>(text[i]);
  return t;
}

std::string tokens_to_bytes(const torch::Tensor& tokens) {
  const auto t = tokens.to(torch::kCPU, torch::kInt64).contiguous();
  std::string s(static_cast<size_t>(t.numel()), '\0');
  const auto* p = t.data_ptr<int64_t>();
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>(p[i]);
  return s;
}

}  // namespace blocklab
