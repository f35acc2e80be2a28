"""Optimiser wrappers on which a non-finite loss never reaches the weights.

Config (the recipes)::

    optim_wrapper = dict(type='GuardedAmpOptimWrapper',  # or
                         # 'GuardedOptimWrapper' (fp32)
                         nonfinite='skip',  # or 'stop'
                         max_nonfinite_in_a_row=25, ...)

They are MMEngine's ``OptimWrapper`` / ``AmpOptimWrapper`` (every argument
of those applies) with :class:`NonFiniteGuard`. MMAction2's
``tools/train.py --amp`` accepts only ``OptimWrapper`` and
``AmpOptimWrapper``; with these wrappers name the type instead
(``--cfg-options optim_wrapper.type=GuardedAmpOptimWrapper``); this
package's ``tools/train.py --amp`` does that.
"""
import logging

import torch
from mmengine.logging import MessageHub, print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmaction.registry import OPTIM_WRAPPERS

__all__ = ['NonFiniteGuard', 'GuardedOptimWrapper', 'GuardedAmpOptimWrapper',
           'NONFINITE_POLICIES']

NONFINITE_POLICIES = ('skip', 'stop')


class NonFiniteGuard:
    """Mixin for MMEngine optimiser wrappers: a non-finite loss never reaches
    the weights.

    ``nonfinite='skip'``: the step is dropped (no backward, no optimiser
    step, the gradients accumulated in the current accumulation window are
    discarded; with AMP the loss scale is multiplied by the scaler's back-off
    factor). In fp32 a finite loss with non-finite gradients is treated alike
    (AMP's scaler already skips those). ``'stop'``:
    :class:`FloatingPointError` before anything is updated. Each event is
    logged with the iteration and epoch, and the number of skipped steps is
    ``nonfinite_skips`` in the train log lines; more than
    ``max_nonfinite_in_a_row`` skipped steps in a row stop the run. In a
    distributed run (DDP, FSDP2) the ranks agree: a non-finite loss or
    gradient shard on any rank skips the step on all of them.

    Args:
        nonfinite (str): ``'skip'`` the update or ``'stop'`` the run.
        max_nonfinite_in_a_row (int): skipped steps in a row that stop it.
        check_grads (bool): in fp32, also skip steps whose gradients are
            non-finite although the loss is finite.
        *args, **kwargs: the wrapped class's arguments.
    """

    def __init__(self, *args, nonfinite='skip', max_nonfinite_in_a_row=25,
                 check_grads=True, **kwargs):
        super().__init__(*args, **kwargs)
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"optim_wrapper.nonfinite must be 'skip' or "
                             f"'stop', got {nonfinite!r}")
        if int(max_nonfinite_in_a_row) < 1:
            raise ValueError(f'optim_wrapper.max_nonfinite_in_a_row must be '
                             f'>= 1, got {max_nonfinite_in_a_row}')
        self.nonfinite = nonfinite
        self.max_nonfinite_in_a_row = int(max_nonfinite_in_a_row)
        self.check_grads = bool(check_grads)
        self.nonfinite_skips = 0
        self._in_a_row = 0
        self._poisoned = False

    def _is_amp(self):
        scaler = getattr(self, 'loss_scaler', None)
        return scaler is not None and (
            not hasattr(scaler, 'is_enabled') or scaler.is_enabled())

    def _event(self, what, value):
        hub = MessageHub.get_current_instance()
        it, ep = hub.get_info('iter'), hub.get_info('epoch')
        where = (f'iteration {it + 1}' if it is not None else 'a step') + (
            f' (epoch {ep + 1})' if ep is not None else '')
        msg = f'non-finite {what} ({value}) at {where}'
        if self.nonfinite == 'stop':
            raise FloatingPointError(
                f"{msg}: training stopped before the update (optim_wrapper."
                f"nonfinite='stop'); the weights are those of the previous "
                f'step. Resume from the last checkpoint (e.g. with a lower '
                f"lr), or set optim_wrapper.nonfinite='skip'.")
        self._in_a_row += 1
        self.nonfinite_skips += 1
        if self._in_a_row > self.max_nonfinite_in_a_row:
            raise FloatingPointError(
                f'{msg}: {self._in_a_row} steps in a row had a non-finite '
                f'loss or gradient; the run diverged (the weights are those '
                f'of the last finite step). Lower the lr or check the data; '
                f'limit: optim_wrapper.max_nonfinite_in_a_row='
                f'{self.max_nonfinite_in_a_row}.')
        extra = ''
        if self._is_amp():
            scaler = self.loss_scaler
            if getattr(scaler, '_scale', None) is None:
                scaler.scale(torch.zeros((), device=self._device()))
            new = scaler.get_scale() * scaler.get_backoff_factor()
            scaler.update(new_scale=float(new))
            extra = f', loss scale backed off to {new:g}'
        print_log(f'{msg}: update skipped ({self.nonfinite_skips} skipped so '
                  f'far{extra})', logger='current', level=logging.WARNING)

    def _device(self):
        for group in self.optimizer.param_groups:
            for p in group['params']:
                return p.device
        return torch.device('cpu')

    def update_params(self, loss, step_kwargs=None, zero_kwargs=None):
        value = loss.detach()
        if _on_every_rank(bool(torch.isfinite(value).all()), value.device):
            self._in_a_row = 0
            result = super().update_params(loss, step_kwargs, zero_kwargs)
        else:
            self._event('loss', f'{value.float().mean().item()}')
            # as backward() would, so gradient accumulation keeps its cadence
            self._inner_count += 1
            self.zero_grad(**(zero_kwargs or {}))
            self._poisoned = not self.should_update()
            result = None
        if self.nonfinite_skips:
            MessageHub.get_current_instance().update_scalar(
                'train/nonfinite_skips', self.nonfinite_skips)
        return result

    def step(self, **kwargs):
        if self._poisoned:
            # a non-finite loss earlier in this accumulation window
            self._poisoned = False
            return
        if self.check_grads and not self._is_amp():
            # FSDP2 (DTensor) gradients: this rank's shards; the verdict is
            # agreed over the ranks below
            grads = [
                getattr(p.grad, '_local_tensor', p.grad)
                for group in self.optimizer.param_groups
                for p in group['params'] if p.grad is not None
            ]
            sharded = any(
                hasattr(p.grad, '_local_tensor')
                for group in self.optimizer.param_groups
                for p in group['params'] if p.grad is not None)
            if grads:
                norms = torch.stack(torch._foreach_norm(grads))
                finite = bool(torch.isfinite(norms).all())
                if sharded:
                    finite = _on_every_rank(finite, norms.device)
                if not finite:
                    self._event('gradient', 'norm ' + str(
                        norms.float().sum().item()))
                    return  # update_params zeroes the gradients next
        return super().step(**kwargs)


