"""Where the C++ attention kernel's time goes: cast_mmaction/csrc/
cpu_attention.cpp built as it is and with each part of its forward or
backward left out, alternated in one process; median ms of each build and
the difference to the full kernel. Forward: the scores S = q K^T, the
exponentials, the product P V. Backward (the experts' packed-gradient path):
the recomputed scores S, dP = dO V^T, the exponentials with
dS = P (dP - delta), dQ = dS K, dV = P^T dO, dK = dS^T q. Then all parts at
once: what is left is packing, copies and setup. The builds that leave parts
out compute wrong outputs: they time only.

    PYTHONPATH=$PWD python benchmarks/scripts/cpu_attention_parts.py \\
        forward|backward [ROUNDS] [B H N D]

q, k and v are the heads of one packed (B, N, 3 H D) projection, as the
experts give them. Needs an AVX-512 CPU, a C++ compiler and ninja.
"""
import os
import sys
import tempfile
import time

import torch

from cast_mmaction.models import cpp_extensions
from _kernel_build import build_kernel, packed_heads

# each part: the texts of the source it leaves out (put behind
# `#ifndef SKIP_<part>`), or for the forward's exponentials a replacement
FORWARD_PARTS = {
    'S': ['          scores2<D>(qbuf.data(), kp.data(), np, sbuf.data(), lds);'],
    'EXP': [],  # below
    'PV': ['        if (rows2 == 2 * MR) {\n'
           '          weighted_rows2<D>(sbuf.data(), lds, vc.data(), D, Lk, obuf.data(), D);\n'
           '        } else {\n'
           '          for (int64_t i0 = 0; i0 < rows2; i0 += MR)\n'
           '            weighted_rows<D>(sbuf.data() + i0 * lds, lds, vc.data(), D, Lk, '
           'obuf.data() + i0 * D, D);\n'
           '        }'],
}
# the forward's exponential loop, and what replaces it: sums of 1
EXP_LOOP = ('        for (int i = 0; i < rows2; ++i) {\n'
            '          float* s = sbuf.data() + i * lds;')
EXP_NONE = ('#ifdef SKIP_EXP\n'
            '        for (int i = 0; i < rows2; ++i) { zsum[i] = 1.f; mx[i] = 0.f; }\n'
            '        for (int i = 0; i < 0; ++i) {\n'
            '#else\n'
            '        for (int i = 0; i < rows2; ++i) {\n'
            '#endif\n'
            '          float* s = sbuf.data() + i * lds;')
BACKWARD_PARTS = {
    'S': ['                scores2<D>(qb, kp.data(), np, pb, ldk);'],
    'DP': ['                scores2<D>(gb, vp.data(), np, dsb, ldk);'],
    'EXP': ['                const __m512 pj = exp2_nonpos(_mm512_sub_ps('
            '_mm512_loadu_ps(p + j), l2));\n'
            '                _mm512_storeu_ps(p + j, pj);\n'
            '                _mm512_storeu_ps(ds + j, _mm512_mul_ps(pj, '
            '_mm512_sub_ps(_mm512_loadu_ps(ds + j), dl)));'],
    'DQ': ['            weighted_rows<D>(dsb, ldk, kc.data(), D, nk, tmp.data(), D);'],
    'DV': ['          rank_update_rows<D>(pbuf.data(), ldk, dos.data() + r0 * D, '
           'rb, nk, dva.data(), D);'],
    'DK': ['          rank_update_rows<D>(dsbuf.data(), ldk, qs.data() + r0 * D, '
           'rb, nk, dka.data(), D);'],
}


def _replace_once(src, text, new, part):
    if src.count(text) != 1:
        sys.exit(f'cpu_attention_parts: the kernel source changed; update '
                 f'the text of part {part!r}')
    return src.replace(text, new)


def variant(src, skip, parts):
    for part in skip:
        if parts is FORWARD_PARTS and part == 'EXP':
            src = _replace_once(src, EXP_LOOP, EXP_NONE, part)
        for text in parts[part]:
            src = _replace_once(src, text,
                                f'#ifndef SKIP_{part}\n{text}\n#endif', part)
    return src


def main(argv):
    mode = argv[0] if argv else 'forward'
    if mode not in ('forward', 'backward'):
        sys.exit('cpu_attention_parts: the first argument is forward or '
                 'backward')
    rounds = int(argv[1]) if len(argv) > 1 else 9
    b, h, n, d = (int(v) for v in argv[2:6]) if len(argv) > 5 else (
        1, 12, 1568, 64)
    parts = FORWARD_PARTS if mode == 'forward' else BACKWARD_PARTS
    src = open(os.path.join(os.path.dirname(cpp_extensions.__file__), '..',
                            'csrc', 'cpu_attention.cpp')).read()
    variants = [()] + [(p, ) for p in parts] + [tuple(parts)]
    mods = {}
    tmp = tempfile.mkdtemp()
    for skip in variants:
        mods[skip] = build_kernel(variant(src, skip, parts),
                                  'cpu_attention_parts',
                                  [f'SKIP_{p}' for p in skip], tmp)
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = packed_heads(b, h, n, d, g)
    scale = d ** -0.5
    out, lse = mods[()].forward(q, k, v, scale, True)
    times = {skip: [] for skip in variants}
    for _ in range(rounds):
        for skip, mod in mods.items():
            t0 = time.perf_counter()
            if mode == 'forward':
                mod.forward(q, k, v, scale, True)
            else:
                mod.backward(dout, q, k, v, out, lse, scale, True)
            times[skip].append(time.perf_counter() - t0)
    med = {skip: sorted(ts)[len(ts) // 2] * 1e3
           for skip, ts in times.items()}
    product = 2 * b * h * n * n * d
    print(f'{mode}, {b} x {h} heads x {n} tokens x {d}, '
          f'{torch.get_num_threads()} threads, {rounds} rounds alternated')
    for skip in variants:
        name = 'full kernel' if not skip else 'without ' + ' + '.join(skip)
        part = med[()] - med[skip]
        extra = ''
        if len(skip) == 1 and skip[0] != 'EXP' and part > 0:
            extra = f'  ({product / part / 1e6:.0f} GFLOP/s for the product)'
        print(f'{name:34s} {med[skip]:7.2f} ms  part {part:6.2f} ms{extra}')


if __name__ == '__main__':
    main(sys.argv[1:])
