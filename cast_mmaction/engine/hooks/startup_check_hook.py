"""StartupCheckHook: refuse, before the first iteration, a model whose
experts do not fit its head, a checkpoint that does not fit the model, and
settings that would be silently ignored.

Config (``configs/_base_/reliability.py``)::

    default_hooks = dict(startup_check=dict(type='StartupCheckHook'))
"""
from mmengine.hooks import Hook

from mmaction.registry import HOOKS

from ..checkpoint_check import check_checkpoint

__all__ = ['StartupCheckHook', 'check_model', 'check_verb_noun_classes',
           'check_blending']

# where each setting of the former ``reliability = dict(...)`` lives now
_MOVED = dict(
    max_bad_fraction='default_hooks.bad_samples.max_bad_fraction',
    val_bad_samples="val_dataloader.dataset.bad_sample ('flag' / 'raise')",
    test_bad_samples="test_dataloader.dataset.bad_sample ('raise' / 'flag')",
    nonfinite="optim_wrapper.nonfinite ('skip' / 'stop'; type "
    'GuardedOptimWrapper or GuardedAmpOptimWrapper)',
    max_nonfinite_in_a_row='optim_wrapper.max_nonfinite_in_a_row',
    check_annotations='<loader>.dataset.check_annotations (RobustDataset)',
    exact_resume="default_hooks.resume_state, train_dataloader.sampler "
    "type 'ReproducibleSampler', train_dataloader.dataset.reseed",
    check_startup='default_hooks.startup_check')


def _unwrap(model):
    return getattr(model, 'module', model)


def check_model(model):
    """Shapes a config can get wrong that the model builds with but cannot
    run: the head's expected input widths against the experts' widths.

    A head declares them: ``head.input_widths(num_streams)`` returns the
    width of each of the ``num_streams`` pooled streams it reads (None: any)
    and raises ``ValueError`` naming the field when it cannot read that many
    streams (``CASTHead``, ``CASTVerbNounHead``). A head without the
    declaration is checked generically: every stream must have its
    ``in_channels``; a head with neither is reported (a warning naming the
    head), never skipped silently. Returns the expected widths (None when
    nothing could be checked)."""
    model = _unwrap(model)
    backbone = getattr(model, 'backbone', None)
    head = getattr(model, 'cls_head', None)
    experts = getattr(backbone, 'experts', None)
    if experts is None or head is None:
        return None
    widths = {name: getattr(e, 'embed_dim', None)
              for name, e in experts.items()}
    declared = getattr(head, 'input_widths', None)
    channels = getattr(head, 'in_channels', None)
    generic = ''
    if callable(declared):
        expected = list(declared(len(widths)))
        if len(expected) != len(widths):
            raise ValueError(
                f'{type(head).__name__}.input_widths({len(widths)}) returned '
                f'{len(expected)} widths; it must give one per stream')
    elif isinstance(channels, int):
        expected = [channels] * len(widths)
        generic = (f' ({type(head).__name__} declares no input_widths, so '
                   f'every stream is checked against its in_channels)')
    else:
        from mmengine.logging import print_log
        print_log(f'start-up check: model.cls_head ({type(head).__name__}) '
                  f'declares no input_widths(num_streams) and has no integer '
                  f'in_channels; the experts\' widths {widths} are not '
                  f'checked against it', logger='current', level=30)
        return None
    bad = {n: w for (n, w), e in zip(widths.items(), expected)
           if w is not None and e is not None and w != e}
    if bad:
        fields = ', '.join(
            f'model.backbone.experts.{n}.embed_dim={w}'
            for n, w in bad.items())
        if len(set(expected)) == 1 and expected[0] == channels:
            want = f'model.cls_head.in_channels={channels}'
            why = ('the head reads every stream\'s pooled feature, so every '
                   'expert\'s embed_dim and cls_head.in_channels must be '
                   'equal.')
        else:
            want = f'model.cls_head expects widths {expected}'
            why = 'each stream must have the width the head expects.'
        raise ValueError(
            f'{want} does not match the experts\' widths {widths} '
            f'({fields}): {why}{generic}')
    return expected


def _robust_datasets(dataset, field):
    """``(config field, RobustDataset)`` of every ``RobustDataset`` that is
    ``dataset`` or sits inside its wrappers (``RepeatDataset``,
    ``ClassBalancedDataset``: ``.dataset``; ``ConcatDataset``:
    ``.datasets[k]``)."""
    if type(dataset).__name__ == 'RobustDataset':
        return [(field, dataset)]
    from ...datasets.annotation_checks import wrapped_datasets
    inner = wrapped_datasets(dataset)
    if not inner:
        return []
    many = not hasattr(dataset, 'dataset')
    out = []
    for k, sub in enumerate(inner):
        out += _robust_datasets(
            sub, f'{field}.datasets[{k}]' if many else f'{field}.dataset')
    return out


