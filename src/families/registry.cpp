#include "families/registry.h"

#include "data/image_data.h"
#include "data/text_data.h"
#include "families/classifier/classifier.h"
#include "families/dit/generator.h"
#include "families/lm/ar.h"
#include "families/lm/mdm.h"
#include "util/seed.h"

namespace blocklab {

std::shared_ptr<const Dataset> load_dataset(const Config& cfg) {
  switch (cfg.model.family) {
    case FamilyKind::Classifier:
    case FamilyKind::Dit:
      return std::make_shared<ImageData>(ImageData::load(cfg.data.dir, cfg.data.train_limit, cfg.data.test_limit));
    case FamilyKind::Mdm:
    case FamilyKind::Ar:
      return std::make_shared<TextData>(
          TextData::load(cfg.data.path, cfg.data.seq_len, cfg.data.val_fraction, cfg.data.train_limit, cfg.data.test_limit));
  }
  throw std::logic_error("unknown family");
}

std::shared_ptr<const Dataset> synthetic_dataset(const Config& cfg, int64_t examples) {
  torch::manual_seed(derive_seed(uint64_t(cfg.train.seed), Stream::Synthetic, 0));
  switch (cfg.model.family) {
    case FamilyKind::Classifier:
    case FamilyKind::Dit: {  // Fashion-MNIST's shape: 28x28 grey images, 10 classes
      auto split = [&] {
        return ImageSplit{torch::randint(0, 256, {examples, 1, 28, 28}, torch::kUInt8),
                          torch::arange(examples, torch::kInt64) % 10, "synthetic labels"};
      };
      return std::make_shared<ImageData>(split(), split(), "synthetic images");
    }
    case FamilyKind::Mdm:
    case FamilyKind::Ar: {  // printable ASCII
      auto split = [&] { return tokens_to_bytes(torch::randint(32, 127, {examples * cfg.data.seq_len}, torch::kInt64)); };
      return std::make_shared<TextData>(split(), split(), cfg.data.seq_len, "synthetic text");
    }
  }
  throw std::logic_error("unknown family");
}

std::unique_ptr<Family> make_family(const Config& cfg, std::shared_ptr<const Dataset> data, const torch::Device& device,
                                    std::optional<int> only_block) {
  torch::manual_seed(derive_seed(uint64_t(cfg.train.seed), Stream::Init, 0));
  std::vector<int64_t> held;
  if (only_block) held.push_back(*only_block);
  switch (cfg.model.family) {
    case FamilyKind::Classifier:
      return std::make_unique<DenoisingClassifier>(cfg, data->shape(), device, held);
    case FamilyKind::Dit: {
      const auto& images = dynamic_cast<const ImageData&>(*data);
      return std::make_unique<ImageGenerator>(cfg, data->shape(), images.mean(), images.std(), device, held);
    }
    case FamilyKind::Mdm:
      return std::make_unique<MaskedDiffusionLM>(cfg, data->shape(), device, held);
    case FamilyKind::Ar:
      return std::make_unique<AutoregressiveLM>(cfg, data->shape(), device, held);
  }
  throw std::logic_error("unknown family");
}

}  // namespace blocklab
