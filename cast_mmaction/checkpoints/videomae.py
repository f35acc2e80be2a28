"""Load VideoMAE weights into :class:`VideoMAEExpert`.

Accepted sources (a file, a saved folder, or ``hf:ORG/NAME``; see
:mod:`.expert_formats`):

* the authors' self-supervised checkpoints (``{'model': sd}`` with
  ``encoder.`` keys; decoder keys are ignored) and fine-tuned ones (plain
  keys, ``head`` ignored), also wrapped in ``module``/``state_dict``;
* ``transformers`` ``VideoMAEModel`` / ``VideoMAEForPreTraining`` /
  ``VideoMAEForVideoClassification`` (``MCG-NJU/videomae-base``,
  ``MCG-NJU/videomae-base-short-ssv2``, ...): separate q / k / v fused into
  ``qkv``, decoder and classifier ignored;
* MMAction2 model-zoo checkpoints of its ``VisionTransformer`` backbone
  (``backbone.patch_embed.projection.weight``, mmcv ``FFN`` MLPs).

The expert's position table is VideoMAE's fixed sin-cos table; a file that
carries a learned one (``use_learnable_pos_emb``) or layer scale
(``init_values > 0``) is refused rather than loaded wrong.
"""
import torch

from ..models.layers import sincos_table
from .expert_formats import (ExpertFormat, check_activation, convert,
                             detect_format, eps_note, ndim, read_source,
                             wrong_kind)
from .key_rows import hf_videomae_rows, mmaction_vit_rows
from .state_dict import EXPERT_HINT, load_fitted, strip_prefixes

IGNORED = ('decoder.', 'encoder_to_decoder.', 'mask_token', 'head.',
           'norm.', 'pos_embed')
_WHAT = 'VideoMAE expert weights'
_FIELD = 'model.backbone.experts.vmae.pretrained'
_LAYER_SCALE = (r'blocks\.\d+\.gamma_[12]$',
                'layer scale (init_values > 0), which the VideoMAE expert '
                'does not have')

FORMATS = (
    ExpertFormat(
        'transformers', 'transformers VideoMAE checkpoint',
        detect=lambda s: ndim(
            s, 'embeddings.patch_embeddings.projection.weight') == 5,
        rows=hf_videomae_rows(), prefix=('videomae.', ),
        keep=('fc_norm.', ),
        ignored=(r'decoder\..*', r'encoder_to_decoder\..*', 'mask_token',
                 r'classifier\..*', r'layernorm\..*',
                 r'embeddings\.position_embeddings')),
    ExpertFormat(
        'mmaction2', 'MMAction2 VisionTransformer checkpoint',
        detect=lambda s: ndim(s, 'patch_embed.projection.weight') == 5,
        rows=mmaction_vit_rows(), prefix=('backbone.', ),
        ignored=(r'cls_head\..*', r'data_preprocessor\..*', r'norm\..*',
                 'pos_embed'),
        refuse=(_LAYER_SCALE, )),
)


def _read(source):
    src = read_source(source, _WHAT, _FIELD)
    state = strip_prefixes(src.state, ('module.', ))
    fmt, sub = detect_format(state, FORMATS)
    if fmt is not None:
        if src.config is not None:
            check_activation(src.config, 'gelu', _WHAT, src.where)
        _check_pos_embed(sub.get('pos_embed'), source)
        state = convert(fmt, sub, f'{_WHAT} ({src.where})')
    else:
        state = strip_prefixes(state, ('backbone.', ))
        state = strip_prefixes(state, 'encoder.')
        w = state.get('patch_embed.proj.weight')
        if w is None or w.ndim != 5:
            raise wrong_kind(_WHAT, source, 'a VideoMAE video model (no 5-D '
                             'patch_embed.proj.weight)', src.state,
                             src.config, 'VideoMAE', _FIELD)
        for k in state:
            if k.startswith('blocks.') and k.endswith(('gamma_1', 'gamma_2')):
                raise ValueError(f'{_WHAT}: {source} has {k}: '
                                 f'{_LAYER_SCALE[1]}')
        _check_pos_embed(state.get('pos_embed'), source)
    return {k: v.float() for k, v in state.items()}, src


def _check_pos_embed(pos, source):
    """A stored position table must be VideoMAE's sin-cos table (which the
    expert regenerates for its own size)."""
    if pos is None:
        return
    table = pos.reshape(-1, pos.shape[-1]).float()
    ref = sincos_table(table.shape[0], table.shape[1])
    if not torch.allclose(table, ref, atol=1e-4):
        raise ValueError(f'{_WHAT}: {source} has a learned position table '
                         f'(pos_embed is not the fixed sin-cos table); the '
                         f'VideoMAE expert uses the fixed table')


def read_videomae(path):
    """The VideoMAE tower in the expert's names, float32."""
    return _read(path)[0]


def load_videomae_expert(expert, path):
    state, src = _read(path)
    w = state['patch_embed.proj.weight']
    dim, _, tub, ph, _ = w.shape
    if (tub, ph) != (expert.tubelet_size, expert.patch_size):
        raise ValueError(f'VideoMAE weights {path} use tubelet {tub} and '
                         f'patch {ph}; set backbone.experts.vmae.'
                         f'tubelet_size={tub}, patch_size={ph}')
    if dim != expert.embed_dim:
        raise ValueError(f'VideoMAE weights {path} have width {dim}; set '
                         f'backbone.experts.vmae.embed_dim={dim}')
    if src.config is not None:
        eps_note(src.config, expert.blocks[0].norm1.eps,
                 f'VideoMAE expert <- {path}')
    rep = load_fitted(expert, state, f'VideoMAE expert <- {path}', hint=EXPERT_HINT,
                      allow_missing=True, allow_unexpected=True,
                      ignore_unexpected=IGNORED)
    return rep.missing, rep.unexpected
