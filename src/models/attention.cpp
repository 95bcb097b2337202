#include "models/attention.h"

#include <ATen/record_function.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "models/attention_lanes.h"
#include "models/autograd.h"
#include "util/simd.h"

namespace blocklab {

namespace {

using namespace simd;

// The kernel runs in vectors V of T: Vec<T> (8 floats, 4 doubles) in the clones of every x86-64
// level, 16 floats where wide_vectors(). Queries lie along the lanes, padded to whole vectors.

// One attention problem: pointers to element [0, 0, 0, 0] and the strides of dimensions N, H and
// T (the channel stride is 1). The probabilities are kept transposed, P^T [N, H, Tk, Tq padded to
// vectors], as the kernel computes them.
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
  const T* mask;  // transposed and padded like P^T, [Tk, Tq padded]; or null
  StridedRows<T> q, k, v, o, p;
  StridedRows<T> dout, dq, dk, dv;  // backward only
};

// The matrix products of one head, C[m, :] = sum_k A(m, k) B[k, :] for m < M, each row of B and C
// `vecs` whole vectors. A is read element by element with any strides (a transposed operand costs
// nothing); B and C rows are contiguous. A register tile of Rows x Cols vectors is summed over k
// in registers, Rows x Cols independent chains of multiply-adds that keep the FMA units busy.
template <typename T>
struct Operand {
  const T* p;
  int64_t row_stride, col_stride;  // A(m, k) = p[m * row_stride + k * col_stride]
};

template <typename T, typename V, int Rows, int Cols>
BLOCKLAB_INLINE void product_tile(const Operand<T>& a, int64_t m0, int64_t depth, const T* b,
                                  int64_t ldb, int64_t c0, T* c, int64_t ldc) {
  constexpr int64_t L = kLanesOf<T, V>;
  V acc[Rows][Cols] = {};
  for (int64_t k = 0; k < depth; ++k) {
    V bk[Cols];
    for (int v = 0; v < Cols; ++v) bk[v] = load_as<V>(b + k * ldb + (c0 + v) * L);
    for (int r = 0; r < Rows; ++r) {
      const T ark = a.p[(m0 + r) * a.row_stride + k * a.col_stride];
      for (int v = 0; v < Cols; ++v) acc[r][v] += ark * bk[v];
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int v = 0; v < Cols; ++v) store_as(c + (m0 + r) * ldc + (c0 + v) * L, acc[r][v]);
}

template <typename T, typename V, int Rows>
BLOCKLAB_INLINE void product_rows(const Operand<T>& a, int64_t m0, int64_t depth, const T* b,
                                  int64_t ldb, int64_t vecs, T* c, int64_t ldc) {
  int64_t v = 0;
  for (; v + 2 <= vecs; v += 2) product_tile<T, V, Rows, 2>(a, m0, depth, b, ldb, v, c, ldc);
  if (v < vecs) product_tile<T, V, Rows, 1>(a, m0, depth, b, ldb, v, c, ldc);
}

template <typename T, typename V>
BLOCKLAB_INLINE void product(int64_t rows, int64_t depth, const Operand<T>& a, const T* b,
                             int64_t ldb, int64_t vecs, T* c, int64_t ldc) {
  int64_t m = 0;
  for (; m + 4 <= rows; m += 4) product_rows<T, V, 4>(a, m, depth, b, ldb, vecs, c, ldc);
  for (; m < rows; ++m) product_rows<T, V, 1>(a, m, depth, b, ldb, vecs, c, ldc);
}

// `count` rows of one head (q, k, v, dO or a gradient) as B or C of a product: in place when a row
// is whole vectors, else through `scratch` [count, width padded] (zeros in the padding).
template <typename T>
struct HeadRows {
  T* p;
  int64_t ld;
  bool copied;
};
template <typename T, typename V>
BLOCKLAB_INLINE HeadRows<T> rows_in(const StridedRows<T>& x, int64_t n, int64_t h, int64_t count,
                                    int64_t dim, T* scratch) {
  if (dim % kLanesOf<T, V> == 0) return {x.row(n, h, 0), x.st, false};
  const int64_t padded = round_up(dim, kLanesOf<T, V>);
  for (int64_t t = 0; t < count; ++t) {
    const T* src = x.row(n, h, t);
    for (int64_t d = 0; d < padded; ++d) scratch[t * padded + d] = d < dim ? src[d] : T(0);
  }
  return {scratch, padded, true};
}
template <typename T, typename V>
BLOCKLAB_INLINE HeadRows<T> rows_out(const StridedRows<T>& x, int64_t n, int64_t h, int64_t dim,
                                     T* scratch) {
  if (dim % kLanesOf<T, V> == 0) return {x.row(n, h, 0), x.st, false};
  return {scratch, round_up(dim, kLanesOf<T, V>), true};
}
template <typename T>
BLOCKLAB_INLINE void finish_rows(const HeadRows<T>& out, const StridedRows<T>& x, int64_t n, int64_t h,
                                 int64_t count, int64_t dim) {
  if (!out.copied) return;
  for (int64_t t = 0; t < count; ++t) std::memcpy(x.row(n, h, t), out.p + t * out.ld, size_t(dim) * sizeof(T));
}

// X^T of one head, [D, Tq padded to vectors], times `scale`, zero beyond Tq: whole L x L blocks
// in registers (rows past Tq read as zeros), the columns past the last whole block one by one.
template <typename T, typename V>
BLOCKLAB_INLINE void transpose_head(const StridedRows<T>& x, int64_t n, int64_t h, int64_t count,
                                    int64_t dim, int64_t padded, T scale, T* out) {
  constexpr int64_t L = kLanesOf<T, V>;
  const T* x0 = x.row(n, h, 0);
  const int64_t whole = dim / L * L;
  for (int64_t d0 = 0; d0 < whole; d0 += L)
    for (int64_t t0 = 0; t0 < padded; t0 += L) {
      V r[L];
      for (int64_t i = 0; i < L; ++i) r[i] = t0 + i < count ? load_as<V>(x0 + (t0 + i) * x.st + d0) * scale : V{};
      transpose_block(r);
      for (int64_t i = 0; i < L; ++i) store_as(out + (d0 + i) * padded + t0, r[i]);
    }
  for (int64_t d = whole; d < dim; ++d) {
    for (int64_t t = 0; t < count; ++t) out[d * padded + t] = x0[t * x.st + d] * scale;
    for (int64_t t = count; t < padded; ++t) out[d * padded + t] = 0;
  }
}

// Scratch of one task, in elements: the transposed operand [D, Tq padded], dS^T [Tk, Tq padded]
// (backward), and up to four operands or results of a width no vector divides [T, D padded].
template <typename T, typename V>
size_t scratch_size(const AttentionProblem<T>& a) {
  const int64_t tqp = round_up(a.tq, kLanesOf<T, V>), dp = round_up(a.dim, kLanesOf<T, V>), t = std::max(a.tq, a.tk);
  return size_t(a.dim * tqp + a.tk * tqp + 4 * t * dp);
}

// Forward of one (sample, head), queries along the vector lanes so that the softmax over keys is a
// column operation (no horizontal sums):
//   S^T = K (scale Q)^T;  P^T = softmax over keys (rows of S^T);  O = P V.
// P^T [Tk, Tq padded] is kept for backward.
template <typename T, typename V>
BLOCKLAB_INLINE void attention_forward_head(const AttentionProblem<T>& a, int64_t n, int64_t h, T* scratch) {
  constexpr int64_t L = kLanesOf<T, V>;
  const int64_t tq = a.tq, tk = a.tk, dim = a.dim, tqp = round_up(tq, L), vq = tqp / L;
  T* qt = scratch;
  T* pt = a.p.row(n, h, 0);
  transpose_head<T, V>(a.q, n, h, tq, dim, tqp, a.scale, qt);
  product<T, V>(tk, dim, {a.k.row(n, h, 0), a.k.st, 1}, qt, tqp, vq, pt, tqp);
  for (int64_t c = 0; c < tqp; c += L) {
    V top = V{} - std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < tk; ++j) {
      V s = load_as<V>(pt + j * tqp + c);
      if (a.mask) {
        s += load_as<V>(a.mask + j * tqp + c);
        store_as(pt + j * tqp + c, s);
      }
      top = s > top ? s : top;
    }
    V sum{};
    for (int64_t j = 0; j < tk; ++j) {
      const V e = exp_nonpositive(load_as<V>(pt + j * tqp + c) - top);
      store_as(pt + j * tqp + c, e);
      sum += e;
    }
    const V inv = T(1) / sum;
    for (int64_t j = 0; j < tk; ++j) store_as(pt + j * tqp + c, load_as<V>(pt + j * tqp + c) * inv);
  }
  T* pad = scratch + dim * tqp + tk * tqp;
  const int64_t dp = round_up(dim, L), wide = std::max(tq, tk) * dp;
  const auto v = rows_in<T, V>(a.v, n, h, tk, dim, pad);
  const auto o = rows_out<T, V>(a.o, n, h, dim, pad + wide);
  product<T, V>(tq, tk, {pt, 1, tqp}, v.p, v.ld, dp / L, o.p, o.ld);
  finish_rows(o, a.o, n, h, tq, dim);
}

// Backward of one (sample, head), from P^T and dO, queries along the lanes where they are free:
//   dP^T = V dO^T;  dS^T = P^T * (dP^T - colsum(P^T * dP^T)) * scale;
//   dQ = dS K;  dK = dS^T Q;  dV = P^T dO.
template <typename T, typename V>
BLOCKLAB_INLINE void attention_backward_head(const AttentionProblem<T>& a, int64_t n, int64_t h, T* scratch) {
  constexpr int64_t L = kLanesOf<T, V>;
  const int64_t tq = a.tq, tk = a.tk, dim = a.dim, tqp = round_up(tq, L), vq = tqp / L;
  const int64_t dp = round_up(dim, L), vd = dp / L, wide = std::max(tq, tk) * dp;
  T* dout_t = scratch;
  T* ds_t = scratch + dim * tqp;
  T* pad = ds_t + tk * tqp;
  const T* pt = a.p.row(n, h, 0);
  transpose_head<T, V>(a.dout, n, h, tq, dim, tqp, T(1), dout_t);
  product<T, V>(tk, dim, {a.v.row(n, h, 0), a.v.st, 1}, dout_t, tqp, vq, ds_t, tqp);
  for (int64_t c = 0; c < tqp; c += L) {
    V rowsum{};
    for (int64_t j = 0; j < tk; ++j) rowsum += load_as<V>(pt + j * tqp + c) * load_as<V>(ds_t + j * tqp + c);
    for (int64_t j = 0; j < tk; ++j)
      store_as(ds_t + j * tqp + c, load_as<V>(pt + j * tqp + c) * (load_as<V>(ds_t + j * tqp + c) - rowsum) * a.scale);
  }
  const auto k = rows_in<T, V>(a.k, n, h, tk, dim, pad);
  const auto dq = rows_out<T, V>(a.dq, n, h, dim, pad + wide);
  product<T, V>(tq, tk, {ds_t, 1, tqp}, k.p, k.ld, vd, dq.p, dq.ld);
  finish_rows(dq, a.dq, n, h, tq, dim);
  const auto q = rows_in<T, V>(a.q, n, h, tq, dim, pad);
  const auto dout = rows_in<T, V>(a.dout, n, h, tq, dim, pad + wide);
  const auto dk = rows_out<T, V>(a.dk, n, h, dim, pad + 2 * wide);
  const auto dv = rows_out<T, V>(a.dv, n, h, dim, pad + 3 * wide);
  product<T, V>(tk, tq, {ds_t, tqp, 1}, q.p, q.ld, vd, dk.p, dk.ld);
  product<T, V>(tk, tq, {pt, tqp, 1}, dout.p, dout.ld, vd, dv.p, dv.ld);
  finish_rows(dk, a.dk, n, h, tk, dim);
  finish_rows(dv, a.dv, n, h, tk, dim);
}

// The loops over (sample, head) pairs [begin, end), one copy per instruction set (util/simd.h:
// everything below the clones is inlined into them), and one in 16-float vectors for AVX-512.
template <typename T, typename V>
BLOCKLAB_INLINE void heads(bool backward, const AttentionProblem<T>& a, int64_t begin, int64_t end) {
  std::vector<T> scratch(scratch_size<T, V>(a));
  for (int64_t nh = begin; nh < end; ++nh) {
    if (backward)
      attention_backward_head<T, V>(a, nh / a.heads, nh % a.heads, scratch.data());
    else
      attention_forward_head<T, V>(a, nh / a.heads, nh % a.heads, scratch.data());
  }
}

BLOCKLAB_ISAS void heads_f32(bool backward, const AttentionProblem<float>& a, int64_t b, int64_t e) {
  heads<float, Vec<float>>(backward, a, b, e);
}
BLOCKLAB_ISAS void heads_f64(bool backward, const AttentionProblem<double>& a, int64_t b, int64_t e) {
  heads<double, Vec<double>>(backward, a, b, e);
}
__attribute__((target("arch=x86-64-v4"))) void heads_f32_wide(bool backward, const AttentionProblem<float>& a,
                                                               int64_t b, int64_t e) {
  heads<float, Floats16>(backward, a, b, e);
}

// float32 on AVX-512 runs 16 queries per vector, else Vec's lanes (as many as the pairs' kernel):
// P^T's padding follows.
void run_heads(bool backward, const AttentionProblem<float>& a, int64_t b, int64_t e) {
  wide_vectors() ? heads_f32_wide(backward, a, b, e) : heads_f32(backward, a, b, e);
}
void run_heads(bool backward, const AttentionProblem<double>& a, int64_t b, int64_t e) {
  heads_f64(backward, a, b, e);
}

// Enough (sample, head) pairs per task that a thread's share is worth starting.
int64_t attention_grain(int64_t tq, int64_t tk, int64_t dim) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, tq * tk * dim)); }

