// A float32 matrix product for CPUs with AVX-512, C = A B (+ bias), written for the shapes of a
// transformer's linear layers (thousands of tokens by a few hundred features). libtorch 1.13's mm
// calls the system BLAS; with the AVX2 kernel that this machine's environment selects
// (OPENBLAS_CORETYPE=Haswell) or the SSE3 kernel OpenBLAS picks when the variable is unset, a
// step's GEMMs run at half the CPU's fp32 rate or less; this one uses its AVX-512 FMA units. (An
// AVX2 version ran at the speed of OpenBLAS's AVX2 kernel, within -15% to +15% by shape, so CPUs
// without AVX-512 keep libtorch's mm.) docs/profiling.md has the measurements.
//
// The method is the one of GotoBLAS/BLIS (Goto & van de Geijn 2008, "Anatomy of high-performance
// matrix multiplication"): B is copied into panels of 32 columns that stay in the L1 cache, and a
// register tile of 12 rows x 32 columns of C (24 vectors of 16 sums) is updated with one fused
// multiply-add per vector per k, A's rows read where they lie (a transposed A is copied into
// strips first; a last strip of 8 or fewer rows takes an 8- or 4-row tile). Sums over k run in
// order within each block of 256 and the blocks are added in order, the same on every thread
// count: results do not depend on threads. An epilogue (an activation, or a product with another
// matrix) is applied to C's values in registers as the last depth block writes them, instead of a
// pass of its own over C: a transformer MLP's GELU (models/dense.h). Subnormal inputs and results count as zero while it
// runs (simd::FlushSubnormals: a subnormal lane costs a microcode assist).
#pragma once
#include <cstdint>

#include "util/activation_math.h"

namespace blocklab::gemm {

/// A row-major matrix operand: element (i, k) is data[i * ld + k], or data[k * ld + i] when
/// `transposed` (the operand is the transpose of the matrix stored there).
struct Operand {
  const float* data;
  int64_t ld;
  bool transposed = false;
};

/// What is done to C's values h (the product plus the bias) as they are written: nothing; an
/// activation, C = f(h), with its slope f'(h) written to `aux` (unless null); or an elementwise
/// product with `aux`, C = h * aux. `aux` has C's shape and row stride.
struct Epilogue {
  enum class Op { None, Activation, Multiply } op = Op::None;
  Activation activation = Activation::Gelu;
  float* aux = nullptr;

  static Epilogue activate(Activation a, float* slope) { return {Op::Activation, a, slope}; }
  static Epilogue multiply(const float* factor) { return {Op::Multiply, Activation::Gelu, const_cast<float*>(factor)}; }
};

/// Whether this CPU runs the kernel (AVX-512: x86-64-v4).
bool available();

/// C [m, n] (row stride ldc) = A [m, k] B [k, n] + bias [n] (bias may be null). libtorch's
/// intra-op threads share the blocks of rows of C. Requires available().
/// `a_row_sums` (or null; a transposed A only) receives sum_k A(i, k) for each row i, taken as A is
/// packed (for a weight gradient dW = dy^T x, the bias gradient: no pass of its own over dy).
void sgemm(int64_t m, int64_t n, int64_t k, Operand a, Operand b, const float* bias, float* c, int64_t ldc,
           float* a_row_sums = nullptr, const Epilogue& epilogue = {});

}  // namespace blocklab::gemm
