"""Selective activation checkpointing: recompute what is cheap, keep what is
expensive.

Full per-layer checkpointing (``with_cp``) keeps only a layer's input and
recomputes its whole forward in backward: the least memory, one more forward
of the layer in time. Selective checkpointing runs the same
``torch.utils.checkpoint`` region but, in the forward, stores the outputs of
the operators a *policy* names; the recompute in backward reuses them instead
of running those operators again. Everything else of the layer (LayerNorms,
GELU / QuickGELU, residual adds, the adapters' and B-CAST's narrow matmuls,
the matmuls the policy does not keep) is recomputed. Gradients are those of
the plain model: the recompute runs the same operators on the same inputs
(the RNG state of dropout / drop path is restored by ``checkpoint``).

Policies (``backbone.checkpoint_policy``; the layers are those of
``with_cp``, every layer when ``with_cp`` is False). These are plain
``torch.utils.checkpoint`` around the reference layer and work on every
device:

- ``'full'``: keep nothing (``with_cp`` alone).
- ``'attention'``: keep the outputs of fused attention
  (``scaled_dot_product_attention``: output and log-sum-exp); attention
  over 1568 tokens costs ~4x its FLOPs per second of a matmul on CPU and its
  output is one token-width tensor.
- ``'selective'``: attention, plus the outputs of the matmuls that widen
  the token width exactly 3x with a reduction dimension of at least
  ``min_k`` (512): the experts' q/k/v projections, which attention's
  backward needs. The experts' MLP hidden activation (4x width, the largest
  tensor of a layer) is recomputed: its matmul is ~23% of a layer's FLOPs
  but its output ~40% of the layer's memory.
- ``'narrow'``: attention, plus the outputs of the matmuls that do not widen
  (``m <= k``, ``k >= min_k``): the experts' attention projection and MLP
  output (fc2: 4x the FLOPs per byte of fc1), the adapters' and B-CAST's
  down projections; q/k/v and the MLP hidden activation are recomputed.
- a :class:`SavePolicy` for other choices (e.g. ``widen=(3, 4)`` keeps the
  MLP hidden activation as well).

The policies above wrap a *whole layer*: its recompute replays the layer's
forward in order, the experts' big frozen matmuls included, up to the last
tensor backward needs (~1.2-1.3x the step's time). :class:`FusionPolicy`
(the CPU speed-up ``backbone.speedups=dict(checkpoint='fusion')``, placed by
``models/speedups.py``) instead puts small checkpoint regions *inside* the
layer, around the cheap trainable fusion work only, and keeps every tensor
the frozen experts save:

- ``'fusion'``: (1) each B-CA link after its down projections (LayerNorm,
  position / time additions, q / kv / proj at the bottleneck width, GELU,
  up projection are recomputed from the kept down outputs; the window
  attention's output and log-sum-exp, half a token-width per receiving
  stream, are kept: recomputing attention cost more time than the rest of
  the link, ``link_attention``); (2) each attention-branch adapter (recomputed from its input,
  the expert's attention output); (3) each MLP-branch adapter together with
  the expert's second LayerNorm (``x -> (LN2(x), adapter(LN2(x)))``: the
  LayerNorm output, which only the adapter keeps, is recomputed from the
  LayerNorm input that the frozen block keeps anyway). No expert matmul is
  ever rerun.
- ``'fusion_qkv'``: ``'fusion'`` plus the experts' first LayerNorm and
  q / k / v projection: each stream's attention branch, its adapter, the
  residual add and the down projection of the layer's first link are one
  region that keeps fused attention's outputs, the attention projection's
  output and the down projection's output and recomputes LN1, the q / k / v
  matmul (~7% of the training step's FLOPs; q / k / v are 3 token-widths
  per layer and stream), the adapter and the residual add (whose output,
  one token-width, only the down projection keeps).

A :class:`FusionPolicy` also chooses the parts one by one (``links``,
``adapters``, ``qkv``).
"""
import functools

import torch
import torch.utils.checkpoint as cp

from . import cpu_attention, onednn_attention  # noqa: F401  (their operators)

POLICIES = ('full', 'attention', 'selective', 'narrow')
# regions inside a layer: the CPU speed-up ``backbone.speedups.checkpoint``
# (models/speedups.py), not a ``checkpoint_policy``
FUSION_POLICIES = ('fusion', 'fusion_qkv')


def _ops(names, namespace='aten'):
    ns = getattr(torch.ops, namespace, None)
    out = []
    for n in names:
        packet = getattr(ns, n, None) if ns is not None else None
        if packet is not None:
            out.append(packet)
    return out


_ATTENTION = _ops(['_scaled_dot_product_flash_attention_for_cpu',
                   '_scaled_dot_product_flash_attention',
                   '_scaled_dot_product_efficient_attention',
                   '_scaled_dot_product_cudnn_attention',
                   '_flash_attention_forward', '_efficient_attention_forward'])
# the CPU speed-ups onednn_attention's and cpu_attention's forwards: kept
# like the fused kernels
_ATTENTION += _ops(['onednn_sdpa', 'cpu_sdpa'], 'cast_mmaction')
_MM = _ops(['mm', 'addmm'])
_ONEDNN_MM = _ops(['_linear_pointwise'], 'mkldnn')


def _packet(op):
    return getattr(op, 'overloadpacket', op)


