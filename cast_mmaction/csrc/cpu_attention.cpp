// Scaled-dot-product attention for fp32 CPU tensors with AVX-512: the
// softmax computed between the two products of each block of query rows, in
// registers and the first-level cache (the speed-up ``cpu_attention``,
// cast_mmaction/models/cpu_attention.py says when and why).
//
// Layout. q / k / v are (B, H, L, D) views whose last dimension is
// contiguous (any other strides: the heads of a packed (B, L, 3, H, D)
// projection are read in place); ``forward_into`` / ``backward_into`` write
// the output and the gradients where the caller's (B, H, L, D) views say
// (Python passes the layouts of q, k and v, or the parts of one packed
// projection's gradient); ``forward`` / ``backward`` write them token-major,
// (B, L, H, D), the layout of the (B, L, H D) tensors around the attention,
// and on request (``packed``) dq / dk / dv as the thirds of one
// (B, L, 3, H, D) tensor, the gradient of a packed projection. D is 16, 32, 48 or 64 (Python pads other widths up to 64).
//
// Forward, per (batch, head): K^T is packed into panels of 16 keys
// ([panel][D][16]); then for each block of 2 MR = 12 query rows
//   S = (q scale log2 e) K^T       12 x Lk, 24 accumulators, q broadcast
// (each key panel read from the L2 cache serves 12 rows: 7 % faster than
// 6), and for each half of it (MR = 6 rows)
//   P = exp2(S - rowmax)           a degree-5 polynomial and vscalefps
//   O = P V / rowsum(P)            6 x D accumulators, P broadcast
// and, for backward, lse = ln 2 (rowmax + log2 rowsum) (natural log, as
// torch's fused kernel keeps it). Scores are in base 2 (log2 e folded into
// the query's scale) so that the exponential is exp2.
//
// Backward, per (batch, head) (one thread's task: no two threads write one
// row of dQ, dK or dV): q scaled and dO copied once per row; then for each
// block of key_block(Lk) keys (K^T with log2 e and V^T packed, dK / dV
// accumulated in the task's buffers) and each block of ROW_BLOCK query rows:
//   P  = exp2((q scale)(log2 e K^T) - lse log2 e)      (the recompute)
//   dP = dO V^T                 (both 12 rows at a time, as in forward)
//   dS = P (dP - rowsum(dO O))
//   dQ += scale dS K            (6 rows at a time)
//   dV += P^T dO,  dK += dS^T (scale q)   (6 keys' accumulators held in
//                                registers while the block's rows pass)
//
// The file is compiled with -mavx512f -mfma -fopenmp (at::parallel_for runs
// on OpenMP only where the including file is built with it): Python loads
// it on CPUs with AVX-512F only.
//
// Every loop bound and the work split are facts of the shapes; each output
// element is summed in one fixed order whatever the thread count: the same
// numbers on every run.
// ATen's tensor and pybind11's headers only, not <torch/extension.h> (all
// of torch's C++ API): the build on first use takes a third of the time.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>
#include <ATen/Parallel.h>

#include <immintrin.h>

#include "avx512_exp2.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int MR = 6;        // query rows per block
// most keys per block of the backward: the block's packed K and V, its K
// rows, its dK and dV accumulators (5 x 100 KiB at D = 64) and the P / dS
// rows of a row block (2 x 75 KiB) stay in the core's L2 while every query
// row passes (one pass over all keys kept dK and dV of 1568 keys, 0.8 MiB,
// in memory: 1.7x slower). The keys are split into the fewest blocks of at
// most this many, of equal size (key_block below): no short last block,
// which costs a whole block's per-row work (the dQ pass, the packing) for
// a few keys
constexpr int64_t KEY_BLOCK_MAX = 400;
constexpr int64_t ROW_BLOCK = 8 * MR;  // query rows per rank update of dK / dV
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;


using cast_mmaction::exp2_nonpos;


// Rows of q / k / v / dO / O lie one token apart in memory (3 H D floats in
// a packed projection, H D token-major): reading a head's rows one after
// another is a strided walk the hardware prefetcher does not follow, and at
// CLIP's 197 tokens these gathers (linear in the tokens, the products
// quadratic) were a fifth of the backward. Each gather asks for the row
// PREFETCH_ROWS ahead.
constexpr int64_t PREFETCH_ROWS = 16;
template <int D>
inline void prefetch_row(const float* row) {
  for (int c = 0; c < D; c += 16) _mm_prefetch(reinterpret_cast<const char*>(row + c), _MM_HINT_T0);
}