def _verb_noun_counts():
    """``(key, label kind, EPIC-KITCHENS-100's count)`` of the verb and
    noun counts a head, a dataset or a mixup declares."""
    from ...datasets.epic_kitchens import NUM_NOUNS, NUM_VERBS
    return (('num_verbs', 'verb', NUM_VERBS), ('num_nouns', 'noun', NUM_NOUNS))


def _counts_text(counts):
    return ' / '.join(f'{k}={v}' for k, v in counts.items())


def _leaf_datasets(dataset, field):
    """``(config field, dataset)`` of every dataset that is ``dataset`` or
    sits inside its wrappers (``RobustDataset``: its fields sit beside the
    wrapper's when it is given ``dataset_type``, else in ``.dataset``;
    ``RepeatDataset``, ``ClassBalancedDataset``: ``.dataset``;
    ``ConcatDataset``: ``.datasets[k]``)."""
    from ...datasets.annotation_checks import wrapped_datasets
    inner = wrapped_datasets(dataset)
    if inner is None:
        return [(field, dataset)]
    if type(dataset).__name__ == 'RobustDataset':
        sub = field if getattr(dataset, 'flat_config', False) \
            else f'{field}.dataset'
        return _leaf_datasets(dataset.dataset, sub)
    many = not hasattr(dataset, 'dataset')
    out = []
    for k, sub in enumerate(inner):
        out += _leaf_datasets(
            sub, f'{field}.datasets[{k}]' if many else f'{field}.dataset')
    return out


def check_verb_noun_classes(model, dataset, field):
    """The head's ``num_verbs`` / ``num_nouns`` (``CASTVerbNounHead``)
    against those of every dataset that declares them
    (``EpicKitchens100Dataset``, also inside wrappers): the dataset checks
    its labels against its own counts; unchecked, a smaller head fails
    inside the loss and a larger one trains classes no sample has. Raises
    ``ValueError`` naming both config fields."""
    head = getattr(_unwrap(model), 'cls_head', None)
    for sub_field, ds in _leaf_datasets(dataset, field):
        for key, what, ek100 in _verb_noun_counts():
            want = getattr(head, key, None)
            have = getattr(ds, key, None)
            if not (isinstance(want, int) and isinstance(have, int)):
                continue
            if want != have:
                raise ValueError(
                    f'model.cls_head.{key}={want} but {sub_field}.{key}='
                    f'{have} ({type(ds).__name__} checks its {what}_class '
                    f'labels against it): set model.cls_head.{key} and '
                    f'{sub_field}.{key} to the same number of {what} classes '
                    f'(EPIC-KITCHENS-100 has {ek100}).')


def _blendings(blending, field):
    """``(config field, blending, reason)`` of ``blending`` or, for one that
    picks among ``augments`` (MMAction2's ``RandomBatchAugment``), of each
    of them (``None``, the 'no augment' it appends for ``probs``, skipped).
    ``reason``: how its ``num_classes`` is used."""
    name = type(blending).__name__
    augments = getattr(blending, 'augments', None)
    if not isinstance(augments, (list, tuple)):
        return [(field, blending,
                 f'{name} turns the labels into vectors of its num_classes, '
                 f'which the head\'s loss reads against its num_classes '
                 f'scores')]
    out = []
    for k, aug in enumerate(augments):
        if aug is None:
            continue
        sub = f'{field}.augments[{k}]'
        if k == 0:
            why = (f'{name} turns the labels into vectors of {sub}.'
                   f'num_classes, which the head\'s loss reads against its '
                   f'num_classes scores')
        else:
            why = (f'{name} one-hots the labels by augments[0].num_classes '
                   f'and would ignore this one silently')
        out += [(f, b, r if f != sub else why)
                for f, b, r in _blendings(aug, sub)]
    return out


def _ints(obj, *keys):
    return {k: getattr(obj, k) for k in keys
            if isinstance(getattr(obj, k, None), int)}


