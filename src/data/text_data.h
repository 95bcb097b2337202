// Text as bytes for the language models: 256 byte symbols (the masked-diffusion model adds a
// mask token), no tokenizer. A corpus is a UTF-8 file or a folder of them; it is cut into
// documents (fortune files: the entries between '%' lines; other text: paragraphs), and each
// document goes to training or validation by a hash of its bytes, so the split does not depend
// on file order and duplicates never straddle it. Each split is its documents joined by blank
// lines and cut into windows of seq_len bytes.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace blocklab {

/// The documents of a corpus, in path order. UserError naming the path when it is missing or
/// holds no text. Folders are read recursively; binary files (a NUL byte) and second links to
/// a file are skipped.
std::vector<std::string> read_documents(const std::string& path);

/// Whether a document belongs to validation: its FNV-1a hash, as a fraction, below `fraction`.
bool is_validation_document(const std::string& doc, double fraction);

class TextData : public Dataset {
 public:
  static constexpr int64_t kBytes = 256;  // symbols the models predict

  /// The corpus at `path` in windows of `seq_len` bytes; `train_limit` / `test_limit` keep the
  /// first windows of a split (0: all). UserError naming the path when a split is shorter than a window.
  static TextData load(const std::string& path, int64_t seq_len, double val_fraction, int64_t train_limit = 0,
                       int64_t test_limit = 0);
  /// From two byte streams already joined (tests).
  TextData(std::string train, std::string validation, int64_t seq_len, std::string source);

  int64_t size(Split split) const override;
  /// x: the windows' bytes, int64 [N, seq_len]; y undefined.
  Batch batch(Split split, const torch::Tensor& indices, const torch::Device& device) const override;
  DataShape shape() const override;
  std::string source() const override { return source_; }

  /// A split's whole byte stream (for n-gram statistics of real text).
  const std::string& text(Split split) const { return split == Split::Train ? train_ : validation_; }
  int64_t seq_len() const { return seq_len_; }

 private:
  std::string train_, validation_;
  int64_t seq_len_;
  std::string source_;
  int64_t train_windows_ = 0, validation_windows_ = 0;
};

/// Bytes of a string as int64 tokens [T], and back.
torch::Tensor bytes_to_tokens(const std::string& text);
std::string tokens_to_bytes(const torch::Tensor& tokens);

}  // namespace blocklab
