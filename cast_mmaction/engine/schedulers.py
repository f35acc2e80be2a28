"""The learning-rate schedule of the CAST recipes, step for step as the
authors' ``cosine_scheduler`` (KHU-VLL/CAST ``util_tools/utils.py``).

Their schedule is a list with one value per *optimizer step* ``k``
(``W = warmup_epochs x steps_per_epoch``, ``N = epochs x steps_per_epoch``):

* ``k < W``: linear from ``start`` to ``base`` with both ends included
  (``np.linspace(start, base, W)``: step ``W - 1`` is at ``base``);
* ``W <= k < N``: ``min + (base - min) / 2 x (1 + cos(pi (k - W) / (N - W)))``;

and every param group's lr is ``schedule[k] x lr_scale`` (so the floor is
``min x lr_scale`` as well). MMEngine's ``LinearLR`` cannot start at 0 and
reaches the base lr one step later, so the recipes use
:class:`LinearWarmupCosineLR`: it multiplies each group's initial lr by
``schedule[k] / base``, computed in closed form (no drift from chained
factors).

With gradient accumulation (``optim_wrapper.accumulative_counts = a``) the
Runner steps schedulers after every micro-batch, while the authors advance
their schedule once per optimizer step; the scheduler therefore uses
``k = micro_step // a`` and ``steps_per_epoch = epoch_length // a`` (the
authors' ``len(dataset) // (batch x GPUs x update_freq)``), so the optimizer
step taken after micro-batches ``a k .. a k + a - 1`` uses ``schedule[k]``.
``a`` is read from the optim wrapper unless given.

Config (one scheduler for the whole run)::

    param_scheduler = dict(
        type='LinearWarmupCosineLR', warmup_epochs=5, start_factor=0.0,
        eta_min_ratio=1e-3, by_epoch=True, begin=0, end=50,
        convert_to_iter_based=True)
"""
import math

from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

from mmaction.registry import PARAM_SCHEDULERS


def warmup_cosine_factor(k, warmup, total, start_factor, eta_min_ratio):
    """``schedule[k] / base`` of the authors' ``cosine_scheduler`` for
    optimizer step ``k`` (``warmup`` and ``total`` in optimizer steps)."""
    if k < warmup:
        if warmup == 1:
            return start_factor  # np.linspace(a, b, 1) == [a]
        return start_factor + (1.0 - start_factor) * k / (warmup - 1)
    n = total - warmup
    if n <= 0:
        return 1.0
    k = min(k, total - 1)  # after the last step: hold the last value
    return eta_min_ratio + 0.5 * (1.0 - eta_min_ratio) * (
        1.0 + math.cos(math.pi * (k - warmup) / n))


