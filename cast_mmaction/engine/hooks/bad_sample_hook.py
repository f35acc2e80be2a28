"""BadSampleHook: counts, logs and bounds the training samples that
:class:`~cast_mmaction.datasets.robust.RobustDataset` replaced.

Config (``configs/_base_/reliability.py``)::

    default_hooks = dict(
        bad_samples=dict(type='BadSampleHook', max_bad_fraction=0.01))
"""
from mmengine.hooks import Hook

from mmaction.registry import HOOKS

__all__ = ['BadSampleHook', 'TooManyBadSamplesError', 'num_distinct_samples']


class TooManyBadSamplesError(RuntimeError):
    """More than ``max_bad_fraction`` of the training set cannot be
    loaded."""


def num_distinct_samples(dataset):
    """The samples of a training set, each counted once: MMEngine's
    ``RepeatDataset`` and ``ClassBalancedDataset`` list the samples of the
    dataset they wrap several times, ``ConcatDataset`` joins its parts.
    ``len()`` of such a wrapper would count a sample once per repeat, and
    ``max_bad_fraction`` would tolerate that many times more bad files."""
    from ...datasets.annotation_checks import wrapped_datasets
    if type(dataset).__name__ == 'RobustDataset':
        return len(dataset)
    inner = wrapped_datasets(dataset)
    if not inner:
        return len(dataset)
    return sum(num_distinct_samples(d) for d in inner)


@HOOKS.register_module()
class BadSampleHook(Hook):
    """Counts, logs and bounds the samples ``RobustDataset`` replaced.

    The counts come from the returned samples' metainfo, so they are right
    with any number of DataLoader workers. Every bad file is logged once
    (warning, with the error); ``bad_samples`` in the train log lines is the
    number of requested samples of the current epoch that were replaced;
    after each epoch one line sums it up. When the distinct bad samples
    exceed ``max_bad_fraction`` of the training set (its distinct samples:
    a ``RepeatDataset`` counts its dataset once, :func:`num_distinct_samples`)
    the run stops with
    :class:`TooManyBadSamplesError` listing the first ``list_first``.
    The list of bad samples and the current epoch's count survive
    ``--resume`` (message hub, saved in every checkpoint).

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
            raise ValueError(f'BadSampleHook.max_bad_fraction must be within '
                             f'0..1, got {max_bad_fraction}')
        self.max_bad_fraction = float(max_bad_fraction)
        self.list_first = int(list_first)
        # (path, index) -> (path, error), in order of discovery: the index
        # is a sample's within its own RobustDataset, so in a ConcatDataset
        # two files at one index are told apart by their paths
        self.bad = {}
        self.epoch_skips = 0

    def before_train(self, runner):
        saved = runner.message_hub.get_info('bad_samples')
        if isinstance(saved, dict):
            # checkpoints of earlier versions keyed by the index alone
            self.bad = {k if isinstance(k, tuple) else (v[0], k): v
                        for k, v in saved.items()}

    def before_train_epoch(self, runner):
        # a run resumed mid-epoch goes on counting that epoch's skips
        saved = runner.message_hub.get_info('bad_samples_epoch_skips')
        self.epoch_skips = saved[1] if isinstance(saved, (list, tuple)) and \
            saved[0] == runner.epoch else 0

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
                if (path, idx) not in self.bad:
                    self.bad[(path, idx)] = (path, error)
                    new = True
                    runner.logger.warning(
                        f'bad sample skipped and replaced by another: {path} '
                        f'({error})')
        runner.message_hub.update_scalar('train/bad_samples',
                                         self.epoch_skips)
        runner.message_hub.update_info('bad_samples_epoch_skips',
                                       (runner.epoch, self.epoch_skips))
        if new:
            runner.message_hub.update_info('bad_samples', dict(self.bad))
            self._check_fraction(runner, local=True)

    def _check_fraction(self, runner, local=False):
        total = num_distinct_samples(runner.train_dataloader.dataset)
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
            f'(default_hooks.bad_samples.max_bad_fraction); the first '
            f'ones:\n{lines}\nFix or re-encode these files (or remove their '
            f'lines), or raise the limit with --cfg-options '
            f'default_hooks.bad_samples.max_bad_fraction=X.')

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
        total = num_distinct_samples(runner.train_dataloader.dataset)
        runner.logger.info(
            f'Epoch(train) [{runner.epoch + 1}] bad samples: '
            f'{skips} skipped and replaced this epoch; '
            f'{len(bad)} distinct bad of {total} '
            f'({100.0 * len(bad) / max(total, 1):.2f}%, '
            f'max_bad_fraction={self.max_bad_fraction})')
        self._check_fraction(runner)
