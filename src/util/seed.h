// Every random stream of a run is a function of (seed, stream, index): a step's noise, an
// epoch's data order, a round's block order, an evaluation batch's noise. A resumed run therefore
// needs only the step number to draw exactly what the uninterrupted run would have drawn, and the
// streams never share draws.
#pragma once
#include <cstdint>

namespace blocklab {

enum class Stream : uint64_t {
  Step = 0,           // noise levels and noise of training step `index`
  DataOrder = 1,      // the permutation of epoch `index`
  BlockOrder = 2,     // the order of blocks in round `index` of B steps
  Eval = 3,           // the inference noise of evaluation batch `index`
  TeacherForcing = 4, // the noise of teacher-forced evaluation batch `index`
  Init = 5,           // weight initialization (index 0)
  Synthetic = 6,      // synthetic data of benchmarks and the profiler
  Replica = 7,        // a block's replica `index` > 0: its own noise for its share of the step's batch
  ProbeBatch = 8,     // `probe random-step`: the examples (index 0) and the noise of its batch `index`
  ProbeDirection = 9, // `probe random-step`: random direction `index`
};

/// A seed for torch or std::mt19937_64, below 2^63 (torch keeps seeds signed).
uint64_t derive_seed(uint64_t seed, Stream stream, uint64_t index);

}  // namespace blocklab
