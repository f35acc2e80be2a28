// The bias and activation of a frozen MLP's first product in one pass over
// its (N, hidden) output, and in training the activation's derivative in
// the same pass (the speed-up ``cpu_mlp``; cast_mmaction/models/cpu_bias_act.py
// says when and why).
//
// ``addmm(b, x, W^T)`` first writes the bias into every row of its output
// and the GEMM then reads that back (beta = 1); the activation is another
// pass, and its backward (``gelu_backward``: erf and exp again) a third.
// Here the product is a plain ``mm`` (beta = 0) and one pass, while each
// row is in the cache, computes
//   v = pre + b
//   h = act(v)                  (into h, or in place when h is pre)
//   d = act'(v)                 (into d, when asked: backward is g * d)
// act: 0 none, 1 GELU (erf), 2 SiLU, 3 QuickGELU (CLIP's v sigmoid(1.702 v)):
//   GELU  h = v cdf(v),  cdf = (1 + erf(z)) / 2,  z = v / sqrt 2,
//         d = cdf + v exp(-z^2) / sqrt(2 pi)
//         erf(|z|) = 1 - t (a1 + t (a2 + ... + t a5)) exp(-z^2),
//         t = 1 / (1 + p |z|): Abramowitz & Stegun 7.1.26 (absolute error
//         <= 1.5e-7, the formula of ATen's vectorized erf), whose exp(-z^2)
//         the derivative shares
//   SiLU  h = v s,  s = 1 / (1 + exp(-v)),  d = s (1 + v (1 - s))
//   QuickGELU  u = 1.702 v,  s = 1 / (1 + exp(-u)),  h = v s,
//         d = s (1 + u (1 - s))   (SiLU of u divided by 1.702, without
//         the passes that scale the MLP's input and output by it)
// exp as exp2 of a non-positive argument (avx512_exp2.h, relative error
// 8e-8), reciprocals as vrcp14ps and one Newton step.
//
// The file is compiled with -mavx512f -mfma -fopenmp: Python loads it on
// CPUs with AVX-512F only. Each element is computed alone: the same numbers
// whatever the thread count.
// ATen's tensor and pybind11's headers only, not <torch/extension.h> (all
// of torch's C++ API): the build on first use takes a third of the time.
#include <ATen/core/Tensor.h>
#include <torch/csrc/utils/pybind.h>
#include <ATen/Parallel.h>

#include <immintrin.h>

#include "avx512_exp2.h"

#include <algorithm>
#include <cstdint>

namespace {

using cast_mmaction::exp2_nonpos;

enum Act : int64_t { NONE = 0, GELU = 1, SILU = 2, QUICK_GELU = 3 };

constexpr float QUICK_GELU_SCALE = 1.702f;

constexpr float LOG2E = 1.4426950408889634f;

// 1 / x for x >= 1: vrcp14ps (relative error 2^-14), then one Newton step
inline __m512 reciprocal(__m512 x) {
  const __m512 r = _mm512_rcp14_ps(x);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(2.f)));
}

inline __m512 abs_ps(__m512 x) {
  return _mm512_castsi512_ps(_mm512_and_si512(
      _mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}

// act(v) into h and, with D, act'(v) into d
template <int64_t A, bool D>
inline void activate(__m512 v, __m512& h, __m512& d) {
  const __m512 one = _mm512_set1_ps(1.f);
  if constexpr (A == GELU) {
    const __m512 z = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f));
    const __m512 az = abs_ps(z);
    const __m512 t = reciprocal(_mm512_fmadd_ps(az, _mm512_set1_ps(0.3275911f), one));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    // exp(-z^2) = 2^(-z^2 log2 e)
    const __m512 e = exp2_nonpos(_mm512_mul_ps(_mm512_mul_ps(az, az), _mm512_set1_ps(-LOG2E)));
    const __m512 erf_abs = _mm512_fnmadd_ps(p, e, one);
    // erf(z): erf(|z|) with z's sign
    const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(erf_abs),
        _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(INT32_MIN))));
    const __m512 half = _mm512_set1_ps(0.5f);
    const __m512 cdf = _mm512_fmadd_ps(erf, half, half);
    h = _mm512_mul_ps(v, cdf);
    if constexpr (D) {
      // + v exp(-v^2 / 2) / sqrt(2 pi)
      const __m512 pdf = _mm512_mul_ps(e, _mm512_set1_ps(0.3989422804014327f));
      d = _mm512_fmadd_ps(v, pdf, cdf);
    }
  } else if constexpr (A == SILU || A == QUICK_GELU) {
    // s = sigmoid(u) from e = exp(-|u|) <= 1: 1 / (1 + e) for u >= 0,
    // e / (1 + e) below
    const __m512 u = A == SILU ? v : _mm512_mul_ps(v, _mm512_set1_ps(QUICK_GELU_SCALE));
    const __m512 e = exp2_nonpos(_mm512_mul_ps(abs_ps(u), _mm512_set1_ps(-LOG2E)));
    const __m512 r = reciprocal(_mm512_add_ps(one, e));
    const __mmask16 neg = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 s = _mm512_mask_mul_ps(r, neg, e, r);
    h = _mm512_mul_ps(v, s);
    if constexpr (D) d = _mm512_mul_ps(s, _mm512_fmadd_ps(u, _mm512_sub_ps(one, s), one));
  } else {
    h = v;
    if constexpr (D) d = one;
  }
}