@PARAM_SCHEDULERS.register_module()
class LinearWarmupCosineLR(_ParamScheduler):
    """Linear warm-up from ``start_factor x lr`` (both ends included), then a
    cosine to ``eta_min_ratio x lr``, per param group, as the authors'
    schedule (module docstring).

    Args:
        optimizer: the optimizer or optim wrapper.
        warmup_iters: warm-up length in optimizer steps (iteration-based
            form); with ``convert_to_iter_based=True`` give ``warmup_epochs``
            instead.
        warmup_epochs: warm-up length in epochs (epoch-based configs).
        start_factor: first warm-up lr / lr (the authors: 0).
        eta_min_ratio: final lr / lr (the authors: min_lr / lr).
        accumulative_counts: micro-batches per optimizer step; default: the
            optim wrapper's ``accumulative_counts`` (1 for a bare optimizer).
        begin, end: micro-steps (iterations) the schedule spans; ``end`` is
            required.
        by_epoch: whether ``begin``/``end``/``warmup_epochs`` count epochs;
            use ``convert_to_iter_based=True`` so the lr changes every step.
    """

    def __init__(self,
                 optimizer,
                 warmup_iters=None,
                 warmup_epochs=None,
                 start_factor=0.0,
                 eta_min_ratio=0.0,
                 accumulative_counts=None,
                 begin=0,
                 end=INF,
                 last_step=-1,
                 by_epoch=False,
                 verbose=False,
                 _epoch_length=None):
        if end == INF:
            raise ValueError('LinearWarmupCosineLR needs `end` (the last '
                             'epoch or iteration of the schedule)')
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f'LinearWarmupCosineLR: start_factor='
                             f'{start_factor} must be in [0, 1]')
        if not 0.0 <= eta_min_ratio <= 1.0:
            raise ValueError(f'LinearWarmupCosineLR: eta_min_ratio='
                             f'{eta_min_ratio} must be in [0, 1]')
        if (warmup_iters is None) == (warmup_epochs is None):
            raise ValueError('LinearWarmupCosineLR: give exactly one of '
                             'warmup_iters (iteration-based) and '
                             'warmup_epochs (epoch-based)')
        if accumulative_counts is None:
            accumulative_counts = getattr(optimizer, '_accumulative_counts', 1)
        accum = int(accumulative_counts)
        if accum < 1:
            raise ValueError(f'LinearWarmupCosineLR: accumulative_counts='
                             f'{accumulative_counts} must be >= 1')
        self.accumulative_counts = accum
        span = end - begin
        if by_epoch:
            # one step per epoch: the warm-up and cosine run over epochs
            self.warmup = int(warmup_epochs if warmup_epochs is not None
                              else warmup_iters)
            self.total = int(span)
            self.accumulative_counts = accum = 1
        elif _epoch_length is not None:
            per_epoch = _epoch_length // accum
            if per_epoch < 1:
                raise ValueError(
                    f'LinearWarmupCosineLR: an epoch of {_epoch_length} '
                    f'iterations holds no optimizer step of '
                    f'{accum} accumulated iterations')
            self.warmup = int(round(warmup_epochs * per_epoch)) if (
                warmup_epochs is not None) else int(warmup_iters)
            self.total = int(round(span / _epoch_length * per_epoch))
        else:
            if warmup_iters is None:
                raise ValueError('LinearWarmupCosineLR: an iteration-based '
                                 'schedule takes warmup_iters (or set '
                                 'by_epoch=True, convert_to_iter_based=True '
                                 'with warmup_epochs)')
            self.warmup = int(warmup_iters)
            self.total = int(span) // accum
        if not 0 <= self.warmup <= self.total:
            raise ValueError(f'LinearWarmupCosineLR: the warm-up '
                             f'({self.warmup} steps) must fit in the schedule '
                             f'({self.total} steps)')
        self.start_factor = float(start_factor)
        self.eta_min_ratio = float(eta_min_ratio)
        super().__init__(optimizer, 'lr', begin=begin, end=end,
                         last_step=last_step, by_epoch=by_epoch,
                         verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args, begin=0, end=INF, by_epoch=True,
                              epoch_length=None, **kwargs):
        """The iteration-based scheduler of an epoch-based config."""
        if not by_epoch:
            raise ValueError('convert_to_iter_based needs by_epoch=True')
        if not epoch_length or epoch_length <= 0:
            raise ValueError(f'epoch_length must be a positive integer, got '
                             f'{epoch_length}')
        if end == INF:
            raise ValueError('LinearWarmupCosineLR needs `end` (epochs)')
        return cls(*args, begin=int(begin * epoch_length),
                   end=int(end * epoch_length), by_epoch=False,
                   _epoch_length=int(epoch_length), **kwargs)

    def factor(self, step):
        """lr / initial lr at scheduler step ``step`` (0 = first)."""
        k = step // self.accumulative_counts
        return warmup_cosine_factor(k, self.warmup, self.total,
                                    self.start_factor, self.eta_min_ratio)

    def _get_value(self):
        f = self.factor(self.last_step)
        return [group[f'initial_{self.param_name}'] * f
                for group in self.optimizer.param_groups]
