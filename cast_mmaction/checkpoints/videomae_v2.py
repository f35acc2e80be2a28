"""Load VideoMAE V2 weights into :class:`VideoMAEv2Expert`.

Accepted: the files of OpenGVLab/VideoMAEv2 (``docs/MODEL_ZOO.md``): the
distilled ``vit_s_k710_dl_from_giant.pth`` / ``vit_b_k710_dl_from_giant.pth``
and the fine-tuned giant models (plain keys, ``head`` ignored), and the
self-supervised ones (``encoder.`` keys; decoder ignored), in a ``module`` /
``model`` dict or bare, with the ``_orig_mod.`` prefix of a compiled model
and ``backbone.`` / ``encoder.`` prefixes removed (the authors'
``run_class_finetuning.py`` removes the same). A file whose sizes differ
from the expert's is refused naming the config field to set.
"""
from ..models.layers import sincos_table
from .common import read_state_dict
from .state_dict import (EXPERT_HINT, CheckpointFitError, fit_report,
                         load_fitted, strip_prefixes)

WHAT = 'VideoMAE V2 expert weights'
FIELD = 'model.backbone.experts.vmae'
IGNORED = ('decoder.', 'encoder_to_decoder.', 'mask_token', 'head.',
           'norm.', 'head_dropout.')
PREFIXES = ('module.', '_orig_mod.', 'backbone.', 'encoder.', 'model.')


def read_videomae_v2(path):
    state = read_state_dict(path, WHAT)
    for _ in range(3):  # e.g. module._orig_mod.encoder.
        state = strip_prefixes(state, PREFIXES)
    w = state.get('patch_embed.proj.weight')
    if w is None or w.ndim != 5:
        sample = ', '.join(list(state)[:5])
        hint = ''
        if w is not None and w.ndim == 4:
            hint = (' It is an image model (4-D patch embedding): use it as '
                    'the spatial expert (TimmViTExpert / CLIPViTExpert).')
        raise ValueError(f'{WHAT}: {path} is not a VideoMAE (V2) video model '
                         f'(no 5-D patch_embed.proj.weight; found {sample}, '
                         f'...).{hint} (config field: {FIELD}.pretrained)')
    if any(k.endswith('.attn.scale') for k in state):
        raise ValueError(f'{WHAT}: {path} uses cosine attention (attn.scale '
                         f'keys, cos_attn=True), which the expert does not '
                         f'implement')
    return {k: v.float() for k, v in state.items()}


def _check_sizes(expert, state, path):
    w = state['patch_embed.proj.weight']
    dim, _, tub, ph, _ = w.shape
    fixes = []
    if dim != expert.embed_dim:
        fixes.append(f'embed_dim={dim}')
    if (tub, ph) != (expert.tubelet_size, expert.patch_size):
        fixes.append(f'tubelet_size={tub}, patch_size={ph}')
    blocks = {int(k.split('.')[1]) for k in state if k.startswith('blocks.')}
    if blocks and max(blocks) + 1 != expert.depth:
        fixes.append(f'depth={max(blocks) + 1}')
    fc1 = state.get('blocks.0.mlp.fc1.weight')
    if fc1 is not None and fc1.shape[0] != expert.mlp_hidden:
        fixes.append(f'mlp_ratio={fc1.shape[0]}/{dim} (MLP width '
                     f'{fc1.shape[0]})')
    has_gamma = 'blocks.0.gamma_1' in state
    if has_gamma != bool(expert.init_values):
        fixes.append('init_values=1e-5 (the file has layer scale gamma_1 / '
                     'gamma_2)' if has_gamma else 'init_values=None (the '
                     'file has no layer scale)')
    if fixes:
        raise ValueError(
            f'{WHAT}: {path} does not match the expert ({expert.arch}: '
            f'width {expert.embed_dim}, depth {expert.depth}, patch '
            f'{expert.patch_size}, tubelet {expert.tubelet_size}, MLP '
            f'{expert.mlp_hidden}); set {FIELD}.' + ', '.join(fixes) +
            ' (or the matching arch: giant = patch 14, width 1408, 40 '
            'blocks)')


def load_videomae_v2_expert(expert, path):
    state = read_videomae_v2(path)
    _check_sizes(expert, state, path)
    pos = state.pop('pos_embed', None)
    if pos is not None:  # V2 keeps the sin-cos table; a learned one differs
        n, dim = pos.shape[-2:]
        if not pos.reshape(n, dim).allclose(sincos_table(n, dim), atol=1e-4):
            raise ValueError(f'{WHAT}: {path} has a learned pos_embed '
                             f'(use_learnable_pos_emb); the expert uses the '
                             f'fixed sin-cos table')
    # self-supervised files have no fc_norm (their encoder ends in `norm`):
    # it keeps its initialisation (it is trained); anything else missing is
    # an error before anything is loaded
    missing = [k for k in fit_report(expert, state, IGNORED).missing
               if not k.startswith('fc_norm.')]
    if missing:
        raise CheckpointFitError(
            f'{WHAT}: {path} lacks {len(missing)} tensors of the expert, e.g.'
            f' {missing[:8]} {EXPERT_HINT}')
    rep = load_fitted(expert, state, f'VideoMAE V2 expert <- {path}',
                      hint=EXPERT_HINT, allow_missing=True,
                      ignore_unexpected=IGNORED)
    return rep.missing, rep.unexpected


__all__ = ['read_videomae_v2', 'load_videomae_v2_expert']