// Queries padded to whole vectors of the element type: the last dimension of P^T.
int64_t padded_queries(const torch::Tensor& q) {
  return round_up(q.size(2), pair_lanes::lanes(q.scalar_type()));
}

template <typename T>
AttentionProblem<T> attention_problem(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      const torch::Tensor& mask_t, const torch::Tensor& p) {
  AttentionProblem<T> a{};
  a.heads = q.size(1);
  a.tq = q.size(2);
  a.tk = k.size(2);
  a.dim = q.size(3);
  a.scale = T(1) / std::sqrt(T(a.dim));
  a.mask = mask_t.defined() ? mask_t.data_ptr<T>() : nullptr;
  a.q = strided_rows<T>(q), a.k = strided_rows<T>(k), a.v = strided_rows<T>(v), a.p = strided_rows<T>(p);
  return a;
}

// The per-head kernel's forward into `o`; returns P^T [N, H, Tk, Tq padded].
torch::Tensor per_head_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask, const torch::Tensor& o) {
  const int64_t n = q.size(0), h = q.size(1), tq = q.size(2), tk = k.size(2), dim = q.size(3), tqp = padded_queries(q);
  auto p = torch::empty({n, h, tk, tqp}, q.options());
  const auto mask_t = mask.defined() ? torch::constant_pad_nd(mask.t(), {0, tqp - tq}).contiguous() : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "fused attention", [&] {
    auto a = attention_problem<scalar_t>(q, k, v, mask_t, p);
    a.o = strided_rows<scalar_t>(o);
    parallel_flushed(0, n * h, attention_grain(tq, tk, dim), [&](int64_t b, int64_t e) { run_heads(false, a, b, e); });
  });
  return p;
}

