#include "models/attention_lanes.h"


#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "util/simd.h"

namespace blocklab::pair_lanes {

namespace {

using namespace simd;

// A tensor [N, H, T, D] (the last dimension contiguous) by rows: row t of pair n H + h.
template <typename T>
struct PairRows {
  T* data;
  int64_t heads, sn, sh, st;
  T* row(int64_t pair, int64_t t) const { return data + pair / heads * sn + pair % heads * sh + t * st; }
};

template <typename T>
PairRows<T> pair_rows(const torch::Tensor& x) {
  return {x.data_ptr<T>(), x.size(1), x.stride(0), x.stride(1), x.stride(2)};
}

// One attention call. Group g holds pairs [g L, g L + L); its regrouped operands are
// [T, D] matrices of vectors, element (t, d) at (t D + d) L, lane l that of pair g L + l.
template <typename T>
struct Problem {
  int64_t pairs, tq, tk, dim;
  T scale;
  const T* mask;                            // [Tq, Tk], or null
  PairRows<T> q, k, v, o, dout, dq, dk, dv;  // the caller's tensors (o forward; dout and the gradients backward)
  T* p;                                      // the probabilities [G, Tq, Tk, L]
};

// Rows [0, count) of the pairs of the group starting at `first` (pairs past the last read as
// zeros), times `scale`, regrouped into `out` [count, D] vectors: L x L blocks transposed in
// registers, a width no vector divides finished element by element. (`Full`: every lane's pair
// exists, the common case, without a test per lane.)
template <typename T, typename V, bool Full>
BLOCKLAB_INLINE void regroup_in_group(const PairRows<T>& x, int64_t first, int64_t pairs, int64_t count, int64_t dim,
                                      T scale, T* out) {
  constexpr int64_t L = kLanesOf<T, V>;
  const T* rows[L];
  for (int64_t l = 0; l < L; ++l) rows[l] = Full || first + l < pairs ? x.row(first + l, 0) : nullptr;
  const int64_t whole = dim / L * L;
  for (int64_t t = 0; t < count; ++t, out += dim * L) {
    for (int64_t d0 = 0; d0 < whole; d0 += L) {
      V r[L];
      for (int64_t l = 0; l < L; ++l) r[l] = Full || rows[l] ? load_as<V>(rows[l] + t * x.st + d0) * scale : V{};
      transpose_block(r);
      for (int64_t i = 0; i < L; ++i) store_as(out + (d0 + i) * L, r[i]);
    }
    for (int64_t d = whole; d < dim; ++d)
      for (int64_t l = 0; l < L; ++l) out[d * L + l] = Full || rows[l] ? rows[l][t * x.st + d] * scale : T(0);
  }
}
template <typename T, typename V>
BLOCKLAB_INLINE void regroup_in(const PairRows<T>& x, int64_t first, int64_t pairs, int64_t count, int64_t dim,
                                T scale, T* out) {
  if (first + kLanesOf<T, V> <= pairs)
    regroup_in_group<T, V, true>(x, first, pairs, count, dim, scale, out);
  else
    regroup_in_group<T, V, false>(x, first, pairs, count, dim, scale, out);
}

// A group's q (times the scale), k and v regrouped, in a worker's scratch: [Tq, D], [Tk, D], [Tk, D].
template <typename T, typename V>
BLOCKLAB_INLINE void regroup_operands(const Problem<T>& a, int64_t first, T* q, T* k, T* v) {
  regroup_in<T, V>(a.q, first, a.pairs, a.tq, a.dim, a.scale, q);
  regroup_in<T, V>(a.k, first, a.pairs, a.tk, a.dim, T(1), k);
  regroup_in<T, V>(a.v, first, a.pairs, a.tk, a.dim, T(1), v);
}

// The inverse, times `scale`, into the rows of the pairs that exist.
template <typename T, typename V, bool Full>
BLOCKLAB_INLINE void regroup_out_group(const T* in, int64_t count, int64_t dim, T scale, const PairRows<T>& x,
                                       int64_t first, int64_t pairs) {
  constexpr int64_t L = kLanesOf<T, V>;
  T* rows[L];
  for (int64_t l = 0; l < L; ++l) rows[l] = Full || first + l < pairs ? x.row(first + l, 0) : nullptr;
  const int64_t whole = dim / L * L;
  for (int64_t t = 0; t < count; ++t, in += dim * L) {
    for (int64_t d0 = 0; d0 < whole; d0 += L) {
      V r[L];
      for (int64_t i = 0; i < L; ++i) r[i] = load_as<V>(in + (d0 + i) * L) * scale;
      transpose_block(r);
      for (int64_t l = 0; l < L; ++l)
        if (Full || rows[l]) store_as(rows[l] + t * x.st + d0, r[l]);
    }
    for (int64_t d = whole; d < dim; ++d)
      for (int64_t l = 0; l < L; ++l)
        if (Full || rows[l]) rows[l][t * x.st + d] = in[d * L + l] * scale;
  }
}
template <typename T, typename V>
BLOCKLAB_INLINE void regroup_out(const T* in, int64_t count, int64_t dim, T scale, const PairRows<T>& x, int64_t first,
                                 int64_t pairs) {
  if (first + kLanesOf<T, V> <= pairs)
    regroup_out_group<T, V, true>(in, count, dim, scale, x, first, pairs);
  else
    regroup_out_group<T, V, false>(in, count, dim, scale, x, first, pairs);
}

// A matrix of vectors with any strides: element (i, j) at p + (i rs + j cs) L.
template <typename T>
struct LaneMatrix {
  const T* p;
  int64_t rs, cs;
};

// C [m, n] = sum_k A(m, k) B(k, n), each lane its own product; C's rows are `ldc` vectors apart.
// A register tile of R x C vectors is summed over k in registers: R C independent chains of
// multiply-adds, R + C loads per R C of them.
template <typename T, typename V, int R, int C>
BLOCKLAB_INLINE void lane_tile(const LaneMatrix<T>& a, const LaneMatrix<T>& b, int64_t depth, int64_t m0, int64_t n0,
                               T* c, int64_t ldc) {
  constexpr int64_t L = kLanesOf<T, V>;
  V acc[R][C] = {};
  for (int64_t k = 0; k < depth; ++k) {
    V av[R], bv[C];
    for (int r = 0; r < R; ++r) av[r] = load_as<V>(a.p + ((m0 + r) * a.rs + k * a.cs) * L);
    for (int j = 0; j < C; ++j) bv[j] = load_as<V>(b.p + (k * b.rs + (n0 + j) * b.cs) * L);
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < C; ++j) acc[r][j] += av[r] * bv[j];
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < C; ++j) store_as(c + ((m0 + r) * ldc + n0 + j) * L, acc[r][j]);
}

// Columns [n0, n) of rows [m0, m0 + R): tiles of C columns, then of fewer for what is left.
template <typename T, typename V, int R, int C>
BLOCKLAB_INLINE void lane_columns(const LaneMatrix<T>& a, const LaneMatrix<T>& b, int64_t depth, int64_t m0,
                                  int64_t n0, int64_t n, T* c, int64_t ldc) {
  for (; n0 + C <= n; n0 += C) lane_tile<T, V, R, C>(a, b, depth, m0, n0, c, ldc);
  if constexpr (C > 1) lane_columns<T, V, R, C - 1>(a, b, depth, m0, n0, n, c, ldc);
}

// Rows [m0, m): R at a time, then fewer.
template <typename T, typename V, int R>
BLOCKLAB_INLINE void lane_rows(const LaneMatrix<T>& a, const LaneMatrix<T>& b, int64_t depth, int64_t m0, int64_t m,
                               int64_t n, T* c, int64_t ldc) {
  for (; m0 + R <= m; m0 += R) lane_columns<T, V, R, 4>(a, b, depth, m0, 0, n, c, ldc);
  if constexpr (R > 1) lane_rows<T, V, R - 1>(a, b, depth, m0, m, n, c, ldc);
}

// Tiles of 4 x 4 vectors where there are 32 vector registers (AVX-512), 2 x 4 with 16.
template <typename T, typename V>
BLOCKLAB_INLINE void lane_product_tiles(int64_t m, int64_t n, int64_t depth, const LaneMatrix<T>& a,
                                        const LaneMatrix<T>& b, T* c, int64_t ldc) {
  lane_rows<T, V, sizeof(V) == 64 ? 4 : 2>(a, b, depth, 0, m, n, c, ldc);
}

// The products as functions of their own, once per instruction set (the twenty tile shapes are
// not inlined at each of the seven places that multiply).
BLOCKLAB_ISAS void lane_product_f32(int64_t m, int64_t n, int64_t depth, const LaneMatrix<float>& a,
                                    const LaneMatrix<float>& b, float* c, int64_t ldc) {
  lane_product_tiles<float, Vec<float>>(m, n, depth, a, b, c, ldc);
}
BLOCKLAB_ISAS void lane_product_f64(int64_t m, int64_t n, int64_t depth, const LaneMatrix<double>& a,
                                    const LaneMatrix<double>& b, double* c, int64_t ldc) {
  lane_product_tiles<double, Vec<double>>(m, n, depth, a, b, c, ldc);
}
__attribute__((target("arch=x86-64-v4"))) void lane_product_f32_wide(int64_t m, int64_t n, int64_t depth,
                                                                     const LaneMatrix<float>& a,
                                                                     const LaneMatrix<float>& b, float* c,
                                                                     int64_t ldc) {
  lane_product_tiles<float, Floats16>(m, n, depth, a, b, c, ldc);
}

template <typename T, typename V>
BLOCKLAB_INLINE void lane_product(int64_t m, int64_t n, int64_t depth, const LaneMatrix<T>& a, const LaneMatrix<T>& b,
                                  T* c, int64_t ldc) {
  if constexpr (std::is_same_v<T, double>)
    lane_product_f64(m, n, depth, a, b, c, ldc);
  else if constexpr (std::is_same_v<V, Floats16>)
    lane_product_f32_wide(m, n, depth, a, b, c, ldc);
  else
    lane_product_f32(m, n, depth, a, b, c, ldc);
}

// Scores S [Tq, Tk] (+ mask) into probabilities, row by row: each lane's softmax over keys.
template <typename T, typename V>
BLOCKLAB_INLINE void softmax_rows(T* s, int64_t tq, int64_t tk, const T* mask) {
  constexpr int64_t L = kLanesOf<T, V>;
  for (int64_t i = 0; i < tq; ++i, s += tk * L) {
    V top = V{} - std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < tk; ++j) {
      V x = load_as<V>(s + j * L);
      if (mask) {
        x += mask[i * tk + j];
        store_as(s + j * L, x);
      }
      top = x > top ? x : top;
    }
    V sum{};
    for (int64_t j = 0; j < tk; ++j) {
      const V e = exp_nonpositive(load_as<V>(s + j * L) - top);
      store_as(s + j * L, e);
      sum += e;
    }
    const V inv = T(1) / sum;
    for (int64_t j = 0; j < tk; ++j) store_as(s + j * L, load_as<V>(s + j * L) * inv);
  }
}