// max of x[0:n]
inline float row_max(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + j));
  if (j < n) {
    const __mmask16 msk = static_cast<__mmask16>((1u << (n - j)) - 1);
    m = _mm512_mask_max_ps(m, msk, m, _mm512_maskz_loadu_ps(msk, x + j));
  }
  return _mm512_reduce_max_ps(m);
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// keys per block of the backward for Lk keys: ceil(Lk / KEY_BLOCK_MAX)
// blocks of equal size, rounded up to whole 16-key panels (1568 keys:
// 400 + 400 + 400 + 368, where blocks of 256 left a last one of 32: 2.5-3.6 %
// faster on VideoMAE's heads); a fact of the shape, so the order of dQ's
// sums is too
inline int64_t key_block(int64_t Lk) {
  const int64_t blocks = (Lk + KEY_BLOCK_MAX - 1) / KEY_BLOCK_MAX;
  return round_up((Lk + blocks - 1) / blocks, 16);
}

// the 16 x 16 block r[i][c] transposed in registers: r[c][i] (three
// stages of in-lane unpacks / shuffles, then 128-bit lane shuffles)
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; ++i) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}

// [panel][D][16] <- mul * (rows x[j] + bias) (j < n, row stride `ld`; no
// bias: mul * x[j]), zero past n: each 16 keys x 16 columns block loaded
// row by row and transposed in registers (an element-by-element scatter
// was a fifth of CLIP's backward); the same products, so the same numbers
template <int D>
void pack_panels(const float* x, int64_t ld, int64_t n, float* out, float mul = 1.f,
                 const float* bias = nullptr) {
  const int64_t np = round_up(n, 16) / 16;
  const __m512 mv = _mm512_set1_ps(mul);
  for (int64_t p = 0; p < np; ++p) {
    float* o = out + p * D * 16;
    const int64_t j0 = p * 16;
    const int64_t rows = std::min<int64_t>(16, n - j0);
    for (int64_t j = j0 + 16; j < std::min<int64_t>(n, j0 + 32); ++j) prefetch_row<D>(x + j * ld);
    for (int c0 = 0; c0 < D; c0 += 16) {
      __m512 r[16];
      if (bias) {
        const __m512 bv = _mm512_loadu_ps(bias + c0);
        for (int jj = 0; jj < 16; ++jj)
          r[jj] = jj < rows ? _mm512_mul_ps(_mm512_add_ps(_mm512_loadu_ps(x + (j0 + jj) * ld + c0), bv), mv)
                            : _mm512_setzero_ps();
      } else {
        for (int jj = 0; jj < 16; ++jj)
          r[jj] = jj < rows ? _mm512_mul_ps(_mm512_loadu_ps(x + (j0 + jj) * ld + c0), mv) : _mm512_setzero_ps();
      }
      transpose16(r);
      for (int c = 0; c < 16; ++c) _mm512_storeu_ps(o + (c0 + c) * 16, r[c]);
    }
  }
}

// out[j][:] <- rows x[j] (+ bias) (j < n, row stride `ld`): a head's
// rows, read many times below, packed densely (rows of a packed q / k / v
// projection lie 3 H D apart: 1.6x slower to stream from there)
template <int D>
void copy_rows(const float* x, int64_t ld, int64_t n, float* out, const float* bias = nullptr) {
  for (int64_t j = 0; j < n; ++j) {
    if (j + PREFETCH_ROWS < n) prefetch_row<D>(x + (j + PREFETCH_ROWS) * ld);
    if (bias) {
      for (int t = 0; t < D / 16; ++t)
        _mm512_storeu_ps(out + j * D + 16 * t,
                         _mm512_add_ps(_mm512_loadu_ps(x + j * ld + 16 * t), _mm512_loadu_ps(bias + 16 * t)));
    } else {
      std::copy(x + j * ld, x + j * ld + D, out + j * D);
    }
  }
}

