// Scores of generated text (docs/language-models.md): how likely an independent judge model
// finds it, and how varied it is. Either alone misleads: a judge rewards repetition loops, a
// diversity count rewards noise.
#pragma once
#include <string>
#include <vector>

namespace blocklab {

class AutoregressiveLM;

/// Distinct n-grams: the number of different byte n-grams over all texts divided by the number of
/// n-grams (counted within each text). 1 when nothing repeats; near 0 for a loop.
double distinct_ngrams(const std::vector<std::string>& texts, int n);

/// Prompts with their continuations (and the true ones) as a readable text: "=== prompt i",
/// "--- generated", "--- reference" sections.
std::string samples_text(const std::vector<std::string>& prompts, const std::vector<std::string>& generated,
                         const std::vector<std::string>& references);

/// Mean bits per byte an end-to-end autoregressive `judge` assigns to each continuation given its
/// prompt (generative bits per byte). Prompt + continuation must fit in the judge's window.
double judge_bits(AutoregressiveLM& judge, const std::vector<std::string>& prompts,
                  const std::vector<std::string>& continuations);

}  // namespace blocklab
