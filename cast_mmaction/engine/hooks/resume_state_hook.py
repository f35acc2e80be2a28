"""ResumeStateHook: ``--resume`` continues a run exactly where it stopped
(random states in every checkpoint, mid-epoch resume at the right batch).

Config (``configs/_base_/reliability.py``)::

    default_hooks = dict(resume_state=dict(type='ResumeStateHook'))
    train_dataloader = dict(
        sampler=dict(type='ReproducibleSampler', shuffle=True),
        dataset=dict(type='RobustDataset', reseed=True, ...))
"""
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from mmaction.registry import HOOKS

__all__ = ['ResumeStateHook', 'get_rng_state', 'set_rng_state']


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

    Use it with ``RobustDataset(reseed=True)`` and ``ReproducibleSampler``
    (as the recipes' ``train_dataloader`` does): data loading must not draw
    from the training's random streams, which are put back before every
    step.

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
        from ...datasets.robust import ReproducibleSampler
        if not isinstance(sampler, ReproducibleSampler) or not batch_size:
            runner.logger.warning(
                f'resumed from a mid-epoch checkpoint (iteration '
                f'{done} of {per_epoch} of epoch {runner.epoch + 1}) but the '
                f'sampler ({type(sampler).__name__}) cannot start part-way: '
                f'the whole epoch is run again. Use '
                f"train_dataloader.sampler=dict(type='ReproducibleSampler') "
                f'(the recipes do) for an exact resume.')
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
