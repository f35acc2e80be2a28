"""The cores' fp32 FMA throughput (GFLOP/s) beside the "matmul peak" of
tools/benchmark.py (its ``matmul_peak``: the best rate of the model's
largest linear shapes, ``F.linear`` and oneDNN's, CAST ViT-B SSv2 at batch
1): what that yardstick is as a share of the arithmetic the cores can do.
The FMA figure is a register-only loop (24 independent 16-lane fused
multiply-adds per iteration, no memory traffic) compiled with torch's JIT
builder, on 1 thread and on torch's thread count, best of ROUNDS.

    PYTHONPATH=$PWD python benchmarks/scripts/fma_peak.py [ROUNDS]

Needs AVX-512F, a C++ compiler and ninja.
"""
import os
import sys
import tempfile

import torch
from torch.utils import cpp_extension

from _ssv2_step import B, ssv2_step

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
    fma = {}
    for threads in sorted({1, n}):
        best = min(ext.fma_loop(iters, threads) for _ in range(rounds))
        fma[threads] = flop_per_thread * threads / best / 1e9
        print(f'FMA loop, {threads} thread(s): {fma[threads]:.1f} GFLOP/s')
    ssv2 = ssv2_step()
    peak = B.matmul_peak(ssv2.model, torch.device('cpu'), None, ssv2.frames,
                         ssv2.size, 1, reps=rounds)
    for shape, rate in peak['peak_detail'].items():
        print(f'{shape}, {n} thread(s): {rate:.1f} GFLOP/s')
    print(f'matmul peak (tools/benchmark.py): {peak["peak_gflops"]:.1f} '
          f'GFLOP/s = {100 * peak["peak_gflops"] / fma[n]:.1f} % of the FMA '
          f'loop on {n} thread(s)')


if __name__ == '__main__':
    main()
