"""Reliability of runs: bad samples, exact resumption, non-finite losses,
start-up checks of the model and of checkpoints.

Everything here is an MMEngine hook, optimiser wrapper or metric, registered
in MMAction2's registries. :func:`apply_reliability` wires them into a
config (``tools/train.py`` / ``tools/test.py`` do it by default)::

    from cast_mmaction.engine.reliability import apply_reliability
    cfg = apply_reliability(Config.fromfile('configs/cast_ssv2.py'), 'train')
    Runner.from_cfg(cfg).train()

Settings come from an optional ``reliability = dict(...)`` in the config
(see :data:`DEFAULTS`), e.g.
``--cfg-options reliability.max_bad_fraction=0.05``.

=========================  ===============================================
piece                      what it does
=========================  ===============================================
:class:`BadSampleHook`     counts and logs samples replaced by
                           ``RobustDataset`` (each path once, the epoch's
                           count as ``bad_samples`` in every train log
                           line, a summary per epoch) and stops the run when
                           more than ``max_bad_fraction`` of the data is bad
:class:`ResumeStateHook`   saves the Python / NumPy / torch random states in
                           every checkpoint, restores them on ``--resume``
                           and starts a mid-epoch resume at the right batch
                           (``ReproducibleSampler``): a killed and resumed
                           run ends with the very weights of an
                           uninterrupted one
:class:`NonFiniteLossHook` puts a guard on the optimiser wrapper: a NaN/inf
                           loss (or, in fp32, gradient) is logged with its
                           iteration and its update skipped (AMP: the loss
                           scale backs off) or the run stops (``stop``)
:class:`StartupCheckHook`  fails at start-up when the experts' widths do not
                           fit the head, or when a checkpoint does not fit
                           the model (names the keys and config fields)
BadSampleAwareMetric       scores samples flagged by ``RobustDataset
                           (bad_sample='flag')`` as wrong and reports their
                           number (``<prefix>/bad_samples``)
=========================  ===============================================
"""
import copy
import logging
import random
import re

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmaction.registry import HOOKS, METRICS, OPTIM_WRAPPERS

__all__ = [
    'DEFAULTS', 'apply_reliability', 'BadSampleHook', 'ResumeStateHook',
    'NonFiniteLossHook', 'StartupCheckHook', 'BadSampleAwareMetric',
    'GuardedOptimWrapper', 'GuardedAmpOptimWrapper', 'TooManyBadSamplesError',
    'CheckpointMismatchError', 'check_model', 'check_checkpoint',
    'get_rng_state', 'set_rng_state'
]

#: ``reliability = dict(...)`` keys of a config and their defaults.
DEFAULTS = dict(
    # training: more than this fraction of the training set unreadable
    # stops the run (the first offenders are listed)
    max_bad_fraction=0.01,
    # validation during training: 'flag' scores unreadable videos as wrong
    # and reports their number (a run is not lost at its first validation);
    # 'raise' stops with the file's name
    val_bad_samples='flag',
    # tools/test.py: 'raise' (every sample must be evaluated) or 'flag'
    test_bad_samples='raise',
    # non-finite loss: 'skip' the update (AMP: back off the loss scale) or
    # 'stop'; more than max_nonfinite_in_a_row skipped steps in a row stop
    nonfinite='skip',
    max_nonfinite_in_a_row=25,
    # annotation files checked (labels, layout, duplicates, paths)
    check_annotations=True,
    # per-sample random streams, RNG states in checkpoints, mid-epoch resume
    exact_resume=True,
    # the model's widths and any loaded checkpoint checked at start-up
    check_startup=True)


