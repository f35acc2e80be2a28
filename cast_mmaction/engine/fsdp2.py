"""``FSDP2Strategy``: fully sharded data parallel with PyTorch's FSDP2
(``torch.distributed.fsdp.fully_shard``, DTensor parameters) for MMEngine's
``FlexibleRunner``.

Config (``configs/_base_/strategies/fsdp.py``)::

    runner_type = 'FlexibleRunner'
    strategy = dict(type='FSDP2Strategy',
                    mixed_precision=None,   # GPU: dict(param_dtype='bf16')
                    cpu_offload=False)      # GPU: True keeps shards in RAM
    env_cfg = dict(dist_cfg=dict(backend='nccl'))   # 'gloo' on CPUs

What it does, in :meth:`FSDP2Strategy._wrap_model`:

* ``fully_shard`` on every module whose class is one of
  :func:`~cast_mmaction.engine.strategies.fsdp_units` (what the experts,
  links and heads declare), innermost first, frozen experts included, then
  on the whole recognizer (the root unit: embeddings, norms, adapters,
  head). Each parameter becomes a DTensor sharded on dim 0 over the ranks;
  a unit's parameters are gathered for its forward / backward only.
* optional ``MixedPrecisionPolicy`` (``mixed_precision=dict(param_dtype=
  'bf16', reduce_dtype='fp32')``) and ``CPUOffloadPolicy``
  (``cpu_offload=True``), both for GPUs (refused on a CPU device).

The optimizer is built after sharding (MMEngine's ``prepare`` order), so
``CASTLayerDecayOptimWrapperConstructor`` sees the DTensor parameters under
their usual names: per-parameter lr groups and layer decay are unchanged.
Gradient clipping (``clip_grad``) works on the DTensor gradients (the norm
is reduced over the ranks). Checkpoints are sharded folders written with
``torch.distributed.checkpoint``
(:mod:`~cast_mmaction.engine.sharded_checkpoint`): every rank writes its
own shard, resumable on any world size, consolidated into one ordinary file
with ``tools/convert/consolidate_checkpoint.py``.

Launched like MMEngine's own strategies: ``tools/dist_train.sh CONFIG N``
(torchrun), or ``tools/train.py CONFIG`` for one process (a one-rank
process group is created then).
"""
import os

import torch
import torch.distributed as dist
from mmengine._strategy import DDPStrategy
from mmengine.device import get_device
from mmengine.registry import STRATEGIES

from . import sharded_checkpoint as sc

__all__ = ['FSDP2Strategy', 'shard_model', 'local_shard_bytes']

DTYPES = dict(bf16=torch.bfloat16, bfloat16=torch.bfloat16,
              fp16=torch.float16, float16=torch.float16, half=torch.float16,
              fp32=torch.float32, float32=torch.float32)


def _dtype(value, field):
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        raise ValueError(f'strategy.mixed_precision.{field} must be one of '
                         f'{sorted(DTYPES)}, got {value!r}')
    return DTYPES[value]


def _mp_policy(mixed_precision):
    from torch.distributed.fsdp import MixedPrecisionPolicy
    if not mixed_precision:
        return MixedPrecisionPolicy()
    known = ('param_dtype', 'reduce_dtype', 'output_dtype',
             'cast_forward_inputs')
    unknown = sorted(set(mixed_precision) - set(known))
    if unknown:
        raise ValueError(f'strategy.mixed_precision: unknown field(s) '
                         f'{unknown}; known: {list(known)}')
    kw = {k: _dtype(mixed_precision.get(k), k) for k in known[:3]}
    return MixedPrecisionPolicy(
        **kw, cast_forward_inputs=mixed_precision.get('cast_forward_inputs',
                                                       True))


