#include "util/gemm.h"

#include "util/simd.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace blocklab::gemm {

namespace {

// The register tile: kMr rows by two 16-float vectors of C, 24 of the 32 zmm registers.
using V = simd::Floats16;
constexpr int64_t kLanes = 16, kMr = 12, kNr = 2 * kLanes;

// Block sizes (Goto & van de Geijn 2008, section 6): a packed B panel of kKc x kNr floats (32 KiB)
// is reused from L1 by every strip of A in a block, an A block of kMc x kKc floats (120 KiB) from
// L2, a packed B block of kKc x kNc floats (1 MiB) from L2.
constexpr int64_t kKc = 256;
constexpr int64_t kMc = 10 * kMr;
constexpr int64_t kNc = 1024;

BLOCKLAB_INLINE V load(const float* p) { return simd::load_as<V>(p); }
BLOCKLAB_INLINE void store(float* p, const V& v) { simd::store_as(p, v); }

// count <= N floats; N itself, a constant length, is copied inline rather than by a call to memcpy.
template <int64_t N>
BLOCKLAB_INLINE void copy_floats(float* dst, const float* src, int64_t count) {
  if (count == N)
    std::memcpy(dst, src, N * sizeof(float));
  else
    std::memcpy(dst, src, count * sizeof(float));
}

// How many rows ahead the packing loops fetch: a product's operands arrive cold from a training
// step's other layers, and the rows a stride apart are not a stream the hardware prefetcher
// follows in time (`bench gemm --cold`; a weight gradient's product with cold operands, [64, 2304]
// x [2304, 64]: 0.196 -> 0.163 ms 8 rows ahead, 0.94-0.99x of that 16 ahead, no better 32 ahead;
// docs/profiling.md).
constexpr int64_t kPrefetchRows = 16;

// Fetch row p + kPrefetchRows of a row-major block of `width` floats from `row` (row p), if the
// block has it.
BLOCKLAB_INLINE void prefetch_ahead(const float* row, int64_t ld, int64_t p, int64_t kc, int64_t width) {
  if (p + kPrefetchRows >= kc) return;
  for (int64_t j = 0; j < width; j += kLanes) __builtin_prefetch(row + kPrefetchRows * ld + j);
}

// Copy `width` floats of a row into pieces of N floats, the pieces `stride` floats apart (the last
// one taking what is left): one row of A's strips or of B's panels.
template <int64_t N>
BLOCKLAB_INLINE void scatter_row(const float* src, int64_t width, float* dst, int64_t stride) {
  int64_t j = 0;
  for (; j + N < width; j += N, dst += stride) copy_floats<N>(dst, src + j, N);
  copy_floats<N>(dst, src + j, width - j);
}

// Zero the last of the strips or panels of `part` floats by kc that `width` rows or columns fill,
// if it is only partly filled (its extra sums are computed and thrown away).
BLOCKLAB_INLINE void zero_partial_last(int64_t width, int64_t part, int64_t kc, float* dst) {
  const int64_t parts = (width + part - 1) / part;
  if (width < parts * part) std::fill(dst + (parts - 1) * kc * part, dst + parts * kc * part, 0.0f);
}

// B [pc, pc + kc) x [jc, jc + nc) into panels of kNr columns, each kc rows of kNr floats, the
// columns past n zero. A row-major B is read a row at a time, across all the panels.
BLOCKLAB_INLINE void pack_b(const Operand& b, int64_t pc, int64_t kc, int64_t jc, int64_t nc, float* dst) {
  zero_partial_last(nc, kNr, kc, dst);
  if (!b.transposed) {
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = b.data + (pc + p) * b.ld + jc;
      prefetch_ahead(src, b.ld, p, kc, nc);
      scatter_row<kNr>(src, nc, dst + p * kNr, kc * kNr);
    }
    return;
  }
  for (int64_t j0 = 0; j0 < nc; j0 += kNr, dst += kc * kNr) {  // column j of B is row j of the stored matrix
    const int64_t cols = std::min(kNr, nc - j0);
    for (int64_t j = 0; j < cols; ++j) {
      const float* src = b.data + (jc + j0 + j) * b.ld + pc;
      for (int64_t p = 0; p < kc; ++p) dst[p * kNr + j] = src[p];
    }
  }
}