def check_blending(model):
    """The label counts of the data preprocessor's batch blending
    (``model.data_preprocessor.blending``: ``VerbNounMixupCutmix``,
    ``AudioVisualMixup``, MMAction2's ``MixupBlending`` / ``CutmixBlending``
    and each augment of its ``RandomBatchAugment``) against the head's:
    ``num_verbs`` / ``num_nouns`` for a verb / noun head
    (``CASTVerbNounHead``), ``num_classes`` for a single-label one. The
    blending turns the labels into vectors of its own width, which the
    head's loss reads against its scores: unchecked, a mismatch fails only
    in the first training iteration (a one-hot or tensor-size error inside
    the preprocessor or the loss). A single-label blending on a verb / noun
    head (it mixes ``gt_label`` only, not the ``gt_verb`` / ``gt_noun`` the
    head reads) and a verb / noun blending on a single-label head are
    refused too. A head with no counts is reported (a warning), never
    skipped silently. Raises ``ValueError`` naming both config fields."""
    model = _unwrap(model)
    blending = getattr(getattr(model, 'data_preprocessor', None),
                       'blending', None)
    head = getattr(model, 'cls_head', None)
    if blending is None or head is None:
        return
    head_vn = _ints(head, 'num_verbs', 'num_nouns')
    # CASTVerbNounHead's num_classes is its num_verbs: the verb / noun
    # counts decide
    head_nc = None if head_vn else _ints(head, 'num_classes').get(
        'num_classes')
    head_name = type(head).__name__
    for field, blend, why in _blendings(blending,
                                        'model.data_preprocessor.blending'):
        name = type(blend).__name__
        vn = _ints(blend, 'num_verbs', 'num_nouns')
        nc = None if vn else _ints(blend, 'num_classes').get('num_classes')
        if vn and head_vn:  # a verb / noun blending and head
            for key, what, ek100 in _verb_noun_counts():
                have, want = vn.get(key), head_vn.get(key)
                if have is not None and want is not None and have != want:
                    raise ValueError(
                        f'{field}.{key}={have} but model.cls_head.{key}='
                        f'{want}: set them to the same number of {what} '
                        f'classes (EPIC-KITCHENS-100 has {ek100}); {name} '
                        f'turns the {what} labels into vectors of its '
                        f'{key}, which the head\'s loss reads against its '
                        f'{key} scores.')
        elif nc is not None and head_nc is not None:
            if nc != head_nc:
                raise ValueError(
                    f'{field}.num_classes={nc} but model.cls_head.num_classes'
                    f'={head_nc}: set them to the same number of classes; '
                    f'{why}.')
        elif vn and head_nc is not None:
            counts = _counts_text(vn)
            raise ValueError(
                f'{field} ({name}) mixes verb / noun labels ({counts}) but '
                f'model.cls_head ({head_name}) is a single-label head '
                f'(num_classes={head_nc}): give {field} num_classes='
                f'{head_nc} instead (AudioVisualMixup, or MMAction2\'s '
                f'MixupBlending / CutmixBlending), or use a verb / noun head '
                f'(CASTVerbNounHead).')
        elif nc is not None and head_vn:
            counts = _counts_text(head_vn)
            raise ValueError(
                f'{field}.num_classes={nc} ({name} mixes single labels, '
                f'gt_label) but model.cls_head ({head_name}) predicts verbs '
                f'and nouns ({counts}) from gt_verb / gt_noun, which {name} '
                f'does not mix: use VerbNounMixupCutmix (or AudioVisualMixup '
                f'with num_verbs and num_nouns instead of num_classes) with '
                f'the head\'s counts.')
        elif vn or nc is not None:
            from mmengine.logging import print_log
            print_log(f'start-up check: model.cls_head ({head_name}) has no '
                      f'integer num_classes or num_verbs / num_nouns; the '
                      f'label counts of {field} ({name}) are not checked '
                      f'against it', logger='current', level=30)


