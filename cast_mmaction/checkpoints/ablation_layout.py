"""Whether a CAST-layout state dict is the uniform layout of the CAST
release or one of the authors' ablation models (``ablation_official``):
read by both detections (``cast_official.is_cast`` leaves the non-uniform
files to the ``cast_ablation`` record)."""
import re

from .state_dict import strip_prefixes

_BLOCK = re.compile(r'blocks\.(\d+)\.(\w+)')
_PARTS = dict(link=('t2s_cross', 's2t_cross', 'cross_s_down', 'cross_t_down'),
              adapter=('S_Adapter', 'T_Adapter', 'S_MLP_Adapter',
                       'T_MLP_Adapter'),
              attn=('clip_ln_1', 'clip_attn', 'norm1', 'attn'),
              mlp=('clip_ln_2', 'clip_mlp', 'norm2', 'mlp'))


def ablation_layout(state):
    """Why ``state`` is not the uniform CAST layout: a list of reasons
    (empty for a uniform one)."""
    keys = strip_prefixes(state)
    blocks, has = set(), {p: set() for p in _PARTS}
    for k in keys:
        m = _BLOCK.match(k)
        if not m:
            continue
        i = int(m.group(1))
        blocks.add(i)
        for part, names in _PARTS.items():
            if m.group(2) in names:
                has[part].add(i)
    reasons = [f'{part} in blocks {sorted(has[part])} of {len(blocks)}'
               for part in _PARTS if has[part] != blocks]
    one_way = {k.split('.')[2] for k in keys if _BLOCK.match(k)} & {
        't2s_cross', 's2t_cross'}
    if len(one_way) == 1:
        reasons.append(f'one-way links ({one_way.pop()} only)')
    if 'noun_last_Adapter.D_fc1.weight' in keys and (
            'head_verb.weight' in keys):
        reasons.append('verb/noun head with (unused) noun_last_Adapter')
    return reasons


__all__ = ['ablation_layout']
