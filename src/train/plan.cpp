#include "train/plan.h"

#include "train/step.h"

namespace blocklab {

int64_t data_step_of(const Config& cfg, int block, int64_t n) {
  const int B = cfg.model.blocks;
  for (int i = 0; i < B; ++i)
    if (block_for_step(cfg, n * B + i) == block) return n * B + i;
  throw std::logic_error("block not in its round");
}

Plan::Plan(const Config& cfg, int64_t updates, std::optional<int> only_block)
    : cfg_(cfg), updates_(updates), only_(only_block) {
  const bool whole_rounds = !cfg.blocks_mode() || only_ || cfg.train.schedule == BlockSchedule::Rounds;
  size_ = whole_rounds ? updates : updates * cfg.model.blocks;
}

int64_t Plan::lr_steps() const { return cfg_.blocks_mode() ? updates_ * cfg_.model.blocks : updates_; }

std::vector<Update> Plan::at(int64_t p) const {
  const int B = cfg_.model.blocks;
  // Updates made away from the interleaved order take the learning rate of their round's start,
  // so that in synchronous rounds every block (and the shared modules) steps with the same one.
  auto away = [&](int b, int64_t n) { return Update{b, n, data_step_of(cfg_, b, n), n * B}; };
  if (!cfg_.blocks_mode()) return {{-1, p, p, p}};
  if (only_) return {away(*only_, p)};
  switch (cfg_.train.schedule) {
    case BlockSchedule::Interleaved:
      return {{block_for_step(cfg_, p), p / B, p, p}};
    case BlockSchedule::Rounds: {
      std::vector<Update> round;
      for (int b = 0; b < B; ++b) round.push_back(away(b, p));
      return round;
    }
    case BlockSchedule::Resident: {
      // Turns of block_run updates: block 0, 1, ..., B-1, then the next turn; the last is shorter.
      const int64_t run = cfg_.train.block_run, full = updates_ / run, turn_size = run * B;
      if (p < full * turn_size) {
        const int64_t turn = p / turn_size, q = p % turn_size;
        return {away(int(q / run), turn * run + q % run)};
      }
      const int64_t rest = updates_ - full * run, q = p - full * turn_size;
      return {away(int(q / rest), full * run + q % rest)};
    }
  }
  throw std::logic_error("unknown schedule");
}

}  // namespace blocklab
