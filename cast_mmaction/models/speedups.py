"""CPU speed-ups: one opt-in layer over the reference model.

The model of the paper (``backbones/cast.py``, ``experts/``, ``fusion/``) is
plain PyTorch: ``nn.Linear`` / ``F.linear``, ``F.scaled_dot_product_attention``,
plain MLP modules, no custom autograd Function. This module rewrites a built
:class:`~cast_mmaction.models.backbones.CASTBackbone` for CPU training when
its config asks for it::

    model = dict(backbone=dict(speedups='cpu'))   # the preset below
    model = dict(backbone=dict(speedups=dict(
        onednn_linear='auto', onednn_attention='auto', frozen_mlp=True,
        checkpoint='fusion',
        malloc_mmap_threshold=1048576)))

The speed-ups (each off unless named):

* ``onednn_linear`` (``True`` / ``False`` / ``'auto'``): the backbone's
  ``nn.Linear`` modules and the experts' packed q/k/v products run on
  oneDNN's fp32 matmul (``torch.ops.mkldnn._linear_pointwise``; its
  gradients too) instead of MKL's SGEMM: measured ~2x on an AMD EPYC with
  AVX-512, no gain on Intel Xeons or an AVX2-only EPYC (docs/benchmarks.md).
  ``'auto'`` decides from the CPU's facts (:func:`onednn_linear_rule`:
  vendor and ISA from ``/proc/cpuinfo``), never from a timing. Another
  summation order than MKL: results equal the reference to fp32 rounding.
* ``onednn_attention`` (``True`` / ``False`` / ``'auto'``, the same rule as
  ``onednn_linear``): the experts' self-attention (CLIP, VideoMAE, AST) over
  at least 512 x 512 scores per head runs on oneDNN matmuls
  (``models/onednn_attention.py``: the fused kernel's algorithm, blocks of
  query rows, the scores recomputed in backward) instead of torch's fused
  CPU kernel, whose tiles go through MKL; VideoMAE's 1568 tokens measured
  1.6x faster forward and forward + backward on the AMD EPYC above
  (docs/benchmarks.md). Results differ by fp32 rounding.
* ``cpu_attention`` (``True`` / ``False`` / ``'auto'``): the experts'
  self-attention and B-CAST's window cross-attention (heads up to 64
  wide) run in one C++ kernel for AVX-512 CPUs (``models/cpu_attention.py``,
  ``csrc/cpu_attention.cpp``: the softmax between the two products of each
  block of query rows, in registers and cache; built on first use, a C++
  compiler and ninja needed) instead of torch's fused CPU kernel; it takes
  precedence over ``onednn_attention``. Measured 0.976x the inference and
  0.965x the training step on an Intel Xeon (docs/benchmarks.md). Results
  differ by fp32 rounding. Not in the preset (its build on first use);
  ``'auto'`` (:func:`cpp_kernel_rule`):
  on for an Intel CPU with AVX-512F where a C++ compiler, ninja and
  Python's C headers are found, off elsewhere (not measured on AMD, where the oneDNN paths run).
* ``cpu_mlp`` (``True`` / ``False`` / ``'auto'``, the rule of
  ``cpu_attention``; needs ``frozen_mlp``): the frozen MLP's first product is a plain ``mm`` and its
  bias and activation one C++ pass over the output
  (``models/cpu_bias_act.py``, ``csrc/cpu_bias_act.cpp``; AVX-512, built on
  first use like ``cpu_attention``) instead of ``addmm``, which writes the
  bias into the output before the GEMM reads it back, and an activation
  pass; in training the same pass writes the activation's derivative,
  kept instead of the pre-activation, so that backward is one multiply
  instead of ``gelu_backward`` / ``silu_backward``. oneDNN's fused linear
  (``onednn_linear``) takes precedence. Measured 0.98x the training step
  on an Intel Xeon (docs/benchmarks.md). Results differ by fp32 rounding.
* ``frozen_mlp``: a frozen expert MLP is one autograd node
  (:class:`_FrozenMLP`) that keeps only the pre-activation for backward
  (autograd keeps the activation output too, and QuickGELU's sigmoid);
  without autograd the activation is fused into the first matmul.
  QuickGELU is computed as a scaled SiLU: fp32 rounding differences. In
  the CAST-family layers (outside checkpointed layers) the MLP's output
  product accumulates into the block's residual stream (``x`` + the MLP
  adapter's drop-path part + fc2's bias, then ``addmm_``) instead of
  ``addmm`` writing fc2's bias and two adds (``Expert.mlp_adder``).
* ``checkpoint`` (``'fusion'`` / ``'fusion_qkv'``): checkpoint regions
  *inside* each checkpointed layer around the trainable fusion work only
  (models/checkpointing.py, :class:`FusionPolicy`); the layers are the
  backbone's ``with_cp`` layers, all when ``with_cp`` is False. The same
  operators are recomputed: exact forward, gradients equal to the reference
  up to the reduction order of accumulated gradients.
* ``malloc_trim`` (``True`` / ``'forward'``): glibc's ``malloc_trim(0)`` at
  layer boundaries of CPU training (:class:`TrimmingRunner`): with ``True``
  after the forward of the last two thirds of the layers and the backward of
  the last third, where a step's peak is; with ``'forward'`` after every
  layer's forward only. The freed-but-held heap memory
  leaves the peak, at the price of page faults when the returned pages are
  used again (docs/benchmarks.md); the same numbers.
* ``malloc_mmap_threshold`` (bytes): glibc's ``M_MMAP_THRESHOLD``,
  process-wide, set at the backbone's first forward on a CPU tensor (lower
  peak RSS in CPU training; Linux / glibc only).
* ``cpu_block_cache`` (MiB, or ``True`` for 8192): a block cache for torch's
  CPU allocator (``models/cpu_block_cache.py``, a small C++ extension built
  on first use): CPU tensors of 1 MiB or more get their own mappings, apart
  from glibc's heap, and a freed block is reused for the next tensor of its
  size (or of up to half its size where none of that size is cached),
  keeping at most that many MiB of free blocks. Lowers the peak like
  ``malloc_trim`` without its page faults: with a limit above what a step
  frees, a step maps nothing anew (docs/benchmarks.md). Emptied when the
  backbone switches between training and inference forwards.
  Process-wide, installed at the backbone's first forward on an fp32 CPU
  tensor; Linux only; the same numbers.

Every speed-up runs only where it applies: fp32 CPU tensors outside
autocast (and outside ``torch.compile`` / TorchScript tracing, and
:func:`reference_path`); anywhere else (CUDA, fp64, bf16,
autocast, ``frozen_dtype`` experts) the rewritten modules run the reference
code, so a recipe can name the speed-ups and stay the reference model on a
GPU. :meth:`Speedups.decide` gives, for a device / dtype / autocast, which
speed-ups run and why; ``SpeedupsHook`` logs it at start-up and writes it
into every checkpoint's ``meta``.

The ``'cpu'`` preset is ``dict(onednn_linear='auto',
onednn_attention='auto', frozen_mlp=True)``;
``dict(preset='cpu', checkpoint='fusion', ...)`` adds to it.
"""
import contextlib
import ctypes
import ctypes.util
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpointing import FusionPolicy, checkpoint, make_fusion_policy
from . import cpu_block_cache
from .cpu_block_cache import check_cache_mib
from .experts.clip_vit import CLIPAttention, CLIPMlp
from .experts.videomae_vit import VideoMAEAttention, VideoMAEMlp
from .experts.ast import ASTAttention
from .fusion.bottleneck_cross_attention import WindowCrossAttention
from .layers import QUICK_GELU_SCALE, sdpa_heads
from . import cpp_extensions
from . import cpu_attention as _cpu_attention
from . import cpu_bias_act as _cpu_bias_act
from .onednn_attention import onednn_sdpa, worth_it