template <int64_t A, bool D>
void rows(const float* pre, int64_t ldp, const float* b, float* h,
          int64_t ldh, float* d, int64_t ldd, int64_t m, int64_t r0,
          int64_t r1) {
  __m512 hv, dv;
  for (int64_t r = r0; r < r1; ++r) {
    const float* p = pre + r * ldp;
    float* o = h + r * ldh;
    float* g = D ? d + r * ldd : nullptr;
    int64_t j = 0;
    for (; j + 16 <= m; j += 16) {
      activate<A, D>(_mm512_add_ps(_mm512_loadu_ps(p + j), _mm512_loadu_ps(b + j)), hv, dv);
      _mm512_storeu_ps(o + j, hv);
      if constexpr (D) _mm512_storeu_ps(g + j, dv);
    }
    if (j < m) {  // the row's tail: the same vector code on fewer lanes
      const __mmask16 msk = static_cast<__mmask16>((1u << (m - j)) - 1);
      activate<A, D>(_mm512_add_ps(_mm512_maskz_loadu_ps(msk, p + j),
                                   _mm512_maskz_loadu_ps(msk, b + j)), hv, dv);
      _mm512_mask_storeu_ps(o + j, msk, hv);
      if constexpr (D) _mm512_mask_storeu_ps(g + j, msk, dv);
    }
  }
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat,
              "cpu_bias_act: ", name, " must be a float32 CPU tensor, got ",
              t.scalar_type(), " on ", t.device());
}

void check_2d(const at::Tensor& t, const at::Tensor& pre, const char* name) {
  check(t, name);
  TORCH_CHECK(t.sizes() == pre.sizes() && t.stride(1) == 1,
              "cpu_bias_act: ", name, " must be ", pre.sizes(),
              " with dense rows, got ", t.sizes(), " strides ", t.strides());
}

// pre (N, M) with dense rows (stride(1) == 1), read only unless h is pre;
// bias (M) contiguous; h (N, M) dense rows, pre itself for the activation
// in place; d (N, M) dense rows apart from pre and h, or an empty tensor
// for none
void bias_act(const at::Tensor& pre, const at::Tensor& bias, at::Tensor h,
              at::Tensor d, int64_t act) {
  check(pre, "pre");
  check(bias, "bias");
  TORCH_CHECK(pre.dim() == 2 && bias.dim() == 1 && bias.is_contiguous() &&
                  bias.size(0) == pre.size(1) && pre.stride(1) == 1,
              "cpu_bias_act: pre must be 2-D with dense rows and bias 1-D "
              "contiguous of its width, got ", pre.sizes(), " strides ",
              pre.strides(), " and ", bias.sizes());
  check_2d(h, pre, "h");
  const bool deriv = d.numel() > 0;
  if (deriv) {
    check_2d(d, pre, "d");
    TORCH_CHECK(!d.is_alias_of(pre) && !d.is_alias_of(h),
                "cpu_bias_act: d must be a tensor apart from pre and h");
  }
  TORCH_CHECK(act == NONE || act == GELU || act == SILU || act == QUICK_GELU,
              "cpu_bias_act: act must be 0 (none), 1 (GELU), 2 (SiLU) or 3 "
              "(QuickGELU), got ", act);
  const bool in_place = h.data_ptr() == pre.data_ptr();
  TORCH_CHECK(in_place ? h.strides() == pre.strides() : !h.is_alias_of(pre),
              "cpu_bias_act: h must be pre itself or a tensor apart from it");
  const int64_t n = pre.size(0), m = pre.size(1);
  const float* p = pre.data_ptr<float>();
  float* o = h.data_ptr<float>();
  float* g = deriv ? d.data_ptr<float>() : nullptr;
  const float* b = bias.data_ptr<float>();
  const int64_t ldp = pre.stride(0), ldh = h.stride(0);
  const int64_t ldd = deriv ? d.stride(0) : 0;
  // about 64 KiB of rows per task
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(m, 1));
  at::parallel_for(0, n, grain, [&](int64_t r0, int64_t r1) {
#define CAST_ROWS(A, D) rows<A, D>(p, ldp, b, o, ldh, g, ldd, m, r0, r1)
    switch (act) {
      case GELU: if (deriv) CAST_ROWS(GELU, true); else CAST_ROWS(GELU, false); break;
      case SILU: if (deriv) CAST_ROWS(SILU, true); else CAST_ROWS(SILU, false); break;
      case QUICK_GELU: if (deriv) CAST_ROWS(QUICK_GELU, true); else CAST_ROWS(QUICK_GELU, false); break;
      default: if (deriv) CAST_ROWS(NONE, true); else CAST_ROWS(NONE, false);
    }
#undef CAST_ROWS
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act", &bias_act,
        "h = act(pre + bias) (h may be pre), and d = act'(pre + bias) "
        "unless d is empty");
}