// A [ic, ic + mc) x [pc, pc + kc) into strips of kMr rows, each kc columns of kMr floats. A
// transposed A (a row of the stored matrix is a column of A) is read a row at a time, across all
// the strips. With `sums` (a transposed A), also the rows' sums over this depth block, added to
// sums[0, mc) (set on the first block): in order within the block, the blocks in order, whatever
// the threads.
BLOCKLAB_INLINE void pack_a(const Operand& a, int64_t ic, int64_t mc, int64_t pc, int64_t kc, float* dst, float* sums) {
  zero_partial_last(mc, kMr, kc, dst);
  if (!a.transposed) {
    for (int64_t i0 = 0; i0 < mc; i0 += kMr, dst += kc * kMr)
      for (int64_t r = 0; r < std::min(kMr, mc - i0); ++r) {
        const float* src = a.data + (ic + i0 + r) * a.ld + pc;
        for (int64_t p = 0; p < kc; ++p) dst[p * kMr + r] = src[p];
      }
    return;
  }
  float s[kMc] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const float* src = a.data + (pc + p) * a.ld + ic;
    prefetch_ahead(src, a.ld, p, kc, mc);
    scatter_row<kMr>(src, mc, dst + p * kMr, kc * kMr);
    if (sums)
      for (int64_t i = 0; i < mc; ++i) s[i] += src[i];
  }
  if (sums)
    for (int64_t i = 0; i < mc; ++i) sums[i] = pc == 0 ? s[i] : sums[i] + s[i];
}

// The epilogue as a compile-time choice (util/gemm.h's Epilogue, the activation resolved).
enum class Finish { Store, Gelu, Silu, Multiply };

// One vector of C's final values h: written to c, after the epilogue. `aux` is where the slope
// goes (an activation; null: not kept) or the factor comes from (Multiply).
template <Finish F>
BLOCKLAB_INLINE void finish(const V& h, float* c, float* aux) {
  if constexpr (F == Finish::Store) {
    store(c, h);
  } else if constexpr (F == Finish::Multiply) {
    store(c, h * load(aux));
  } else {
    V y, slope;
    simd::value_and_slope<F == Finish::Gelu ? Activation::Gelu : Activation::Silu>(h, y, slope);
    store(c, y);
    if (aux) store(aux, slope);
  }
}

// One register tile: C[rows, cols] = sum_p A(r, p) b[p] (+ C if `add_to_c`, else + bias if given),
// then the epilogue F (aux: at the tile's corner, C's row stride), for rows <= R of the strip
// (R = kMr, or 8 or 4 for a last strip of fewer rows: a weight gradient with 64 rows would
// otherwise compute 72). A is a packed strip (A(r, p) = a[p * kMr + r]) or, in place, rows of a
// row-major matrix (a[r * lda + p]); one broadcast per row and k. (Which one is a template
// argument: the packed strip's offsets are then constants, and the row offsets do not take R
// registers.)
template <bool kPacked, int64_t R, Finish F>
BLOCKLAB_INLINE void tile(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc, int64_t rows,
                          int64_t cols, const float* bias, bool add_to_c, float* aux) {
  const int64_t a_row = kPacked ? 1 : lda, a_step = kPacked ? kMr : 1;
  // C's rows are far apart in memory: fetch them while the sums are computed, and the epilogue's
  // rows alike (a cold `aux` cost a GELU epilogue twice its arithmetic in a training step).
#pragma GCC unroll 16
  for (int64_t r = 0; r < R; ++r) {
    __builtin_prefetch(c + r * ldc, 1);
    __builtin_prefetch(c + r * ldc + kLanes, 1);
    if (F != Finish::Store && aux) {
      __builtin_prefetch(aux + r * ldc, 1);
      __builtin_prefetch(aux + r * ldc + kLanes, 1);
    }
  }
  V s0[R], s1[R];
#pragma GCC unroll 16
  for (int64_t r = 0; r < R; ++r) s0[r] = s1[r] = V{};
  for (int64_t p = 0; p < kc; ++p, a += a_step, b += 2 * kLanes) {
    const V b0 = load(b), b1 = load(b + kLanes);
#pragma GCC unroll 16
    for (int64_t r = 0; r < R; ++r) {
      s0[r] += a[r * a_row] * b0;
      s1[r] += a[r * a_row] * b1;
    }
  }
  if (rows == R && cols == 2 * kLanes) {
    V h[2 * R];  // C's values before the epilogue, row r's halves at 2 r and 2 r + 1
#pragma GCC unroll 16
    for (int64_t r = 0; r < R; ++r) {
      const float* cr = c + r * ldc;
      h[2 * r] = add_to_c ? load(cr) + s0[r] : bias ? s0[r] + load(bias) : s0[r];
      h[2 * r + 1] = add_to_c ? load(cr + kLanes) + s1[r] : bias ? s1[r] + load(bias + kLanes) : s1[r];
    }
    // (no lambda here: one is not compiled for the AVX-512 target of the function it sits in)
    if constexpr (F == Finish::Gelu || F == Finish::Silu) {
      // An activation takes ~35 operations per vector: unrolled over the tile's 24 vectors they ran
      // at about one per cycle, and a loop over them ran the GELU product 5% faster (same bits).
#pragma GCC unroll 2
      for (int64_t i = 0; i < 2 * R; ++i)
        finish<F>(h[i], c + i / 2 * ldc + i % 2 * kLanes, aux ? aux + i / 2 * ldc + i % 2 * kLanes : nullptr);
    } else {
#pragma GCC unroll 32
      for (int64_t i = 0; i < 2 * R; ++i)
        finish<F>(h[i], c + i / 2 * ldc + i % 2 * kLanes, aux ? aux + i / 2 * ldc + i % 2 * kLanes : nullptr);
    }
    return;
  }
  // An edge tile: each row's valid part through buffers (the lanes past `cols` are zero and thrown
  // away), so that every element takes the same arithmetic as in a whole tile.
  for (int64_t r = 0; r < rows; ++r) {
    float h[2 * kLanes], out[2 * kLanes], side[2 * kLanes] = {};
    store(h, s0[r]);
    store(h + kLanes, s1[r]);
    float* cr = c + r * ldc;
    for (int64_t j = 0; j < 2 * kLanes; ++j)
      h[j] = j >= cols ? 0.0f : add_to_c ? cr[j] + h[j] : bias ? h[j] + bias[j] : h[j];
    if (F == Finish::Multiply) std::copy(aux + r * ldc, aux + r * ldc + cols, side);
    for (int64_t half = 0; half < 2 * kLanes; half += kLanes) finish<F>(load(h + half), out + half, aux ? side + half : nullptr);
    std::copy(out, out + cols, cr);
    if (F != Finish::Store && F != Finish::Multiply && aux) std::copy(side, side + cols, aux + r * ldc);
  }
}

