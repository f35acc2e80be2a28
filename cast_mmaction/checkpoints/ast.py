"""Load AST weights into :class:`ASTExpert`.

Accepted sources:

* the official AST checkpoints (Gong et al.; e.g.
  ``audioset_10_10_0.4593.pth``): a state dict with ``module.v.*`` keys
  (the DeiT tower) and ``module.mlp_head.*`` (ignored);
* the same wrapped in ``model`` / ``state_dict`` / ``module`` or without the
  ``module.`` prefix (``v.*``);
* a DeiT ImageNet checkpoint (``cls_token``, ``dist_token``, 3-channel
  ``patch_embed.proj.weight``): the patch filter is summed over the RGB
  channels and the 14x14 grid adapted, as AST initialises from DeiT;
* ``transformers`` ``ASTModel`` / ``ASTForAudioClassification`` (e.g.
  ``MIT/ast-finetuned-audioset-10-10-0.4593``; a file, the saved folder or
  ``hf:ORG/NAME``): q / k / v fused into ``qkv``, classifier ignored; with
  its ``config.json`` the patch grid comes from ``num_mel_bins`` /
  ``max_length`` and the strides must equal the expert's.

The position grid is adapted to the expert's ``(f_dim, t_dim)`` the way AST
does: each axis is centre-cropped when shorter and bilinearly resized when
longer (time first). The AudioSet checkpoints use a (12, 101) grid (128 mel
bins x 1024 frames at stride 10).
"""
import math

from ..models.layers import resize_audio_grid
from .expert_formats import (ExpertFormat, check_activation, config_value,
                             convert, detect_format, eps_note, read_source,
                             wrong_kind)
from .key_rows import hf_ast_rows
from .state_dict import (EXPERT_HINT, load_fitted, select_prefix,
                         strip_prefixes)

IGNORED = ('head.', 'head_dist.', 'mlp_head.', 'fc_norm.')
_WHAT = 'AST expert weights'
_FIELD = 'model.backbone.experts.audio.pretrained'

FORMATS = (
    ExpertFormat(
        'transformers', 'transformers AST checkpoint',
        detect=lambda s: 'embeddings.distillation_token' in s,
        rows=hf_ast_rows(), prefix=('audio_spectrogram_transformer.', ),
        ignored=(r'classifier\..*', )),
)


def _read(source):
    src = read_source(source, _WHAT, _FIELD)
    state = strip_prefixes(src.state, 'module.')
    fmt, sub = detect_format(state, FORMATS)
    if fmt is not None:
        if src.config is not None:
            check_activation(src.config, 'gelu', _WHAT, src.where)
        state = convert(fmt, sub, f'{_WHAT} ({src.where})')
    if any(k.startswith('v.') for k in state):
        state = select_prefix(state, 'v.')
    state = strip_prefixes(state, ('backbone.experts.audio.', 'backbone.'))
    w = state.get('patch_embed.proj.weight')
    if (w is None or w.ndim != 4 or 'cls_token' not in state
            or not any(k.startswith('blocks.') for k in state)):
        raise wrong_kind(_WHAT, source, 'an AST / DeiT audio tower (need '
                         'module.v.patch_embed.proj.weight, cls_token, '
                         'blocks.*, or a transformers AST)', src.state,
                         src.config, 'AST', _FIELD)
    if 'dist_token' not in state:
        raise ValueError(f'{_WHAT}: {source} has no dist_token; AST needs a '
                         f'DeiT (distilled) tower with class and distillation '
                         f'tokens')
    return {k: v.float() for k, v in state.items()}, src


def read_ast(source):
    """The AST / DeiT tower state dict without prefixes, float32."""
    return _read(source)[0]


def _config_grid(config, expert, source):
    """The patch grid and strides a transformers AST config records; the
    strides must be the expert's (they are not visible in the weights)."""
    if not config:
        return None
    fs, ts = (config_value(config, k) for k in ('frequency_stride',
                                                  'time_stride'))
    if fs is None or ts is None:
        return None
    if (fs, ts) != tuple(expert.stride):
        raise ValueError(f'{_WHAT}: {source} was trained with strides '
                         f'(frequency {fs}, time {ts}), the expert uses '
                         f'{tuple(expert.stride)}: set backbone.experts.audio'
                         f'.fstride={fs}, tstride={ts}')
    patch = config_value(config, 'patch_size') or 16
    mel, frames = (config_value(config, k) for k in ('num_mel_bins',
                                                      'max_length'))
    if mel is None or frames is None:
        return None
    return (mel - patch) // fs + 1, (frames - patch) // ts + 1


def _infer_grid(n, expert, source, given):
    if given is not None:
        f, t = given
        if f * t != n:
            raise ValueError(f'{_WHAT}: pretrained_grid={given} has {f * t} '
                             f'patches but {source} has {n}')
        return f, t
    if n == 1212:  # AST AudioSet / ESC / Speech Commands at stride 10
        return 12, 101
    side = math.isqrt(n)
    if side * side == n and n in (196, 576):  # DeiT ImageNet grids
        return side, side
    if n % expert.f_dim == 0:
        return expert.f_dim, n // expert.f_dim
    raise ValueError(f'{_WHAT}: cannot infer the patch grid of {source} '
                     f'({n} patches); set the expert\'s '
                     f'pretrained_grid=(f, t)')


def load_ast_expert(expert, source, pretrained_grid=None):
    """Load ``source`` into ``expert``; returns (missing, unexpected)."""
    state, src = _read(source)
    if pretrained_grid is None:
        pretrained_grid = _config_grid(src.config, expert, source)
    if src.config is not None:
        eps_note(src.config, expert.norm.eps, f'AST expert <- {source}')
    w = state['patch_embed.proj.weight']
    if w.shape[0] != expert.embed_dim:
        raise ValueError(f'{_WHAT}: {source} has width {w.shape[0]}; set '
                         f'backbone.experts.audio.embed_dim={w.shape[0]}')
    if tuple(w.shape[-2:]) != tuple(expert.patch_size):
        raise ValueError(f'{_WHAT}: {source} uses {tuple(w.shape[-2:])} '
                         f'patches, the expert {expert.patch_size}')
    if w.shape[1] == 3:  # DeiT on RGB -> one channel, as AST does
        state['patch_embed.proj.weight'] = w.sum(1, keepdim=True)
    elif w.shape[1] != 1:
        raise ValueError(f'{_WHAT}: {source} patch embedding has {w.shape[1]}'
                         f' input channels (expected 1, or 3 for DeiT)')
    pos = state['pos_embed']
    n = pos.shape[1] - 2
    old = _infer_grid(n, expert, source, pretrained_grid)
    new = (expert.f_dim, expert.t_dim)
    if old != new:
        state['pos_embed'] = resize_audio_grid(pos, old, new, num_prefix=2)
    rep = load_fitted(expert, state, f'AST expert <- {source}', hint=EXPERT_HINT,
                      allow_missing=True, allow_unexpected=True,
                      ignore_unexpected=IGNORED)
    return rep.missing, rep.unexpected
