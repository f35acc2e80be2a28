"""Load a local weight file into :class:`TimmViTExpert` (``self.model`` is a
timm model).

The file is opened here (:func:`~.common.read_state_dict`, so through
``cast_mmaction.safe_load``), never by timm, and never fetched from the hub.
The state dict is then passed through the ``checkpoint_filter_fn`` of the
timm module that defines the model (timm's own converter: it maps the
formats timm itself loads for that model, e.g. the open_clip EVA-CLIP file
``visual.trunk.*``, the OpenAI CLIP ``visual.*`` layout, Meta's DINOv2
files, and resamples the position table to the expert's ``img_size``).
The classifier (``head.*``) is dropped; any other key that does not fit the
model is an error naming it.
"""
import sys

from .common import read_state_dict
from .state_dict import EXPERT_HINT, load_fitted, strip_prefixes

WHAT = 'timm expert weights'
IGNORED = ('head.', 'head_drop.', 'mask_token')


def timm_filter(model):
    """The ``checkpoint_filter_fn`` of the timm module defining ``model``
    (None if that module has none)."""
    module = sys.modules.get(type(model).__module__)
    return getattr(module, 'checkpoint_filter_fn', None)


def read_timm_expert(path, model, name='the timm model'):
    """The state dict of ``path`` in the names of timm's ``model``."""
    state = read_state_dict(path, WHAT)
    state = strip_prefixes(state, ('module.', '_orig_mod.'))
    if 'model.patch_embed.proj.weight' in state:  # a saved TimmViTExpert
        state = {k[len('model.'):]: v for k, v in state.items()
                 if k.startswith('model.')}
    if not any('patch_embed' in k or 'conv1' in k or 'pos_embed' in k
               for k in state):
        sample = ', '.join(list(state)[:5])
        raise ValueError(
            f'{WHAT}: {path} is not a ViT image model for {name} (no patch '
            f'embedding keys; found {sample}, ...). Use the timm weights of '
            f'that model (its model.safetensors) or the file timm converts '
            f'for it (config field: model.backbone.experts.<name>.'
            f'pretrained)')
    convert = timm_filter(model)
    if convert is not None:
        try:
            state = convert(state, model)
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f'{WHAT}: timm could not convert {path} for {name} '
                f'({type(e).__name__}: {e}); is it the right model_name?'
            ) from e
    return {k: v.float() for k, v in state.items()}


def load_timm_expert(expert, path):
    """Load ``path`` into ``expert.model``; returns the fit report."""
    name = expert.model_name
    state = read_timm_expert(path, expert.model, name)
    return load_fitted(expert.model, state,
                       f'TimmViTExpert({name}) <- {path}', hint=EXPERT_HINT,
                       ignore_unexpected=IGNORED)


__all__ = ['load_timm_expert', 'read_timm_expert', 'timm_filter']