// s[i][j] = sum_c a[i][c] kp[j-panel][c][j % 16] for MR rows of `a` (row
// stride D) and all panels; s has row stride `lds` (>= 16 * panels)
template <int D>
void scores(const float* a, const float* kp, int64_t npanels,
                        float* s, int64_t lds) {
  int64_t p = 0;
  for (; p + 2 <= npanels; p += 2) {
    const float* k0 = kp + p * D * 16;
    const float* k1 = k0 + D * 16;
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
    __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
    __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    for (int c = 0; c < D; ++c) {
      const __m512 b0 = _mm512_loadu_ps(k0 + c * 16);
      const __m512 b1 = _mm512_loadu_ps(k1 + c * 16);
      __m512 x;
      x = _mm512_set1_ps(a[0 * D + c]); c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
      x = _mm512_set1_ps(a[1 * D + c]); c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
      x = _mm512_set1_ps(a[2 * D + c]); c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
      x = _mm512_set1_ps(a[3 * D + c]); c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
      x = _mm512_set1_ps(a[4 * D + c]); c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
      x = _mm512_set1_ps(a[5 * D + c]); c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
    }
    float* o = s + p * 16;
    _mm512_storeu_ps(o + 0 * lds, c00); _mm512_storeu_ps(o + 0 * lds + 16, c01);
    _mm512_storeu_ps(o + 1 * lds, c10); _mm512_storeu_ps(o + 1 * lds + 16, c11);
    _mm512_storeu_ps(o + 2 * lds, c20); _mm512_storeu_ps(o + 2 * lds + 16, c21);
    _mm512_storeu_ps(o + 3 * lds, c30); _mm512_storeu_ps(o + 3 * lds + 16, c31);
    _mm512_storeu_ps(o + 4 * lds, c40); _mm512_storeu_ps(o + 4 * lds + 16, c41);
    _mm512_storeu_ps(o + 5 * lds, c50); _mm512_storeu_ps(o + 5 * lds + 16, c51);
  }
  for (; p < npanels; ++p) {
    const float* k0 = kp + p * D * 16;
    __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps();
    __m512 c3 = _mm512_setzero_ps(), c4 = _mm512_setzero_ps(), c5 = _mm512_setzero_ps();
    for (int c = 0; c < D; ++c) {
      const __m512 b0 = _mm512_loadu_ps(k0 + c * 16);
      c0 = _mm512_fmadd_ps(_mm512_set1_ps(a[0 * D + c]), b0, c0);
      c1 = _mm512_fmadd_ps(_mm512_set1_ps(a[1 * D + c]), b0, c1);
      c2 = _mm512_fmadd_ps(_mm512_set1_ps(a[2 * D + c]), b0, c2);
      c3 = _mm512_fmadd_ps(_mm512_set1_ps(a[3 * D + c]), b0, c3);
      c4 = _mm512_fmadd_ps(_mm512_set1_ps(a[4 * D + c]), b0, c4);
      c5 = _mm512_fmadd_ps(_mm512_set1_ps(a[5 * D + c]), b0, c5);
    }
    float* o = s + p * 16;
    _mm512_storeu_ps(o + 0 * lds, c0); _mm512_storeu_ps(o + 1 * lds, c1);
    _mm512_storeu_ps(o + 2 * lds, c2); _mm512_storeu_ps(o + 3 * lds, c3);
    _mm512_storeu_ps(o + 4 * lds, c4); _mm512_storeu_ps(o + 5 * lds, c5);
  }
}

// scores<D> for 2 MR rows (rows of `a` D apart): 24 accumulators, each
// loaded key panel used by twice as many rows
template <int D>
void scores2(const float* a, const float* kp, int64_t npanels, float* s, int64_t lds) {
  int64_t p = 0;
  for (; p + 2 <= npanels; p += 2) {
    const float* k0 = kp + p * D * 16;
    const float* k1 = k0 + D * 16;
    __m512 c[2 * MR][2];
    for (int i = 0; i < 2 * MR; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int cc = 0; cc < D; ++cc) {
      const __m512 b0 = _mm512_loadu_ps(k0 + cc * 16);
      const __m512 b1 = _mm512_loadu_ps(k1 + cc * 16);
      for (int i = 0; i < 2 * MR; ++i) {
        const __m512 x = _mm512_set1_ps(a[i * D + cc]);
        c[i][0] = _mm512_fmadd_ps(x, b0, c[i][0]);
        c[i][1] = _mm512_fmadd_ps(x, b1, c[i][1]);
      }
    }
    float* o = s + p * 16;
    for (int i = 0; i < 2 * MR; ++i) {
      _mm512_storeu_ps(o + i * lds, c[i][0]);
      _mm512_storeu_ps(o + i * lds + 16, c[i][1]);
    }
  }
  if (p < npanels) {
    scores<D>(a, kp + p * D * 16, 1, s + p * 16, lds);
    scores<D>(a + MR * D, kp + p * D * 16, 1, s + MR * lds + p * 16, lds);
  }
}

