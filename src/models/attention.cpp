#include "models/attention.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace blocklab {

namespace {

std::atomic<bool> g_fused{true};

// One attention problem: pointers to element [0, 0, 0, 0] and the strides of dimensions N, H and
// T (the channel stride is 1). Probabilities P are [N, H, Tq, Tk] contiguous.
template <typename T>
struct StridedRows {
  T* data;
  int64_t sn, sh, st;
  T* row(int64_t n, int64_t h, int64_t t) const { return data + n * sn + h * sh + t * st; }
};

template <typename T>
StridedRows<T> strided_rows(const torch::Tensor& x) {
  if (!x.defined()) return {nullptr, 0, 0, 0};  // (the output, in backward)
  return {x.data_ptr<T>(), x.stride(0), x.stride(1), x.stride(2)};
}

template <typename T>
struct AttentionProblem {
  int64_t heads, tq, tk, dim;
  T scale;
  const T* mask;  // [Tq, Tk] or null
  StridedRows<T> q, k, v, o, p;
  StridedRows<T> dout, dq, dk, dv;  // backward only
};

// e^x for x <= 0 (softmax's exponents once the row maximum is subtracted), in a form the compiler
// vectorises (no calls, no branches): x = n ln2 + r with |r| <= ln2/2 (Cody-Waite), e^r by Cephes'
// degree-6 expf polynomial, 2^n put into the exponent bits (n rounded by the 1.5 * 2^23 trick,
// which IEEE arithmetic keeps exact: nothing here needs relaxed floating-point rules). Within 2 ulp of std::exp; exactly 0
// below -87.3 (where e^x is no longer a normal float) and for -inf, NaN stays NaN.
inline __attribute__((always_inline)) float exp_nonpositive(float x) {
  constexpr float kLow = -87.3365447504f, kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float xc = x < kLow ? kLow : x;  // a select between two values: stays branch-free
  const float n = (xc * kLog2e + kRound) - kRound;
  const float r = xc - n * kLn2Hi - n * kLn2Lo;
  const float poly =
      ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
       1.6666665459e-1f) * r + 5.0000001201e-1f;
  const float er = poly * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  // Zero below kLow by masking the bits (a multiply by a 0/1 factor would make -inf * 0 = NaN).
  const float e = er * two_n;
  uint32_t e_bits;
  std::memcpy(&e_bits, &e, sizeof e_bits);
  e_bits &= uint32_t(0) - uint32_t(x >= kLow);
  float out;
  std::memcpy(&out, &e_bits, sizeof out);
  return out;
}
inline __attribute__((always_inline)) double exp_nonpositive(double x) { return std::exp(x); }

// Register tiles. Sums are kept in small local arrays of compile-time size, which the compiler
// holds in vector registers: a loop that added into memory instead would wait on its own stores
// (store-to-load latency, ~10 cycles) at every step. Scores are computed for kKeyTile keys at a
// time (keys padded with zeros to a multiple of it); a row of the output or of a gradient has
// Width channels, a compile-time constant for the common head widths, the problem's own (at most
// kMaxWidth, summed in memory) otherwise.
constexpr int64_t kKeyTile = 32;
constexpr int64_t kMaxWidth = 1024;

template <int Width>
inline int64_t head_width(int64_t runtime) { return Width > 0 ? Width : runtime; }
template <int Width>
constexpr int64_t kAccumulator = Width > 0 ? Width : kMaxWidth;

// K^T (or V^T) of one head, [D, Tk padded to the tile], zero beyond Tk.
template <typename T>
inline __attribute__((always_inline)) void transpose_keys(const StridedRows<T>& x, int64_t n, int64_t h, int64_t tk,
                                                          int64_t dim, int64_t padded, T* __restrict out) {
  for (int64_t d = 0; d < dim; ++d)
    for (int64_t j = tk; j < padded; ++j) out[d * padded + j] = 0;
  for (int64_t j = 0; j < tk; ++j) {
    const T* __restrict xj = x.row(n, h, j);
    for (int64_t d = 0; d < dim; ++d) out[d * padded + j] = xj[d];
  }
}

