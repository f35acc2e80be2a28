"""Registry of converters for the authors' released checkpoints.

Each entry: ``name -> (detect(state) -> bool, convert(state) -> (ours,
unmapped))``, plus an optional ``adapt(state, model) -> (state, notes)``
that fits a converted state dict to a model of other input sizes (position
tables); the CAST rules are the default. ``tools/convert_checkpoint.py``
picks the converter by ``--kind`` or by detection.
"""
from .cast_official import adapt_to_model, convert_cast_state_dict

CONVERTERS = {}
ADAPTERS = {}


def register_converter(name, detect, convert, adapt=None):
    CONVERTERS[name] = (detect, convert)
    if adapt is not None:
        ADAPTERS[name] = adapt


def adapt_for(kind):
    """The shape-adaptation function of a converter kind."""
    return ADAPTERS.get(kind, lambda state, model: adapt_to_model(
        state, model.state_dict()))


def detect_kind(state):
    hits = [n for n, (det, _) in CONVERTERS.items() if det(state)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        sample = ', '.join(list(state)[:6])
        raise ValueError(f'unknown checkpoint layout (keys: {sample}, ...); '
                         f'known kinds: {sorted(CONVERTERS)}. Pass --kind.')
    raise ValueError(f'checkpoint matches several kinds {hits}; pass --kind')


def _is_cast(state):
    keys = {k[len('module.'):] if k.startswith('module.') else k
            for k in state}
    return ('clip_conv1.weight' in keys and 'patch_embed.proj.weight' in keys
            and any('.t2s_cross.' in k for k in keys)
            and not any(k.startswith(('ast_', 'audio_')) for k in keys))


register_converter('cast', _is_cast, convert_cast_state_dict)