// The per-head kernel's backward: the gradients of q, k and v (tensors laid out as the caller
// wants them) from P^T and dO.
void per_head_backward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& p,
                       const torch::Tensor& dout, const torch::Tensor& dq, const torch::Tensor& dk, const torch::Tensor& dv) {
  const int64_t n = q.size(0), h = q.size(1), tq = q.size(2), tk = k.size(2), dim = q.size(3);
  TORCH_CHECK(p.size(3) == padded_queries(q), "fused attention: the forward pass ran with other vector lanes (",
              p.size(3), " padded queries, now ", padded_queries(q), "): simd::set_wide_vectors changed in between");
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "fused attention backward", [&] {
    auto a = attention_problem<scalar_t>(q, k, v, torch::Tensor(), p);
    a.dout = strided_rows<scalar_t>(dout), a.dq = strided_rows<scalar_t>(dq), a.dk = strided_rows<scalar_t>(dk),
    a.dv = strided_rows<scalar_t>(dv);
    parallel_flushed(0, n * h, attention_grain(tq, tk, dim), [&](int64_t b, int64_t e) { run_heads(true, a, b, e); });
  });
}

std::atomic<AttentionKernel> g_attention_kernel{AttentionKernel::Auto};

}  // namespace

// Pairs along the lanes pay for regrouping q, k, v and the outputs (transposes), one head at a time
// for queries padded to whole vectors and, with a head width no vector divides, for copying rows.
// `blocklab bench attention` (docs/profiling.md), forward + backward, pairs / one head: 0.92-0.93
// at 17-18 tokens of width 16 or 32, 0.73-0.75 at 49-50 of width 24; 0.98 at 32 x 16 and 33 x 48 (no
// padding, or wide heads), 1.2-1.3 at 18 x 64, 8 x 64 and 64 x 32, 1.1-1.2 at 128 and 256 tokens.
AttentionKernel attention_kernel_for(int64_t tq, int64_t dim, torch::ScalarType type) {
  const auto forced = g_attention_kernel.load(std::memory_order_relaxed);
  if (forced != AttentionKernel::Auto) return forced;
  const bool padded = tq % pair_lanes::lanes(type) != 0;  // (the per-head kernel's queries per vector)
  return padded && tq < 64 && dim <= 32 ? AttentionKernel::PairLanes : AttentionKernel::PerHead;
}

