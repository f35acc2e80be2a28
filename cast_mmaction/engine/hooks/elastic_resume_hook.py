"""ElasticResumeHook: workers that torchrun restarts (``--max-restarts``)
resume from the run's latest checkpoint by themselves.

Config (``configs/_base_/reliability.py``)::

    default_hooks = dict(elastic_resume=dict(type='ElasticResumeHook'))

torchrun restarts every worker of the job when one fails, as long as the
job has restarts left (``tools/dist_train.sh`` passes ``MAX_RESTARTS``);
each restarted worker gets ``TORCHELASTIC_RESTART_COUNT`` > 0 but the same
command line, so without this hook it would train from the start again. On a
restart, when the work dir holds a complete checkpoint, the hook turns on
``resume=True`` semantics (the latest checkpoint of the work dir, as
``--resume`` without a file; ``load_from`` is then ignored, since the run's
own progress supersedes it). With ``ResumeStateHook`` and
``ReproducibleSampler`` (the recipes use both) the restarted run continues
as an uninterrupted one would. The first attempt
(``TORCHELASTIC_RESTART_COUNT`` unset or 0) is left alone. The work dir must
be on a file system every node reads (as for ``--resume``).
"""
import os

from mmengine.hooks import Hook

from mmaction.registry import HOOKS

from ..checkpoint_files import complete_checkpoints

__all__ = ['ElasticResumeHook', 'restart_count']


def restart_count():
    """torchrun's restart counter of this worker (0 on the first attempt or
    outside torchrun)."""
    value = os.environ.get('TORCHELASTIC_RESTART_COUNT', '') or '0'
    try:
        return int(value)
    except ValueError:
        raise ValueError(f'TORCHELASTIC_RESTART_COUNT={value!r} is not an '
                         f'integer (set by torchrun; unset it to start '
                         f'afresh)') from None


@HOOKS.register_module()
class ElasticResumeHook(Hook):
    """On a torchrun restart, resume from the work dir's latest checkpoint
    (module docstring)."""

    # before AtomicCheckpointHook.before_run repairs last_checkpoint for a
    # resume, and before Runner.load_or_resume() reads it
    priority = 'VERY_HIGH'

    def before_run(self, runner):
        from mmengine.runner import BaseLoop
        attempt = restart_count()
        # training only: Runner.train() builds the train loop before
        # before_run, test() does not; a restarted test run tests the
        # checkpoint it was given, not the work dir's latest
        if attempt == 0 or not isinstance(
                getattr(runner, '_train_loop', None), BaseLoop):
            return
        work_dir = runner.work_dir
        record = os.path.join(work_dir, 'last_checkpoint')
        found = os.path.isdir(work_dir) and (
            os.path.exists(record) or complete_checkpoints(work_dir))
        if not found:
            runner.logger.info(
                f'torchrun restart {attempt}: no checkpoint in {work_dir} '
                f'yet, training from the start')
            return
        runner._resume, runner._load_from = True, None
        runner.logger.info(
            f'torchrun restart {attempt}: resuming from the latest '
            f'checkpoint in {work_dir}')