// The tile for a strip of `rows`: kMr at once, or 8 or 4 for what is left of the last.
template <bool kPacked, Finish F>
BLOCKLAB_INLINE void strip_tile(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                                int64_t rows, int64_t cols, const float* bias, bool add_to_c, float* aux) {
  static_assert(kMr > 8);
  if (rows > 8)
    tile<kPacked, kMr, F>(kc, a, lda, b, c, ldc, rows, cols, bias, add_to_c, aux);
  else if (rows > 4)
    tile<kPacked, 8, F>(kc, a, lda, b, c, ldc, rows, cols, bias, add_to_c, aux);
  else
    tile<kPacked, 4, F>(kc, a, lda, b, c, ldc, rows, cols, bias, add_to_c, aux);
}

// One block of rows of C against the packed B block: pack its A, run every tile.
struct RowBlock {
  Operand a;
  const float* bpack;
  const float* bias;  // null, or the bias of columns [jc, jc + nc) when this is the first depth block
  float* c;           // C at (ic, jc)
  int64_t ldc, ic, mc, pc, kc, nc;
  bool add_to_c;
  float* row_sums;  // A's row sums at ic on the first column block, else null
  float* aux;       // the epilogue's matrix at (ic, jc) on the last depth block, else null
};

// The tile of C at rows [ir, ir + kMr) and columns [jr, jr + kNr) of the block: rows below
// `in_place` read from the row-major A where they lie, the others from the packed strips.
template <Finish F>
BLOCKLAB_INLINE void block_tile(const RowBlock& blk, const float* packed, int64_t in_place, int64_t ir, int64_t jr) {
  const float* panel = blk.bpack + jr * blk.kc;
  const float* bias = blk.bias ? blk.bias + jr : nullptr;
  const int64_t rows = std::min(kMr, blk.mc - ir), cols = std::min(kNr, blk.nc - jr);
  float* c = blk.c + ir * blk.ldc + jr;
  float* aux = blk.aux ? blk.aux + ir * blk.ldc + jr : nullptr;
  if (ir < in_place)
    tile<false, kMr, F>(blk.kc, blk.a.data + (blk.ic + ir) * blk.a.ld + blk.pc, blk.a.ld, panel, c, blk.ldc, rows, cols,
                        bias, blk.add_to_c, aux);
  else
    strip_tile<true, F>(blk.kc, packed + (ir - in_place) * blk.kc, 0, panel, c, blk.ldc, rows, cols, bias,
                        blk.add_to_c, aux);
}

