"""Key tables of the released PEFT baselines (ST-Adapter, AIM), used by the
``st_adapter`` and ``aim`` records of :mod:`.registry`.

* ST-Adapter (linziyi96/st-adapter): the training script saves
  ``{'model': sd, ...}`` with the *trainable* parameters only
  (``transformer.resblocks.N.adapter_pre_{attn,mlp}.{fc1,conv,fc2}``,
  ``fc``); the frozen tower is OpenAI's CLIP file (``ViT-B-16.pt``, whose
  ``visual.*`` are in the same names). The converter reads both: the tower
  through the CLIP expert's reader (:func:`.clip.read_clip_visual`: the
  TorchScript archive without running it, open_clip / transformers / timm
  towers), merged under the release's keys.
* AIM (taoyang1122/adapt-image-models, MMAction2 0.x): ``{'state_dict':
  {'backbone.*', 'cls_head.fc_cls.*'}, 'meta': ...}`` with the whole model;
  adapters ``{T,S,MLP}_Adapter[_in].D_fc{1,2}``.
"""
from ..models.layers import resize_1d_embed, resize_grid_embed
from .key_rows import CLIP

_ADAPTER_WORDS = ('.adapter_pre_attn.', '.adapter_pre_mlp.')


def _tower_rows(src_prefix=''):
    """OpenAI CLIP ``visual.*`` names (under ``src_prefix``) -> the CLIP
    expert of a single-expert backbone (``backbone.experts.clip.``)."""
    p = src_prefix.replace('.', r'\.')
    rb = p + r'transformer\.resblocks\.(\d+)\.'
    ours = CLIP + r'transformer.resblocks.\1.'
    return [
        (p + r'(conv1\.weight|class_embedding|positional_embedding)',
         CLIP + r'\1'),
        (p + r'(ln_pre|ln_post)\.(weight|bias)', CLIP + r'\1.\2'),
        (rb + r'(ln_1|ln_2)\.(weight|bias)', ours + r'\2.\3'),
        (rb + r'attn\.(in_proj_weight|in_proj_bias)', ours + r'attn.\2'),
        (rb + r'attn\.out_proj\.(weight|bias)', ours + r'attn.out_proj.\2'),
        (rb + r'mlp\.(c_fc|c_proj)\.(weight|bias)', ours + r'mlp.\2.\3'),
    ]


# -- ST-Adapter --------------------------------------------------------------
ST_ADAPTER_KEY_MAP = _tower_rows() + [
    (r'transformer\.resblocks\.(\d+)\.adapter_pre_(attn|mlp)\.'
     r'(fc1|conv|fc2)\.(weight|bias)',
     r'backbone.pre_\2_adapters.clip.\1.\3.\4'),
    (r'fc\.(weight|bias)', r'cls_head.fc_cls.\1'),
]
#: OpenAI's output projection to the joint space: unused by ST-Adapter
ST_ADAPTER_IGNORED = (r'proj', )
ST_ADAPTER_EXPECTS = ('an ST-Adapter release: {\'model\': {transformer.'
                      'resblocks.N.adapter_pre_attn / adapter_pre_mlp.'
                      '{fc1,conv,fc2}, fc}} (trainable parameters only)')


def is_st_adapter(state):
    return any(w in k for k in state for w in _ADAPTER_WORDS) and not any(
        k.startswith(('backbone.', 'module.backbone.')) for k in state)


# -- AIM ---------------------------------------------------------------------
_AIM_ADAPTERS = dict(T_Adapter_in='t_in_adapters', T_Adapter='t_adapters',
                     S_Adapter='s_adapters', MLP_Adapter='mlp_adapters')
AIM_KEY_MAP = _tower_rows('backbone.') + [
    (r'backbone\.temporal_embedding', 'backbone.temporal_embedding'),
] + [
    (rf'backbone\.transformer\.resblocks\.(\d+)\.{theirs}\.D_(fc1|fc2)\.'
     r'(weight|bias)', rf'backbone.{ours}.clip.\1.\2.\3')
    for theirs, ours in _AIM_ADAPTERS.items()
] + [
    (r'cls_head\.fc_cls\.(weight|bias)', r'cls_head.fc_cls.\1'),
]
AIM_IGNORED = (r'backbone\.proj', )
AIM_EXPECTS = ('an AIM checkpoint: {\'state_dict\': {backbone.'
               'temporal_embedding, backbone.transformer.resblocks.N.'
               '{T,S,MLP}_Adapter.D_fc1, ..., cls_head.fc_cls}}')


def is_aim(state):
    return 'backbone.temporal_embedding' in state and any(
        '.T_Adapter.D_fc' in k for k in state)


# -- adapting to the configured model -----------------------------------------
def adapt_peft(state, model):
    """Resize the CLIP position table to the model's patch grid and AIM's
    temporal embedding to its frame count (bicubic / linear):
    (state, notes)."""
    own = model.state_dict()
    notes = []
    expert = model.backbone.experts['clip']
    key = CLIP + 'positional_embedding'
    if key in state and key in own and state[key].shape != own[key].shape:
        old = state[key]
        side = int(round((old.shape[0] - 1)**0.5))
        state[key] = resize_grid_embed(old, (side, side), expert.grid_hw,
                                       num_prefix=1)
        notes.append(f'resized {key} {tuple(old.shape)} -> '
                     f'{tuple(state[key].shape)}')
    key = 'backbone.temporal_embedding'
    if key in state and key in own and state[key].shape != own[key].shape:
        old = state[key]
        state[key] = resize_1d_embed(old[0], own[key].shape[1])[None]
        notes.append(f'resized {key} {tuple(old.shape)} -> '
                     f'{tuple(state[key].shape)}')
    return state, notes


def read_clip_tower(path):
    """The frozen tower an ST-Adapter release needs (OpenAI names)."""
    from .clip import read_clip_visual
    return read_clip_visual(path)


__all__ = ['ST_ADAPTER_KEY_MAP', 'ST_ADAPTER_IGNORED', 'ST_ADAPTER_EXPECTS',
           'is_st_adapter', 'AIM_KEY_MAP', 'AIM_IGNORED', 'AIM_EXPECTS',
           'is_aim', 'adapt_peft', 'read_clip_tower']