// acc[i][:] = sum_{j < n} w[i][j] x[j][col0 : col0 + 16 VC] for R rows of w
// (row stride ldw) and rows x[j] (row stride ldx); written to out (row
// stride ldo) at the same columns. R x VC accumulators: 6 x 4 (D = 64) for a
// block's half, 12 x 2 for a whole 12-row block in column chunks, where each
// loaded row x[j] serves twice as many rows (the values stream from the L2
// cache half as often); the same sum per element, in the same order
template <int R, int VC>
void weighted_rows_cols(const float* w, int64_t ldw, const float* x, int64_t ldx,
                        int64_t n, float* out, int64_t ldo, int col0) {
  __m512 acc[R][VC];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < VC; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    __m512 xr[VC];
    for (int t = 0; t < VC; ++t) xr[t] = _mm512_loadu_ps(x + j * ldx + col0 + 16 * t);
    for (int i = 0; i < R; ++i) {
      const __m512 wi = _mm512_set1_ps(w[i * ldw + j]);
      for (int t = 0; t < VC; ++t) acc[i][t] = _mm512_fmadd_ps(wi, xr[t], acc[i][t]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < VC; ++t) _mm512_storeu_ps(out + i * ldo + col0 + 16 * t, acc[i][t]);
}

// MR rows of w, all D columns
template <int D>
void weighted_rows(const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t n,
                   float* out, int64_t ldo) {
  weighted_rows_cols<MR, D / 16>(w, ldw, x, ldx, n, out, ldo, 0);
}

// 2 MR rows of w, in chunks of 2 vectors (and 1 for an odd count)
template <int D>
void weighted_rows2(const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t n,
                    float* out, int64_t ldo) {
  constexpr int V = D / 16;
  for (int c = 0; c + 2 <= V; c += 2) weighted_rows_cols<2 * MR, 2>(w, ldw, x, ldx, n, out, ldo, 16 * c);
  if (V % 2) weighted_rows_cols<2 * MR, 1>(w, ldw, x, ldx, n, out, ldo, 16 * (V - 1));
}

// acc[j][:] += sum_{i < R} w[i][j] y[i][:] for the n rows of acc (row
// stride lda), R rows of w (row stride ldw) and of y (row stride D): a
// group of keys' accumulators stays in registers while the R rows pass (the
// same order of sums as one rank-MR update per MR rows, with R / MR times
// fewer loads and stores of acc)
template <int D>
void rank_update_rows(const float* w, int64_t ldw, const float* y, int64_t R,
                      int64_t n, float* acc, int64_t lda) {
  constexpr int V = D / 16;
  constexpr int NJ = 24 / V;  // 6 keys at D = 64, 24 at D = 16
  int64_t j = 0;
  for (; j + NJ <= n; j += NJ) {
    __m512 a[NJ][V];
    for (int jj = 0; jj < NJ; ++jj)
      for (int t = 0; t < V; ++t) a[jj][t] = _mm512_loadu_ps(acc + (j + jj) * lda + 16 * t);
    for (int64_t i = 0; i < R; ++i) {
      __m512 yr[V];
      for (int t = 0; t < V; ++t) yr[t] = _mm512_loadu_ps(y + i * D + 16 * t);
      const float* wi = w + i * ldw + j;
      for (int jj = 0; jj < NJ; ++jj) {
        const __m512 x = _mm512_set1_ps(wi[jj]);
        for (int t = 0; t < V; ++t) a[jj][t] = _mm512_fmadd_ps(x, yr[t], a[jj][t]);
      }
    }
    for (int jj = 0; jj < NJ; ++jj)
      for (int t = 0; t < V; ++t) _mm512_storeu_ps(acc + (j + jj) * lda + 16 * t, a[jj][t]);
  }
  for (; j < n; ++j) {
    __m512 a[V];
    for (int t = 0; t < V; ++t) a[t] = _mm512_loadu_ps(acc + j * lda + 16 * t);
    for (int64_t i = 0; i < R; ++i) {
      const __m512 x = _mm512_set1_ps(w[i * ldw + j]);
      for (int t = 0; t < V; ++t) a[t] = _mm512_fmadd_ps(x, _mm512_loadu_ps(y + i * D + 16 * t), a[t]);
    }
    for (int t = 0; t < V; ++t) _mm512_storeu_ps(acc + j * lda + 16 * t, a[t]);
  }
}

// MR rows of x (+ bias) (row stride ld, `rows` valid, the rest zero) times
// `mul` into a (MR, D) buffer
template <int D>
inline void load_rows(const float* x, int64_t ld, int64_t rows, float mul, float* out,
                      const float* bias = nullptr) {
  for (int i = 0; i < MR; ++i) {
    if (i < rows && bias) {
      for (int c = 0; c < D; ++c) out[i * D + c] = (x[i * ld + c] + bias[c]) * mul;
    } else if (i < rows) {
      for (int c = 0; c < D; ++c) out[i * D + c] = x[i * ld + c] * mul;
    } else {
      for (int c = 0; c < D; ++c) out[i * D + c] = 0.f;
    }
  }
}

struct View {  // a (B, H, L, D) tensor's data and strides (elements)
  float* p;
  int64_t sb, sh, sl;
  explicit View(const at::Tensor& t)
      : p(t.data_ptr<float>()), sb(t.stride(0)), sh(t.stride(1)), sl(t.stride(2)) {}
  float* at(int64_t b, int64_t h, int64_t l) const { return p + b * sb + h * sh + l * sl; }
};

// The biases of q / k / v (``bias``: (3, H, D) contiguous, or null; a
// packed projection's, or a q and a k/v projection's concatenated): added
// to each row as it is read, the products that made q / k / v then being
// plain matmuls (a bias copied into the output before the GEMM reads it
// back: one pass over each projection less)
struct Bias {
  const float* p = nullptr;
  int64_t H = 0;
  Bias(const c10::optional<at::Tensor>& b, int64_t heads) {
    if (b.has_value() && b->defined()) {
      p = b->data_ptr<float>();
      H = heads;
    }
  }
  // part 0 (q), 1 (k) or 2 (v) of head h, D wide; null without a bias
  template <int D>
  const float* at(int part, int64_t h) const { return p ? p + (part * H + h) * D : nullptr; }
};

template <int D>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              double scale, at::Tensor& out, at::Tensor& lse, bool with_lse,
                              const Bias& bias) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2);
  const View Q(q), K(k), Vv(v), O(out);  // out: (B, H, Lq, D), any strides
  float* LSE = with_lse ? lse.data_ptr<float>() : nullptr;  // (B, H, Lq)
  const int64_t np = round_up(Lk, 16) / 16;
  const int64_t lds = np * 16;
  const float qmul = static_cast<float>(scale) * LOG2E;
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kp(np * D * 16), vc(Lk * D), sbuf(2 * MR * lds, 0.f), qbuf(2 * MR * D), obuf(2 * MR * D);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* qbias = bias.at<D>(0, h);
      pack_panels<D>(K.at(b, h, 0), K.sl, Lk, kp.data(), 1.f, bias.at<D>(1, h));
      copy_rows<D>(Vv.at(b, h, 0), Vv.sl, Lk, vc.data(), bias.at<D>(2, h));
      for (int64_t r2 = 0; r2 < Lq; r2 += 2 * MR) {
        const int64_t rows2 = std::min<int64_t>(2 * MR, Lq - r2);
        load_rows<D>(Q.at(b, h, r2), Q.sl, std::min<int64_t>(MR, rows2), qmul, qbuf.data(), qbias);
        if (rows2 > MR) {
          load_rows<D>(Q.at(b, h, r2 + MR), Q.sl, rows2 - MR, qmul, qbuf.data() + MR * D, qbias);
          scores2<D>(qbuf.data(), kp.data(), np, sbuf.data(), lds);
        } else {
          scores<D>(qbuf.data(), kp.data(), np, sbuf.data(), lds);
        }
        // P = exp2(S - rowmax) of each row, then O = P V for the block's
        // rows: 12 at a time in a full block, else 6 (12-row tiles on
        // B-CAST's 8-frame link took 0.9 against 0.7 ms)
        float zsum[2 * MR], mx[2 * MR];
        for (int i = 0; i < rows2; ++i) {
          float* s = sbuf.data() + i * lds;
          const float m = row_max(s, Lk);
          const __m512 mv = _mm512_set1_ps(m);
          __m512 z = _mm512_setzero_ps();
          int64_t j = 0;
          for (; j + 16 <= Lk; j += 16) {
            const __m512 e = exp2_nonpos(_mm512_sub_ps(_mm512_loadu_ps(s + j), mv));
            _mm512_storeu_ps(s + j, e);
            z = _mm512_add_ps(z, e);
          }
          if (j < Lk) {
            const __mmask16 msk = static_cast<__mmask16>((1u << (Lk - j)) - 1);
            const __m512 e = exp2_nonpos(_mm512_sub_ps(_mm512_maskz_loadu_ps(msk, s + j), mv));
            _mm512_mask_storeu_ps(s + j, msk, e);
            z = _mm512_add_ps(z, _mm512_maskz_mov_ps(msk, e));
          }
          zsum[i] = _mm512_reduce_add_ps(z);
          mx[i] = m;
        }
        if (rows2 == 2 * MR) {
          weighted_rows2<D>(sbuf.data(), lds, vc.data(), D, Lk, obuf.data(), D);
        } else {
          for (int64_t i0 = 0; i0 < rows2; i0 += MR)
            weighted_rows<D>(sbuf.data() + i0 * lds, lds, vc.data(), D, Lk, obuf.data() + i0 * D, D);
        }
        for (int i = 0; i < rows2; ++i) {
          float* dst = O.at(b, h, r2 + i);
          const __m512 inv = _mm512_set1_ps(1.0f / zsum[i]);
          for (int t = 0; t < D / 16; ++t)
            _mm512_storeu_ps(dst + 16 * t, _mm512_mul_ps(_mm512_loadu_ps(obuf.data() + i * D + 16 * t), inv));
          if (LSE) LSE[(b * H + h) * Lq + r2 + i] = (mx[i] + std::log2(zsum[i])) * LN2;
        }
      }
    }
  });
}