class TooManyBadSamplesError(RuntimeError):
    """More than ``max_bad_fraction`` of the training set cannot be
    loaded."""


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model built from the config."""


def _log(msg, level=logging.INFO):
    print_log(msg, logger='current', level=level)


# --------------------------------------------------------------------------
# bad samples
# --------------------------------------------------------------------------
@HOOKS.register_module()
class BadSampleHook(Hook):
    """Counts, logs and bounds the samples ``RobustDataset`` replaced.

    The counts come from the returned samples' metainfo, so they are right
    with any number of DataLoader workers. Every bad file is logged once
    (warning, with the error); ``bad_samples`` in the train log lines is the
    number of requested samples of the current epoch that were replaced;
    after each epoch one line sums it up. When the distinct bad samples
    exceed ``max_bad_fraction`` of the training set the run stops with
    :class:`TooManyBadSamplesError` listing the first ``list_first``.
    The list of bad samples survives ``--resume`` (message hub).

    Distributed: each rank counts what it loads; the iteration lines show
    rank 0's count, the epoch summary and the end-of-epoch limit check use
    all ranks (gathered), and during an epoch a rank stops once its own
    share exceeds the fraction of its part of the data.

    Args:
        max_bad_fraction (float): tolerated fraction of bad samples (0..1).
        list_first (int): offenders named in the error.
    """

    priority = 'NORMAL'  # before LoggerHook writes the iteration's line

    def __init__(self, max_bad_fraction=0.01, list_first=10):
        if not 0 <= max_bad_fraction <= 1:
            raise ValueError(f'max_bad_fraction must be within 0..1, got '
                             f'{max_bad_fraction}')
        self.max_bad_fraction = float(max_bad_fraction)
        self.list_first = int(list_first)
        self.bad = {}  # index -> (path, error), in order of discovery
        self.epoch_skips = 0

    def before_train(self, runner):
        saved = runner.message_hub.get_info('bad_samples')
        if isinstance(saved, dict):
            self.bad = dict(saved)

    def before_train_epoch(self, runner):
        self.epoch_skips = 0

    @staticmethod
    def _failures(data_batch):
        samples = data_batch.get('data_samples') if isinstance(
            data_batch, dict) else None
        for sample in samples or []:
            meta = getattr(sample, 'metainfo', None) or {}
            failures = meta.get('bad_samples')
            if failures:
                yield failures

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        new = False
        for failures in self._failures(data_batch):
            self.epoch_skips += 1
            for idx, path, error in failures:
                if idx not in self.bad:
                    self.bad[idx] = (path, error)
                    new = True
                    runner.logger.warning(
                        f'bad sample skipped and replaced by another: {path} '
                        f'({error})')
        runner.message_hub.update_scalar('train/bad_samples',
                                         self.epoch_skips)
        if new:
            runner.message_hub.update_info('bad_samples', dict(self.bad))
            self._check_fraction(runner, local=True)

    def _check_fraction(self, runner, local=False):
        total = len(runner.train_dataloader.dataset)
        share = total
        if local:  # during an epoch a rank sees its part of the data only
            from mmengine.dist import get_world_size
            share = total / get_world_size()
        if len(self.bad) <= self.max_bad_fraction * share:
            return
        first = list(self.bad.values())[:self.list_first]
        lines = '\n'.join(f'  {p}: {e}' for p, e in first)
        raise TooManyBadSamplesError(
            f'{len(self.bad)} of {total} training samples '
            f'({100.0 * len(self.bad) / max(total, 1):.2f}%) cannot be '
            f'loaded, more than max_bad_fraction={self.max_bad_fraction} '
            f'(reliability.max_bad_fraction); the first ones:\n{lines}\n'
            f'Fix or re-encode these files (or remove their lines), or raise '
            f'the limit with --cfg-options reliability.max_bad_fraction=X.')

    def _gathered(self):
        """(bad samples, this epoch's skips) over all ranks."""
        from mmengine.dist import all_gather_object, get_world_size
        if get_world_size() == 1:
            return dict(self.bad), self.epoch_skips
        bad, skips = {}, 0
        for part, count in all_gather_object((dict(self.bad),
                                              self.epoch_skips)):
            bad.update(part)
            skips += count
        return bad, skips

    def after_train_epoch(self, runner):
        bad, skips = self._gathered()
        if len(bad) > len(self.bad):
            self.bad = bad
            runner.message_hub.update_info('bad_samples', dict(self.bad))
        total = len(runner.train_dataloader.dataset)
        runner.logger.info(
            f'Epoch(train) [{runner.epoch + 1}] bad samples: '
            f'{skips} skipped and replaced this epoch; '
            f'{len(bad)} distinct bad of {total} '
            f'({100.0 * len(bad) / max(total, 1):.2f}%, '
            f'max_bad_fraction={self.max_bad_fraction})')
        self._check_fraction(runner)


@METRICS.register_module()
class BadSampleAwareMetric(BaseMetric):
    """Wraps a metric: samples flagged by ``RobustDataset(bad_sample='flag')``
    (metainfo ``bad_sample``) get a prediction that ranks their true class
    last, so they count as wrong under top-k / mean-class / verb-noun-action
    accuracy, and ``<prefix>/bad_samples`` reports how many there were (the
    files are logged). Without flagged samples it is the wrapped metric.

    Args:
        metric (dict | BaseMetric): the metric, e.g.
            ``dict(type='AccMetric')``.
    """

    def __init__(self, metric, collect_device='cpu', prefix=None):
        if isinstance(metric, dict):
            metric = METRICS.build(metric)
        self.metric = metric
        super().__init__(collect_device=collect_device,
                         prefix=prefix or metric.prefix or 'data')

    @property
    def dataset_meta(self):
        return self.metric.dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, value):
        self.metric.dataset_meta = value

    def process(self, data_batch, data_samples):
        out = []
        for ds in data_samples:
            path = ds.get('bad_sample') if isinstance(ds, dict) else None
            if path:
                ds = _scored_wrong(ds)
            self.results.append(path or '')
            out.append(ds)
        self.metric.process(data_batch, out)

    def compute_metrics(self, results):
        bad = [p for p in results if p]
        if bad:
            _log(f'{len(bad)} sample(s) could not be loaded and were scored '
                 f'as wrong predictions: ' + ', '.join(bad[:20]) +
                 (' ...' if len(bad) > 20 else ''), logging.WARNING)
        return dict(bad_samples=len(bad))

    def evaluate(self, size):
        metrics = self.metric.evaluate(size)
        own = super().evaluate(size)
        metrics = dict(metrics or {})
        metrics.update(own or {})
        return metrics


