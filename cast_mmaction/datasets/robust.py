"""Bad media never cost a run: a dataset wrapper and a resumable sampler.

:class:`RobustDataset` wraps any MMAction2 dataset (``VideoDataset``,
``EpicKitchens100Dataset``, the audio-visual sets, ...) and decides what a
sample whose file is missing, empty, truncated, wrongly encoded or has an
unreadable audio track does:

``bad_sample='replace'`` (training)
    the sample is replaced by another one, chosen deterministically from
    the seed, the epoch and the index (so a resumed run sees the same
    replacement); the failure (index, path, error) travels to the main
    process in the returned sample's metainfo (``bad_samples``), where
    :class:`~cast_mmaction.engine.hooks.BadSampleHook` logs each
    path once, counts the epoch's skips in the log line and stops the run
    when more than ``max_bad_fraction`` of the data set is bad. This works
    the same with any number of DataLoader workers.
``bad_sample='raise'`` (testing)
    :class:`BadSampleError` naming the file: every test sample must be
    evaluated.
``bad_sample='flag'`` (explicit option for testing / validation)
    the sample is evaluated as a *wrong* prediction: a placeholder with the
    sample's own labels and ``bad_sample=<path>`` in its metainfo; wrap the
    metric in ``BadSampleAwareMetric`` to score it wrong and report the
    count.

The wrapper also makes every sample's random augmentation a function of
``(seed, epoch, index)``: the Python, NumPy and torch generators are seeded
per sample (and restored afterwards). With :class:`ReproducibleSampler`
(which hands ``(index, epoch, seed)`` keys to the dataset and can start an
epoch part-way through) a run killed mid-epoch and resumed sees exactly the
batches the uninterrupted run saw, whatever the number of workers and
whether they are persistent.

Annotations are checked when the wrapper is built
(:func:`~cast_mmaction.datasets.annotation_checks.check_dataset_annotations`),
i.e. before the first iteration.

In a config the wrapped dataset is named by ``dataset_type`` and its own
fields sit beside the wrapper's, so that the usual override paths
(``--cfg-options train_dataloader.dataset.ann_file=...``) keep working::

    train_dataloader = dict(
        sampler=dict(type='ReproducibleSampler', shuffle=True),
        dataset=dict(type='RobustDataset', bad_sample='replace',
                     dataset_type='VideoDataset',
                     ann_file=..., data_prefix=..., pipeline=...))

MMEngine's nested form (``dataset=dict(type='VideoDataset', ...)``, or a
built dataset) works too.
"""
import copy
import random
from contextlib import contextmanager

import numpy as np
import torch
from mmengine.dataset import DefaultSampler

from mmaction.registry import DATA_SAMPLERS, DATASETS
from .sample_timeout import check_time_limit, call_with_time_limit

__all__ = ['RobustDataset', 'ReproducibleSampler', 'BadSampleError',
           'sample_rng_scope']

_NO_EPOCH = 2**32 - 1
_MAX_ERROR_CHARS = 300


class BadSampleError(RuntimeError):
    """A sample could not be loaded (names its file) or too many could
    not."""


def _key_ints(*values):
    return [int(v) % 2**63 for v in values]


@contextmanager
def sample_rng_scope(*key):
    """Seed Python's ``random``, NumPy's global generator and torch's CPU
    generator from ``key`` (ints) for the duration of the block, then put
    the previous states back, so loading a sample neither depends on nor
    changes the caller's random streams."""
    words = np.random.SeedSequence(_key_ints(*key)).generate_state(
        4, dtype=np.uint32)
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.get_rng_state()
    random.seed((int(words[0]) << 32) | int(words[1]))
    np.random.seed(int(words[2]))
    torch.default_generator.manual_seed((int(words[3]) << 16) | 0x5eed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def _short(exc):
    text = f'{type(exc).__name__}: {exc}'.replace('\n', ' ').strip()
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS - 3] + '...'
    return text