_LP = getattr(getattr(torch.ops, 'mkldnn', None), '_linear_pointwise', None)
KEYS = ('onednn_linear', 'onednn_attention', 'cpu_attention', 'cpu_mlp',
        'frozen_mlp',
        'checkpoint',
        'malloc_mmap_threshold', 'malloc_trim', 'cpu_block_cache')
# the C++ kernels are not in the preset: their first-use build (10-20 s
# each) would land in every fresh run of a recipe, a reference check's
# included; 'auto' names them with the CPU rule (cpp_kernel_rule)
PRESETS = {'cpu': dict(onednn_linear='auto', onednn_attention='auto',
                       frozen_mlp=True)}
FIELD = 'model.backbone.speedups'


# --------------------------------------------------------------------------
# where a speed-up applies: facts of the tensor, never a timing
def applies_to(device, dtype, autocast=False):
    """Whether the speed-ups run for tensors on ``device`` (a type name or
    ``torch.device``) of ``dtype`` with / without autocast: fp32 CPU
    outside autocast only."""
    device = torch.device(device).type
    return device == 'cpu' and dtype == torch.float32 and not autocast


_SUSPENDED = 0  # > 0 inside reference_path()


@contextlib.contextmanager
def reference_path():
    """Run the reference model while inside, whatever speed-ups a model was
    built with (e.g. for an export and its check: oneDNN's kernel and the
    fused MLP node have no ONNX form). Nests."""
    global _SUSPENDED
    _SUSPENDED += 1
    try:
        yield
    finally:
        _SUSPENDED -= 1


def applies(x):
    """:func:`applies_to` for the tensor ``x`` at this point of the
    forward (autocast, ``torch.compile`` and TorchScript tracing are read
    here: a traced or compiled graph records the reference model)."""
    return (isinstance(x, torch.Tensor) and not _SUSPENDED
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()
            and applies_to(x.device, x.dtype,
                           torch.is_autocast_enabled('cpu')))


def onednn_linear_rule(facts):
    """``(on, reason)`` of ``onednn_linear='auto'`` from the CPU facts
    (:func:`cast_mmaction.utils.cpu_facts`): on for AMD CPUs with AVX-512,
    where oneDNN's fp32 linear measured ~2x MKL's; off elsewhere."""
    if _LP is None:
        return False, 'this torch build has no oneDNN linear'
    vendor, isa = facts.get('cpu_vendor'), set(facts.get('cpu_isa') or ())
    model = facts.get('cpu_model') or 'unknown CPU'
    if vendor == 'AuthenticAMD' and 'avx512f' in isa:
        return True, (f'{model}: AMD with AVX-512, oneDNN fp32 linear ~2x '
                      f'MKL (docs/benchmarks.md)')
    if vendor == 'AuthenticAMD':
        return False, f'{model}: AMD without AVX-512, no gain measured'
    if vendor == 'GenuineIntel':
        return False, f'{model}: Intel, MKL as fast as oneDNN (measured)'
    return False, f'{model} (vendor {vendor}): not measured, reference path'


def cpp_kernel_rule(facts, what):
    """``(on, reason)`` of ``'auto'`` for the C++ kernels ``what``
    (``cpu_attention``, ``cpu_mlp``) from the CPU facts
    (:func:`cast_mmaction.utils.cpu_facts`) and the C++ toolchain found
    (:func:`~cast_mmaction.models.cpp_extensions.toolchain`): on for Intel
    CPUs with AVX-512F, where both measured faster than the paths they
    replace (docs/benchmarks.md), when a compiler, ninja and Python.h are
    there to build them on first use; off elsewhere, never from a timing."""
    vendor, isa = facts.get('cpu_vendor'), set(facts.get('cpu_isa') or ())
    model = facts.get('cpu_model') or 'unknown CPU'
    if 'avx512f' not in isa:
        return False, f'{model}: no AVX-512F, which {what} needs'
    if vendor != 'GenuineIntel':
        return False, f'{model} (vendor {vendor}): {what} not measured there'
    ok, tool = cpp_extensions.toolchain()
    if not ok:
        return False, (f'{model}: Intel with AVX-512, but {tool}, so '
                       f'{what} cannot be built')
    return True, (f'{model}: Intel with AVX-512, {tool}: {what} built on '
                  f'first use, faster there (docs/benchmarks.md)')


class Speedups:
    """The resolved speed-ups of one backbone: ``settings`` (``{key:
    value}``, values ``False`` / ``None`` when off) and ``reasons`` (``{key:
    why}``); ``requested`` is the config value."""

    def __init__(self, settings, reasons, requested=None):
        self.settings = dict(settings)
        self.reasons = dict(reasons)
        self.requested = requested

    def __getitem__(self, key):
        return self.settings[key]

    @property
    def enabled(self):
        """Names of the speed-ups that are configured on."""
        return [k for k in KEYS if self.settings[k] not in (False, None)]

    def decide(self, device='cpu', dtype=torch.float32, autocast=False):
        """``{key: (runs, reason)}`` for a run on ``device`` in ``dtype``
        with / without autocast."""
        here = applies_to(device, dtype, autocast)
        where = (f'{torch.device(device).type}, {str(dtype)[6:]}'
                 f'{", autocast" if autocast else ""}')
        out = {}
        for k in KEYS:
            on = self.settings[k] not in (False, None)
            if not on:
                out[k] = (False, self.reasons[k])
            elif not here:
                out[k] = (False, f'{self.reasons[k]}; not on {where} '
                                 f'(fp32 CPU outside autocast only)')
            else:
                out[k] = (True, self.reasons[k])
        return out

    def summary(self, device='cpu', dtype=torch.float32, autocast=False):
        """One line per speed-up: on / off and why (for the log)."""
        rows = self.decide(device, dtype, autocast)
        return '\n'.join(f'  {k}: {"on" if on else "off"} ({why})'
                         for k, (on, why) in rows.items())

    def meta(self, device='cpu', dtype=torch.float32, autocast=False):
        """A plain dict for a checkpoint's ``meta``."""
        return dict(
            requested=_plain(self.requested),
            settings={k: _plain(v) for k, v in self.settings.items()},
            runs={k: dict(on=on, reason=why) for k, (on, why) in
                  self.decide(device, dtype, autocast).items()},
            device=torch.device(device).type, dtype=str(dtype)[6:],
            autocast=bool(autocast))

    def __repr__(self):
        return f'Speedups({self.settings})'