template <int D>
void backward_impl(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                               double scale, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv,
                               const Bias& bias) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2);
  const View Q(q), K(k), Vv(v), O(out), dO(dout);
  const float* LSE = lse.data_ptr<float>();  // (B, H, Lq), contiguous
  // the gradients: (B, H, L, D) views with any strides (the layouts of q,
  // k and v, or the parts of one packed projection's gradient)
  const View dQ(dq), dK(dk), dV(dv);
  const int64_t ldq = dQ.sl;
  const int64_t kblock = key_block(Lk);
  const int64_t kbmax = std::min<int64_t>(kblock, round_up(Lk, 16));
  const float sc = static_cast<float>(scale);
  const int64_t lqp = round_up(Lq, MR);
  // dQ accumulates once per block of keys: with more than one block, in a
  // dense buffer written out at the end (the output's rows lie H D or
  // 3 H D floats apart, and a pass over them per block reached past the L2
  // cache and its TLB: VideoMAE's backward 2 % faster); with one block,
  // in place (the buffer's copy would cost more)
  const bool dense_dq = Lk > kblock;
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kp(kbmax * D), kc(kbmax * D), vp(kbmax * D), pbuf(ROW_BLOCK * kbmax), dsbuf(ROW_BLOCK * kbmax),
        dka(kbmax * D), dva(kbmax * D), tmp(MR * D), qs(lqp * D), dos(lqp * D), dqa(dense_dq ? lqp * D : 0), delta(lqp), lse2(lqp);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      float* dqh = dQ.at(b, h, 0);
      const float* qbias = bias.at<D>(0, h);
      // per query row, once: scale q and dO (rows past Lq zero: they add
      // exact zeros below), rowsum(dO O), the log-sum-exp in base 2
      for (int64_t i = 0; i < lqp; ++i) {
        float* qrow = qs.data() + i * D;
        float* grow = dos.data() + i * D;
        if (i >= Lq) {
          std::fill(qrow, qrow + D, 0.f);
          std::fill(grow, grow + D, 0.f);
          delta[i] = 0.f;
          lse2[i] = 0.f;
          continue;
        }
        if (i + PREFETCH_ROWS < Lq) {
          const int64_t ip = i + PREFETCH_ROWS;
          prefetch_row<D>(Q.at(b, h, ip));
          prefetch_row<D>(dO.at(b, h, ip));
          prefetch_row<D>(O.at(b, h, ip));
          if (!dense_dq) prefetch_row<D>(dqh + ip * ldq);
        }
        if (!dense_dq) std::fill(dqh + i * ldq, dqh + i * ldq + D, 0.f);
        const float* qi = Q.at(b, h, i);
        const float* gi = dO.at(b, h, i);
        const float* oi = O.at(b, h, i);
        __m512 acc = _mm512_setzero_ps();
        for (int t = 0; t < D / 16; ++t) {
          const __m512 g = _mm512_loadu_ps(gi + 16 * t);
          __m512 qv = _mm512_loadu_ps(qi + 16 * t);
          if (qbias) qv = _mm512_add_ps(qv, _mm512_loadu_ps(qbias + 16 * t));
          _mm512_storeu_ps(qrow + 16 * t, _mm512_mul_ps(qv, _mm512_set1_ps(sc)));
          _mm512_storeu_ps(grow + 16 * t, g);
          acc = _mm512_fmadd_ps(g, _mm512_loadu_ps(oi + 16 * t), acc);
        }
        delta[i] = _mm512_reduce_add_ps(acc);
        lse2[i] = LSE[(b * H + h) * Lq + i] * LOG2E;
      }
      if (dense_dq) std::fill(dqa.begin(), dqa.end(), 0.f);
      // blocks of keys: their packed K / V and their dK / dV stay in cache
      // while every query row passes
      for (int64_t k0 = 0; k0 < Lk; k0 += kblock) {
        const int64_t nk = std::min<int64_t>(kblock, Lk - k0);
        const int64_t np = round_up(nk, 16) / 16, ldk = np * 16;
        // log2(e) on the packed keys: (scale q)(log2(e) k) are base-2 scores
        pack_panels<D>(K.at(b, h, k0), K.sl, nk, kp.data(), LOG2E, bias.at<D>(1, h));
        pack_panels<D>(Vv.at(b, h, k0), Vv.sl, nk, vp.data(), 1.f, bias.at<D>(2, h));
        copy_rows<D>(K.at(b, h, k0), K.sl, nk, kc.data(), bias.at<D>(1, h));
        std::fill(dka.begin(), dka.begin() + nk * D, 0.f);
        std::fill(dva.begin(), dva.begin() + nk * D, 0.f);
        for (int64_t r0 = 0; r0 < lqp; r0 += ROW_BLOCK) {
          const int64_t rb = std::min<int64_t>(ROW_BLOCK, lqp - r0);
          for (int64_t r = r0; r < r0 + rb; r += MR) {
            const float* qb = qs.data() + r * D;
            const float* gb = dos.data() + r * D;
            float* pb = pbuf.data() + (r - r0) * ldk;
            float* dsb = dsbuf.data() + (r - r0) * ldk;
            if ((r - r0) % (2 * MR) == 0) {  // S (base 2) and dP, 2 MR rows where left
              if (r + 2 * MR <= r0 + rb) {
                scores2<D>(qb, kp.data(), np, pb, ldk);
                scores2<D>(gb, vp.data(), np, dsb, ldk);
              } else {
                scores<D>(qb, kp.data(), np, pb, ldk);
                scores<D>(gb, vp.data(), np, dsb, ldk);
              }
            }
            for (int i = 0; i < MR; ++i) {
              float* p = pb + i * ldk;
              float* ds = dsb + i * ldk;
              const __m512 dl = _mm512_set1_ps(delta[r + i]);
              const __m512 l2 = _mm512_set1_ps(lse2[r + i]);
              for (int64_t j = 0; j < ldk; j += 16) {  // past nk: never read
                const __m512 pj = exp2_nonpos(_mm512_sub_ps(_mm512_loadu_ps(p + j), l2));
                _mm512_storeu_ps(p + j, pj);
                _mm512_storeu_ps(ds + j, _mm512_mul_ps(pj, _mm512_sub_ps(_mm512_loadu_ps(ds + j), dl)));
              }
            }
            // dQ += scale dS K (dS: the gradient of the natural-log scores)
            weighted_rows<D>(dsb, ldk, kc.data(), D, nk, tmp.data(), D);
            const __m512 scv = _mm512_set1_ps(sc);
            const int64_t rows = std::min<int64_t>(MR, Lq - r);
            for (int i = 0; i < rows; ++i) {
              float* dst = dense_dq ? dqa.data() + (r + i) * D : dqh + (r + i) * ldq;
              for (int t = 0; t < D / 16; ++t)
                _mm512_storeu_ps(dst + 16 * t, _mm512_fmadd_ps(_mm512_loadu_ps(tmp.data() + i * D + 16 * t),
                                                               scv, _mm512_loadu_ps(dst + 16 * t)));
            }
          }
          // dV += P^T dO, dK += dS^T (scale q) over the block's rows
          rank_update_rows<D>(pbuf.data(), ldk, dos.data() + r0 * D, rb, nk, dva.data(), D);
          rank_update_rows<D>(dsbuf.data(), ldk, qs.data() + r0 * D, rb, nk, dka.data(), D);
        }
        for (int64_t j = 0; j < nk; ++j) {
          std::copy(dka.data() + j * D, dka.data() + (j + 1) * D, dK.at(b, h, k0 + j));
          std::copy(dva.data() + j * D, dva.data() + (j + 1) * D, dV.at(b, h, k0 + j));
        }
      }
      if (dense_dq)
        for (int64_t i = 0; i < Lq; ++i) std::copy(dqa.data() + i * D, dqa.data() + (i + 1) * D, dqh + i * ldq);
    }
  });
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 4,
                "cpu_attention: q, k, v must be fp32 CPU tensors of shape (B, H, L, D)");
    TORCH_CHECK(t->stride(3) == 1, "cpu_attention: the last dimension must be contiguous");
  }
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && k.sizes() == v.sizes() &&
                  q.size(3) == k.size(3),
              "cpu_attention: q (B, H, Lq, D), k and v (B, H, Lk, D)");
  TORCH_CHECK(q.size(3) == 16 || q.size(3) == 32 || q.size(3) == 48 || q.size(3) == 64,
              "cpu_attention: head width 16, 32, 48 or 64, got ", q.size(3));
  TORCH_CHECK(k.size(2) >= 1, "cpu_attention: no keys");
}