namespace {

using fused::FusedForward;

FusedForward fused_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                           const torch::Tensor& mask) {
  RECORD_FUNCTION("blocklab::fused_attention", std::vector<c10::IValue>({q, k, v}));  // an op for the profiler
  FusedForward f;
  f.o = torch::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, q.options()).transpose(1, 2);
  f.paired = attention_kernel_for(q.size(2), q.size(3), q.scalar_type()) == AttentionKernel::PairLanes;
  f.p = f.paired ? pair_lanes::forward(q, k, v, mask.defined() ? mask.contiguous() : mask, f.o)
                 : per_head_forward(q, k, v, mask, f.o);
  return f;
}

// The gradients of a fused forward into dq, dk, dv from what it saved: q, k, v and P.
void fused_backward(bool paired, const std::vector<torch::Tensor>& saved, const torch::Tensor& dout,
                    const torch::Tensor& dq, const torch::Tensor& dk, const torch::Tensor& dv) {
  RECORD_FUNCTION("blocklab::fused_attention_backward", std::vector<c10::IValue>({dout, dk}));  // shapes of q, k
  (paired ? pair_lanes::backward : per_head_backward)(saved[0], saved[1], saved[2], saved[3], dout, dq, dk, dv);
}

// A tensor whose last dimension is contiguous (what the kernel reads), without copying when it is.
torch::Tensor last_dim_contiguous(const torch::Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

// x itself, or a copy when x is a view into a larger tensor: saved for backward, a view would keep
// all of that tensor alive (v of the layer's packed projection, once q and k are rotated: 3x v).
torch::Tensor compact(const torch::Tensor& x) {
  return x.storage().nbytes() > size_t(x.numel()) * x.element_size() ? x.contiguous() : x;
}

// A gradient of sizes [N, H, T, D] laid out as [N, T, H, D]: what a packed projection's backward reads.
torch::Tensor gradient_like_rows(const std::vector<int64_t>& sizes, const torch::TensorOptions& options) {
  return torch::empty({sizes[0], sizes[2], sizes[1], sizes[3]}, options).transpose(1, 2);
}

// q, k and v of a packed projection [N, T, 3, H, D], each [N, H, T, D].
std::array<torch::Tensor, 3> unpack(const torch::Tensor& qkv) {
  return {qkv.select(2, 0).transpose(1, 2), qkv.select(2, 1).transpose(1, 2), qkv.select(2, 2).transpose(1, 2)};
}

// The mask is a constant, passed by value beside the tensors autograd tracks (an undefined tensor
// cannot be an input of a custom function).
struct ConstantMask {
  torch::Tensor mask;
};

class FusedAttention : public torch::autograd::Function<FusedAttention> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const ConstantMask& mask) {
    auto f = fused_forward(q, k, v, mask.mask);
    ctx->saved_data["paired"] = f.paired;
    ctx->saved_data["q"] = q.sizes(), ctx->saved_data["k"] = k.sizes();
    ctx->save_for_backward({compact(q), compact(k), compact(v), f.p});
    return f.o;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto options = grads[0].options();
    auto dq = gradient_like_rows(ctx->saved_data["q"].toIntVector(), options);
    auto dk = gradient_like_rows(ctx->saved_data["k"].toIntVector(), options);
    auto dv = gradient_like_rows(ctx->saved_data["k"].toIntVector(), options);
    fused_backward(ctx->saved_data["paired"].toBool(), saved, last_dim_contiguous(grads[0]), dq, dk, dv);
    return {dq, dk, dv, torch::Tensor()};
  }
};