def _plain(v):
    if isinstance(v, FusionPolicy):
        return repr(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def spec_from_json(text, forms):
    """A command line's ``--speedups`` JSON dict (``tools/benchmark.py``,
    ``tools/check_parity.py``); text that does not parse is a ``ValueError``
    naming the tool's other accepted ``forms`` and an example."""
    import json
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f'{text!r} is not valid JSON ({e}); give {forms} or a JSON dict '
            f'with double-quoted keys and strings, e.g. '
            f'\'{{"checkpoint": "fusion"}}\'') from None


def resolve(spec, facts=None):
    """A config value (None, ``'cpu'``, or a dict of :data:`KEYS` and
    optionally ``preset``) -> :class:`Speedups`; ``facts`` defaults to
    this machine's :func:`~cast_mmaction.utils.cpu_facts`. Bad values raise
    a ``ValueError`` naming the field."""
    requested = dict(spec) if isinstance(spec, dict) else spec
    if spec is None:
        want = {}
    elif isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f'{FIELD}={spec!r}: use None, one of the presets '
                             f'{sorted(PRESETS)} or a dict of {KEYS}')
        want = dict(PRESETS[spec])
    elif isinstance(spec, dict):
        want = dict(spec)
        preset = want.pop('preset', None)
        unknown = sorted(set(want) - set(KEYS))
        if unknown:
            raise ValueError(f'{FIELD}: unknown keys {unknown}; known: '
                             f'{list(KEYS) + ["preset"]}')
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f'{FIELD}.preset={preset!r}: use one of '
                                 f'{sorted(PRESETS)}')
            want = {**PRESETS[preset], **want}
    else:
        raise ValueError(f'{FIELD}={spec!r}: use None, one of the presets '
                         f'{sorted(PRESETS)} or a dict of {KEYS}')
    settings, reasons = {}, {}
    not_asked = f'not requested ({FIELD})'

    def cpu():  # the CPU facts, read once and only where a rule needs them
        nonlocal facts
        if facts is None:
            from ..utils import cpu_facts
            facts = cpu_facts()
        return facts

    for key in ('onednn_linear', 'onednn_attention'):
        v = want.get(key, False)
        if v == 'auto':
            on, why = onednn_linear_rule(cpu())
            settings[key], reasons[key] = on, f'auto: {why}'
        elif isinstance(v, bool):
            if v and _LP is None:
                settings[key] = False
                reasons[key] = ('requested, but this torch build has no '
                                'oneDNN linear')
            else:
                settings[key] = v
                reasons[key] = 'requested' if v else not_asked
        else:
            raise ValueError(f"{FIELD}.{key}={v!r}: use True, False or "
                             f"'auto' (from the CPU's vendor and ISA)")
    # cpu_attention: checked against the CPU's instructions when asked for,
    # decided from the CPU and the toolchain with 'auto'
    v = want.get('cpu_attention', False)
    if v == 'auto':
        on, why = cpp_kernel_rule(cpu(), 'cpu_attention')
        settings['cpu_attention'], reasons['cpu_attention'] = on, f'auto: {why}'
    elif v is True:
        why = _cpu_attention.cpu_refusal(cpu())
        if why:
            raise ValueError(f'{FIELD}.cpu_attention=True: {why}')
        settings['cpu_attention'], reasons['cpu_attention'] = True, 'requested'
    elif v is False:
        settings['cpu_attention'], reasons['cpu_attention'] = False, not_asked
    else:
        raise ValueError(f"{FIELD}.cpu_attention={v!r}: use True, False or "
                         f"'auto' (from the CPU and the C++ toolchain)")
    # frozen_mlp
    v = want.get('frozen_mlp', False)
    if not isinstance(v, bool):
        raise ValueError(f'{FIELD}.frozen_mlp={v!r}: use True or False')
    settings['frozen_mlp'] = v
    reasons['frozen_mlp'] = 'requested' if v else not_asked
    # cpu_mlp: a pass of the frozen MLP node, checked against the CPU
    v = want.get('cpu_mlp', False)
    if v == 'auto':
        on, why = cpp_kernel_rule(cpu(), 'cpu_mlp')
        if on and not settings['frozen_mlp']:
            on, why = False, 'frozen_mlp is off (cpu_mlp is a pass of it)'
        elif on and settings['onednn_linear']:
            on, why = False, "onednn_linear's fused linear takes precedence"
        settings['cpu_mlp'], reasons['cpu_mlp'] = on, f'auto: {why}'
    elif isinstance(v, bool):
        if v and not settings['frozen_mlp']:
            raise ValueError(f'{FIELD}.cpu_mlp=True is a pass of the frozen '
                             f"MLP node: set frozen_mlp=True too (or "
                             f"preset='cpu')")
        if v:
            why = _cpu_bias_act.cpu_refusal(cpu())
            if why:
                raise ValueError(f'{FIELD}.cpu_mlp=True: {why}')
        settings['cpu_mlp'] = v
        reasons['cpu_mlp'] = ('requested: the first bias and activation (and '
                              'in training its derivative) in one pass' if v
                              else not_asked)
    else:
        raise ValueError(f"{FIELD}.cpu_mlp={v!r}: use True, False or 'auto' "
                         f"(from the CPU and the C++ toolchain)")
    # checkpoint
    v = want.get('checkpoint')
    settings['checkpoint'] = None if v is None else make_fusion_policy(
        v, f'{FIELD}.checkpoint')
    reasons['checkpoint'] = f'requested: {v}' if v is not None else not_asked
    # malloc_mmap_threshold
    v = want.get('malloc_mmap_threshold')
    if v is not None:
        check_mmap_threshold(v)
    settings['malloc_mmap_threshold'] = v
    reasons['malloc_mmap_threshold'] = (f'requested: {v} bytes' if v
                                        is not None else not_asked)
    v = want.get('malloc_trim', False)
    if not (isinstance(v, bool) or v == 'forward'):
        raise ValueError(f"{FIELD}.malloc_trim={v!r}: use True (after the "
                         f"last two thirds' forward and the last third's "
                         f"backward), 'forward' (every layer's forward "
                         f"only) or False")
    settings['malloc_trim'] = v
    reasons['malloc_trim'] = f'requested: {v}' if v else not_asked
    v = check_cache_mib(want.get('cpu_block_cache'))
    settings['cpu_block_cache'] = v
    reasons['cpu_block_cache'] = (f'requested: up to {v} MiB of free blocks'
                                  if v is not None else not_asked)
    return Speedups(settings, reasons, requested)


# --------------------------------------------------------------------------
# oneDNN matmuls
def _onednn_ok(*tensors):
    """oneDNN's linear takes fp32 CPU tensors, outside autocast and
    ``torch.compile`` (inductor lowers it only with constant weights)."""
    if _LP is None or torch.is_autocast_enabled('cpu') or (
            torch.compiler.is_compiling()):
        return False
    return all(t is None or (t.device.type == 'cpu'
                             and t.dtype == torch.float32) for t in tensors)


