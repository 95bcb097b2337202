// The activations of blocklab's fused kernels, a vector at a time: their value f(h) and slope
// f'(h) together (the bias + activation kernel, models/activation.cpp, and the GEMM's epilogue,
// util/gemm.h, share them).
// GELU is the exact form, h Phi(h) (Hendrycks & Gimpel 2016); in float32 the normal CDF uses the
// erf of Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as libtorch's own vectorised GELU does.
// SiLU is h sigma(h) (Elfwing et al. 2018).
#pragma once
#include "util/simd.h"

namespace blocklab {

enum class Activation { Gelu, Silu };

namespace simd {

// The standard normal's CDF Phi(h) and density phi(h), a vector of floats (of any width) at a time,
// in few operations (the MLP's GELU runs this for every hidden activation):
// - phi(h) = e^{-h^2/2 - ln sqrt(2 pi)}: the factor folded into the exponent;
// - the tail Phi(-|h|) = erfc(z) / 2, z = |h| / sqrt2, by Abramowitz & Stegun 7.1.26:
//   erfc(z) = t (a1 + t (a2 + ... + t a5)) e^{-z^2}, t = 1 / (1 + p z), |error| < 1.5e-7. As
//   e^{-z^2} = sqrt(2 pi) phi(h), the tail is t (b1 + ... + t b5) phi(h) with b_k = a_k sqrt(2 pi) / 2,
//   and t = 1 / (1 + (p / sqrt2) |h|);
// - Phi(h) = the tail below 0, 1 - the tail above.
// phi need not be exactly 0 past float's range (1e-38 changes neither Phi nor phi in float32).
template <typename V>
BLOCKLAB_INLINE void normal_cdf_pdf(const V& h, V& cdf, V& pdf) {
  typedef int32_t Bits __attribute__((vector_size(sizeof(V))));
  constexpr float kLnSqrt2Pi = 0.91893853320467274f, kHalfSqrt2Pi = 1.25331413731550025f;
  constexpr float kP = 0.3275911f * 0.70710678118654752f;
  constexpr float kB1 = 0.254829592f * kHalfSqrt2Pi, kB2 = -0.284496736f * kHalfSqrt2Pi,
                  kB3 = 1.421413741f * kHalfSqrt2Pi, kB4 = -1.453152027f * kHalfSqrt2Pi,
                  kB5 = 1.061405429f * kHalfSqrt2Pi;
  const V abs_h = bits_as<V>(bits_as<Bits>(h) & int32_t(0x7fffffff));
  const V t = 1.0f / (1.0f + kP * abs_h);
  const V poly = ((((kB5 * t + kB4) * t + kB3) * t + kB2) * t + kB1) * t;
  pdf = exp_clamped_lanes(h * h * -0.5f - kLnSqrt2Pi);
  const V tail = poly * pdf;
  cdf = h < 0.0f ? tail : 1.0f - tail;
}
BLOCKLAB_INLINE void normal_cdf_pdf(const Vec<double>& h, Vec<double>& cdf, Vec<double>& pdf) {
  for (int64_t l = 0; l < kLanes<double>; ++l) {  // float64: the tests' precision
    cdf[l] = 0.5 * (1.0 + std::erf(h[l] * M_SQRT1_2));
    pdf[l] = std::exp(-0.5 * h[l] * h[l]) * (M_2_SQRTPI * M_SQRT1_2 * 0.5);
  }
}

// SiLU's logistic sigmoid 1 / (1 + e^-h), from e = e^-|h| (which cannot overflow): 1 / (1 + e) for
// h >= 0, e / (1 + e) below (not 1 - 1 / (1 + e), which would cancel to 0 for large -h).
template <typename V>
BLOCKLAB_INLINE V sigmoid(const V& h) {
  typedef int32_t Bits __attribute__((vector_size(sizeof(V))));
  const V minus_abs = bits_as<V>(bits_as<Bits>(h) | int32_t(0x80000000u));
  const V e = exp_clamped_lanes(minus_abs);  // (e^-87.3 for |h| > 87.3: sigma there is 1e-38 off, or exact)
  const V r = 1.0f / (1.0f + e);
  return h < 0.0f ? e * r : r;
}
BLOCKLAB_INLINE Vec<double> sigmoid(const Vec<double>& h) {
  Vec<double> s;
  for (int64_t l = 0; l < kLanes<double>; ++l) s[l] = 1.0 / (1.0 + std::exp(-h[l]));
  return s;
}

/// An activation's value f(h) and slope f'(h): GELU h Phi(h), slope Phi(h) + h phi(h); SiLU
/// h sigma(h), slope sigma(h) (1 + h (1 - sigma(h))).
template <Activation A, typename V>
BLOCKLAB_INLINE void value_and_slope(const V& h, V& y, V& slope) {
  if constexpr (A == Activation::Gelu) {
    V cdf, pdf;
    normal_cdf_pdf(h, cdf, pdf);
    y = h * cdf;
    slope = cdf + h * pdf;
  } else {
    const V s = sigmoid(h);
    y = h * s;
    slope = s + y * (1 - s);
  }
}

}  // namespace simd
}  // namespace blocklab