@DATASETS.register_module()
class RobustDataset:
    """Wrap a dataset so that bad media are replaced (training), raise a
    clear error (testing) or are scored as wrong (``flag``).

    Args:
        dataset (dict | Dataset, optional): the wrapped dataset or its
            config (MMEngine's nested wrapper form).
        dataset_type (str, optional): instead of ``dataset``: the wrapped
            dataset's type; its arguments are the remaining keyword
            arguments (``ann_file``, ``data_prefix``, ``pipeline``, ...).
        bad_sample (str, optional): ``'replace'``, ``'raise'`` or ``'flag'``;
            default ``'raise'`` for a ``test_mode`` dataset, else
            ``'replace'``.
        max_retries (int): replacement attempts for one sample before the
            wrapper gives up (a pipeline that fails on everything is a
            configuration error, reported with the first errors).
        seed (int): seed of the per-sample random streams and replacement
            choices when the sampler does not provide one.
        reseed (bool): seed every sample's augmentation from
            ``(seed, epoch, index)`` (needed for exact resumption).
        check_annotations (bool): check the annotation file (labels, layout,
            duplicates, paths outside the data root) when built.
        num_classes (int, optional): bound of the labels for that check.
            Unset (the recipes), ``StartupCheckHook`` checks the labels
            against the model head's ``num_classes`` before the first
            iteration; set, it must equal the head's. It is the wrapper's
            own argument: a dataset that needs ``num_classes`` itself
            (``multi_class``) takes the nested form.
        num_classes_field (str): the config field named in label errors.
        sample_timeout (float): seconds one sample may take to load before
            it is interrupted and handled as a bad sample (0: no limit);
            a load stuck in C code past twice the limit (at least 30 s
            more) ends the process with a stack dump naming the file (see
            :mod:`~cast_mmaction.datasets.sample_timeout`).
        **dataset_args: the wrapped dataset's arguments (with
            ``dataset_type``).
    """

    #: the sampler may pass ``(index, epoch, seed)`` keys
    accepts_sample_keys = True

    def __init__(self, dataset=None, bad_sample=None, max_retries=10, seed=0,
                 reseed=True, check_annotations=True, num_classes=None,
                 num_classes_field='model.cls_head.num_classes',
                 sample_timeout=120, dataset_type=None, **dataset_args):
        # built lazily (unless the config asks lazy_init itself), so that
        # the annotation check reads the file before the dataset parses it
        lazy = _asks_lazy(dataset, dataset_args)
        dataset = _wrapped(dataset, dataset_type, dataset_args)
        self.dataset = dataset
        # the wrapped dataset's fields sit beside the wrapper's (flat form)
        # or in ``dataset=dict(...)``: errors name the config field
        self.flat_config = dataset_type is not None
        test_mode = bool(getattr(dataset, 'test_mode', False))
        if bad_sample is None:
            bad_sample = 'raise' if test_mode else 'replace'
        if bad_sample not in ('replace', 'raise', 'flag'):
            raise ValueError(f"RobustDataset.bad_sample must be 'replace', "
                             f"'raise' or 'flag', got {bad_sample!r}")
        if max_retries < 1:
            raise ValueError(f'RobustDataset.max_retries must be >= 1, got '
                             f'{max_retries}')
        self.bad_sample = bad_sample
        self.max_retries = int(max_retries)
        self.seed = int(seed or 0)
        self.reseed = reseed
        self.check_annotations = check_annotations
        self.num_classes = num_classes
        self.num_classes_field = num_classes_field
        self.sample_timeout = check_time_limit(
            sample_timeout, 'RobustDataset.sample_timeout')
        self._checked = False
        if not lazy:
            self.full_init()

    # -- what the Runner and MMAction2 ask a dataset -----------------------
    def wrapped_datasets(self):
        """The dataset this wraps (the annotation checks check it)."""
        return [self.dataset]

    def full_init(self):
        self._check()  # the annotation file first (it may full_init)
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def _check(self):
        if self._checked or not self.check_annotations:
            return
        from .annotation_checks import check_dataset_annotations
        check_dataset_annotations(self.dataset, self.num_classes,
                                  self.num_classes_field)
        self._checked = True

    @property
    def metainfo(self):
        return copy.deepcopy(getattr(self.dataset, 'metainfo', {}))

    @property
    def test_mode(self):
        return bool(getattr(self.dataset, 'test_mode', False))

    def __len__(self):
        return len(self.dataset)

    def get_data_info(self, idx):
        return self.dataset.get_data_info(idx)

    def __getattr__(self, name):
        # delegate ann_file, data_prefix, pipeline, ... (but not during
        # unpickling in a worker, before ``dataset`` exists)
        if name == 'dataset' or name.startswith('__'):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self):
        return (f'RobustDataset(bad_sample={self.bad_sample!r}, '
                f'dataset={type(self.dataset).__name__} of {len(self)})')

    # -- loading ------------------------------------------------------------
    def describe(self, idx):
        """The file(s) of sample ``idx``, for messages."""
        try:
            info = self.dataset.get_data_info(idx)
        except Exception:  # noqa: BLE001 - a description must not fail
            return f'sample {idx}'
        main = None
        for key in ('filename', 'frame_dir', 'video_path', 'audio_path'):
            if isinstance(info.get(key), str) and info.get(key):
                main = info[key]
                break
        main = main or f'sample {idx}'
        audio = info.get('audio_path')
        if isinstance(audio, str) and audio and audio != main:
            main = f'{main} (audio {audio})'
        return main

    def _load(self, idx):
        ds = self.dataset
        if not getattr(ds, '_fully_initialized', True):
            ds.full_init()  # not part of the sample's time
        if not self.sample_timeout:
            return self._load_now(idx)
        return call_with_time_limit(self._load_now, idx,
                                    seconds=self.sample_timeout,
                                    label=f'sample {idx}: '
                                    f'{self.describe(idx)}')

    def _load_now(self, idx):
        ds = self.dataset
        if hasattr(ds, 'prepare_data'):
            if not getattr(ds, '_fully_initialized', True):
                ds.full_init()
            out = ds.prepare_data(idx)
        else:
            out = ds[idx]
        if out is None:
            raise BadSampleError('the pipeline returned None (a transform '
                                 'rejected the sample)')
        return out

    def _replacement(self, idx, epoch, seed, attempt):
        n = len(self)
        if n < 2:
            return idx
        rng = np.random.default_rng(
            _key_ints(1, seed, epoch, idx, attempt))
        j = int(rng.integers(n - 1))
        return j + 1 if j >= idx else j

    @staticmethod
    def _parse_key(key):
        if isinstance(key, (tuple, list)) and len(key) == 3:
            idx, epoch, seed = key
            return int(idx), int(epoch), (None if seed is None else
                                          int(seed))
        return int(key), None, None

    def __getitem__(self, key):
        idx, epoch, seed = self._parse_key(key)
        seed = self.seed if seed is None else seed
        ep = _NO_EPOCH if epoch is None else epoch
        failures = []
        current = idx
        for attempt in range(self.max_retries + 1):
            try:
                if self.reseed:
                    with sample_rng_scope(0, seed, ep, idx, attempt):
                        out = self._load(current)
                else:
                    out = self._load(current)
            except Exception as e:  # noqa: BLE001 - any decode/pipeline error
                path = self.describe(current)
                if self.bad_sample == 'raise':
                    raise BadSampleError(
                        f'{path} (sample {current}) cannot be loaded: '
                        f'{_short(e).rstrip(".")}. Every test sample must be '
                        f'evaluated: fix or re-encode the file, remove its '
                        f'line from the annotation file, or score it as '
                        f"wrong with <loader>.dataset.bad_sample='flag' "
                        f'(RobustDataset; tools/test.py --bad-samples '
                        f'flag).') from e
                failures.append((current, path, _short(e)))
                if self.bad_sample == 'flag':
                    return self._flagged(idx, failures, seed)
                current = self._replacement(idx, ep, seed, attempt + 1)
                continue
            if failures:
                _mark(out, failures)
            return out
        distinct = {}
        for _, p, err in failures:
            distinct.setdefault(p, err)
        lines = '\n'.join(f'  {p}: {err}'
                          for p, err in list(distinct.items())[:5])
        raise BadSampleError(
            f'{len(failures)} attempts in a row to load sample {idx} or a '
            f'replacement failed ({len(distinct)} different files); the data'
            f' or the pipeline is broken. The first errors:\n{lines}')

    def _flagged(self, idx, failures, seed):
        """A stand-in for bad sample ``idx``: the layout of a good sample,
        zero inputs, ``idx``'s own labels and ids, flagged as bad."""
        donor = None
        n = len(self)
        for step in range(1, min(n, self.max_retries + 1)):
            j = (idx + step) % n
            try:
                with sample_rng_scope(2, seed, j):
                    donor = self._load(j)
                break
            except Exception:  # noqa: BLE001 - look for another donor
                continue
        if donor is None:
            raise BadSampleError(
                f'{failures[0][1]} (sample {idx}) cannot be loaded '
                f'({failures[0][2]}) and no other sample loads to build a '
                f'stand-in for it')
        out = dict(donor)
        out['inputs'] = _zeros_like(donor.get('inputs'))
        sample = donor.get('data_samples')
        if sample is not None:
            sample = copy.deepcopy(sample)
            info = self.dataset.get_data_info(idx)
            _copy_labels(sample, info)
            sample.set_metainfo(dict(bad_sample=failures[0][1],
                                     bad_sample_error=failures[0][2]))
            out['data_samples'] = sample
        return out


