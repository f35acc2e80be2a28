"""AtomicCheckpointHook: MMEngine's ``CheckpointHook`` whose checkpoints
survive a kill at any moment.

Config (``configs/_base_/default_runtime.py``; every argument of
``CheckpointHook`` applies)::

    default_hooks = dict(checkpoint=dict(
        type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3))

MMEngine 0.10.7's ``CheckpointHook`` writes checkpoints in place (a kill
during the write leaves a truncated ``epoch_N.pth``), deletes the oldest
kept checkpoint *before* writing the new one (with ``max_keep_ckpts=1`` a
kill mid-write leaves nothing to resume from) and writes
``last_checkpoint`` in place (a kill leaves it empty; ``--resume`` then
fails). This hook

* writes every checkpoint file of a local ``out_dir`` atomically (the file
  backend ``'atomic_local'``,
  :class:`~cast_mmaction.engine.checkpoint_files.AtomicLocalBackend`), unless
  ``backend_args`` / ``file_client_args`` name another backend;
* removes old and previous-best checkpoints only once the new checkpoint
  and ``last_checkpoint`` are written;
* on ``--resume`` without a file, repairs an empty or stale
  ``last_checkpoint`` to name the newest complete checkpoint and deletes the
  temporary files of interrupted writes
  (:func:`~cast_mmaction.engine.checkpoint_files.resolve_last_checkpoint`).
"""
from mmengine.dist import barrier, is_main_process
from mmengine.hooks import CheckpointHook

from mmaction.registry import HOOKS

from ..checkpoint_files import ATOMIC_BACKEND, resolve_last_checkpoint

__all__ = ['AtomicCheckpointHook']


class _DeferRemovals:
    """A file backend whose ``remove`` / ``rmtree`` wait for :meth:`flush`;
    everything else goes to the wrapped backend."""

    def __init__(self, backend):
        self._backend, self._removals = backend, []

    def remove(self, path):
        self._removals.append(('remove', path))

    def rmtree(self, path):
        self._removals.append(('rmtree', path))

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def flush(self):
        for method, path in self._removals:
            getattr(self._backend, method)(path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic writes, removals after the new file is
    complete and a ``last_checkpoint`` that ``--resume`` can always use
    (module docstring). Arguments as ``CheckpointHook``."""

    def before_run(self, runner):
        # before Runner.load_or_resume() reads last_checkpoint
        self.prepare_resume(runner)

    def prepare_resume(self, runner):
        """On ``--resume`` without a file: make ``last_checkpoint`` name a
        complete checkpoint (also called by ``FlexibleRunner``, which loads
        before ``before_run``: ``compat._patch_flexible_runner_resume``)."""
        resume = getattr(runner, '_resume', False)
        if resume and not isinstance(resume, str) and getattr(
                runner, '_load_from', None) is None:
            if is_main_process():
                resolve_last_checkpoint(runner.work_dir)
            barrier()

    def before_train(self, runner):
        out_dir = str(self.out_dir or runner.work_dir)
        if self.backend_args is None and self.file_client_args is None \
                and '://' not in out_dir:
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)

    def _deferring_removals(self, method, *args):
        backend = getattr(self, 'file_backend', None)
        if backend is None or isinstance(backend, _DeferRemovals):
            return method(*args)  # nested call: the outer one flushes
        proxy = _DeferRemovals(backend)
        self.file_backend = proxy
        try:
            result = method(*args)
        finally:
            self.file_backend = backend
        proxy.flush()  # only once the new checkpoint is complete
        return result

    def _save_checkpoint_with_step(self, runner, step, meta):
        return self._deferring_removals(super()._save_checkpoint_with_step,
                                        runner, step, meta)

    def _save_best_checkpoint(self, runner, metrics):
        return self._deferring_removals(super()._save_best_checkpoint,
                                        runner, metrics)
