// A float32 matrix product for the CPU, C = A B (+ bias), written for the shapes of a transformer's
// linear layers (thousands of tokens by a few hundred features) and vectorised with AVX-512 or
// AVX2 + FMA, whichever the CPU has. libtorch 1.13's mm calls the system BLAS; with the AVX2
// kernel that this machine's environment selects (OPENBLAS_CORETYPE=Haswell, ~100 GFLOP/s on one
// core) or the SSE3 kernel OpenBLAS picks when the variable is unset, the GEMMs of a step run at
// half the CPU's fp32 rate or less; this one runs its AVX-512 FMA units. docs/profiling.md has the
// measurements.
//
// The method is the one of GotoBLAS/BLIS (Goto & van de Geijn 2008, "Anatomy of high-performance
// matrix multiplication"): B is copied into panels of kNr columns that stay in the L1 cache, A into
// strips of kMr rows, and a register tile of kMr x kNr sums (kMr x 2 vectors) is updated with one
// fused multiply-add per vector per k. Sums over k run in order within each block of kKc and the
// blocks are added in order, the same on every thread count: results do not depend on threads.
#pragma once
#include <cstdint>

namespace blocklab::gemm {

/// A row-major matrix operand: element (i, k) is data[i * ld + k], or data[k * ld + i] when
/// `transposed` (the operand is the transpose of the matrix stored there).
struct Operand {
  const float* data;
  int64_t ld;
  bool transposed = false;
  float at(int64_t i, int64_t k) const { return transposed ? data[k * ld + i] : data[i * ld + k]; }
};

/// The vector kernels this build has; `best()` is the widest the CPU runs, or None.
enum class Isa { None, Avx2, Avx512 };
Isa best();
const char* name(Isa isa);

/// C [m, n] (row stride ldc) = A [m, k] B [k, n] + bias [n] (bias may be null). libtorch's
/// intra-op threads share the blocks of rows of C. Requires isa != None (see best()).
void sgemm(int64_t m, int64_t n, int64_t k, Operand a, Operand b, const float* bias, float* c, int64_t ldc,
           Isa isa = best());

}  // namespace blocklab::gemm
