"""Checkpoints that hold the trainable parameters only.

A fine-tuned CAST (ViT-B) is 217M parameters of which 172M are the frozen
CLIP and VideoMAE experts, unchanged from their pretrained files. With
:class:`TrainableCheckpointHook` in the config, every checkpoint the run
saves drops those frozen expert weights (about 180 MB of weights instead of
about 870 MB in fp32) and records, per expert, a pointer to the file they
came from (the expert's ``pretrained``) and a fingerprint (SHA-256 of the
dropped tensors). Loading such a checkpoint (``tools/test.py``,
``load_from``, ``--resume``) with the hook in the config reads the expert
files again, checks the fingerprint and fills the frozen weights in, so the
model loads strictly, exactly as from a full checkpoint.

Config::

    custom_hooks = [dict(type='ParameterCountHook'),
                    dict(type='TrainableCheckpointHook')]

Only experts whose ``pretrained`` is a file or folder (or an ``open_clip:`` /
``hf:`` reference) are
dropped; an expert trained from random weights (no ``pretrained``), or one
that is not frozen, stays in the checkpoint. The optimizer state in a
checkpoint covers the trainable parameters only (see
``CASTLayerDecayOptimWrapperConstructor``); ``CheckpointHook(
save_optimizer=False)`` leaves it out (a checkpoint to publish, not to
resume).

Full checkpoints (without the ``frozen_experts`` entry) load as usual, with
or without the hook. This module does not touch how checkpoints are written
(atomic writes, resume state): it only edits the checkpoint dict.
"""
import hashlib
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmaction.registry import HOOKS

KEY = 'frozen_experts'
PREFIX = 'backbone.experts.'


def _unwrap(model):
    return getattr(model, 'module', model)


def _experts(model):
    backbone = getattr(_unwrap(model), 'backbone', None)
    experts = getattr(backbone, 'experts', None)
    return dict(experts.items()) if experts is not None else {}


def _is_source(pretrained):
    if not isinstance(pretrained, str) or not pretrained:
        return False
    path = osp.expanduser(pretrained)  # a file, a transformers folder
    return (pretrained.startswith(('open_clip:', 'hf:')) or osp.isfile(path)
            or osp.isdir(path))


def frozen_state(expert):
    """{name: tensor} of the expert's frozen parameters, in name order."""
    return {n: p for n, p in expert.named_parameters() if not p.requires_grad}


def frozen_keys(name, frozen):
    """State-dict keys of expert ``name``'s frozen parameters (``frozen``:
    its :func:`frozen_state`): what a trainable-only checkpoint leaves out."""
    return [PREFIX + f'{name}.{n}' for n in frozen]


def fingerprint(tensors):
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors``."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()



@HOOKS.register_module()
class TrainableCheckpointHook(Hook):
    """Save checkpoints without the frozen expert weights; restore them from
    the experts' ``pretrained`` files when such a checkpoint is loaded.

    Args:
        strip: drop the frozen expert weights from saved checkpoints (False:
            save full checkpoints but still restore stripped ones on load).
        check_fingerprint: on load, refuse expert files whose weights differ
            from those the checkpoint was trained with.
    """

    # restore before other hooks look at a loaded checkpoint (e.g. the
    # start-up check that it fits the model)
    priority = 'HIGHEST'

    def __init__(self, strip=True, check_fingerprint=True):
        self.strip = strip
        self.check_fingerprint = check_fingerprint
        self._prints = {}  # expert name -> fingerprint of its frozen weights
        self._warned = set()

    # -- saving ----------------------------------------------------------
    def _fingerprint(self, name, expert):
        if name not in self._prints:  # frozen weights never change
            self._prints[name] = fingerprint(frozen_state(expert))
        return self._prints[name]

    def before_save_checkpoint(self, runner, checkpoint):
        if not self.strip:
            return
        state = checkpoint.get('state_dict')
        if state is None:
            return
        record = {}
        for name, expert in _experts(runner.model).items():
            frozen = frozen_state(expert)
            if not frozen:
                continue
            source = getattr(expert, 'pretrained', None)
            if not _is_source(source):
                if name not in self._warned:
                    self._warned.add(name)
                    print_log(
                        f'TrainableCheckpointHook: expert {name!r} has no '
                        f'pretrained file (pretrained={source!r}); its frozen '
                        f'weights stay in the checkpoints', logger='current',
                        level=30)
                continue
            keys = frozen_keys(name, frozen)
            missing = [k for k in keys if k not in state]
            if missing:
                raise KeyError(f'TrainableCheckpointHook: the checkpoint has '
                               f'no {missing[:3]}: the model is not a '
                               f'multi-expert recognizer with '
                               f'backbone.experts')
            for k in keys:
                del state[k]
            record[name] = dict(
                pretrained=source, type=type(expert).__name__,
                num_tensors=len(keys),
                num_params=sum(p.numel() for p in frozen.values()),
                fingerprint=self._fingerprint(name, expert))
        if record:
            checkpoint[KEY] = record

    # -- loading ---------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint):
        restore_frozen_experts(runner.model, checkpoint,
                               check_fingerprint=self.check_fingerprint)


def restore_frozen_experts(model, checkpoint, check_fingerprint=True):
    """Fill the frozen expert weights that a trainable-only checkpoint left
    out into ``checkpoint['state_dict']`` (in place), reading each expert's
    file: the path recorded in the checkpoint, or the model's current
    ``pretrained`` when that file has moved. Returns the restored expert
    names; a full checkpoint is left as it is."""
    record = checkpoint.get(KEY)
    if not record:
        return []
    state = checkpoint.get('state_dict')
    if state is None:
        raise KeyError('a trainable-only checkpoint without a state_dict')
    experts = _experts(model)
    restored = []
    for name, info in record.items():
        expert = experts.get(name)
        if expert is None:
            raise KeyError(
                f'the checkpoint left out the frozen weights of expert '
                f'{name!r} ({info.get("type")}), which this model does not '
                f'have (its experts: {sorted(experts)}); use the config it '
                f'was trained with')
        want = info.get('fingerprint')
        current = frozen_state(expert)
        have = fingerprint(current) if (check_fingerprint and want) else None
        if not (want and have == want):  # not loaded yet (e.g. tools/test)
            candidates = [info.get('pretrained'),
                          getattr(expert, 'pretrained', None)]
            source = next((c for c in candidates if _is_source(c)), None)
            if source is None:
                from .checkpoint_check import expert_field
                raise FileNotFoundError(
                    f'the checkpoint holds only the trainable parameters; '
                    f'the frozen weights of expert {name!r} come from '
                    f'{info.get("pretrained")!r}, which is not there (nor '
                    f'the config\'s {expert_field(model, name)}.pretrained '
                    f'= {candidates[1]!r}): set that field to the file')
            expert.pretrained = source
            expert.init_weights()
            current = frozen_state(expert)
            if check_fingerprint and want:
                have = fingerprint(current)
                if have != want:
                    raise ValueError(
                        f'expert {name!r}: the weights in {source} differ '
                        f'from those the checkpoint was trained with '
                        f'(fingerprint {have[:12]} vs {want[:12]}); use the '
                        f'original file, or TrainableCheckpointHook('
                        f'check_fingerprint=False) to load anyway')
        for n, p in current.items():
            state.setdefault(PREFIX + f'{name}.{n}', p.detach().clone())
        restored.append(name)
    print_log(f'frozen weights of experts {restored} restored from their '
              f'pretrained files (trainable-only checkpoint)',
              logger='current')
    return restored


__all__ = ['TrainableCheckpointHook', 'restore_frozen_experts',
           'fingerprint', 'frozen_state']