def shard_model(model, mesh, units=None, mp_policy=None, offload_policy=None,
                reshard_after_forward=True):
    """``fully_shard`` every ``units`` module (default:
    :func:`~cast_mmaction.engine.strategies.fsdp_units`), innermost first,
    then ``model`` itself. Returns the number of units (root excluded)."""
    from torch.distributed.fsdp import OffloadPolicy, fully_shard

    from .strategies import fsdp_units
    units = tuple(units) if units is not None else fsdp_units()
    kw = dict(mesh=mesh, reshard_after_forward=reshard_after_forward)
    if mp_policy is not None:
        kw['mp_policy'] = mp_policy
    kw['offload_policy'] = offload_policy or OffloadPolicy()
    # reversed pre-order: every module comes after the modules it contains
    wrapped = 0
    for module in reversed(list(model.modules())):
        if module is not model and isinstance(module, units) and any(
                True for _ in module.parameters()):
            fully_shard(module, **kw)
            wrapped += 1
    fully_shard(model, **kw)
    return wrapped


def local_shard_bytes(model, optimizer=None, trainable_only=True):
    """Bytes of this rank's local shards: the (trainable) parameters and,
    with ``optimizer``, its state tensors. A DTensor counts its local shard;
    a plain tensor counts whole."""
    def nbytes(t):
        t = getattr(t, '_local_tensor', t)
        return t.numel() * t.element_size()

    params = sum(nbytes(p) for p in model.parameters()
                 if p.requires_grad or not trainable_only)
    state = 0
    if optimizer is not None:
        for s in optimizer.state.values():
            state += sum(nbytes(v) for v in s.values()
                         if isinstance(v, torch.Tensor))
    return dict(params=params, optimizer_state=state)