@HOOKS.register_module()
class StartupCheckHook(Hook):
    """Checks at start-up

    * that the model's expert widths fit the head (:func:`check_model`);
    * that the labels of the training, validation and test annotation files
      lie within the head's ``num_classes`` (``RobustDataset`` checks the
      files when built; the bound comes from the head unless the dataset
      sets its own ``num_classes``, which must then equal it);
    * that the verb and noun counts of a verb / noun head
      (``num_verbs`` / ``num_nouns``) equal those of the training,
      validation and test datasets (``EpicKitchens100Dataset``), which bound
      their labels by them (:func:`check_verb_noun_classes`);
    * before training, that the label counts of the data preprocessor's
      batch blending (Mixup / CutMix: ``num_verbs`` / ``num_nouns`` or
      ``num_classes``) equal the head's (:func:`check_blending`);
    * that a checkpoint given to ``tools/test.py`` (or MMAction2's),
      ``load_from`` or ``--resume`` fits the model
      (:func:`~cast_mmaction.engine.checkpoint_check.check_checkpoint`):
      MMEngine would load a mismatching checkpoint with a warning and test
      (or train) a half-random model;
    * that the config has no ``reliability = dict(...)`` (read by earlier
      versions of the tools, ignored now): the error names the fields that
      replaced each key.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner):
        legacy = (getattr(runner, 'cfg', None) or {}).get('reliability')
        if legacy is not None:
            keys = list(legacy) if isinstance(legacy, dict) else []
            moved = '; '.join(f'{k} -> {_MOVED[k]}' for k in keys
                              if k in _MOVED)
            raise ValueError(
                'the config sets reliability = dict(...), which is no longer '
                'read: the settings are fields of the hooks, dataset wrappers '
                'and optimiser wrapper the config names '
                '(configs/_base_/reliability.py, docs/reliability.md). '
                'Remove it' + (f' and set: {moved}' if moved else '') + '.')
        self._trust_from_config(runner)
        check_model(runner.model)

    @staticmethod
    def _trust_from_config(runner):
        """The config's top-level ``trust_checkpoint = True`` (read by
        ``safe_load.trust_config`` in this package's tools) applied here as
        well, before ``Runner.load_or_resume``: under MMAction2's own
        tools or a plain ``Runner.from_cfg`` it did nothing while the
        refusal's hint recommended it. Trusts ``load_from`` and, on a
        resume (``resume = True`` or a torchrun restart), the work dir."""
        cfg = getattr(runner, 'cfg', None) or {}
        if not cfg.get('trust_checkpoint', False):
            return
        from ... import safe_load
        from .elastic_resume_hook import restart_count
        load_from = getattr(runner, '_load_from', None) or cfg.get('load_from')
        safe_load.trust(load_from)
        if getattr(runner, '_resume', False) or cfg.get('resume') or \
                restart_count() > 0:
            safe_load.trust(runner.work_dir)

    def before_train(self, runner):
        self._check_labels(runner, runner.train_dataloader.dataset,
                           'train_dataloader')
        val_loop = getattr(runner, '_val_loop', None)
        loader = getattr(val_loop, 'dataloader', None)
        if loader is not None:
            self._check_labels(runner, loader.dataset, 'val_dataloader')
        check_blending(runner.model)

    def before_test(self, runner):
        self._check_labels(runner, runner.test_dataloader.dataset,
                           'test_dataloader')

    @staticmethod
    def _check_labels(runner, dataset, loader):
        check_verb_noun_classes(runner.model, dataset, f'{loader}.dataset')
        StartupCheckHook._check_num_classes(runner, dataset, loader)

    @staticmethod
    def _check_num_classes(runner, dataset, loader):
        """The annotation labels against the head's ``num_classes``:
        ``RobustDataset`` checked the file when it was built, against its
        own ``num_classes`` if the config gives one (then it must be the
        head's); without one the labels are checked here, before the first
        iteration. A ``RobustDataset`` inside MMEngine's wrappers
        (``RepeatDataset``, ``ClassBalancedDataset``, ``ConcatDataset``) is
        checked as well."""
        head = getattr(_unwrap(runner.model), 'cls_head', None)
        classes = getattr(head, 'num_classes', None)
        if not isinstance(classes, int):
            return
        for field, robust in _robust_datasets(dataset, f'{loader}.dataset'):
            if not robust.check_annotations:
                continue
            if robust.num_classes is None:
                from ...datasets.annotation_checks import \
                    check_dataset_annotations
                check_dataset_annotations(robust.dataset, classes,
                                          'model.cls_head.num_classes')
            elif robust.num_classes != classes:
                raise ValueError(
                    f'{field}.num_classes={robust.num_classes} (the label '
                    f'bound of the annotation check) but model.cls_head.'
                    f'num_classes={classes}: set both to the number of '
                    f'classes, or leave the dataset\'s out (the head\'s is '
                    f'used).')

    def after_load_checkpoint(self, runner, checkpoint):
        from mmengine.runner import BaseLoop
        resume = bool(getattr(runner, '_resume', False))
        # Runner.train() builds the train loop before loading; test() not
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        source = getattr(runner, '_load_from', None)
        if source is None and resume:
            from mmengine.runner.checkpoint import find_latest_checkpoint
            source = find_latest_checkpoint(runner.work_dir)
        if resume and training:
            # before Runner.resume reads meta['epoch'] (a bare KeyError for
            # a converted or weights-only file); tools/train.py says so
            # before building, this covers every other entry point
            from ..checks import (NotResumableError, not_resumable_message,
                                  resume_lacks)
            lacks = resume_lacks(checkpoint)
            if lacks:
                raise NotResumableError(not_resumable_message(
                    'the checkpoint to resume', source, lacks))
        what = ('the resumed checkpoint' if resume else
                'load_from' if training else 'the checkpoint to test')
        check_checkpoint(runner.model, checkpoint,
                         f'{what} {source!r}' if source else what,
                         strict=resume or not training)