def _asks_lazy(dataset, dataset_args):
    """Whether the wrapped dataset is to stay lazy (its config's
    ``lazy_init=True``, or a built dataset not yet initialised)."""
    if isinstance(dataset, dict):
        return bool(dataset.get('lazy_init', False))
    if dataset is not None:
        return not getattr(dataset, '_fully_initialized', True)
    return bool(dataset_args.get('lazy_init', False))


def _build_lazily(cfg):
    """``DATASETS.build(cfg)`` with ``lazy_init=True`` for an MMEngine
    ``BaseDataset`` (whose ``full_init`` then parses the annotation file)."""
    from mmengine.dataset import BaseDataset
    cls = DATASETS.get(cfg['type']) if isinstance(cfg['type'], str) else \
        cfg['type']
    if isinstance(cls, type) and issubclass(cls, BaseDataset):
        cfg = dict(cfg, lazy_init=True)
    return DATASETS.build(cfg)


def _wrapped(dataset, dataset_type, dataset_args):
    """The dataset RobustDataset wraps, built from either form."""
    if dataset_type is not None:
        if dataset is not None:
            raise ValueError('RobustDataset takes dataset=dict(...) or '
                             'dataset_type=... with the dataset\'s fields, '
                             'not both')
        return _build_lazily(dict(type=dataset_type, **dataset_args))
    if dataset_args:
        raise TypeError(
            f'RobustDataset got {sorted(dataset_args)} but no dataset_type: '
            f'name the wrapped dataset beside its fields (dataset_type='
            f"'VideoDataset'), or put them into dataset=dict(type=..., ...)")
    if dataset is None:
        raise TypeError('RobustDataset needs dataset_type=... (with the '
                        'dataset\'s fields) or dataset=dict(...)')
    if isinstance(dataset, dict):
        return _build_lazily(dataset)
    return dataset