// dP [Tq, Tk] into dS = P * (dP - rowsum(P * dP)) (the softmax's backward, before the scale).
template <typename T, typename V>
BLOCKLAB_INLINE void softmax_backward_rows(const T* p, T* ds, int64_t tq, int64_t tk) {
  constexpr int64_t L = kLanesOf<T, V>;
  for (int64_t i = 0; i < tq; ++i, p += tk * L, ds += tk * L) {
    V dot{};
    for (int64_t j = 0; j < tk; ++j) dot += load_as<V>(p + j * L) * load_as<V>(ds + j * L);
    for (int64_t j = 0; j < tk; ++j) store_as(ds + j * L, load_as<V>(p + j * L) * (load_as<V>(ds + j * L) - dot));
  }
}

// Forward of group g: S = (scale Q) K^T, P = softmax(S + mask), O = P V. Scratch: q, k, v
// regrouped, then O [Tq, D].
template <typename T, typename V>
BLOCKLAB_INLINE void forward_group(const Problem<T>& a, int64_t g, T* scratch) {
  constexpr int64_t L = kLanesOf<T, V>;
  const int64_t first = g * L, tq = a.tq, tk = a.tk, dim = a.dim;
  T *q = scratch, *k = q + tq * dim * L, *v = k + tk * dim * L, *ov = v + tk * dim * L;
  T* p = a.p + g * tq * tk * L;
  regroup_operands<T, V>(a, first, q, k, v);
  lane_product<T, V>(tq, tk, dim, {q, dim, 1}, {k, 1, dim}, p, tk);
  softmax_rows<T, V>(p, tq, tk, a.mask);
  lane_product<T, V>(tq, dim, tk, {p, tk, 1}, {v, dim, 1}, ov, dim);
  regroup_out<T, V>(ov, tq, dim, T(1), a.o, first, a.pairs);
}