def _wrong_scores(pred, labels):
    """A probability vector like ``pred`` that ranks ``labels`` last."""
    pred = torch.as_tensor(pred)
    wrong = torch.ones_like(pred, dtype=torch.float32)
    idx = torch.as_tensor(labels).reshape(-1).long()
    idx = idx[(idx >= 0) & (idx < wrong.shape[-1])]
    wrong[..., idx] = 0.0
    return (wrong / wrong.sum(-1, keepdim=True).clamp_min(1e-12)).to(
        pred.dtype)


def _scored_wrong(ds):
    ds = dict(ds)
    for pred_key, gt_key in (('pred_score', 'gt_label'),
                             ('pred_verb', 'gt_verb'),
                             ('pred_noun', 'gt_noun')):
        if pred_key in ds and gt_key in ds and isinstance(
                ds[pred_key], torch.Tensor):
            gt = torch.as_tensor(ds[gt_key])
            if gt.dtype.is_floating_point and gt.numel() == ds[
                    pred_key].shape[-1]:  # one-hot / multi-hot
                gt = torch.nonzero(gt > 0).reshape(-1)
            ds[pred_key] = _wrong_scores(ds[pred_key], gt)
    return ds


# --------------------------------------------------------------------------
# exact resumption
# --------------------------------------------------------------------------
def get_rng_state():
    """The global random states of this process (Python, NumPy, torch CPU
    and, when initialised, CUDA)."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        cuda = state['cuda']
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


@HOOKS.register_module()
class ResumeStateHook(Hook):
    """Makes ``--resume`` continue a run exactly where it stopped.

    MMEngine 0.10.7 saves the weights, the optimiser, the schedulers, the
    epoch and the iteration, and re-seeds everything at start-up. It does
    not save the random states, and its epoch loop restarts an epoch from
    its first batch even when the checkpoint was written mid-epoch. This
    hook:

    * keeps the random states the model step left behind
      (``after_train_iter``) and puts them back just before the next step
      (``before_train_iter``): everything in between (data loading in the
      main process, a new DataLoader iterator, validation, checkpoint
      writing) leaves the training's random streams untouched;
    * writes those states into every checkpoint (``rng_state``) and restores
      them on resume;
    * on a resume from a mid-epoch checkpoint, tells the
      ``ReproducibleSampler`` to leave out the batches that were already
      trained on.

    Use it with ``RobustDataset(reseed=True)`` (what ``apply_reliability``
    sets up): data loading must not draw from the training's random streams,
    which are put back before every step.

    Together with ``RobustDataset``'s per-sample random streams, a run
    killed at any point and resumed ends with the same weights and metrics
    as an uninterrupted one (single process; in distributed runs the other
    ranks restart their model-side random streams from the seed, so the
    run is resumed correctly but not bit for bit).
    """

    priority = 'HIGH'  # before CheckpointHook (VERY_LOW) saves

    def __init__(self):
        self._snapshot = None
        self._pending = None
        self._resumed = False

    def before_save_checkpoint(self, runner, checkpoint):
        if self._snapshot is not None:
            checkpoint['rng_state'] = self._snapshot

    def after_load_checkpoint(self, runner, checkpoint):
        if not getattr(runner, '_resume', False):
            return  # load_from: a new run with its own random streams
        self._resumed = True
        state = checkpoint.get('rng_state')
        if state is None:
            runner.logger.warning(
                'the checkpoint holds no random states (written without '
                'ResumeStateHook): the resumed run continues correctly but '
                'will not reproduce an uninterrupted run bit for bit')
            return
        from mmengine.dist import get_rank
        if get_rank() != 0:
            runner.logger.warning(
                'random states are saved by rank 0 only: this rank restarts '
                'its model-side random streams from the seed')
            return
        self._pending = state

    def before_train_epoch(self, runner):
        if not self._resumed:
            return
        self._resumed = False
        loop = runner.train_loop
        loader = loop.dataloader
        per_epoch = len(loader)
        done = runner.iter - runner.epoch * per_epoch
        if done <= 0:
            return
        if done > per_epoch:
            runner.logger.warning(
                f'resumed at iteration {runner.iter} of epoch '
                f'{runner.epoch + 1}, but an epoch has only {per_epoch} '
                f'iterations (did the dataset or batch size change?); the '
                f'epoch is run from its start')
            return
        sampler = getattr(loader, 'sampler', None)
        batch_size = loader.batch_size or getattr(loader.batch_sampler,
                                                  'batch_size', None)
        from ..datasets.robust import ReproducibleSampler
        if not isinstance(sampler, ReproducibleSampler) or not batch_size:
            runner.logger.warning(
                f'resumed from a mid-epoch checkpoint (iteration '
                f'{done} of {per_epoch} of epoch {runner.epoch + 1}) but the '
                f'sampler ({type(sampler).__name__}) cannot start part-way: '
                f'the whole epoch is run again. Use '
                f"sampler=dict(type='ReproducibleSampler') (tools/train.py "
                f'does) for an exact resume.')
            return
        sampler.skip(done * batch_size, runner.epoch)
        runner.logger.info(
            f'resuming epoch {runner.epoch + 1} after its first {done} of '
            f'{per_epoch} iterations')

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        state = self._pending if self._pending is not None else \
            self._snapshot
        self._pending = None
        if state is not None:
            set_rng_state(state)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self._snapshot = get_rng_state()


# --------------------------------------------------------------------------
# non-finite losses
# --------------------------------------------------------------------------
class NonFiniteGuard:
    """Mixin for MMEngine optimiser wrappers: a non-finite loss never reaches
    the weights.

    ``skip``: the step is dropped (no backward, no optimiser step, the
    gradients accumulated in the current accumulation window are discarded;
    with AMP the loss scale is multiplied by the scaler's back-off factor).
    In fp32 a finite loss with non-finite gradients is treated alike (AMP's
    scaler already skips those). ``stop``: :class:`FloatingPointError`
    before anything is updated. Each event is logged with the iteration
    and epoch; more than ``max_in_a_row`` skipped steps in a row stop the
    run.
    """

    nonfinite = 'skip'
    max_in_a_row = 25
    check_grads = True

    def guard(self, nonfinite='skip', max_in_a_row=25, check_grads=True):
        if nonfinite not in ('skip', 'stop'):
            raise ValueError(f"nonfinite must be 'skip' or 'stop', got "
                             f'{nonfinite!r} (reliability.nonfinite)')
        self.nonfinite = nonfinite
        self.max_in_a_row = int(max_in_a_row)
        self.check_grads = check_grads
        self.nonfinite_skips = getattr(self, 'nonfinite_skips', 0)
        self._in_a_row = 0
        self._poisoned = False
        return self

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
                f'{msg}: training stopped before the update '
                f"(reliability.nonfinite='stop'); the weights are those of "
                f'the previous step. Resume from the last checkpoint (e.g. '
                f"with a lower lr), or set reliability.nonfinite='skip'.")
        self._in_a_row = getattr(self, '_in_a_row', 0) + 1
        self.nonfinite_skips = getattr(self, 'nonfinite_skips', 0) + 1
        if self._in_a_row > self.max_in_a_row:
            raise FloatingPointError(
                f'{msg}: {self._in_a_row} steps in a row had a non-finite '
                f'loss or gradient; the run diverged (the weights are those '
                f'of the last finite step). Lower the lr or check the data; '
                f'limit: reliability.max_nonfinite_in_a_row='
                f'{self.max_in_a_row}.')
        extra = ''
        if self._is_amp():
            scaler = self.loss_scaler
            if getattr(scaler, '_scale', None) is None:
                scaler.scale(torch.zeros((), device=self._device()))
            new = scaler.get_scale() * scaler.get_backoff_factor()
            scaler.update(new_scale=float(new))
            extra = f', loss scale backed off to {new:g}'
        _log(f'{msg}: update skipped ({self.nonfinite_skips} skipped so '
             f'far{extra})', logging.WARNING)

    def _device(self):
        for group in self.optimizer.param_groups:
            for p in group['params']:
                return p.device
        return torch.device('cpu')

    def update_params(self, loss, step_kwargs=None, zero_kwargs=None):
        value = loss.detach()
        if bool(torch.isfinite(value).all()):
            self._in_a_row = 0
            return super().update_params(loss, step_kwargs, zero_kwargs)
        self._event('loss', f'{value.float().mean().item()}')
        # as backward() would, so gradient accumulation keeps its cadence
        self._inner_count += 1
        self.zero_grad(**(zero_kwargs or {}))
        self._poisoned = not self.should_update()

    def step(self, **kwargs):
        if getattr(self, '_poisoned', False):
            # a non-finite loss earlier in this accumulation window
            self._poisoned = False
            return
        if self.check_grads and not self._is_amp():
            grads = [
                p.grad for group in self.optimizer.param_groups
                for p in group['params'] if p.grad is not None
            ]
            if grads:
                norms = torch.stack(torch._foreach_norm(grads))
                if not bool(torch.isfinite(norms).all()):
                    self._event('gradient', 'norm ' + str(
                        norms.float().sum().item()))
                    return  # update_params zeroes the gradients next
        return super().step(**kwargs)


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(NonFiniteGuard, OptimWrapper):
    """``OptimWrapper`` with :class:`NonFiniteGuard` (``nonfinite='skip'`` or
    ``'stop'``, ``max_in_a_row``)."""

    def __init__(self, *args, nonfinite='skip', max_in_a_row=25, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard(nonfinite, max_in_a_row)


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(NonFiniteGuard, AmpOptimWrapper):
    """``AmpOptimWrapper`` with :class:`NonFiniteGuard`."""

    def __init__(self, *args, nonfinite='skip', max_in_a_row=25, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard(nonfinite, max_in_a_row)


_GUARDED = {}


def guard_optim_wrapper(wrapper, nonfinite='skip', max_in_a_row=25):
    """Give an existing optimiser wrapper instance (any ``OptimWrapper``
    subclass, e.g. the one ``--amp`` chose) the non-finite guard."""
    cls = type(wrapper)
    if not isinstance(wrapper, NonFiniteGuard):
        if cls not in _GUARDED:
            _GUARDED[cls] = type(f'Guarded{cls.__name__}',
                                 (NonFiniteGuard, cls), {})
        wrapper.__class__ = _GUARDED[cls]
    return wrapper.guard(nonfinite, max_in_a_row)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Puts :class:`NonFiniteGuard` on the run's optimiser wrapper(s) and logs
    the number of skipped steps (``nonfinite_skips`` in the train log).

    Args:
        policy (str): ``'skip'`` or ``'stop'``.
        max_in_a_row (int): skipped steps in a row that stop the run.
    """

    priority = 'NORMAL'

    def __init__(self, policy='skip', max_in_a_row=25):
        if policy not in ('skip', 'stop'):
            raise ValueError(f"NonFiniteLossHook.policy must be 'skip' or "
                             f"'stop', got {policy!r} (reliability.nonfinite)")
        self.policy = policy
        self.max_in_a_row = max_in_a_row
        self._wrappers = []

    def before_train(self, runner):
        from mmengine.optim import OptimWrapperDict
        ow = runner.optim_wrapper
        wrappers = list(ow.values()) if isinstance(ow, OptimWrapperDict) \
            else [ow]
        self._wrappers = [
            guard_optim_wrapper(w, self.policy, self.max_in_a_row)
            for w in wrappers
        ]

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        skips = sum(getattr(w, 'nonfinite_skips', 0) for w in self._wrappers)
        if skips:
            runner.message_hub.update_scalar('train/nonfinite_skips', skips)


# --------------------------------------------------------------------------
# start-up checks: model widths, checkpoints
# --------------------------------------------------------------------------
def check_model(model):
    """Shapes a config can get wrong that the model builds with but cannot
    run: every stream's width must be the head's ``in_channels`` and the
    head must expect as many streams as there are experts."""
    model = getattr(model, 'module', model)
    backbone = getattr(model, 'backbone', None)
    head = getattr(model, 'cls_head', None)
    experts = getattr(backbone, 'experts', None)
    if experts is None or head is None:
        return
    if type(head).__name__ not in ('CASTHead', 'CASTVerbNounHead'):
        return
    widths = {name: getattr(e, 'embed_dim', None)
              for name, e in experts.items()}
    channels = getattr(head, 'in_channels', None)
    bad = {n: w for n, w in widths.items() if w is not None and w != channels}
    if bad:
        fields = ', '.join(
            f'model.backbone.experts.{n} width {w}' for n, w in bad.items())
        raise ValueError(
            f'model.cls_head.in_channels={channels} does not match the '
            f'experts\' widths {widths} ({fields}): the head reads every '
            f'stream\'s pooled feature, so all expert widths (CLIPViTExpert '
            f'width, VideoMAEExpert embed_dim, ASTExpert embed_dim) and '
            f'cls_head.in_channels must be equal.')
    streams = getattr(head, 'num_streams', None)
    if streams is not None and streams != len(widths):
        raise ValueError(
            f'model.cls_head.num_streams={streams} but the backbone has '
            f'{len(widths)} experts ({", ".join(widths)}); set '
            f'model.cls_head.num_streams={len(widths)}.')


def _field_of(key):
    parts = key.split('.')
    if parts[0] == 'backbone' and len(parts) > 2 and parts[1] == 'experts':
        return f'model.backbone.experts.{parts[2]}'
    if parts[0] == 'cls_head':
        return 'model.cls_head (num_classes / in_channels)'
    return 'model.' + '.'.join(parts[:2])


def _state_dict_of(checkpoint):
    sd = checkpoint
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        sd = checkpoint['state_dict']
    if not isinstance(sd, dict):
        return None
    sd = {re.sub(r'^module\.', '', k): v for k, v in sd.items()}
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        return None
    return sd


def check_checkpoint(model, checkpoint, source='the checkpoint',
                     strict=True):
    """Raise :class:`CheckpointMismatchError` when ``checkpoint`` (a dict as
    ``torch.load`` returns it) does not fit ``model``.

    ``strict`` (testing, resuming): every trainable weight and buffer must
    be in it with the model's shape; frozen expert weights may be absent
    when the expert loads them from its ``pretrained`` file (checkpoints
    that keep only the trainable weights). Not strict (``load_from`` for
    fine-tuning): shapes must match except in the head (another
    ``num_classes`` is allowed, with a warning) and something must load.

    Returns the number of loaded tensors.
    """
    model = getattr(model, 'module', model)
    sd = _state_dict_of(checkpoint)
    if sd is None:
        keys = list(checkpoint)[:5] if isinstance(checkpoint, dict) else []
        hint = ''
        if isinstance(checkpoint, dict) and ('module' in checkpoint or
                                             'model' in checkpoint):
            hint = (' It looks like an official (authors\') checkpoint: '
                    'convert it first with tools/convert_checkpoint.py.')
        raise CheckpointMismatchError(
            f'{source} holds no state dict of tensors (top-level keys '
            f'{keys}); it is not a checkpoint of this code base.{hint}')
    own = model.state_dict()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in own
              if k in sd and sd[k].shape != own[k].shape]
    loaded = len(own) - len(missing) - len(shapes)
    problems = []
    head_shapes = [s for s in shapes if s[0].startswith('cls_head.')]
    if not strict:
        shapes = [s for s in shapes if not s[0].startswith('cls_head.')]
    if shapes:
        fields = sorted({_field_of(k) for k, _, _ in shapes})
        eg = '; '.join(f'{k}: checkpoint {a} vs model {b}'
                       for k, a, b in shapes[:3])
        problems.append(f'{len(shapes)} weight(s) have another shape ({eg})'
                        f' -> check {", ".join(fields)} in the config')
    if strict:
        need = [k for k in missing if k not in frozen]
        frozen_missing = [k for k in missing if k in frozen]
        for name, expert in (getattr(getattr(model, 'backbone', None),
                                     'experts', None) or {}).items():
            prefix = f'backbone.experts.{name}.'
            if any(k.startswith(prefix) for k in frozen_missing) and not \
                    getattr(expert, 'pretrained', None):
                need += [k for k in frozen_missing if k.startswith(prefix)]
        if need:
            fields = sorted({_field_of(k) for k in need})
            problems.append(
                f'{len(need)} model weight(s) are missing from it (e.g. '
                f'{", ".join(need[:3])}) -> {", ".join(fields)}')
    if loaded <= 0:
        problems.append('not a single weight of the model is in it')
    if problems:
        extra = (f'; it also has {len(unexpected)} key(s) the model does not'
                 f' (e.g. {", ".join(unexpected[:3])})') if unexpected else ''
        raise CheckpointMismatchError(
            f'{source} does not fit the model built from the config: ' +
            '; '.join(problems) + extra + '. Is it a checkpoint of another '
            'architecture / config? Official CAST weights must be converted '
            'with tools/convert_checkpoint.py first.')
    if head_shapes:
        _log(f'{source}: the head was not loaded ({head_shapes[0][0]}: '
             f'checkpoint {head_shapes[0][1]} vs model {head_shapes[0][2]},'
             f' e.g. another num_classes); it starts from its '
             f'initialisation', logging.WARNING)
    return loaded