// A row-major A is read where it lies (its rows are contiguous in k); a transposed one is packed
// first (read in place, each k would touch another row of the stored matrix, kKc rows a stride
// apart that map to the same few cache sets), and so are the rows past the last full strip.
// The tiles go panel by panel (a panel of B stays in L1 for every strip), except with a Multiply
// epilogue: its factor matrix, C's size, arrives cold (the MLP's slope, from the forward pass),
// and strip by strip each row of C and of the factor is read through in order, panel after panel,
// a stream the hardware prefetcher follows (fc2's dx with the slope, cold: 0.91x; warm 0.96x).
template <Finish F>
BLOCKLAB_INLINE void multiply(const RowBlock& blk, float* packed) {
  const Operand& a = blk.a;
  const int64_t in_place = a.transposed ? 0 : blk.mc / kMr * kMr;  // rows read in place
  if (in_place < blk.mc) pack_a(a, blk.ic + in_place, blk.mc - in_place, blk.pc, blk.kc, packed, blk.row_sums);
  if constexpr (F == Finish::Multiply) {
    for (int64_t ir = 0; ir < blk.mc; ir += kMr)
      for (int64_t jr = 0; jr < blk.nc; jr += kNr) block_tile<F>(blk, packed, in_place, ir, jr);
  } else {
    for (int64_t jr = 0; jr < blk.nc; jr += kNr)
      for (int64_t ir = 0; ir < blk.mc; ir += kMr) block_tile<F>(blk, packed, in_place, ir, jr);
  }
}

// The kernel compiled for AVX-512 (everything above is inlined into these two).
__attribute__((target("arch=x86-64-v4"))) void pack_b_avx512(const Operand& b, int64_t pc, int64_t kc, int64_t jc,
                                                              int64_t nc, float* dst) {
  pack_b(b, pc, kc, jc, nc, dst);
}
__attribute__((target("arch=x86-64-v4"))) void multiply_avx512(const RowBlock& blk, Finish f, float* packed) {
  switch (f) {
    case Finish::Store: return multiply<Finish::Store>(blk, packed);
    case Finish::Gelu: return multiply<Finish::Gelu>(blk, packed);
    case Finish::Silu: return multiply<Finish::Silu>(blk, packed);
    case Finish::Multiply: return multiply<Finish::Multiply>(blk, packed);
  }
}

Finish finish_of(const Epilogue& e) {
  switch (e.op) {
    case Epilogue::Op::None: return Finish::Store;
    case Epilogue::Op::Multiply: return Finish::Multiply;
    case Epilogue::Op::Activation: break;
  }
  return e.activation == Activation::Gelu ? Finish::Gelu : Finish::Silu;
}

}  // namespace

bool available() { return simd::has_avx512(); }

void sgemm(int64_t m, int64_t n, int64_t k, Operand a, Operand b, const float* bias, float* c, int64_t ldc,
           float* a_row_sums, const Epilogue& epilogue) {
  TORCH_CHECK(available(), "gemm::sgemm: this CPU has no AVX-512 (x86-64-v4)");
  TORCH_CHECK(!a_row_sums || a.transposed, "gemm::sgemm: A's row sums are taken as a transposed A is packed");
  TORCH_CHECK(epilogue.op != Epilogue::Op::Multiply || epilogue.aux, "gemm::sgemm: a Multiply epilogue needs its matrix");
  TORCH_CHECK(epilogue.op == Epilogue::Op::None || k > 0, "gemm::sgemm: an epilogue needs a depth k > 0");
  if (m <= 0) return;
  if (n <= 0 || k <= 0) {  // no product to pack A for: C is the bias, the row sums are taken directly
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = bias ? bias[j] : 0.0f;
      if (!a_row_sums) continue;
      a_row_sums[i] = 0.0f;
      for (int64_t p = 0; p < k; ++p) a_row_sums[i] += a.data[p * a.ld + i];
    }
    return;
  }
  const Finish finish = finish_of(epilogue);
  thread_local std::vector<float> bpack;  // kept between calls: no allocation and zeroing per product
  bpack.resize(kKc * simd::round_up(std::min(n, kNc), kNr));
  const int64_t row_blocks = (m + kMc - 1) / kMc;
  for (int64_t jc = 0; jc < n; jc += kNc) {
    const int64_t nc = std::min(kNc, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKc) {
      const int64_t kc = std::min(kKc, k - pc);
      const bool last_depth = pc + kc == k;  // the epilogue goes with C's final values
      pack_b_avx512(b, pc, kc, jc, nc, bpack.data());
      // (subnormals flushed: a product with 10% subnormal entries ran 21x slower)
      simd::parallel_flushed(0, row_blocks, 1, [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> packed;
        packed.resize(kMc * kKc);
        for (int64_t ib = begin; ib < end; ++ib) {
          const int64_t ic = ib * kMc;
          const RowBlock blk{a, bpack.data(), pc == 0 && bias ? bias + jc : nullptr, c + ic * ldc + jc, ldc, ic,
                             std::min(kMc, m - ic), pc, kc, nc, pc > 0, jc == 0 && a_row_sums ? a_row_sums + ic : nullptr,
                             last_depth && epilogue.aux ? epilogue.aux + ic * ldc + jc : nullptr};
          multiply_avx512(blk, last_depth ? finish : Finish::Store, packed.data());
        }
      });
    }
  }
}

}  // namespace blocklab::gemm