// Backward of group g from q, k, v, the saved P and dO (with Qs = scale Q):
//   dP = dO V^T;  dS = P * (dP - rowsum(P * dP));  dQ = scale dS K;  dK = dS^T Qs;  dV = P^T dO.
// Scratch: q, k, v regrouped, dO [Tq, D], dS [Tq, Tk], one gradient at a time [max(Tq, Tk), D].
template <typename T, typename V>
BLOCKLAB_INLINE void backward_group(const Problem<T>& a, int64_t g, T* scratch) {
  constexpr int64_t L = kLanesOf<T, V>;
  const int64_t first = g * L, tq = a.tq, tk = a.tk, dim = a.dim;
  T *q = scratch, *k = q + tq * dim * L, *v = k + tk * dim * L;
  T *dout = v + tk * dim * L, *ds = dout + tq * dim * L, *grad = ds + tq * tk * L;
  const T* p = a.p + g * tq * tk * L;
  regroup_operands<T, V>(a, first, q, k, v);
  regroup_in<T, V>(a.dout, first, a.pairs, tq, dim, T(1), dout);
  lane_product<T, V>(tq, tk, dim, {dout, dim, 1}, {v, 1, dim}, ds, tk);
  softmax_backward_rows<T, V>(p, ds, tq, tk);
  lane_product<T, V>(tq, dim, tk, {ds, tk, 1}, {k, dim, 1}, grad, dim);
  regroup_out<T, V>(grad, tq, dim, a.scale, a.dq, first, a.pairs);
  lane_product<T, V>(tk, dim, tq, {ds, 1, tk}, {q, dim, 1}, grad, dim);
  regroup_out<T, V>(grad, tk, dim, T(1), a.dk, first, a.pairs);
  lane_product<T, V>(tk, dim, tq, {p, 1, tk}, {dout, dim, 1}, grad, dim);
  regroup_out<T, V>(grad, tk, dim, T(1), a.dv, first, a.pairs);
}

