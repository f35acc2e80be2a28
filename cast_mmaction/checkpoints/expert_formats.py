"""Expert weights from where people get them: reading a source and
recognising its format.

A source (an expert's ``pretrained`` field) is

* a weight file (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``),
* a ``transformers`` folder (``save_pretrained`` output: ``config.json`` +
  ``model.safetensors`` or ``pytorch_model.bin``, possibly sharded with an
  ``*.index.json``),
* ``hf:ORG/NAME[@REV]``: such a folder in the local Hugging Face cache
  (:mod:`.hf_cache`, no network).

Every file is opened by :func:`~.common.read_state_dict` (the safe loader of
docs/security.md). :func:`read_source` returns a :class:`Source` (the state
dict and, when there is one, the ``config.json``).

Each expert loader lists the foreign layouts it accepts as
:class:`ExpertFormat` records (key rows from :mod:`.key_rows`);
:func:`convert` maps a state dict through one, refusing keys the table
does not know. :func:`describe` names what a state dict is, for the
"wrong kind of file" errors of every loader.
"""
import json
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from . import hf_cache
from .common import read_state_dict
from .key_rows import compile_rows, fuse_parts, map_keys
from .state_dict import select_prefix

#: weight files of a transformers (or timm / open_clip hub) folder, in the
#: order transformers uses, then open_clip's names
HF_WEIGHTS = ('model.safetensors', 'model.safetensors.index.json',
              'pytorch_model.bin', 'pytorch_model.bin.index.json',
              'open_clip_model.safetensors', 'open_clip_pytorch_model.bin')


@dataclass
class Source:
    state: dict
    config: Optional[dict] = None  # transformers config.json
    where: str = ''  # the file or folder read (for messages)

    @property
    def architecture(self):
        archs = (self.config or {}).get('architectures') or []
        return archs[0] if archs else None