@STRATEGIES.register_module()
class FSDP2Strategy(DDPStrategy):
    """FSDP2 (``fully_shard``) for ``FlexibleRunner`` (module docstring).

    Args:
        mixed_precision (dict, optional): ``MixedPrecisionPolicy`` fields:
            ``param_dtype`` / ``reduce_dtype`` / ``output_dtype`` as
            ``'bf16'``, ``'fp16'`` or ``'fp32'``, ``cast_forward_inputs``.
            GPUs only. None: fp32.
        cpu_offload (bool): ``CPUOffloadPolicy`` (sharded parameters,
            gradients and optimizer step on the CPU). GPUs only.
        reshard_after_forward (bool): free gathered weights after each
            unit's forward (True: less memory, one more all-gather in
            backward).
        **kwargs: :class:`DDPStrategy` / ``BaseStrategy`` arguments.
    """

    def __init__(self, *, mixed_precision=None, cpu_offload=False,
                 reshard_after_forward=True, model_wrapper=None, **kwargs):
        if model_wrapper is not None:
            raise ValueError(
                "FSDP2Strategy takes no model_wrapper (fully_shard shards the "
                "model in place); remove strategy.model_wrapper, or use "
                "type='FSDPStrategy' (MMEngine's FSDP1, GPUs only)")
        super().__init__(**kwargs)
        self.mixed_precision = dict(mixed_precision or {})
        self.mp_policy = _mp_policy(self.mixed_precision)
        self.cpu_offload = bool(cpu_offload)
        self.reshard_after_forward = bool(reshard_after_forward)

    # ------------------------------------------------------------ wrap ---
    def _ensure_process_group(self):
        """One process without a launcher (``tools/train.py``): a one-rank
        gloo group, so that the same config runs sharded on any world
        size, 1 included."""
        if dist.is_available() and dist.is_initialized():
            return
        store = dist.HashStore()
        dist.init_process_group('gloo', store=store, rank=0, world_size=1)

    def _wrap_model(self, model):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule
        if isinstance(model, FSDPModule):
            return model
        self._ensure_process_group()
        device = torch.device(get_device())
        if device.type == 'cuda':
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
            device = torch.device('cuda', torch.cuda.current_device())
        if device.type == 'cpu':
            for field, on in (('mixed_precision', bool(self.mixed_precision)),
                              ('cpu_offload', self.cpu_offload)):
                if on:
                    raise ValueError(
                        f'strategy.{field} is for GPUs; this process runs on '
                        f'the CPU. Remove strategy.{field} (CPU runs are '
                        f'fp32, and their shards are in RAM already)')
        model = self.convert_model(model.to(device))
        mesh = init_device_mesh(device.type, (dist.get_world_size(), ))
        units = shard_model(
            model, mesh, mp_policy=self.mp_policy,
            offload_policy=CPUOffloadPolicy() if self.cpu_offload else None,
            reshard_after_forward=self.reshard_after_forward)
        self.logger.info(
            f'FSDP2: {units} units + root sharded over '
            f'{dist.get_world_size()} rank(s) ({device.type})')
        return model

    def convert_model(self, model):
        return model  # no SyncBN conversion: the recognizers have none

    # ----------------------------------------------------- checkpoints ---
    def _optimizer(self):
        ow = getattr(self, 'optim_wrapper', None)
        return getattr(ow, 'optimizer', None)

    def save_checkpoint(self, filename, *, save_optimizer=True,
                        save_param_scheduler=True, extra_ckpt=None,
                        callback=None):
        """A sharded checkpoint folder ``filename``
        (:func:`~cast_mmaction.engine.sharded_checkpoint.save`); every rank
        takes part."""
        import time

        import mmengine
        from mmengine.utils import get_git_hash
        extra = dict(extra_ckpt or {})
        extra.setdefault('meta', {})
        extra['meta'].update(
            seed=self.seed,
            time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
            mmengine=mmengine.__version__ + get_git_hash())
        if save_param_scheduler and hasattr(self, 'param_schedulers'):
            extra['param_schedulers'] = self.scheduler_state_dict()
        if callback is not None:
            callback(extra)
        extra.pop('state_dict', None)
        extra.pop('optimizer', None)
        sc.save(filename, self.model,
                self._optimizer() if save_optimizer else None, extra)

    def load_checkpoint(self, filename, *, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')], callback=None):
        """Load the model weights: a sharded folder (any world size) or an
        ordinary ``.pth`` / ``.safetensors`` file (every rank reads it and
        keeps its shard)."""
        if sc.is_sharded(filename):
            checkpoint = sc.load_extras(filename)
            checkpoint['state_dict'] = sc.shape_state_dict(filename)
            if callback is not None:
                callback(checkpoint)
            sc.load(filename, self.model, None)
            return checkpoint
        from mmengine.runner.checkpoint import _load_checkpoint
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, set_model_state_dict)

        from ..checkpoints.state_dict import strip_prefixes
        checkpoint = _load_checkpoint(filename, map_location='cpu')
        if callback is not None:
            callback(checkpoint)
        state = strip_prefixes(checkpoint.pop('state_dict', checkpoint))
        set_model_state_dict(self.model, state, options=StateDictOptions(
            full_state_dict=True, strict=strict))
        return checkpoint

    def resume(self, filename, *, resume_optimizer=True,
               resume_param_scheduler=True, map_location='default',
               callback=None):
        """Resume from a sharded folder written on any number of ranks
        (DCP reshards the weights and optimizer states)."""
        if not sc.is_sharded(filename):
            raise ValueError(
                f'FSDP2Strategy resumes from sharded checkpoint folders '
                f'(written by FSDP2Strategy); {filename} is a single file. '
                f'Start from its weights with load_from={filename!r} (and no '
                f'--resume)')
        self.logger.info(f'Resume sharded checkpoint from {filename}')
        checkpoint = sc.load_extras(filename)
        checkpoint['state_dict'] = sc.shape_state_dict(filename)
        if callback is not None:
            callback(checkpoint)
        sc.load(filename, self.model,
                self._optimizer() if resume_optimizer else None,
                param_groups=checkpoint.get('param_groups'))
        if resume_param_scheduler and hasattr(self, 'param_schedulers'):
            self.load_scheduler_state_dict(checkpoint.pop('param_schedulers'))
        resumed_seed = checkpoint['meta'].get('seed', None)
        current_seed = self._randomness.get('seed')
        if resumed_seed is not None and resumed_seed != current_seed:
            self._randomness.update(seed=resumed_seed)
            self._set_randomness(**self._randomness)
        ow = getattr(self, 'optim_wrapper', None)
        if getattr(ow, '_accumulative_counts', 1) > 1:
            ow.initialize_count_status(self.model, checkpoint['meta']['iter'],
                                       self.dispatch_kwargs['max_iters'])
        return checkpoint