// The loops over groups [begin, end), one copy per instruction set and one in 16-float vectors.
template <typename T, typename V>
BLOCKLAB_INLINE void groups(bool backward, const Problem<T>& a, int64_t begin, int64_t end) {
  constexpr int64_t L = kLanesOf<T, V>;
  const int64_t t = std::max(a.tq, a.tk), operands = (a.tq + 2 * a.tk) * a.dim;
  std::vector<T> scratch(size_t((operands + (backward ? a.tq * a.dim + a.tq * a.tk + t * a.dim : a.tq * a.dim)) * L));
  for (int64_t g = begin; g < end; ++g) {
    if (backward)
      backward_group<T, V>(a, g, scratch.data());
    else
      forward_group<T, V>(a, g, scratch.data());
  }
}

BLOCKLAB_ISAS void groups_f32(bool backward, const Problem<float>& a, int64_t b, int64_t e) {
  groups<float, Vec<float>>(backward, a, b, e);
}
BLOCKLAB_ISAS void groups_f64(bool backward, const Problem<double>& a, int64_t b, int64_t e) {
  groups<double, Vec<double>>(backward, a, b, e);
}
__attribute__((target("arch=x86-64-v4"))) void groups_f32_wide(bool backward, const Problem<float>& a, int64_t b,
                                                                int64_t e) {
  groups<float, Floats16>(backward, a, b, e);
}