// row[j] (j < tk) = init[j] + sum_d c[d] * xt[d, j], a tile of keys at a time in registers.
template <typename T>
inline __attribute__((always_inline)) void row_times_transposed(const T* __restrict c, T scale, const T* __restrict xt,
                                                                int64_t tk, int64_t dim, int64_t padded,
                                                                const T* __restrict init, T* __restrict row) {
  for (int64_t j0 = 0; j0 < tk; j0 += kKeyTile) {
    T acc[kKeyTile];
    for (int64_t jj = 0; jj < kKeyTile; ++jj) acc[jj] = 0;
    for (int64_t d = 0; d < dim; ++d) {
      const T cd = c[d] * scale;
      const T* __restrict xd = xt + d * padded + j0;
      for (int64_t jj = 0; jj < kKeyTile; ++jj) acc[jj] += cd * xd[jj];
    }
    const int64_t m = std::min(kKeyTile, tk - j0);
    for (int64_t jj = 0; jj < m; ++jj) row[j0 + jj] = (init ? init[j0 + jj] : T(0)) + acc[jj];
  }
}

// out = sum_r w[r * w_stride] * rows(r) over r < count: a weighted sum of rows, in registers.
template <typename T, int Width, typename Rows>
inline __attribute__((always_inline)) void weighted_rows(const T* __restrict w, int64_t w_stride, int64_t count,
                                                         const Rows& rows, int64_t dim, T* __restrict out) {
  T acc[kAccumulator<Width>];
  for (int64_t d = 0; d < dim; ++d) acc[d] = 0;
  for (int64_t r = 0; r < count; ++r) {
    const T wr = w[r * w_stride];
    const T* __restrict x = rows(r);
    for (int64_t d = 0; d < dim; ++d) acc[d] += wr * x[d];
  }
  for (int64_t d = 0; d < dim; ++d) out[d] = acc[d];
}

// Forward of one (sample, head): the scores of query i (keys in tiles), the softmax in place in P,
// then o_i = sum_j p_ij v_j. kt: scratch [D, Tk padded].
template <typename T, int Width>
inline __attribute__((always_inline)) void attention_forward_head(const AttentionProblem<T>& a, int64_t n, int64_t h,
                                                                  T* __restrict kt) {
  const int64_t tq = a.tq, tk = a.tk, dim = head_width<Width>(a.dim), padded = (tk + kKeyTile - 1) / kKeyTile * kKeyTile;
  transpose_keys(a.k, n, h, tk, dim, padded, kt);
  for (int64_t i = 0; i < tq; ++i) {
    T* __restrict s = a.p.row(n, h, i);
    row_times_transposed(a.q.row(n, h, i), a.scale, kt, tk, dim, padded, a.mask ? a.mask + i * tk : nullptr, s);
    T top = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < tk; ++j) top = s[j] > top ? s[j] : top;
    for (int64_t j = 0; j < tk; ++j) s[j] = exp_nonpositive(s[j] - top);
    T sum = 0;
    for (int64_t j = 0; j < tk; ++j) sum += s[j];
    const T inv = T(1) / sum;
    for (int64_t j = 0; j < tk; ++j) s[j] *= inv;
    weighted_rows<T, Width>(s, 1, tk, [&](int64_t j) { return a.v.row(n, h, j); }, dim, a.o.row(n, h, i));
  }
}

// Backward of one (sample, head), from P and dO:
//   dP = dO V^T;  dS = P * (dP - rowsum(P * dP)) * scale;  dQ = dS K;  dK = dS^T Q;  dV = P^T dO.
// vt: scratch [D, Tk padded]; ds: scratch [Tq, Tk].
template <typename T, int Width>
inline __attribute__((always_inline)) void attention_backward_head(const AttentionProblem<T>& a, int64_t n, int64_t h,
                                                                   T* __restrict vt, T* __restrict ds) {
  const int64_t tq = a.tq, tk = a.tk, dim = head_width<Width>(a.dim), padded = (tk + kKeyTile - 1) / kKeyTile * kKeyTile;
  transpose_keys(a.v, n, h, tk, dim, padded, vt);
  const T* __restrict p = a.p.row(n, h, 0);  // [Tq, Tk], contiguous
  for (int64_t i = 0; i < tq; ++i) {
    T* __restrict dsi = ds + i * tk;
    const T* __restrict pi = p + i * tk;
    row_times_transposed(a.dout.row(n, h, i), T(1), vt, tk, dim, padded, static_cast<const T*>(nullptr), dsi);
    T dot = 0;
    for (int64_t j = 0; j < tk; ++j) dot += pi[j] * dsi[j];
    for (int64_t j = 0; j < tk; ++j) dsi[j] = pi[j] * (dsi[j] - dot) * a.scale;
    weighted_rows<T, Width>(dsi, 1, tk, [&](int64_t j) { return a.k.row(n, h, j); }, dim, a.dq.row(n, h, i));
  }
  for (int64_t j = 0; j < tk; ++j) {
    weighted_rows<T, Width>(ds + j, tk, tq, [&](int64_t i) { return a.q.row(n, h, i); }, dim, a.dk.row(n, h, j));
    weighted_rows<T, Width>(p + j, tk, tq, [&](int64_t i) { return a.dout.row(n, h, i); }, dim, a.dv.row(n, h, j));
  }
}