void check_output(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.sizes() == like.sizes() &&
                  t.stride(3) == 1,
              "cpu_attention: ", name, " must be an fp32 CPU (B, H, L, D) tensor of its input's shape ",
              like.sizes(), " with a contiguous last dimension, got ", t.sizes());
}

// a bias of q / k / v: (3, H, D) values, fp32, contiguous, on the CPU
Bias checked_bias(const c10::optional<at::Tensor>& bias, const at::Tensor& q) {
  if (bias.has_value() && bias->defined()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK(b.device().is_cpu() && b.scalar_type() == at::kFloat && b.is_contiguous() &&
                    b.numel() == 3 * q.size(1) * q.size(3),
                "cpu_attention: the bias of q / k / v must be a contiguous fp32 CPU tensor of ",
                3 * q.size(1) * q.size(3), " values (3, H, D), got ", b.sizes());
  }
  return Bias(bias, q.size(1));
}

void run_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                 at::Tensor& out, at::Tensor& lse, bool with_lse, const Bias& bias) {
  switch (q.size(3)) {
    case 16: forward_impl<16>(q, k, v, scale, out, lse, with_lse, bias); break;
    case 32: forward_impl<32>(q, k, v, scale, out, lse, with_lse, bias); break;
    case 48: forward_impl<48>(q, k, v, scale, out, lse, with_lse, bias); break;
    default: forward_impl<64>(q, k, v, scale, out, lse, with_lse, bias);
  }
}

