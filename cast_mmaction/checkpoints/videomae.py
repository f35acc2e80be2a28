"""Load VideoMAE weights into :class:`VideoMAEExpert`.

Accepted: the authors' self-supervised checkpoints (``{'model': sd}`` with
``encoder.`` keys; decoder keys are ignored) and fine-tuned ones (plain keys,
``head`` ignored), also wrapped in ``module``/``state_dict``.
"""
from .common import read_state_dict
from .state_dict import EXPERT_HINT, load_fitted, strip_prefixes

IGNORED = ('decoder.', 'encoder_to_decoder.', 'mask_token', 'head.',
           'norm.', 'pos_embed')


def read_videomae(path):
    what = 'VideoMAE expert weights'
    state = read_state_dict(path, what)
    state = strip_prefixes(state, ('module.', 'backbone.'))
    state = strip_prefixes(state, 'encoder.')
    w = state.get('patch_embed.proj.weight')
    if w is None or w.ndim != 5:
        sample = ', '.join(list(state)[:5])
        hint = ''
        if 'conv1.weight' in state or any(k.startswith('visual.')
                                          for k in state):
            hint = ' It looks like a CLIP checkpoint: pass it as the CLIP ' \
                   'expert\'s pretrained file.'
        raise ValueError(f'{what}: {path} is not a VideoMAE video model (no '
                         f'5-D patch_embed.proj.weight; found {sample}, ...).'
                         f'{hint} (config field: model.backbone.experts.vmae.'
                         f'pretrained)')
    return {k: v.float() for k, v in state.items()}


def load_videomae_expert(expert, path):
    state = read_videomae(path)
    w = state['patch_embed.proj.weight']
    dim, _, tub, ph, _ = w.shape
    if (tub, ph) != (expert.tubelet_size, expert.patch_size):
        raise ValueError(f'VideoMAE weights {path} use tubelet {tub} and '
                         f'patch {ph}; set backbone.experts.vmae.'
                         f'tubelet_size={tub}, patch_size={ph}')
    if dim != expert.embed_dim:
        raise ValueError(f'VideoMAE weights {path} have width {dim}; set '
                         f'backbone.experts.vmae.embed_dim={dim}')
    rep = load_fitted(expert, state, f'VideoMAE expert <- {path}', hint=EXPERT_HINT,
                      allow_missing=True, allow_unexpected=True,
                      ignore_unexpected=IGNORED)
    return rep.missing, rep.unexpected