// The loops over (sample, head) pairs [begin, end), one copy per instruction set; the loader picks
// the best the CPU has (GCC function multi-versioning). Elsewhere: the compiler's default.
#if defined(__x86_64__) && defined(__GNUC__)
#define BLOCKLAB_ISAS __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BLOCKLAB_ISAS
#endif

// (Everything below the clones is inlined into them: a function they call is compiled for the
// baseline instruction set.) Every (sample, head) in [begin, end), forward or backward, with the
// head width fixed at compile time when it is a common one.
template <bool Backward, typename T, int Width>
inline __attribute__((always_inline)) void heads(const AttentionProblem<T>& a, int64_t begin, int64_t end) {
  std::vector<T> transposed(size_t(a.dim * (a.tk + kKeyTile))), ds(Backward ? size_t(a.tq * a.tk) : 0);
  for (int64_t nh = begin; nh < end; ++nh) {
    if constexpr (Backward)
      attention_backward_head<T, Width>(a, nh / a.heads, nh % a.heads, transposed.data(), ds.data());
    else
      attention_forward_head<T, Width>(a, nh / a.heads, nh % a.heads, transposed.data());
  }
}
template <bool Backward, typename T>
inline __attribute__((always_inline)) void heads_of_width(const AttentionProblem<T>& a, int64_t b, int64_t e) {
  switch (a.dim) {
    case 16: return heads<Backward, T, 16>(a, b, e);
    case 32: return heads<Backward, T, 32>(a, b, e);
    case 64: return heads<Backward, T, 64>(a, b, e);
    default: return heads<Backward, T, 0>(a, b, e);
  }
}

BLOCKLAB_ISAS void forward_f32(const AttentionProblem<float>& a, int64_t b, int64_t e) { heads_of_width<false>(a, b, e); }
BLOCKLAB_ISAS void forward_f64(const AttentionProblem<double>& a, int64_t b, int64_t e) { heads_of_width<false>(a, b, e); }
BLOCKLAB_ISAS void backward_f32(const AttentionProblem<float>& a, int64_t b, int64_t e) { heads_of_width<true>(a, b, e); }
BLOCKLAB_ISAS void backward_f64(const AttentionProblem<double>& a, int64_t b, int64_t e) { heads_of_width<true>(a, b, e); }

void run_heads(bool backward, const AttentionProblem<float>& a, int64_t b, int64_t e) {
  backward ? backward_f32(a, b, e) : forward_f32(a, b, e);
}
void run_heads(bool backward, const AttentionProblem<double>& a, int64_t b, int64_t e) {
  backward ? backward_f64(a, b, e) : forward_f64(a, b, e);
}

// Enough (sample, head) pairs per task that a thread's share is worth starting.
int64_t attention_grain(int64_t tq, int64_t tk, int64_t dim) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, tq * tk * dim)); }

template <typename T>
AttentionProblem<T> attention_problem(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
                   const torch::Tensor& o, const torch::Tensor& p) {
  AttentionProblem<T> a{};
  a.heads = q.size(1);
  a.tq = q.size(2);
  a.tk = k.size(2);
  a.dim = q.size(3);
  a.scale = T(1) / std::sqrt(T(a.dim));
  a.mask = mask.defined() ? mask.data_ptr<T>() : nullptr;
  a.q = strided_rows<T>(q), a.k = strided_rows<T>(k), a.v = strided_rows<T>(v), a.o = strided_rows<T>(o), a.p = strided_rows<T>(p);
  return a;
}