// The same from the packed projection: its gradient is written straight into one [N, T, 3, H, D]
// tensor (three separate gradients would cost autograd a zero-filled tensor, a copy and a sum each).
class FusedPackedAttention : public torch::autograd::Function<FusedPackedAttention> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv, const ConstantMask& mask) {
    auto f = fused::packed_attention_forward(qkv, mask.mask);
    ctx->saved_data["paired"] = f.paired;
    ctx->save_for_backward({qkv, f.p});
    return f.o;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {fused::packed_attention_backward(saved[0], ctx->saved_data["paired"].toBool(), saved[1], grads[0]),
            torch::Tensor()};
  }
};

// What the fused kernel takes: CPU float or double, 4-d, the last dimension contiguous, a
// [Tq, Tk] mask (or none) of the same type.
bool attention_fusable(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask) {
  if (!fused_kernels_enabled() || !cpu_floating(q)) return false;
  for (const auto* t : {&q, &k, &v})
    if (t->dim() != 4 || t->scalar_type() != q.scalar_type() || !t->device().is_cpu()) return false;
  if (k.size(3) != q.size(3) || v.size(3) != q.size(3)) return false;
  return fused::attention_mask_fusable(mask, q.size(2), k.size(2), q.scalar_type());
}


}  // namespace

