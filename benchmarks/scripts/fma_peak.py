"""The cores' fp32 FMA throughput (GFLOP/s) beside MKL's matmul rate on the
model's GEMM shapes: what the "matmul peak" of tools/benchmark.py (the best
``torch.mm`` rate on those shapes) is as a share of the arithmetic the cores
can do. The FMA figure is a register-only loop (24 independent 16-lane
fused multiply-adds per iteration, no memory traffic) compiled with torch's
JIT builder, on 1 thread and on torch's thread count, best of ROUNDS.

    PYTHONPATH=$PWD python benchmarks/scripts/fma_peak.py [ROUNDS]

Needs AVX-512F, a C++ compiler and ninja.
"""
import os
import sys
import tempfile
import time

import torch
from torch.utils import cpp_extension

SOURCE = r'''
#include <torch/extension.h>
#include <immintrin.h>
#include <omp.h>
#include <chrono>

// seconds for `iters` iterations of 24 independent FMA chains per thread
double fma_loop(int64_t iters, int64_t threads) {
  auto t0 = std::chrono::steady_clock::now();
  float sink = 0.f;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
    __m512 a[24];
    const __m512 b = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 24; ++i) a[i] = _mm512_set1_ps(float(i));
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
      for (int i = 0; i < 24; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
    }
    __m512 s = a[0];
    for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, a[i]);
    sink += _mm512_reduce_add_ps(s);
  }
  double dt = std::chrono::duration<double>(
      std::chrono::steady_clock::now() - t0).count();
  return sink == 12345.f ? -dt : dt;  // keep the loop
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("fma_loop", &fma_loop); }
'''

SHAPES = [(1568, 768, 3072), (1568, 3072, 768), (1568, 768, 2304)]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'fma_peak.cpp')
        with open(path, 'w') as f:
            f.write(SOURCE)
        ext = cpp_extension.load(
            name='cast_mmaction_fma_peak', sources=[path],
            extra_cflags=['-O2', '-mavx512f', '-mfma', '-fopenmp'],
            extra_ldflags=['-fopenmp'], build_directory=d, verbose=False)
    iters = 20_000_000
    flop_per_thread = 2 * 16 * 24 * iters
    n = torch.get_num_threads()
    for threads in sorted({1, n}):
        best = min(ext.fma_loop(iters, threads) for _ in range(rounds))
        print(f'FMA loop, {threads} thread(s): '
              f'{flop_per_thread * threads / best / 1e9:.1f} GFLOP/s')
    for m, k, n_ in SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n_)
        out = torch.empty(m, n_)
        torch.mm(a, b, out=out)
        best = float('inf')
        for _ in range(rounds):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - t0)
        print(f'torch.mm {m}x{k} @ {k}x{n_}, {n} thread(s): '
              f'{2 * m * k * n_ / best / 1e9:.1f} GFLOP/s')


if __name__ == '__main__':
    main()