// Output [N, Tq, H, D] seen as [N, H, Tq, D]; P [N, H, Tq, Tk].
std::pair<torch::Tensor, torch::Tensor> fused_forward(const torch::Tensor& q, const torch::Tensor& k,
                                                      const torch::Tensor& v, const torch::Tensor& mask) {
  RECORD_FUNCTION("blocklab::fused_attention", std::vector<c10::IValue>({q, k, v}));  // an op for the profiler
  const int64_t n = q.size(0), h = q.size(1), tq = q.size(2), tk = k.size(2), dim = q.size(3);
  auto o = torch::empty({n, tq, h, dim}, q.options()).transpose(1, 2);
  auto p = torch::empty({n, h, tq, tk}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "fused attention", [&] {
    const auto a = attention_problem<scalar_t>(q, k, v, mask, o, p);
    at::parallel_for(0, n * h, attention_grain(tq, tk, dim), [&](int64_t b, int64_t e) { run_heads(false, a, b, e); });
  });
  return {o, p};
}

// A tensor whose last dimension is contiguous (what the kernel reads), without copying when it is.
torch::Tensor last_dim_contiguous(const torch::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

// The mask is a constant, passed by value beside the tensors autograd tracks (an undefined tensor
// cannot be an input of a custom function).
struct ConstantMask {
  torch::Tensor mask;
};

class FusedAttention : public torch::autograd::Function<FusedAttention> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const ConstantMask& mask) {
    auto [o, p] = fused_forward(q, k, v, mask.mask);
    ctx->save_for_backward({q, k, v, p});
    return o;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &p = saved[3];
    RECORD_FUNCTION("blocklab::fused_attention_backward", std::vector<c10::IValue>({grads[0], saved[1]}));
    const auto dout = last_dim_contiguous(grads[0]);
    const int64_t n = q.size(0), h = q.size(1), tq = q.size(2), tk = k.size(2), dim = q.size(3);
    // Gradients laid out like the output, [N, T, H, D]: what the packed qkv projection's backward reads.
    auto dq = torch::empty({n, tq, h, dim}, q.options()).transpose(1, 2);
    auto dk = torch::empty({n, tk, h, dim}, q.options()).transpose(1, 2);
    auto dv = torch::empty({n, tk, h, dim}, q.options()).transpose(1, 2);
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "fused attention backward", [&] {
      auto a = attention_problem<scalar_t>(q, k, v, torch::Tensor(), torch::Tensor(), p);
      a.dout = strided_rows<scalar_t>(dout), a.dq = strided_rows<scalar_t>(dq), a.dk = strided_rows<scalar_t>(dk),
      a.dv = strided_rows<scalar_t>(dv);
      at::parallel_for(0, n * h, attention_grain(tq, tk, dim), [&](int64_t b, int64_t e) { run_heads(true, a, b, e); });
    });
    return {dq, dk, dv, torch::Tensor()};
  }
};

// What the fused kernel takes: CPU float or double, 4-d, the last dimension contiguous, a
// [Tq, Tk] mask (or none) of the same type.
bool attention_fusable(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask) {
  if (!g_fused.load(std::memory_order_relaxed) || !q.device().is_cpu()) return false;
  if (q.scalar_type() != torch::kFloat && q.scalar_type() != torch::kDouble) return false;
  for (const auto* t : {&q, &k, &v})
    if (t->dim() != 4 || t->scalar_type() != q.scalar_type() || !t->device().is_cpu()) return false;
  if (q.size(3) > kMaxWidth || k.size(3) != q.size(3) || v.size(3) != q.size(3)) return false;
  if (mask.defined() &&
      (mask.dim() != 2 || mask.size(0) != q.size(2) || mask.size(1) != k.size(2) || mask.scalar_type() != q.scalar_type() ||
       !mask.is_contiguous()))
    return false;
  return true;
}

}  // namespace

torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& mask) {
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(q.size(-1)));
  if (mask.defined()) scores = scores + mask;
  return torch::matmul(torch::softmax(scores, -1), v);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask) {
  if (!attention_fusable(q, k, v, mask)) return attention_reference(q, k, v, mask);
  const auto qc = last_dim_contiguous(q), kc = last_dim_contiguous(k), vc = last_dim_contiguous(v);
  const bool needs_grad = torch::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (!needs_grad) return fused_forward(qc, kc, vc, mask).first;
  return FusedAttention::apply(qc, kc, vc, ConstantMask{mask});
}

void set_fused_attention(bool enabled) { g_fused.store(enabled); }
bool fused_attention_enabled() { return g_fused.load(); }

std::string fused_attention_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2")) return "avx2";
  return "x86-64";
#else
  return "portable";
#endif
}

}  // namespace blocklab