@HOOKS.register_module()
class StartupCheckHook(Hook):
    """Checks at start-up that the model's expert widths fit the head
    (:func:`check_model`) and that a checkpoint given to ``tools/test.py``,
    ``load_from`` or ``--resume`` fits the model (:func:`check_checkpoint`);
    MMEngine would load a mismatching checkpoint with a warning and test
    (or train) a half-random model."""

    priority = 'VERY_HIGH'

    def before_run(self, runner):
        check_model(runner.model)

    def after_load_checkpoint(self, runner, checkpoint):
        from mmengine.runner import BaseLoop
        resume = bool(getattr(runner, '_resume', False))
        # Runner.train() builds the train loop before loading; test() not
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        source = getattr(runner, '_load_from', None)
        if source is None and resume:
            from mmengine.runner.checkpoint import find_latest_checkpoint
            source = find_latest_checkpoint(runner.work_dir)
        what = ('the resumed checkpoint' if resume else
                'load_from' if training else 'the checkpoint to test')
        check_checkpoint(runner.model, checkpoint,
                         f'{what} {source!r}' if source else what,
                         strict=resume or not training)


# --------------------------------------------------------------------------
# wiring
# --------------------------------------------------------------------------
def _options(cfg, overrides):
    opts = dict(DEFAULTS)
    given = cfg.get('reliability') or {}
    unknown = sorted(set(given) - set(DEFAULTS) - {'enable'})
    if unknown:
        raise KeyError(f'reliability: unknown key(s) {unknown}; known: '
                       f'{sorted(DEFAULTS)}')
    opts.update(given)
    opts.update({k: v for k, v in overrides.items() if v is not None})
    return opts


