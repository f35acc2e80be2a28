"""Two ways of the same work timed alternately in one process, the order
swapped every round, for the benchmark scripts that compare a change with
the code before it (``alternate_*.py``, ``*_pass.py``)."""
import statistics
import time

import torch


def steps_alternated(phase, fn, sides, use, rounds):
    """Whole-model steps: ``use(side)`` switches to a side, ``fn()`` runs one
    step (the seed set before each). One warm-up step per side, then
    ``rounds`` rounds; prints each round's seconds, the medians and the
    median per-round ratio ``sides[0] / sides[1]``."""
    a, b = sides

    def timed():
        torch.manual_seed(0)
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    for side in sides:
        use(side)
        fn()
    times = {a: [], b: []}
    for r in range(rounds):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            use(side)
            times[side].append(timed())
        print(f'{phase} round {r}: {a} {times[a][-1]:.3f} s, {b} '
              f'{times[b][-1]:.3f} s', flush=True)
    ratios = [p / q for p, q in zip(times[a], times[b])]
    print(f'{phase}: median {a} {statistics.median(times[a]):.3f} s, '
          f'{b} {statistics.median(times[b]):.3f} s; per-round '
          f'ratio median {statistics.median(ratios):.4f} '
          f'[{min(ratios):.4f}-{max(ratios):.4f}]', flush=True)


def calls_alternated(phase, label, variants, rounds, reps=5):
    """Small calls: ``variants`` is ``[(name_a, fn_a), (name_b, fn_b)]``;
    each round runs ``phase(fn)`` once untimed, then ``reps`` times timed,
    for each variant in turn. Prints the medians (ms), the median ratio
    ``b / a`` with the rounds' spread and the minima."""
    (a, _), (b, _) = variants
    times = {a: [], b: []}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for name, fn in order:
            phase(fn)
            t = time.perf_counter()
            for _ in range(reps):
                phase(fn)
            times[name].append((time.perf_counter() - t) / reps * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [q / p for p, q in zip(times[a], times[b])]
    low = {k: min(v) for k, v in times.items()}
    print(f'{label}: {a} {med[a]:.2f} ms, {b} {med[b]:.2f} ms, median '
          f'ratio {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}'
          f'-{max(ratios):.3f}); minimum {low[a]:.2f} against {low[b]:.2f} '
          f'ms')