def register_flop_formulas():
    """Teach ``torch.utils.flop_counter`` the matmuls it has no formula for,
    so that FLOPs are counted on the path the model runs: oneDNN's linear
    (2 n k m; ``_Linear``, ``_FrozenMLP`` and :func:`onednn_linear` call
    it), the in-place ``addmm_`` of :func:`_mm_t_into` (the frozen MLP's
    product accumulated into the residual stream) and the attention
    kernels' forward and backward; idempotent."""
    from torch.utils import flop_counter

    from . import onednn_attention
    from .sdpa_ops import has_flop_formula
    onednn_attention.register_flop_formulas()
    _cpu_attention.register_flop_formulas()
    # torch (<= 2.15 at least) counts aten.addmm but not its in-place form,
    # so without this a step's fc2 products went uncounted (178 of ViT-B
    # CAST's 781 GFLOP per clip)
    addmm_ = torch.ops.aten.addmm_
    if not has_flop_formula(addmm_):

        @flop_counter.register_flop_formula(addmm_)
        def _addmm_inplace_flop(self_shape, a_shape, b_shape, *args,
                                out_shape=None, **kwargs):
            # self (n, m) += a (n, k) @ b (k, m)
            return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    # torch registers the packet itself (2.15) or its overloads (older)
    if _LP is None or has_flop_formula(_LP):
        return

    @flop_counter.register_flop_formula(_LP)
    def _linear_pointwise_flop(x_shape, *args, out_shape=None, **kwargs):
        # x (..., k) -> out (..., m), for the plain and the binary overloads
        return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * out_shape[-1]


def _dense_2d(t):
    if t.is_contiguous() or t.t().is_contiguous():
        return t
    return t.contiguous()


def _mm_t(a, b, bias=None, act='none', onednn=False):
    """``a @ b.T (+ bias)`` for 2-D ``a`` (n, k) and ``b`` (m, k), then an
    optional fused activation (``'gelu'`` exact, ``'silu'``); on oneDNN when
    ``onednn`` and the tensors allow it, else ``addmm`` / ``mm``. ``b`` may
    be a transposed view."""
    if onednn and _onednn_ok(a, b, bias):
        # oneDNN is fast on row- or column-major 2-D operands and falls back
        # to a slow reference kernel on other strides
        a, b = _dense_2d(a), _dense_2d(b)
        if act == 'silu':
            return _LP(a, b, bias, 'swish', [], '')
        if act == 'gelu':
            return _LP(a, b, bias, 'gelu', [], 'none')
        return _LP(a, b, bias, 'none', [], '')
    out = torch.addmm(bias, a, b.t()) if bias is not None else a.mm(b.t())
    # in place only without autograd: in a selective checkpoint's forward
    # (autograd on) a policy may keep the product, which the recompute must
    # find unchanged
    inplace = not torch.is_grad_enabled()
    if act == 'silu':
        return F.silu(out, inplace=inplace)
    if act == 'gelu':
        return torch.ops.aten.gelu_(out) if inplace else F.gelu(out)
    return out


class _Linear(torch.autograd.Function):
    """``x W^T + b`` on oneDNN, with oneDNN matmuls for the gradients (the
    ``addmm`` / ``mm`` fallback outside fp32 CPU); the input is kept for
    backward only when the weight needs a gradient (a frozen weight keeps
    nothing but its reference)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])
        y = _mm_t(x2, weight, bias, onednn=True)
        need_w = ctx.needs_input_grad[1]
        ctx.save_for_backward(x2 if need_w else None, weight)
        ctx.in_shape = x.shape
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x2, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _mm_t(g, weight.t(), onednn=True).reshape(ctx.in_shape)
        if ctx.needs_input_grad[1]:
            gw = _mm_t(g.t(), x2.t(), onednn=True)
        if ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb


def onednn_linear(x, weight, bias=None):
    """``F.linear`` on oneDNN for fp32 CPU tensors outside autocast, else
    ``F.linear`` itself."""
    if not (applies(x) and _onednn_ok(x, weight, bias)):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None
                                        and bias.requires_grad)):
        return _Linear.apply(x, weight, bias)
    x2 = x.reshape(-1, x.shape[-1])
    y = _mm_t(x2, weight, bias, onednn=True)
    return y.reshape(*x.shape[:-1], y.shape[-1])


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) computed with
    :func:`onednn_linear`."""

    def forward(self, x):
        return onednn_linear(x, self.weight, self.bias)


def kernel_adds_bias(x, width, keys):
    """Whether the C++ kernel adds q's, k's and v's biases itself for heads
    ``width`` wide over ``keys`` keys, computed from ``x`` at this point of
    the forward (:func:`applies`, and a width it compiles): the one test of
    the projections that leave their biases to it and of
    :func:`heads_attention`, which adds them itself where it does not."""
    return applies(x) and _cpu_attention.takes_bias(width, keys)