void run_groups(bool backward, const Problem<float>& a, int64_t b, int64_t e) {
  wide_vectors() ? groups_f32_wide(backward, a, b, e) : groups_f32(backward, a, b, e);
}
void run_groups(bool backward, const Problem<double>& a, int64_t b, int64_t e) { groups_f64(backward, a, b, e); }

// Groups over the threads, enough per task that a thread's share is worth starting.
template <typename T>
void run_all(bool backward, const Problem<T>& a, int64_t group_count, int64_t lanes) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, lanes * a.tq * a.tk * a.dim));
  parallel_flushed(0, group_count, grain, [&](int64_t b, int64_t e) { run_groups(backward, a, b, e); });
}

template <typename T>
Problem<T> problem(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& p) {
  Problem<T> a{};
  a.pairs = q.size(0) * q.size(1);
  a.tq = q.size(2);
  a.tk = k.size(2);
  a.dim = q.size(3);
  a.scale = T(1) / std::sqrt(T(a.dim));
  a.q = pair_rows<T>(q), a.k = pair_rows<T>(k), a.v = pair_rows<T>(v);
  a.p = p.data_ptr<T>();
  return a;
}

}  // namespace

int64_t lanes(torch::ScalarType type) {
  return type == torch::kDouble ? kLanes<double> : wide_vectors() ? kLanesOf<float, Floats16> : kLanes<float>;
}

torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& mask,
                      const torch::Tensor& o) {
  const int64_t pairs = q.size(0) * q.size(1), lanes_ = lanes(q.scalar_type());
  const int64_t group_count = (pairs + lanes_ - 1) / lanes_;
  auto p = torch::empty({group_count, q.size(2), k.size(2), lanes_}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention, pairs along the lanes", [&] {
    auto a = problem<scalar_t>(q, k, v, p);
    a.mask = mask.defined() ? mask.data_ptr<scalar_t>() : nullptr;
    a.o = pair_rows<scalar_t>(o);
    run_all(false, a, group_count, lanes_);
  });
  return p;
}

void backward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& p,
              const torch::Tensor& dout, const torch::Tensor& dq, const torch::Tensor& dk, const torch::Tensor& dv) {
  TORCH_CHECK(p.size(3) == lanes(dq.scalar_type()), "fused attention: the forward pass ran with ", p.size(3),
              " pairs per vector, now ", lanes(dq.scalar_type()), ": simd::set_wide_vectors changed in between");
  AT_DISPATCH_FLOATING_TYPES(dq.scalar_type(), "attention backward, pairs along the lanes", [&] {
    auto a = problem<scalar_t>(q, k, v, p);
    a.dout = pair_rows<scalar_t>(dout), a.dq = pair_rows<scalar_t>(dq), a.dk = pair_rows<scalar_t>(dk),
    a.dv = pair_rows<scalar_t>(dv);
    run_all(true, a, p.size(0), p.size(3));
  });
}

}  // namespace blocklab::pair_lanes