void set_attention_kernel(AttentionKernel kernel) { g_attention_kernel.store(kernel); }

bool fused::attention_mask_fusable(const torch::Tensor& mask, int64_t tq, int64_t tk, torch::ScalarType type) {
  return !mask.defined() ||
         (mask.dim() == 2 && mask.size(0) == tq && mask.size(1) == tk && mask.scalar_type() == type);
}

bool fused::packed_attention_fusable(const torch::Tensor& qkv, const torch::Tensor& mask) {
  TORCH_CHECK(qkv.dim() == 5 && qkv.size(2) == 3, "packed_attention: qkv must be [N, T, 3, H, D], got ", qkv.sizes());
  const auto in = unpack(qkv);
  return attention_fusable(in[0], in[1], in[2], mask) && qkv.stride(-1) == 1;
}

FusedForward fused::packed_attention_forward(const torch::Tensor& qkv, const torch::Tensor& mask) {
  const auto in = unpack(qkv);
  return fused_forward(in[0], in[1], in[2], mask);
}

torch::Tensor fused::packed_attention_backward(const torch::Tensor& qkv, bool paired, const torch::Tensor& p,
                                               const torch::Tensor& dout) {
  auto dqkv = torch::empty(qkv.sizes(), dout.options());
  const auto in = unpack(qkv), d = unpack(dqkv);
  fused_backward(paired, {in[0], in[1], in[2], p}, last_dim_contiguous(dout), d[0], d[1], d[2]);
  return dqkv;
}

torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& mask) {
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(q.size(-1)));
  if (mask.defined()) scores = scores + mask;
  return torch::matmul(torch::softmax(scores, -1), v);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask) {
  if (!attention_fusable(q, k, v, mask)) return attention_reference(q, k, v, mask);
  const auto qc = last_dim_contiguous(q), kc = last_dim_contiguous(k), vc = last_dim_contiguous(v);
  if (!records_grad(q, k, v)) return fused_forward(qc, kc, vc, mask).o;
  return FusedAttention::apply(qc, kc, vc, ConstantMask{mask});
}

torch::Tensor packed_attention(const torch::Tensor& qkv, const torch::Tensor& mask) {
  if (!fused::packed_attention_fusable(qkv, mask)) {
    const auto in = unpack(qkv);
    return attention(in[0], in[1], in[2], mask);
  }
  if (!records_grad(qkv)) return fused::packed_attention_forward(qkv, mask).o;
  return FusedPackedAttention::apply(qkv, ConstantMask{mask});
}

}  // namespace blocklab
