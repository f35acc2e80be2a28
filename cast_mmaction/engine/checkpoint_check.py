"""Does a checkpoint fit the model built from the config?
(:func:`check_checkpoint`, used by
:class:`~cast_mmaction.engine.hooks.StartupCheckHook`)."""
import logging

import torch
from mmengine.logging import print_log

from ..checkpoints.state_dict import fit_report, strip_prefixes

__all__ = ['CheckpointMismatchError', 'check_checkpoint']


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model built from the config."""


def _log(msg, level=logging.INFO):
    print_log(msg, logger='current', level=level)


def expert_field(model, name):
    """The config field of expert ``name``: ``model.backbone.experts.<name>``
    of a multi-expert backbone, or what the backbone declares
    (``expert_field(name)``; the single-expert PEFT backbones:
    ``model.backbone.expert``)."""
    bb = getattr(getattr(model, 'module', model), 'backbone', None)
    declared = getattr(bb, 'expert_field', None)
    return declared(name) if callable(declared) else \
        f'model.backbone.experts.{name}'


def _field_of(key, model=None):
    parts = key.split('.')
    if parts[0] == 'backbone' and len(parts) > 2 and parts[1] == 'experts':
        return expert_field(model, parts[2])
    if parts[0] == 'cls_head':
        return 'model.cls_head (num_classes / in_channels)'
    return 'model.' + '.'.join(parts[:2])


def _state_dict_of(checkpoint):
    sd = checkpoint
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        sd = checkpoint['state_dict']
    if not isinstance(sd, dict):
        return None
    sd = strip_prefixes(sd)
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
                    'convert it first with tools/convert/convert_checkpoint.py.')
        raise CheckpointMismatchError(
            f'{source} holds no state dict of tensors (top-level keys '
            f'{keys}); it is not a checkpoint of this code base.{hint}')
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    rep = fit_report(model, sd)  # the toolkit every loader uses
    missing, unexpected, shapes = rep.missing, rep.unexpected, rep.mismatched
    loaded = len(rep.loadable)
    problems = []
    head_shapes = [s for s in shapes if s[0].startswith('cls_head.')]
    if not strict:
        shapes = [s for s in shapes if not s[0].startswith('cls_head.')]
    if shapes:
        fields = sorted({_field_of(k, model) for k, _, _ in shapes})
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
            fields = sorted({_field_of(k, model) for k in need})
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
            'with tools/convert/convert_checkpoint.py first.')
    if head_shapes:
        _log(f'{source}: the head was not loaded ({head_shapes[0][0]}: '
             f'checkpoint {head_shapes[0][1]} vs model {head_shapes[0][2]},'
             f' e.g. another num_classes); it starts from its '
             f'initialisation', logging.WARNING)
    return loaded
