"""A frozen MLP's first bias and activation in one C++ pass, and in
training the activation's derivative in the same pass.

The CPU speed-up ``cpu_mlp`` (``models/speedups.py``; the pass:
``cast_mmaction/csrc/cpu_bias_act.cpp``). The frozen MLP node
(``speedups._FrozenMLP``) computes ``act(addmm(b1, x, W1^T))``: ``addmm``
first writes the bias into each row of its (tokens, 3072) output and the
GEMM reads it back (beta = 1), the activation is another pass, and in
training backward runs ``gelu_backward`` / ``silu_backward`` on the kept
pre-activation (erf and exp again). With ``cpu_mlp`` the product is a plain
``mm`` and one pass adds the bias and writes the activation and, where a
gradient is recorded, its derivative, which backward multiplies into the
incoming gradient instead of the pre-activation (the same memory kept).

The product's output is only read while autograd is on (a selective
checkpoint that kept it, ``models/checkpointing.py``, replays it
unchanged); without autograd the activation is written over it. The sum
``x W1^T + b1`` is rounded once more than in ``addmm`` (whose GEMM adds its
sum to the bias),
and the GELU's erf is Abramowitz & Stegun 7.1.26 (ATen's vectorized erf's
formula; oneDNN's erf computes torch's GELU on the CPU): results equal the
reference to fp32 rounding (tests/test_cpu_bias_act.py measures both
against float64).
"""
import functools

import torch

from . import cpp_extensions

FIELD = 'model.backbone.speedups.cpu_mlp'
DEPENDS = ('avx512_exp2.h', )
ACTS = {'none': 0, 'gelu': 1, 'silu': 2, 'quick_gelu': 3}


def cpu_refusal(facts):
    """Why the pass cannot run on the CPU of ``facts``
    (:func:`cast_mmaction.utils.cpu_facts`), naming the fix, or None."""
    return cpp_extensions.avx512_refusal(facts, 'the pass')


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled pass (built on first call, ~10 s, then cached)."""
    return cpp_extensions.build_avx512(
        'cast_mmaction_cpu_bias_act', 'cpu_bias_act.cpp', FIELD, 'the pass',
        depends=DEPENDS)


def unavailable():
    """Why the pass cannot be built and run here, or None (the reason a
    test or a benchmark skips it)."""
    return cpp_extensions.avx512_unavailable('the C++ bias pass')


def bias_act(pre, bias, h, d, act):
    """``h = act(pre + bias)`` (``h`` may be ``pre``) and, unless ``d`` is
    empty, ``d = act'(pre + bias)``: the extension called directly, under a
    label of its own while a profiler runs (``cast_mmaction::cpu_bias_act``,
    counted as element-wise by ``tools/benchmark.py``). Not a
    ``torch.library`` operator, and no label otherwise: the operator
    measured 75-250 us a call more than the direct call and the label
    60-160 us on the model's sizes (the pass itself 0.1-1.8 ms); no
    dispatch mode needs to see it (a selective checkpoint's recompute reruns
    the frozen MLP's forward, the pass with it)."""
    ext = extension()  # built / loaded outside the label
    # torch's own flag (private; labelled whenever it cannot be read)
    if not getattr(torch.autograd.profiler, '_is_profiler_enabled', True):
        ext.bias_act(pre, bias, h, d, act)
        return
    with torch.profiler.record_function('cast_mmaction::cpu_bias_act'):
        ext.bias_act(pre, bias, h, d, act)


def mm_bias_act(a, w, bias, act, derivative):
    """``act(a @ w.T + bias)`` for fp32 CPU ``a`` (n, k), ``w`` (m, k) (or a
    transposed view) and ``bias`` (m), ``act`` ``'gelu'`` (exact erf),
    ``'silu'``, ``'quick_gelu'`` (CLIP's ``v sigmoid(1.702 v)``) or
    ``'none'``: ``(h, d)``, ``d`` the activation's derivative
    at ``a @ w.T + bias`` when ``derivative``, else None (then not for
    tensors autograd records); ``h`` is written over the product only then
    and when no gradient is recorded (``torch.is_grad_enabled()`` False)."""
    if not derivative and torch.is_grad_enabled() and any(
            t.requires_grad for t in (a, w, bias)):
        raise RuntimeError('cpu_bias_act.mm_bias_act(derivative=False) '
                           'records no gradient: not for tensors autograd '
                           'records')
    raw = a.mm(w.t())
    bias = bias.contiguous()
    # the product is written over only without autograd (and never for a
    # derivative: an autograd.Function's forward, where grad mode is off):
    # in a selective checkpoint's forward a policy may keep it, and the
    # recompute must find it unchanged
    h = raw if not (derivative or torch.is_grad_enabled()) else \
        torch.empty_like(raw)
    d = torch.empty_like(raw) if derivative else raw.new_empty(0)
    bias_act(raw, bias, h, d, ACTS[act])
    return h, (d if derivative else None)

