"""Where the C++ attention kernel's forward time goes: the forward of
cast_mmaction/csrc/cpu_attention.cpp built as it is and with each of its
parts left out (the scores S = q K^T, the exponentials, the product P V;
then all three: what is left is packing, copies and setup), alternated in
one process; median ms of each build and the difference to the full kernel.
The builds that leave parts out compute wrong outputs: they time only.

    PYTHONPATH=$PWD python benchmarks/scripts/cpu_attention_parts.py \\
        [ROUNDS] [B H N D]

q, k and v are the heads of one packed (B, N, 3 H D) projection, as the
experts give them. Needs an AVX-512 CPU, a C++ compiler and ninja.
"""
import hashlib
import os
import sys
import tempfile
import time

import torch

from cast_mmaction.models import cpp_extensions

# each part: (the source's text, the same text behind `#ifndef SKIP_<part>`)
PARTS = {
    'S': '''          scores2<D>(qbuf.data(), kp.data(), np, sbuf.data(), lds);
        } else {''',
    'EXP': '''        for (int i = 0; i < rows2; ++i) {
          float* s = sbuf.data() + i * lds;''',
    'PV': '''        if (rows2 > MR) {
          weighted_rows2<D>(sbuf.data(), lds, vc.data(), D, Lk, obuf.data(), D);
        } else {
          weighted_rows<D>(sbuf.data(), lds, vc.data(), D, Lk, obuf.data(), D);
        }''',
}


def variant(src, skip):
    for part in skip:
        text = PARTS[part]
        if src.count(text) != 1:
            sys.exit(f'cpu_attention_parts: the forward of the kernel source '
                     f'changed; update PARTS[{part!r}]')
        if part == 'S':  # the 12-row scores: leave them uncomputed
            new = text.replace('          scores2', '#ifndef SKIP_S\n'
                               '          scores2').replace(
                '        } else {', '#endif\n        } else {')
        elif part == 'EXP':  # no exponentials: the sums set to 1
            new = ('#ifdef SKIP_EXP\n        for (int i = 0; i < rows2; ++i)'
                   ' { zsum[i] = 1.f; mx[i] = 0.f; }\n'
                   '        for (int i = 0; i < 0; ++i) {\n#else\n'
                   + text.split('\n')[0] + '\n#endif\n'
                   + '\n'.join(text.split('\n')[1:]))
        else:
            new = '#ifndef SKIP_PV\n' + text + '\n#endif'
        src = src.replace(text, new)
    return src


rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
b, h, n, d = (int(v) for v in sys.argv[2:6]) if len(sys.argv) > 5 else (
    1, 12, 1568, 64)
src = open(os.path.join(os.path.dirname(cpp_extensions.__file__), '..',
                        'csrc', 'cpu_attention.cpp')).read()
from torch.utils import cpp_extension  # noqa: E402
cpp_extensions._put_venv_ninja_on_path()
variants = [(), ('S', ), ('EXP', ), ('PV', ), ('S', 'EXP', 'PV')]
mods = {}
tmp = tempfile.mkdtemp()
for skip in variants:
    text = variant(src, skip)
    tag = hashlib.sha1(text.encode()).hexdigest()[:10]
    path = os.path.join(tmp, f'parts_{tag}.cpp')
    with open(path, 'w') as f:
        f.write(text)
    mods[skip] = cpp_extension.load(
        name=f'cpu_attention_parts_{tag}', sources=[path],
        extra_cflags=['-O3', '-mavx512f', '-mfma', '-fopenmp'] + [
            f'-DSKIP_{p}' for p in skip], extra_ldflags=['-fopenmp'])
g = torch.Generator().manual_seed(0)
qkv = torch.randn(b, n, 3 * h * d, generator=g)
q, k, v = (t.reshape(b, n, h, d).transpose(1, 2) for t in qkv.chunk(3, -1))
scale = d ** -0.5
times = {skip: [] for skip in variants}
for _ in range(rounds):
    for skip, mod in mods.items():
        t0 = time.perf_counter()
        mod.forward(q, k, v, scale, True)
        times[skip].append(time.perf_counter() - t0)
med = {skip: sorted(ts)[len(ts) // 2] * 1e3 for skip, ts in times.items()}
product = 2 * b * h * n * n * d
print(f'forward, {b} x {h} heads x {n} tokens x {d}, '
      f'{torch.get_num_threads()} threads, {rounds} rounds alternated')
for skip in variants:
    name = 'full kernel' if not skip else 'without ' + ' + '.join(skip)
    part = med[()] - med[skip]
    extra = ''
    if len(skip) == 1 and skip[0] in ('S', 'PV') and part > 0:
        extra = f'  ({product / part / 1e6:.0f} GFLOP/s for the product)'
    print(f'{name:26s} {med[skip]:7.2f} ms  part {part:6.2f} ms{extra}')