def _zeros_like(x):
    if isinstance(x, torch.Tensor):
        return torch.zeros_like(x)
    if isinstance(x, np.ndarray):
        return np.zeros_like(x)
    if isinstance(x, dict):
        return {k: _zeros_like(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_zeros_like(v) for v in x)
    return x


def _copy_labels(sample, info):
    """Put the labels and ids of ``info`` (a data info dict) on a packed
    ``ActionDataSample`` built from another sample."""
    if 'label' in info and info['label'] is not None:
        label = info['label']
        if isinstance(label, torch.Tensor):
            sample.set_gt_label(label)
        else:
            sample.set_gt_label(int(label) if np.ndim(label) == 0 else
                                list(label))
    for key, field in (('verb_label', 'gt_verb'), ('noun_label', 'gt_noun')):
        if field in sample:
            sample.set_field(torch.tensor(int(info[key]), dtype=torch.long)
                             if info.get(key) is not None else
                             torch.tensor(-1, dtype=torch.long), field)
    meta = {k: info[k] for k in sample.metainfo_keys() if k in info}
    if meta:
        sample.set_metainfo(meta)


def _mark(out, failures):
    """Record the replaced samples in the returned sample's metainfo; the
    main process counts them (``BadSampleHook``)."""
    sample = out.get('data_samples') if isinstance(out, dict) else None
    if sample is not None and hasattr(sample, 'set_metainfo'):
        sample.set_metainfo(dict(bad_samples=list(failures)))
    elif isinstance(out, dict):
        out['bad_samples'] = list(failures)


@DATA_SAMPLERS.register_module()
class ReproducibleSampler(DefaultSampler):
    """MMEngine's ``DefaultSampler`` (same order for the same seed and
    epoch) that

    * hands ``(index, epoch, seed)`` keys to datasets that accept them
      (:class:`RobustDataset`), so every sample's augmentation is a function
      of them, in the main process or any worker;
    * can start one epoch part-way through (:meth:`skip`), which is how a run
      resumed from a mid-epoch checkpoint continues with the very batches
      the uninterrupted run would have seen.

    Arguments as ``DefaultSampler``.
    """

    def __init__(self, dataset, shuffle=True, seed=None, round_up=True):
        super().__init__(dataset, shuffle=shuffle, seed=seed,
                         round_up=round_up)
        self._keys = bool(getattr(dataset, 'accepts_sample_keys', False))
        self._skip_epoch, self._skip = None, 0

    def skip(self, num_samples, epoch):
        """Leave out the first ``num_samples`` samples (of this rank) of
        epoch ``epoch``."""
        self._skip_epoch, self._skip = int(epoch), max(0, int(num_samples))

    def _active_skip(self):
        return self._skip if self._skip_epoch == self.epoch else 0

    def __iter__(self):
        indices = list(super().__iter__())[self._active_skip():]
        if self._keys:
            return iter([(i, self.epoch, self.seed) for i in indices])
        return iter(indices)

    def __len__(self):
        return max(0, self.num_samples - self._active_skip())