class SavePolicy:
    """Which operator outputs a selectively checkpointed region keeps.

    Args:
        attention: keep fused attention's outputs.
        widen: keep a 2-D matmul output (n, m) of an (n, k) input when
            ``m == w * k`` for a ``w`` in ``widen`` and ``k >= min_k``
            (empty: keep no matmul).
        narrow: also keep matmul outputs with ``m <= k`` and ``k >= min_k``.
        min_k: see ``widen``.
    """

    def __init__(self, attention=True, widen=(3, ), min_k=512, narrow=False,
                 weights=()):
        self.attention = attention
        self.narrow = narrow
        self.widen = tuple(widen)
        self.min_k = min_k
        # also keep the products with these weights (by storage)
        self.weights = {w.untyped_storage().data_ptr() for w in weights}

    def _keep_matmul(self, op, args):
        if not self.widen and not self.narrow and not self.weights:
            return False
        p = _packet(op)
        if p in _ONEDNN_MM:
            a, w = args[0], args[1]  # x (n, k), weight (m, k)
            k, m = a.shape[-1], w.shape[0]
        elif p in _MM:
            a, w = (args[1], args[2]) if p is torch.ops.aten.addmm else (
                args[0], args[1])  # w: the weight transposed, (k, m)
            k, m = a.shape[-1], w.shape[-1]
        else:
            return False
        if self.weights and isinstance(w, torch.Tensor) and (
                w.untyped_storage().data_ptr() in self.weights):
            return True
        return k >= self.min_k and (any(m == w * k for w in self.widen)
                                    or (self.narrow and m <= k))

    def __call__(self, ctx, op, *args, **kwargs):
        p = _packet(op)
        keep = (self.attention and p in _ATTENTION) or self._keep_matmul(
            op, args)
        return (cp.CheckpointPolicy.MUST_SAVE if keep else
                cp.CheckpointPolicy.PREFER_RECOMPUTE)

    def __repr__(self):
        return (f'SavePolicy(attention={self.attention}, widen='
                f'{self.widen}, min_k={self.min_k}, narrow={self.narrow}, '
                f'weights={len(self.weights)})')


class FusionPolicy:
    """Checkpoint regions inside each selected layer around the trainable
    fusion work (see the module docstring), instead of one region around the
    layer.

    Args:
        links: recompute each B-CA link after its down projections.
        adapters: recompute the adapters (the MLP-branch one together with
            the expert's second LayerNorm).
        qkv: recompute each expert's first LayerNorm and q / k / v
            projection (attention and its projection's output are kept).
        link_attention: in each link's region keep the window attention's
            outputs (output and log-sum-exp, at the bottleneck width) instead
            of recomputing it.
    """

    def __init__(self, links=True, adapters=True, qkv=False,
                 link_attention=False):
        self.links, self.adapters, self.qkv = bool(links), bool(adapters), \
            bool(qkv)
        self.link_attention = bool(link_attention)

    def link_policy(self):
        """The policy of a link's region: None (recompute everything after
        the down projections) or, with ``link_attention``, keep attention."""
        return SavePolicy(attention=True, widen=()) if (
            self.link_attention) else None

    def attention_policy(self, down=None):
        """The policy of a stream's attention region (attention branch,
        adapter, residual add and, given, the layer's first link's down
        projection ``down`` of that stream): keep fused attention's outputs,
        the matmuls that keep the width (in that region only the expert's
        attention projection, at any width) and ``down``'s output; LN1,
        q / k / v, the adapter and the residual add (the down projection's
        input) are recomputed."""
        return SavePolicy(attention=True, widen=(1, ), min_k=1, weights=(
            () if down is None else (down.weight, )))

    def __repr__(self):
        return (f'FusionPolicy(links={self.links}, adapters='
                f'{self.adapters}, qkv={self.qkv}, link_attention='
                f'{self.link_attention})')


def make_fusion_policy(policy, field='backbone.speedups.checkpoint'):
    """A :class:`FusionPolicy` for ``'fusion'`` / ``'fusion_qkv'`` (or the
    policy itself)."""
    if isinstance(policy, FusionPolicy):
        return policy
    if policy == 'fusion':
        return FusionPolicy(link_attention=True)
    if policy == 'fusion_qkv':
        return FusionPolicy(qkv=True, link_attention=True)
    raise ValueError(f'{field}={policy!r}: use one of {FUSION_POLICIES}, '
                     f'a FusionPolicy or None')


def make_policy(policy):
    """A :class:`SavePolicy` for a policy name (or the policy itself); None
    for ``'full'`` / None (plain checkpointing)."""
    if policy is None or policy == 'full':
        return None
    if isinstance(policy, SavePolicy):
        return policy
    if isinstance(policy, FusionPolicy) or policy in FUSION_POLICIES:
        raise ValueError(
            f'backbone.checkpoint_policy={policy!r}: the fusion checkpoint '
            f'regions are a CPU speed-up; set backbone.speedups='
            f"dict(checkpoint={policy!r}) (models/speedups.py) and leave "
            f'checkpoint_policy None')
    if policy == 'attention':
        return SavePolicy(attention=True, widen=())
    if policy == 'selective':
        return SavePolicy()
    if policy == 'narrow':
        return SavePolicy(widen=(), narrow=True)
    raise ValueError(f'backbone.checkpoint_policy={policy!r}: use one of '
                     f'{POLICIES}, None or a SavePolicy')


def checkpoint(fn, *args, policy=None):
    """``fn(*args)`` as a non-reentrant checkpointed region; with a
    :class:`SavePolicy` (or its name) the region keeps the outputs the policy
    names and recomputes the rest in backward."""
    if isinstance(policy, FusionPolicy):
        raise TypeError('a FusionPolicy places its own regions inside a '
                        'layer (models/speedups.py); it does not wrap one '
                        'function')
    if policy is not None and not isinstance(policy, SavePolicy):
        policy = make_policy(policy)
    if policy is None:
        return cp.checkpoint(fn, *args, use_reentrant=False)
    context_fn = functools.partial(cp.create_selective_checkpoint_contexts,
                                   policy)
    return cp.checkpoint(fn, *args, use_reentrant=False,
                         context_fn=context_fn)