// out: written where the caller's (B, H, Lq, D) view ``out`` says (any
// strides, the last dimension contiguous; no two elements in one place);
// ``bias``: see Bias
at::Tensor forward_into(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                        at::Tensor out, bool with_lse, const c10::optional<at::Tensor>& bias) {
  check_inputs(q, k, v);
  check_output(out, q, "out");
  const Bias b = checked_bias(bias, q);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2);
  at::Tensor lse = with_lse ? at::empty({B, H, Lq}, q.options()) : at::empty({0}, q.options());
  run_forward(q, k, v, scale, out, lse, with_lse, b);
  return lse;
}

// token-major output (B, Lq, H, D), returned as its (B, H, Lq, D) view
std::vector<at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                double scale, bool with_lse, const c10::optional<at::Tensor>& bias) {
  check_inputs(q, k, v);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3);
  at::Tensor out = at::empty({B, Lq, H, D}, q.options()).transpose(1, 2);
  at::Tensor lse = forward_into(q, k, v, scale, out, with_lse, bias);
  return {out, lse};
}

// dq, dk, dv: written where the caller's (B, H, L, D) views say (any
// strides, the last dimension contiguous; no two elements in one place);
// ``bias``: the forward's (the gradients of q, k and v are those of their
// sums with it)
void backward_into(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse, double scale,
                   at::Tensor dq, at::Tensor dk, at::Tensor dv, const c10::optional<at::Tensor>& bias) {
  check_inputs(q, k, v);
  check_inputs(dout, out, out);
  TORCH_CHECK(dout.sizes() == q.sizes() && out.sizes() == q.sizes(),
              "cpu_attention: dout and out of q's shape");
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2);
  TORCH_CHECK(lse.is_contiguous() && lse.numel() == B * H * Lq,
              "cpu_attention: the forward's log-sum-exp (B, H, Lq) is needed");
  check_output(dq, q, "dq");
  check_output(dk, k, "dk");
  check_output(dv, v, "dv");
  const Bias b = checked_bias(bias, q);
  switch (q.size(3)) {
    case 16: backward_impl<16>(dout, q, k, v, out, lse, scale, dq, dk, dv, b); break;
    case 32: backward_impl<32>(dout, q, k, v, out, lse, scale, dq, dk, dv, b); break;
    case 48: backward_impl<48>(dout, q, k, v, out, lse, scale, dq, dk, dv, b); break;
    default: backward_impl<64>(dout, q, k, v, out, lse, scale, dq, dk, dv, b);
  }
}