def _num_classes(cfg):
    head = (cfg.get('model') or {}).get('cls_head') or {}
    value = head.get('num_classes')
    return value if isinstance(value, int) else None


def _wrap_dataset(loader, bad_sample, opts, num_classes):
    ds = loader.get('dataset')
    if not isinstance(ds, dict):
        return
    if ds.get('type') == 'RobustDataset':
        ds.setdefault('bad_sample', bad_sample)
        return
    loader['dataset'] = dict(
        type='RobustDataset', dataset=ds, bad_sample=bad_sample,
        reseed=bool(opts['exact_resume']),
        check_annotations=bool(opts['check_annotations']),
        num_classes=num_classes)


def _wrap_metrics(evaluator):
    if evaluator is None:
        return None
    if isinstance(evaluator, (list, tuple)):
        return [_wrap_metrics(e) for e in evaluator]
    if isinstance(evaluator, dict) and 'metrics' in evaluator:
        evaluator = copy.copy(evaluator)
        evaluator['metrics'] = _wrap_metrics(evaluator['metrics'])
        return evaluator
    if isinstance(evaluator, dict) and evaluator.get('type') not in (
            'BadSampleAwareMetric', 'DumpResults', 'Evaluator'):
        return dict(type='BadSampleAwareMetric', metric=evaluator)
    return evaluator


