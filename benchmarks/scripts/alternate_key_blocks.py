"""The C++ attention kernel's backward as the working tree builds it against
the same file at a git revision (e.g. the key blocks of the backward
changed), alternated in one process, with a control: the working tree's
source built a second time under another name; the two tree builds run the
same code, so the gap between their ratios is what the host's noise alone
moves. Each round runs every build once
per shape, the order rotated and reversed every other round; prints, per
shape, each build's median ms and its median per-round ratio to the
revision's build, and the largest gradient difference between the builds.

    PYTHONPATH=$PWD python benchmarks/scripts/alternate_key_blocks.py \\
        [REV] [ROUNDS] [B,H,N,D ...]

Default: REV HEAD, 30 rounds, the shapes of VideoMAE ViT-B's heads at 16
and 8 frames (1 x 12 x 1568 x 64, 1 x 12 x 784 x 64) and CLIP's (8 x 12 x
197 x 64), q / k / v the heads of one packed projection as the experts
give them. Needs an AVX-512 CPU, a C++ compiler and ninja.
"""
import statistics
import subprocess
import sys
import time

import torch

from _kernel_build import build_kernel, packed_heads

SOURCE = 'cast_mmaction/csrc/cpu_attention.cpp'


def main(argv):
    rev = argv[0] if argv else 'HEAD'
    rounds = int(argv[1]) if len(argv) > 1 else 30
    shapes = [tuple(int(v) for v in s.split(',')) for s in argv[2:]] or [
        (1, 12, 1568, 64), (1, 12, 784, 64), (8, 12, 197, 64)]
    old = subprocess.run(['git', 'show', f'{rev}:{SOURCE}'], check=True,
                         capture_output=True, text=True).stdout
    new = open(SOURCE).read()
    builds = {rev: build_kernel(old, 'cpu_attention_alt'),
              'tree': build_kernel(new, 'cpu_attention_alt'),
              'tree (control)': build_kernel(new + '\n// control copy\n',
                                             'cpu_attention_alt')}
    names = list(builds)
    g = torch.Generator().manual_seed(0)
    print(f'{torch.get_num_threads()} threads, {rounds} rounds; ratios: '
          f'each build / {rev} per round, median')
    for b, h, n, d in shapes:
        q, k, v, dout = packed_heads(b, h, n, d, g)
        scale = d ** -0.5
        out, lse = builds[rev].forward(q, k, v, scale, True)
        grads = {name: m.backward(dout, q, k, v, out, lse, scale, True)[0]
                 for name, m in builds.items()}
        diff = max((grads[name] - grads[rev]).abs().max().item()
                   for name in names)
        times = {name: [] for name in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in (order if r % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                builds[name].backward(dout, q, k, v, out, lse, scale, True)
                times[name].append(time.perf_counter() - t0)
        print(f'backward {b} x {h} heads x {n} tokens x {d} (largest '
              f'gradient difference to {rev}: {diff:.2e})')
        for name in names:
            ratios = [t / o for t, o in zip(times[name], times[rev])]
            print(f'  {name:15s} {statistics.median(times[name]) * 1e3:8.2f}'
                  f' ms  ratio {statistics.median(ratios):.3f} '
                  f'[{min(ratios):.3f}-{max(ratios):.3f}]', flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