def read_source(source, what, field):
    """Read an expert's ``pretrained`` source (file, transformers folder or
    ``hf:`` reference). ``field`` is the config field named in errors."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f'{what}: expected a file, a folder or an '
                        f'hf:ORG/NAME reference, got {type(source)}')
    source = str(source)
    if hf_cache.is_hf_reference(source):
        folder = hf_cache.resolve(source)
        return _read_folder(folder, what, f'{source} ({folder})')
    path = osp.expanduser(source)
    if osp.isdir(path):
        return _read_folder(path, what, path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what}: file not found: {path} (set '
                                f'{field})')
    state = read_state_dict(path, what)
    config = None
    if osp.basename(path) in HF_WEIGHTS:  # a file of a transformers folder
        config = _read_config(osp.dirname(path), what)
    return Source(state, config, path)


def _read_config(folder, what):
    path = osp.join(folder, 'config.json')
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f'{what}: cannot read {path} ({e})') from e


def _read_folder(folder, what, where):
    for name in HF_WEIGHTS:
        path = osp.join(folder, name)
        if osp.isfile(path):
            break
    else:
        found = sorted(os.listdir(folder))[:10]
        raise FileNotFoundError(
            f'{what}: {where} is a folder without transformers weights (no '
            f'{" / ".join(HF_WEIGHTS)}; found {found}). Pass the weight file '
            f'itself, or the folder save_pretrained wrote')
    if name.endswith('.index.json'):  # sharded: read every shard
        with open(path) as f:
            shards = sorted(set(json.load(f)['weight_map'].values()))
        state = {}
        for shard in shards:
            state.update(read_state_dict(osp.join(folder, shard), what))
    else:
        state = read_state_dict(path, what)
    return Source(state, _read_config(folder, what), where)


# ---------------------------------------------------------------------------
# foreign layouts
# ---------------------------------------------------------------------------
@dataclass
class ExpertFormat:
    """One foreign layout of an expert's weights.

    ``detect(state)``: whether a state dict is in this layout (after
    ``prefix`` selection); ``prefix``: the part of a bigger model that holds
    the tower (``videomae.``, ``vision_model.``), taken when present;
    ``keep``: keys outside ``prefix`` that belong to the tower too
    (``fc_norm`` of ``VideoMAEForVideoClassification``);
    ``rows``: key rows to the expert's names (:mod:`.key_rows`);
    ``ignored``: regexes of keys dropped on purpose (heads, decoders, text
    towers); ``refuse``: ``(regex, reason)`` of keys the expert cannot
    represent; ``finish(state)``: reshapes no row can express."""
    name: str
    title: str
    detect: Callable
    rows: list
    prefix: tuple = ()
    keep: tuple = ()
    ignored: tuple = ()
    refuse: tuple = ()
    finish: Optional[Callable] = None
    _compiled: list = field(default=None, repr=False)

    def select(self, state):
        for p in self.prefix:
            if any(k.startswith(p) for k in state):
                out = select_prefix(state, p)
                out.update((k, v) for k, v in state.items()
                           if self.keep and k.startswith(self.keep))
                return out
        return state


def convert(fmt, state, what):
    """Map ``state`` (already through :meth:`ExpertFormat.select`) into the
    expert's names; a key no row maps and no ``ignored`` regex drops is an
    error (a table that misses a key would otherwise load a wrong model)."""
    for pat, reason in fmt.refuse:
        bad = [k for k in state if re.match(pat, k)]
        if bad:
            raise ValueError(f'{what}: this {fmt.title} has {bad[0]}'
                             f'{" ..." if len(bad) > 1 else ""}: {reason}')
    if fmt._compiled is None:
        fmt._compiled = compile_rows(fmt.rows)
    ignored = [re.compile(p + r'$') for p in fmt.ignored]
    out, unmapped, _ = map_keys(state, fmt._compiled, ignored)
    if unmapped:
        raise ValueError(f'{what}: {len(unmapped)} keys of this {fmt.title} '
                         f'have no counterpart in the expert, e.g. '
                         f'{unmapped[:6]} (a different architecture?)')
    out = fuse_parts(out, what)
    if fmt.finish is not None:
        out = fmt.finish(out)
    return out


def detect_format(state, formats):
    """The first format of ``formats`` that recognises ``state``:
    ``(format, selected state)``, or ``(None, state)``."""
    for fmt in formats:
        sub = fmt.select(state)
        if sub and fmt.detect(sub):
            return fmt, sub
    return None, state


def ndim(state, key):
    """``state[key].ndim``, None when absent."""
    v = state.get(key)
    return v.ndim if torch.is_tensor(v) else None


def _has(state, *prefixes):
    return any(k.startswith(prefixes) for k in state)


#: what each kind of file is and which expert takes it
_KINDS = {
    'clip_text': ('a transformers CLIPTextModel (the text tower), not an '
                  'image tower', None),
    'clip_hf': ('a transformers CLIP checkpoint', 'CLIP'),
    'clip_timm': ('a timm CLIP image tower', 'CLIP'),
    'clip': ('a CLIP checkpoint (OpenAI / open_clip layout)', 'CLIP'),
    'videomae_hf': ('a transformers VideoMAE checkpoint', 'VideoMAE'),
    'mmaction_vit': ('an MMAction2 VisionTransformer (VideoMAE) checkpoint',
                     'VideoMAE'),
    'videomae': ('a VideoMAE checkpoint (the authors\' layout)', 'VideoMAE'),
    'ast_hf': ('a transformers AST (Audio Spectrogram Transformer) '
               'checkpoint', 'AST'),
    'deit': ('an AST / DeiT checkpoint', 'AST'),
    'timm_vit': ('a timm ImageNet-style ViT (no norm_pre, so not a CLIP '
                 'tower)', None),
    'full_av': ('a full CAVA / CA2ST checkpoint: convert it with '
                'tools/convert/convert_checkpoint.py instead', None),
    'full_cast': ('a full CAST checkpoint: convert it with '
                  'tools/convert/convert_checkpoint.py instead', None),
}

_ARCH_KINDS = (('CLIPText', 'clip_text'), ('CLIP', 'clip_hf'),
               ('VideoMAE', 'videomae_hf'), ('AST', 'ast_hf'))


def kind_of(state, config=None):
    """The kind of a state dict (a key of ``_KINDS``), or None."""
    arch = ((config or {}).get('architectures') or [''])[0]
    for start, kind in _ARCH_KINDS:
        if arch.startswith(start):
            return kind
    s = {k[len('module.'):] if k.startswith('module.') else k: v
         for k, v in state.items()}
    if _has(s, 'text_model.') and not _has(s, 'vision_model.'):
        return 'clip_text'
    if _has(s, 'vision_model.') or ('pre_layrnorm.weight' in s):
        return 'clip_hf'
    if _has(s, 'videomae.') or ndim(
            s, 'embeddings.patch_embeddings.projection.weight') == 5:
        return 'videomae_hf'
    if _has(s, 'audio_spectrogram_transformer.') or \
            'embeddings.distillation_token' in s:
        return 'ast_hf'
    s = {k[len('backbone.'):] if k.startswith('backbone.') else k: v
         for k, v in s.items()}
    if ndim(s, 'patch_embed.projection.weight') == 5:
        return 'mmaction_vit'
    if any(k.startswith('ast_') or '.ast_' in k for k in s):
        return 'full_av'
    if 'clip_conv1.weight' in s:
        return 'full_cast'
    if 'conv1.weight' in s or _has(s, 'visual.'):
        return 'clip'
    if ndim(s, 'patch_embed.proj.weight') == 5 or ndim(
            s, 'encoder.patch_embed.proj.weight') == 5:
        return 'videomae'
    if ndim(s, 'patch_embed.proj.weight') == 4 or _has(s, 'v.'):
        if 'norm_pre.weight' in s:
            return 'clip_timm'
        if 'dist_token' in s or _has(s, 'v.'):
            return 'deit'
        return 'timm_vit'
    return None


def describe(state, config=None):
    """``(what it is, the expert that takes it or None)`` or ``(None,
    None)``."""
    kind = kind_of(state, config)
    return _KINDS.get(kind, (None, None))


def wrong_kind(what, where, expected, state, config, expert, field):
    """The error for a file that is not ``expected``: names what the file
    is when it is a known kind, and where it goes instead."""
    sample = ', '.join(list(state)[:5])
    label, owner = describe(state, config)
    hint = ''
    if label and owner and owner != expert:
        hint = (f' It looks like {label}: pass it as the {owner} expert\'s '
                f'pretrained file.')
    elif label and owner != expert:
        hint = f' It is {label}.'
    return ValueError(f'{what}: {where} is not {expected} (found {sample}, '
                      f'...).{hint} (config field: {field})')


def config_value(config, key, sub=None):
    """``config[sub][key]`` (e.g. CLIP's ``vision_config``) or
    ``config[key]``; None when absent."""
    if not config:
        return None
    if sub and isinstance(config.get(sub), dict) and key in config[sub]:
        return config[sub][key]
    return config.get(key)


def check_activation(config, expected, what, where, sub=None):
    """Refuse a transformers config whose ``hidden_act`` the expert does
    not compute (e.g. a CLIP trained with GELU in the QuickGELU expert)."""
    act = config_value(config, 'hidden_act', sub)
    if act is not None and act != expected:
        raise ValueError(f'{what}: {where} uses the activation {act!r}; the '
                         f'expert computes {expected!r}, so its features '
                         f'would not be this model\'s')


def eps_note(config, module_eps, what, sub=None):
    """A log line when transformers' ``layer_norm_eps`` differs from the
    expert's LayerNorm epsilon (transformers' VideoMAE / AST configs say
    1e-12 where the original models use 1e-6)."""
    eps = config_value(config, 'layer_norm_eps', sub)
    if eps is None or abs(eps - module_eps) <= 1e-15:
        return
    from mmengine.logging import print_log
    print_log(f'{what}: the transformers config has layer_norm_eps={eps}, '
              f'the expert eps={module_eps} (set the expert\'s eps={eps} to '
              f'reproduce transformers\' forward exactly)', logger='current')


def squeeze_leading(state, *keys):
    """Drop leading singleton axes (timm's (1, 1, D) class token, (1, L, D)
    position table) of ``keys``."""
    for k in keys:
        v = state.get(k)
        while v is not None and v.ndim > 1 and v.shape[0] == 1:
            v = v[0]
        if v is not None:
            state[k] = v
    return state


__all__ = ['Source', 'read_source', 'ExpertFormat', 'convert',
           'detect_format', 'kind_of', 'describe', 'wrong_kind',
           'config_value', 'check_activation', 'eps_note',
           'squeeze_leading', 'ndim', 'HF_WEIGHTS']