def heads_attention(q, k, v, num_heads, kernel=None, bias=None):
    """:func:`~cast_mmaction.models.layers.sdpa_heads` in the CPU kernel
    ``kernel`` where it applies, else the reference: ``'cpu'`` the C++
    kernel (``models/cpu_attention.py``; heads up to 64 wide), ``'onednn'``
    oneDNN matmuls (``models/onednn_attention.py``; attention large enough,
    :func:`~cast_mmaction.models.onednn_attention.worth_it`); both for fp32
    CPU tensors outside autocast and ``torch.compile`` only. ``bias``: None,
    or the (3 C) biases of ``q``, ``k`` and ``v`` (a packed projection's,
    or a q projection's and a k/v projection's concatenated), still to be
    added (by the C++ kernel as it reads them where
    :func:`~cast_mmaction.models.cpu_attention.takes_bias`, else here)."""
    if bias is not None and not (kernel == 'cpu' and kernel_adds_bias(
            q, q.shape[-1] // num_heads, k.shape[-2])):
        q, k, v = (t + b for t, b in zip((q, k, v), bias.chunk(3)))
        bias = None
    if kernel is None or not applies(q):
        return sdpa_heads(q, k, v, num_heads)
    *lead, lq, c = q.shape
    lk = k.shape[-2]
    d = c // num_heads
    if kernel == 'cpu':
        if not _cpu_attention.supports(d, lk):
            return sdpa_heads(q, k, v, num_heads)
        fn = _cpu_attention.cpu_sdpa if bias is None else functools.partial(
            _cpu_attention.cpu_sdpa, bias=bias)
    elif kernel == 'onednn':
        if not (_onednn_ok(q, k, v) and worth_it(lq, lk)):
            return sdpa_heads(q, k, v, num_heads)
        fn = onednn_sdpa
    else:
        raise ValueError(f"heads_attention: kernel={kernel!r}: use None, "
                         f"'cpu' or 'onednn'")
    q = q.reshape(-1, lq, num_heads, d).transpose(1, 2)
    k = k.reshape(-1, lk, num_heads, d).transpose(1, 2)
    v = v.reshape(-1, lk, num_heads, d).transpose(1, 2)
    return fn(q, k, v).transpose(1, 2).reshape(*lead, lq, c)


def attention_kernel(sp):
    """The CPU attention kernel a :class:`Speedups` names (``'cpu'``,
    ``'onednn'`` or None): ``cpu_attention`` before ``onednn_attention``."""
    if sp['cpu_attention']:
        return 'cpu'
    return 'onednn' if sp['onednn_attention'] else None


class CPUKernelWindowCrossAttention(WindowCrossAttention):
    """B-CAST's :class:`WindowCrossAttention` (same parameters) with its
    heads' attention in the C++ kernel (``cpu_attention``), which also adds
    the q and k/v projections' biases as it reads q, k and v (the
    projections then plain matmuls: see ``_OneDNNAttentionMixin._qkv``)."""

    def _bias_left(self, q, weights_out):
        if weights_out is not None or any(
                type(m) is not nn.Linear or m.bias is None
                for m in (self.q, self.kv)) or not kernel_adds_bias(
                    q, self.q.out_features // self.num_heads, 1):
            return None
        return torch.cat([self.q.bias, self.kv.bias])

    def _split_kv(self, kv):
        # the kernel's backward writes the k / v gradient as one tensor
        return _cpu_attention.split_halves(kv)

    def _attend(self, q, k, v, bias=None):
        return heads_attention(q, k, v, self.num_heads, 'cpu', bias)


class _OneDNNAttentionMixin:
    """The speed-ups of an expert's self-attention module: its q/k/v product
    on oneDNN (``speedup_linear``), its attention in a CPU kernel
    (``speedup_attention``: :func:`heads_attention`'s ``kernel``); set by
    :func:`apply_speedups`."""
    speedup_linear = False
    speedup_attention = None  # the kernel: None, 'onednn' or 'cpu'

    def _qkv(self, x, weight, bias):
        """``(q, k, v, later)``: the thirds of the q/k/v projection, and
        the bias still to be added (None where it is in them): with the C++
        kernel on plain fp32 matmuls, the kernel adds it as it reads q, k
        and v (``addmm`` would copy it into the (tokens, 3 C) output and
        the GEMM read it back)."""
        later = None
        if self.speedup_linear:
            qkv = onednn_linear(x, weight, bias)  # its bias is a post-op
        elif (self.speedup_attention == 'cpu' and bias is not None
              and kernel_adds_bias(x, weight.shape[0] // 3 // self.num_heads,
                                   x.shape[-2])):
            qkv, later = F.linear(x, weight), bias
        else:
            qkv = F.linear(x, weight, bias)
        if self.speedup_attention == 'cpu':
            # the kernel's backward writes the packed gradient
            return (*_cpu_attention.split_thirds(qkv), later)
        return (*qkv.chunk(3, dim=-1), later)

    def _attend(self, q, k, v, bias=None):
        return heads_attention(q, k, v, self.num_heads,
                               self.speedup_attention, bias)


class OneDNNCLIPAttention(_OneDNNAttentionMixin, CLIPAttention):
    """:class:`CLIPAttention` with the CPU speed-ups of its mixin."""

    def forward(self, x):
        q, k, v, bias = self._qkv(x, self.in_proj_weight, self.in_proj_bias)
        return self.out_proj(self._attend(q, k, v, bias))


class OneDNNVideoMAEAttention(_OneDNNAttentionMixin, VideoMAEAttention):
    """:class:`VideoMAEAttention` with the CPU speed-ups of its mixin."""

    def forward(self, x):
        q, k, v, bias = self._qkv(x, self.qkv.weight, self.qkv_bias())
        return self.proj(self._attend(q, k, v, bias))


class OneDNNASTAttention(_OneDNNAttentionMixin, ASTAttention):
    """:class:`ASTAttention` with the CPU speed-ups of its mixin."""

    def forward(self, x):
        q, k, v, bias = self._qkv(x, self.qkv.weight, self.qkv.bias)
        return self.proj(self._attend(q, k, v, bias))


# --------------------------------------------------------------------------
# the frozen MLP
def _compute_dtype(x):
    """The dtype matmuls on ``x`` run in: the autocast dtype when autocast
    is on for ``x``'s device, else ``x``'s own dtype."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _mlp_act_backward_(grad, pre, act):
    """d act(pre) / d pre * grad, written into ``grad``."""
    if act == 'quick_gelu':
        return torch.ops.aten.silu_backward.grad_input(grad, pre,
                                                        grad_input=grad)
    return torch.ops.aten.gelu_backward.grad_input(grad, pre,
                                                    grad_input=grad)


def _uses_pass(b1, onednn, cpu_mlp):
    """Whether the frozen MLP's first bias and activation run in the C++
    pass (``cpu_mlp``): oneDNN's fused linear takes precedence."""
    return cpu_mlp and b1 is not None and not onednn


def _mm_t_into(residual, a, b, bias=None, alpha=1.0):
    """``residual + (alpha a @ b.T + bias)`` for 2-D ``residual`` (n, m),
    ``a`` (n, k), ``b`` (m, k): the GEMM accumulates into ``residual +
    bias`` (beta = 1, in place on that new tensor), where ``addmm`` would
    first write the bias into every row of its output and a second pass
    add the residual. Rounded in another order than ``residual +
    addmm(...)``."""
    out = residual + bias if bias is not None else residual.clone()
    return out.addmm_(a, b.t(), alpha=alpha)


def _mlp_forward(x2d, w1, b1, w2, b2, act, keep_pre, onednn=False,
                 cpu_mlp=False, residual=None):
    """``fc2(act(fc1 x))`` on 2-D ``x`` with weights already in the compute
    dtype, plus the 2-D ``residual`` when given (the block's residual
    stream: then the second product, for ``quick_gelu`` scaled by 1 / 1.702
    in the GEMM, accumulates into it, :func:`_mm_t_into`, except on oneDNN,
    where it is added); returns (out, kept): with
    ``keep_pre``, what backward needs, the pre-activation, or with the C++
    pass (``cpu_mlp``, :func:`_uses_pass`) the activation's derivative;
    else None.

    ``quick_gelu`` (``h * sigmoid(1.702 h)``) is computed as a SiLU of the
    scaled pre-activation ``1.702 h`` (``silu(1.702 h) / 1.702``): the 1.702
    is applied to the (narrow) input and first bias, the 1 / 1.702 to the
    (narrow) output, never to the wide hidden activation. ``pre`` is the
    scaled pre-activation for ``quick_gelu``. The C++ pass
    (``cpu_mlp``) computes QuickGELU itself (no scaling passes); its kept
    derivative is that of ``act`` at the unscaled pre-activation."""
    def second(h):
        if residual is None:
            return _mm_t(h, w2, b2, onednn=onednn)
        if onednn:
            return residual + _mm_t(h, w2, b2, onednn=onednn)
        return _mm_t_into(residual, h, w2, b2)

    if _uses_pass(b1, onednn, cpu_mlp):
        h, kept = _cpu_bias_act.mm_bias_act(x2d, w1, b1, act, keep_pre)
        return second(h), kept
    quick = act == 'quick_gelu'
    a = QUICK_GELU_SCALE if quick else 1.0
    fused = 'silu' if quick else 'gelu'
    xs = x2d * a if quick else x2d
    bs1 = b1 * a if (quick and b1 is not None) else b1
    if keep_pre:
        pre = _mm_t(xs, w1, bs1, onednn=onednn)
        h = F.silu(pre) if quick else F.gelu(pre)
    else:
        pre, h = None, _mm_t(xs, w1, bs1, act=fused, onednn=onednn)
    if not quick:
        return second(h), pre
    if residual is not None and not onednn:
        return _mm_t_into(residual, h, w2, b2, alpha=1.0 / a), pre
    out = _mm_t(h, w2, None if b2 is None else b2 * a, onednn=onednn)
    out = out / a  # not in place: selective checkpointing may keep
    # the matmul output (models/checkpointing.py)
    return (out if residual is None else residual + out), pre


class _FrozenMLP(torch.autograd.Function):
    """``fc2(act(fc1 x))`` (plus ``residual`` when given) with frozen
    ``fc1`` / ``fc2``: only the pre-activation, or with ``cpu_mlp`` the
    activation's derivative (and the weights, by reference) is kept for
    backward, which needs no weight gradients (autograd would keep the
    activation output as well, and QuickGELU's sigmoid on top)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, act, onednn=False, cpu_mlp=False,
                residual=None):
        shape = x.shape
        out, kept = _mlp_forward(
            x.reshape(-1, shape[-1]), w1, b1, w2, b2, act, keep_pre=True,
            onednn=onednn, cpu_mlp=cpu_mlp,
            residual=None if residual is None else residual.reshape(
                -1, residual.shape[-1]))
        ctx.act, ctx.onednn = act, onednn
        ctx.residual_grad = residual is not None and residual.requires_grad
        ctx.derivative = _uses_pass(b1, onednn, cpu_mlp)
        ctx.save_for_backward(kept, w1, w2)
        return out.reshape(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        kept, w1, w2 = ctx.saved_tensors
        residual_grad = grad if ctx.residual_grad else None
        if not ctx.needs_input_grad[0]:  # only the residual needs one
            return (None, ) * 8 + (residual_grad, )
        shape = grad.shape
        g = grad.reshape(-1, shape[-1]).to(w2.dtype)
        # the 1.702 of quick_gelu cancels: d/dx of silu(a x W1) W2 / a
        gh = _mm_t(g, w2.t(), onednn=ctx.onednn)
        if ctx.derivative:
            gh.mul_(kept)
        else:
            gh = _mlp_act_backward_(gh, kept, ctx.act)
        gx = _mm_t(gh, w1.t(), onednn=ctx.onednn)
        # the residual's gradient is the output's, passed on as it is
        return (gx.reshape(*shape[:-1], gx.shape[-1]), None, None, None,
                None, None, None, None, residual_grad)


def _is_frozen(*modules):
    return not any(p.requires_grad for m in modules for p in m.parameters())


def frozen_mlp(x, fc1, fc2, act='gelu', onednn=False, cpu_mlp=False,
               residual=None):
    """``fc2(act(fc1(x)))`` for frozen ``fc1`` / ``fc2`` (objects with
    ``weight`` / ``bias``), ``act`` ``gelu`` (exact erf GELU) or
    ``quick_gelu`` (CLIP's ``x * sigmoid(1.702 x)``): one autograd node
    that keeps only the pre-activation for backward, and without autograd
    the activation fused into the first matmul (oneDNN with ``onednn`` on
    fp32 CPU) or in place; with ``cpu_mlp`` the first bias and activation
    (and the derivative backward keeps) in one C++ pass
    (``models/cpu_bias_act.py``). Under autocast the matmuls run in the
    autocast dtype, as ``nn.Linear`` would. A trainable ``fc1`` or ``fc2``
    takes plain autograd.

    ``residual`` (the shape of the output, fp32 like ``x``; see
    :meth:`_FrozenMlpPath.forward`): return ``residual + fc2(...)``, the
    second product accumulated into ``residual`` plus its bias (one pass
    over the token-width output instead of three: the bias written by
    ``addmm``, and the residual add)."""
    params = [p for p in (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
              if p is not None]
    if any(p.requires_grad for p in params):
        h = F.linear(x, fc1.weight, fc1.bias)
        if act == 'quick_gelu':
            h = h * torch.sigmoid(QUICK_GELU_SCALE * h)
        else:
            h = F.gelu(h)
        out = F.linear(h, fc2.weight, fc2.bias)
        return out if residual is None else residual + out
    dtype = _compute_dtype(x)

    def cast(t):
        return None if t is None else t.to(dtype)

    w1, b1, w2, b2 = (cast(fc1.weight), cast(fc1.bias), cast(fc2.weight),
                      cast(fc2.bias))
    xc = x.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        if torch.is_grad_enabled() and (x.requires_grad or (
                residual is not None and residual.requires_grad)):
            return _FrozenMLP.apply(xc, w1, b1, w2, b2, act, onednn,
                                    cpu_mlp, residual)
        shape = x.shape
        out, _ = _mlp_forward(
            xc.reshape(-1, shape[-1]), w1, b1, w2, b2, act, keep_pre=False,
            onednn=onednn, cpu_mlp=cpu_mlp,
            residual=None if residual is None else residual.reshape(
                -1, residual.shape[-1]))
        return out.reshape(*shape[:-1], out.shape[-1])


class _FrozenMlpPath:
    """The frozen MLP modules' speed-up path: ``forward(x)`` through
    :func:`frozen_mlp` when the MLP is frozen and ``x`` an fp32 CPU tensor
    outside autocast, else the plain module's; ``forward(x, residual=r)``:
    ``r + forward(x)``, on that path with the second product accumulated
    into the residual (:func:`frozen_mlp`) when ``r`` is an fp32 CPU tensor
    too. The residual goes through the module's call, so hooks on it (an
    FSDP unit's unsharding) run as for a plain call. The backbones pass a
    residual outside checkpointed regions only, where :meth:`adds_into`
    says the path runs (``Expert.mlp_adder``): a selective checkpoint
    policy keeps ``addmm`` outputs, not an in-place accumulation."""
    speedup_onednn = False
    speedup_cpu_mlp = False

    def _frozen_parts(self):
        """(fc1, fc2, activation name)"""
        raise NotImplementedError

    def adds_into(self, x):
        """Whether ``forward(x, residual=...)`` accumulates into the
        residual (the speed-up path runs on ``x``)."""
        fc1, fc2, _ = self._frozen_parts()
        return applies(x) and _is_frozen(fc1, fc2)

    def forward(self, x, residual=None):
        fast = self.adds_into(x)
        if residual is not None:
            if fast and applies(residual):
                return frozen_mlp(x, *self._frozen_parts(),
                                  self.speedup_onednn, self.speedup_cpu_mlp,
                                  residual=residual)
            return residual + self.forward(x)
        if fast:
            return frozen_mlp(x, *self._frozen_parts(), self.speedup_onednn,
                              self.speedup_cpu_mlp)
        return super().forward(x)


class FrozenCLIPMlp(_FrozenMlpPath, CLIPMlp):
    """:class:`CLIPMlp` through :func:`frozen_mlp` when frozen and on an
    fp32 CPU tensor outside autocast; else the plain module."""

    def _frozen_parts(self):
        return self.c_fc, self.c_proj, 'quick_gelu'


class FrozenVideoMAEMlp(_FrozenMlpPath, VideoMAEMlp):
    """:class:`VideoMAEMlp` (also AST's MLP) through :func:`frozen_mlp`
    when frozen and on an fp32 CPU tensor outside autocast; else the plain
    module."""

    def _frozen_parts(self):
        return self.fc1, self.fc2, 'gelu'


# the module rewrites: exact class -> its speed-up subclass (same
# parameters, same state dict; ``module.__class__`` is swapped in place)
ONEDNN_MODULES = {nn.Linear: OneDNNLinear}
ATTENTION_MODULES = {CLIPAttention: OneDNNCLIPAttention,
                     VideoMAEAttention: OneDNNVideoMAEAttention,
                     ASTAttention: OneDNNASTAttention}
FROZEN_MLP_MODULES = {CLIPMlp: FrozenCLIPMlp, VideoMAEMlp: FrozenVideoMAEMlp}


def _swap(root, table):
    n = 0
    for m in root.modules():
        cls = table.get(type(m))
        if cls is not None:
            m.__class__ = cls
            n += 1
    return n


# --------------------------------------------------------------------------
# fusion checkpoint regions
class FusionCheckpointRunner:
    """The backbone's ``layer_runner`` for ``checkpoint='fusion'`` /
    ``'fusion_qkv'``: in training, layers in ``layers`` on fp32 CPU streams
    run :func:`fusion_layer`; every other call runs the backbone's
    ``run_layer`` (the reference, with its own ``with_cp``)."""

    def __init__(self, policy, layers):
        self.policy, self.layers = policy, set(layers)

    def __call__(self, bb, i, batch, time_grids, xs):
        if (i in self.layers and bb.training and torch.is_grad_enabled()
                and all(applies(x) for x in xs)):
            return fusion_layer(bb, i, batch, time_grids, xs, self.policy)
        return bb.run_layer(i, batch, time_grids, xs)

    def __repr__(self):
        return (f'FusionCheckpointRunner({self.policy}, layers='
                f'{sorted(self.layers)})')


def _attn_down(bb, i, n, x, down):
    """``x`` + the attention branch through its adapter, and ``down`` (a
    link's down projection, or None) of that."""
    x = x + bb._attn_branch_adapter(i, n, x)
    return x, None if down is None else down(x)


def _attn_part(bb, i, n, x, parts):
    if not parts.adapters or str(i) not in bb.attn_adapters[n]:
        return bb._attn_branch_adapter(i, n, x)
    y = bb._run_expert(bb.experts[n].attn_branch, i, x)
    return checkpoint(bb.attn_adapters[n][str(i)], y)


def _mlp_norm_adapter(bb, i, n, x):
    xn = bb._run_expert(bb.experts[n].mlp_norm, i, x)
    return xn, bb.mlp_adapters[n][str(i)](xn)


def fusion_layer(bb, i, batch, time_grids, xs, parts):
    """Layer ``i`` of backbone ``bb`` (``CASTBackbone._layer``: the same
    operators in the same order) with the checkpoint regions of the
    :class:`FusionPolicy` ``parts`` around its fusion work."""
    names, experts = bb.stream_names, bb.experts
    tokens = dict(zip(names, xs))
    key = str(i)
    drop = bb.drop_path[i]
    first = bb.links[bb._links_at[i][0]][key] if bb._links_at[i] else None
    downs = {}  # the first link's down projections, when computed here
    if i in bb.attn_layers:
        for n in names:
            if parts.qkv and tokens[n].requires_grad:
                # one region: keep attention, its projection's output and
                # the down projection's; recompute LN1, q / k / v, the
                # adapter and the residual add. (A stream that needs no
                # gradient, e.g. the frozen embedding's output at layer 0,
                # keeps nothing in the frozen branch: no region there.)
                down = first.down[n] if first is not None and (
                    n in first.names) else None
                tokens[n], d = checkpoint(_attn_down, bb, i, n, tokens[n],
                                          down,
                                          policy=parts.attention_policy(down))
                if d is not None:
                    downs[n] = d
            else:
                tokens[n] = tokens[n] + _attn_part(bb, i, n, tokens[n],
                                                   parts)
    for link_name in bb._links_at[i]:
        link = bb.links[link_name][key]
        for queries in bb._link_steps(link_name):
            # only the layer's first link step reads the down projections
            # computed above
            d = {m: downs[m] if m in downs else link.down[m](tokens[m])
                 for m in link.names}
            downs = {}
            # the down projections (and their inputs, for the down weights'
            # gradient) are kept; the rest is recomputed
            updates = checkpoint(
                link.attend, d, experts, batch, time_grids, queries,
                policy=parts.link_policy()) if parts.links else link.attend(
                    d, experts, batch, time_grids, queries)
            for n, upd in updates.items():
                tokens[n] = drop.add(tokens[n], upd)
    if i in bb.mlp_layers:
        for n in names:
            x = tokens[n]
            adapter = bb.mlp_adapters[n][key] if (
                key in bb.mlp_adapters[n]) else None
            if adapter is not None and parts.adapters:
                # LN2's output is kept only by the adapter: recompute both
                # from LN2's input, which the frozen block keeps anyway
                xn, a = checkpoint(_mlp_norm_adapter, bb, i, n, x)
            else:
                xn = bb._run_expert(experts[n].mlp_norm, i, x)
                a = None if adapter is None else adapter(xn)
            # outside the regions: the MLP added into the residual as in
            # the plain layer
            tokens[n] = bb._mlp_residual(i, n, x, xn, a, drop)
    return tuple(tokens[n] for n in names)


# --------------------------------------------------------------------------
# the allocator
_M_MMAP_THRESHOLD = -3  # glibc malloc.h
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's bound on 64-bit (HEAP_MAX_SIZE / 2)


@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library when it is glibc (``mallopt``, ``malloc_trim``), else
    None (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c'))
        libc.gnu_get_libc_version  # glibc's; musl / macOS have no such
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def check_mmap_threshold(nbytes, field=f'{FIELD}.malloc_mmap_threshold'):
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not (
            0 < nbytes <= _MMAP_THRESHOLD_MAX):
        raise ValueError(f'{field}={nbytes!r}: give a number of bytes in '
                         f'1..{_MMAP_THRESHOLD_MAX} (e.g. 1048576) or None')


def set_malloc_mmap_threshold(nbytes, field=f'{FIELD}.malloc_mmap_threshold'):
    """Process-wide: glibc's ``M_MMAP_THRESHOLD`` (``mallopt``) to
    ``nbytes``, the same as ``MALLOC_MMAP_THRESHOLD_=nbytes`` in the
    environment. Every CPU tensor of at least ``nbytes`` then gets its own
    mapping, returned to the system when the tensor is freed, so the process
    holds no freed activation memory (``docs/benchmarks.md``: lower peak
    RSS, page faults on each such allocation). Needs glibc (Linux)."""
    check_mmap_threshold(nbytes, field)
    libc = _glibc()
    if libc is None:
        raise RuntimeError(f'{field} needs glibc (Linux); set it to None')
    if libc.mallopt(_M_MMAP_THRESHOLD, nbytes) != 1:
        raise RuntimeError(f'{field}={nbytes}: glibc refused the value')


class _OnFirstCPUForward:
    """A forward pre-hook that calls :meth:`act` once, at the first forward
    whose first input tensor (or a dict's first tensor) is fp32 on the CPU
    outside autocast: never on a GPU run."""
    done = False

    def act(self):
        raise NotImplementedError

    def __call__(self, module, args):
        if self.done or not args:
            return
        x = args[0]
        if isinstance(x, dict):
            x = next((v for v in x.values() if isinstance(v, torch.Tensor)),
                     None)
        if applies(x):
            self.act()
            self.done = True


class MallocThresholdOnCPU(_OnFirstCPUForward):
    """Sets glibc's threshold at the first fp32 CPU forward."""

    def __init__(self, nbytes):
        self.nbytes = nbytes

    def act(self):
        set_malloc_mmap_threshold(self.nbytes)


class BlockCacheOnCPU(_OnFirstCPUForward):
    """``cpu_block_cache``: builds and installs the cache at the first fp32
    CPU forward (a GPU run that names the speed-up never builds it).

    Once installed, the cached blocks are unmapped whenever the backbone
    switches between a training forward (train mode, gradients on) and an
    inference forward (validation, test): a block goes to a tensor of its
    size or of up to half its size, so most blocks one kind of step frees
    (most of a training step's activations) cannot serve the other's sizes
    and would only add to its peak (with exact sizes only: 5.88 GiB at
    batch 2 kept, 5.29 emptied; docs/benchmarks.md). The first step after a
    switch maps its blocks anew; steps of one kind in a row reuse them."""
    phase = None

    def __init__(self, cache_mib):
        self.cache_mib = check_cache_mib(cache_mib, f'{FIELD}.cpu_block_cache')

    def act(self):
        cpu_block_cache.install(self.cache_mib)

    def __call__(self, module, args):
        super().__call__(module, args)
        if not self.done:
            return
        phase = bool(getattr(module, 'training', False)
                     and torch.is_grad_enabled())
        if self.phase is not None and phase != self.phase:
            cpu_block_cache.empty_cache()
        self.phase = phase


def malloc_trim():
    """glibc's ``malloc_trim(0)``: give the free pages of every arena back
    to the system (a no-op returning False without glibc)."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


class TrimmingRunner:
    """A ``layer_runner`` around another (or the backbone's ``run_layer``)
    for ``speedups=dict(malloc_trim=True)``: in fp32 CPU training,
    :func:`malloc_trim` after the forward of the last ``forward_layers``
    layers (default: the last two thirds, ``depth - depth // 3``) and in
    backward when the output gradients of the last ``backward_layers``
    layers arrive (default: the last third, ``depth // 3``). The peak of a
    training step is at the start of backward, while every activation of the
    forward is still held and the first layers' backward allocates its
    transients; trimming there and through the forward keeps the
    freed-but-held heap memory out of that peak. Trimming after the first
    third's forward as well bought no memory and cost page faults (batch 2:
    5.04-5.08 GB either way, 1.03-1.07x the time; docs/benchmarks.md). Numbers
    are unchanged."""

    def __init__(self, inner=None, backward_layers=None, forward_layers=None):
        self.inner, self.backward_layers = inner, backward_layers
        self.forward_layers = forward_layers

    def trimmed_layers(self, depth):
        """(layers trimmed after their forward, layers trimmed when their
        output gradient arrives) for a backbone of ``depth`` layers."""
        fwd = (depth - depth // 3 if self.forward_layers is None else
               self.forward_layers)
        bwd = depth // 3 if self.backward_layers is None else \
            self.backward_layers
        return (range(depth - min(fwd, depth), depth),
                range(depth - min(bwd, depth), depth))

    def __call__(self, bb, i, batch, time_grids, xs):
        run = self.inner or type(bb).run_layer
        out = run(bb, i, batch, time_grids, xs)
        if bb.training and torch.is_grad_enabled() and all(
                applies(x) for x in out):
            fwd, bwd = self.trimmed_layers(bb.depth)
            if i in fwd:
                malloc_trim()
            if i in bwd and out[0].requires_grad:
                out[0].register_hook(_trim_hook)
        return out

    def __repr__(self):
        return (f'TrimmingRunner({self.inner!r}, backward_layers='
                f'{self.backward_layers}, forward_layers='
                f'{self.forward_layers})')


def _trim_hook(grad):
    malloc_trim()


# --------------------------------------------------------------------------
def apply_speedups(backbone, spec, facts=None):
    """Resolve ``spec`` (:func:`resolve`) and rewrite ``backbone`` in place:
    swap its modules (``ONEDNN_MODULES``, ``FROZEN_MLP_MODULES``), install
    the fusion checkpoint ``layer_runner``, register the allocator hook.
    Returns the :class:`Speedups` (also the backbone's ``speedups``)."""
    sp = resolve(spec, facts)
    if sp['onednn_linear']:
        _swap(backbone, ONEDNN_MODULES)
    kernel = attention_kernel(sp)
    if sp['onednn_linear'] or kernel:
        _swap(backbone, ATTENTION_MODULES)
        for m in backbone.modules():
            if isinstance(m, _OneDNNAttentionMixin):
                m.speedup_linear = bool(sp['onednn_linear'])
                m.speedup_attention = kernel
    if kernel == 'cpu':
        _swap(backbone, {WindowCrossAttention: CPUKernelWindowCrossAttention})
    if sp['frozen_mlp']:
        _swap(backbone, FROZEN_MLP_MODULES)
        for m in backbone.modules():
            if isinstance(m, (FrozenCLIPMlp, FrozenVideoMAEMlp)):
                m.speedup_onednn = bool(sp['onednn_linear'])
                m.speedup_cpu_mlp = bool(sp['cpu_mlp'])
    if sp['checkpoint'] is not None:
        layers = backbone._cp_layers(backbone.with_cp or True,
                                     backbone.depth)
        backbone.layer_runner = FusionCheckpointRunner(sp['checkpoint'],
                                                       layers)
    if sp['malloc_trim']:
        if _glibc() is None:
            raise RuntimeError(f'{FIELD}.malloc_trim needs glibc (Linux); '
                               f'set it to False')
        forward_only = sp['malloc_trim'] == 'forward'
        # 'forward': after every layer's forward, none in backward (what
        # docs/benchmarks.md measured for it)
        backbone.layer_runner = TrimmingRunner(
            backbone.layer_runner,
            backward_layers=0 if forward_only else None,
            forward_layers=backbone.depth if forward_only else None)
    if sp['malloc_mmap_threshold'] is not None:
        backbone.register_forward_pre_hook(
            MallocThresholdOnCPU(sp['malloc_mmap_threshold']))
    if sp['cpu_block_cache'] is not None:
        cpu_block_cache.check_platform()  # at build time, not first forward
        backbone.register_forward_pre_hook(
            BlockCacheOnCPU(sp['cpu_block_cache']))
    return sp


def apply_model_speedups(model, spec, facts=None):
    """:func:`apply_speedups` on every ``CASTBackbone`` inside ``model``
    (built without speed-ups, e.g. by a tool); returns their
    :class:`Speedups`."""
    from mmaction.registry import MODELS  # the class without an import
    backbone = MODELS.get('CASTBackbone')  # circle (backbones import us)
    out = []
    for m in model.modules():
        if isinstance(m, backbone):
            m.speedups = apply_speedups(m, spec, facts)
            out.append(m.speedups)
    return out