def _on_every_rank(ok, device):
    """``ok`` and-ed over the ranks of a distributed run (one tiny
    all-reduce), so that every rank skips the same steps: a rank whose own
    loss (or gradient shard) is non-finite would otherwise skip the backward
    the others run, and their collectives would wait forever."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or \
            dist.get_world_size() < 2:
        return ok
    flag = torch.tensor([1.0 if ok else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(NonFiniteGuard, OptimWrapper):
    """``OptimWrapper`` with :class:`NonFiniteGuard` (``nonfinite``,
    ``max_nonfinite_in_a_row``, ``check_grads`` plus ``OptimWrapper``'s
    arguments)."""


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(NonFiniteGuard, AmpOptimWrapper):
    """``AmpOptimWrapper`` with :class:`NonFiniteGuard` (``nonfinite``,
    ``max_nonfinite_in_a_row``, ``check_grads`` plus ``AmpOptimWrapper``'s
    arguments)."""


#: the mixed-precision wrapper type of each full-precision one (``--amp``)
AMP_OF = dict(OptimWrapper='AmpOptimWrapper',
              GuardedOptimWrapper='GuardedAmpOptimWrapper')
#: and back (MMEngine's ``AmpOptimWrapper`` refuses to build without an
#: accelerator)
FULL_PRECISION_OF = {amp: full for full, amp in AMP_OF.items()}


def without_amp(optim_wrapper):
    """A copy of an ``optim_wrapper`` config dict whose mixed-precision
    wrapper type is replaced by its full-precision one (the AMP-only keys
    dropped); the param groups, the optimizer and the accumulation are
    unchanged. Used to run the recipes' training step on a CPU."""
    import copy
    ow = copy.deepcopy(dict(optim_wrapper))
    if ow.get('type') in FULL_PRECISION_OF:
        ow['type'] = FULL_PRECISION_OF[ow['type']]
        for k in ('loss_scale', 'dtype', 'use_fsdp'):
            ow.pop(k, None)
    return ow
