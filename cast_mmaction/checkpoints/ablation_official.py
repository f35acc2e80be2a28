"""Checkpoints of the authors' extended CAST model with ablation switches
(``joohyun7u/CA2ST``, ``models/bidir_modeling_crossattn.py``).

Their key names are those of the CAST release (``cast_official``), so the
key table is ``CAST_KEY_MAP``; what differs is the layout: blocks without
B-CAST (``CA`` / ``late_fusion``), without adapters (``use_Adapter``),
without self-attention or MLP branches (``use_SA`` / ``use_MLP``), deeper
than the pretrained experts, and head adapters (``noun_last_Adapter`` /
``verb_last_Adapter``) that verb/noun and single-expert models store but do
not use. Detection accepts exactly the files whose layout is not the uniform
CAST one (``is_cast`` leaves them to this record); converting into a model
drops, and reports, the tensors the model does not use: head adapters of a
head without adapters and the tower of an expert the model does not have
(a ``clip_only`` checkpoint into a CLIP-only model). The record is
``registry.CAST_ABLATION``; ``parity/cast_ablation.py`` maps the
constructor switches to a config.
"""
from .ablation_layout import ablation_layout
from .cast_official import adapt_to_model
from .state_dict import strip_prefixes

ABLATION_EXPECTS = ('a CAST layout (clip_conv1.weight, patch_embed.proj.'
                    'weight) whose blocks differ in links, adapters or '
                    'branches, or a verb/noun head with noun_last_Adapter')

def is_cast_ablation(state):
    keys = strip_prefixes(state)
    return ('clip_conv1.weight' in keys and 'patch_embed.proj.weight' in keys
            and not any(k.startswith(('ast_', 'audio_')) for k in keys)
            and bool(ablation_layout(keys)))


_EXPERT_PARTS = ('experts', 'attn_adapters', 'mlp_adapters')


def adapt_ablation(state, model):
    """Drop (and report) the tensors ``model`` does not use, then fit the
    position tables as for CAST. Also the ``adapt`` of the CAST record: a
    uniform layout can be a single-expert model (``clip_only`` /
    ``vmae_only`` with B-CAST everywhere), whose head has no adapters."""
    own = model.state_dict()
    experts = set(getattr(model.backbone, 'experts', {}))
    unused = []
    for k in list(state):
        if k in own:
            continue
        parts = k.split('.')
        head_adapter = k.startswith('cls_head.adapters.')
        other_expert = (len(parts) > 2 and parts[0] == 'backbone'
                        and parts[1] in _EXPERT_PARTS
                        and parts[2] not in experts)
        if head_adapter or other_expert:
            unused.append(k)
            del state[k]
    notes = []
    if unused:
        notes.append(f'ignored {len(unused)} tensors this model does not use '
                     f'(head adapters of a head without adapters, towers of '
                     f'experts it does not have): {", ".join(unused)}')
    state, more = adapt_to_model(state, model)
    return state, notes + more


__all__ = ['ABLATION_EXPECTS', 'ablation_layout', 'is_cast_ablation',
           'adapt_ablation']