// token-major gradients (B, L, H, D), returned as (B, H, L, D) views; packed
// (self-attention, Lq == Lk): dq, dk and dv as the thirds of one
// (B, L, 3, H, D) tensor, the layout of the gradient of a packed q/k/v
// projection (B, L, 3 H D) whose thirds were q, k and v; returned alone
std::vector<at::Tensor> backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                 double scale, bool packed, const c10::optional<at::Tensor>& bias) {
  check_inputs(q, k, v);
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2), D = q.size(3);
  if (packed) {
    TORCH_CHECK(Lq == Lk, "cpu_attention: a packed gradient needs as many queries as keys");
    at::Tensor g = at::empty({B, Lq, 3, H, D}, q.options());
    backward_into(dout, q, k, v, out, lse, scale, g.select(2, 0).transpose(1, 2),
                  g.select(2, 1).transpose(1, 2), g.select(2, 2).transpose(1, 2), bias);
    return {g};
  }
  at::Tensor dq = at::empty({B, Lq, H, D}, q.options()).transpose(1, 2);
  at::Tensor dk = at::empty({B, Lk, H, D}, q.options()).transpose(1, 2);
  at::Tensor dv = at::empty({B, Lk, H, D}, q.options()).transpose(1, 2);
  backward_into(dout, q, k, v, out, lse, scale, dq, dk, dv, bias);
  return {dq, dk, dv};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "attention forward: (out (B,H,Lq,D) token-major view, lse)",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale"), py::arg("with_lse"),
        py::arg("bias") = py::none());
  m.def("forward_into", &forward_into,
        "attention forward into out (a (B,H,Lq,D) view, any strides); returns lse",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("scale"), py::arg("out"), py::arg("with_lse"),
        py::arg("bias") = py::none());
  m.def("backward_into", &backward_into,
        "attention backward into dq, dk, dv ((B,H,L,D) views, any strides)",
        py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"),
        py::arg("scale"), py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("bias") = py::none());
  m.def("backward", &backward,
        "attention backward: (dq, dk, dv), token-major views; packed: (the (B, L, 3, H, D) gradient)",
        py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"),
        py::arg("scale"), py::arg("packed") = false, py::arg("bias") = py::none());
}
