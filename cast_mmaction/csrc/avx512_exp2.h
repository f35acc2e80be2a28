// 2^x in AVX-512 registers, shared by the package's C++ kernels
// (cpu_attention.cpp, cpu_bias_act.cpp). A build lists this header among its
// ``depends`` (models/cpp_extensions.py) so that a change here rebuilds them.
#pragma once

#include <immintrin.h>

namespace cast_mmaction {

// 2^x for x <= 0 (x >= -126 after the clamp; below, 2^-126 ~ 1e-38 is 0 for
// any sum here): 2^floor(x) by vscalefps times a degree-5 fit of 2^f on
// [0, 1) (relative error 8e-8).
inline __m512 exp2_nonpos(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(0.0018762329127639532f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.00899258442223072f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.05582360550761223f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24015453457832336f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931529641151428f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999999403953552f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace cast_mmaction