def _add_hook(cfg, hook):
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and h.get('type') == hook['type']
               for h in hooks):
        hooks.append(hook)
    cfg.custom_hooks = hooks


def apply_reliability(cfg, mode='train', **overrides):
    """Wire the reliability features into an MMEngine config (in place;
    returns it). Idempotent.

    ``mode='train'``: the training set is wrapped in ``RobustDataset``
    (bad samples replaced, annotations checked against
    ``model.cls_head.num_classes``), its ``DefaultSampler`` becomes
    ``ReproducibleSampler``, validation data in ``RobustDataset``
    (``val_bad_samples``) with ``BadSampleAwareMetric``, and the hooks
    ``BadSampleHook``, ``ResumeStateHook``, ``NonFiniteLossHook`` and
    ``StartupCheckHook`` are added. ``mode='test'``: the test set in
    ``RobustDataset`` (``test_bad_samples``), its metrics wrapped,
    ``StartupCheckHook``.

    Settings: ``cfg.reliability`` (:data:`DEFAULTS`), then ``overrides``;
    ``reliability.enable=False`` leaves the config untouched.
    """
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    opts = _options(cfg, overrides)
    if opts.get('enable', True) is False:
        return cfg
    for key in ('val_bad_samples', 'test_bad_samples'):
        if opts[key] not in ('raise', 'flag'):
            raise ValueError(f"reliability.{key} must be 'raise' or 'flag', "
                             f'got {opts[key]!r}')
    num_classes = _num_classes(cfg)
    if mode == 'train':
        loader = cfg.get('train_dataloader')
        if loader:
            _wrap_dataset(loader, 'replace', opts, num_classes)
            sampler = loader.get('sampler')
            if opts['exact_resume'] and isinstance(sampler, dict) and \
                    sampler.get('type') in ('DefaultSampler',
                                            'mmengine.DefaultSampler'):
                sampler['type'] = 'ReproducibleSampler'
        if cfg.get('val_dataloader') and cfg.get('val_cfg'):
            _wrap_dataset(cfg.val_dataloader, opts['val_bad_samples'], opts,
                          num_classes)
            cfg.val_evaluator = _wrap_metrics(cfg.get('val_evaluator'))
        _add_hook(cfg, dict(type='BadSampleHook',
                            max_bad_fraction=opts['max_bad_fraction']))
        if opts['exact_resume']:
            _add_hook(cfg, dict(type='ResumeStateHook'))
        _add_hook(cfg, dict(type='NonFiniteLossHook',
                            policy=opts['nonfinite'],
                            max_in_a_row=opts['max_nonfinite_in_a_row']))
    else:
        if cfg.get('test_dataloader'):
            _wrap_dataset(cfg.test_dataloader, opts['test_bad_samples'],
                          opts, num_classes)
            cfg.test_evaluator = _wrap_metrics(cfg.get('test_evaluator'))
    if opts['check_startup']:
        _add_hook(cfg, dict(type='StartupCheckHook'))
    return cfg
