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


def _unprefixed(s, prefix):
    return {k[len(prefix):] if k.startswith(prefix) else k: v
            for k, v in s.items()}


def _timm_like(s):
    return ndim(s, 'patch_embed.proj.weight') == 4 or _has(s, 'v.')


@dataclass(frozen=True)
class FileKind:
    """One kind of weight file, as :func:`describe` names it.

    ``name``: its key; ``label``: what it is, for messages; ``owner``: the
    expert that takes it, as messages name it (None: no expert does);
    ``expert``: that expert's ``tools/convert/convert_checkpoint.py --expert``
    name; ``detect(state)``: whether a state dict (``module.`` stripped) is
    of this kind; ``architectures``: prefixes of a transformers
    ``config.json`` ``architectures[0]`` that identify it (read before any
    ``detect``)."""
    name: str
    label: str
    owner: Optional[str]
    detect: Callable
    expert: Optional[str] = None
    architectures: tuple = ()


#: the known kinds, in the order they are tried (:func:`register_file_kind`)
FILE_KINDS = []


def register_file_kind(kind, before=None):
    """Add ``kind`` (a :class:`FileKind`) to :data:`FILE_KINDS`, tried last,
    or just before the kind named ``before``; returns it."""
    if not isinstance(kind, FileKind):
        raise TypeError(f'register_file_kind needs a FileKind, got '
                        f'{type(kind).__name__}')
    names = [k.name for k in FILE_KINDS]
    if kind.name in names:
        raise KeyError(f'file kind {kind.name!r} exists already')
    if before is None:
        FILE_KINDS.append(kind)
    elif before not in names:
        raise KeyError(f'register_file_kind(before={before!r}): known kinds '
                       f'are {names}')
    else:
        FILE_KINDS.insert(names.index(before), kind)
    return kind


for _kind in (
        FileKind('clip_text', 'a transformers CLIPTextModel (the text '
                 'tower), not an image tower', None,
                 lambda s: _has(s, 'text_model.') and not _has(
                     s, 'vision_model.'), architectures=('CLIPText', )),
        FileKind('clip_hf', 'a transformers CLIP checkpoint', 'CLIP',
                 lambda s: _has(s, 'vision_model.') or (
                     'pre_layrnorm.weight' in s), 'clip', ('CLIP', )),
        FileKind('videomae_hf', 'a transformers VideoMAE checkpoint',
                 'VideoMAE', lambda s: _has(s, 'videomae.') or ndim(
                     s, 'embeddings.patch_embeddings.projection.weight') == 5,
                 'videomae', ('VideoMAE', )),
        FileKind('ast_hf', 'a transformers AST (Audio Spectrogram '
                 'Transformer) checkpoint', 'AST',
                 lambda s: _has(s, 'audio_spectrogram_transformer.') or
                 'embeddings.distillation_token' in s, 'ast', ('AST', )),
        FileKind('mmaction_vit', 'an MMAction2 VisionTransformer (VideoMAE) '
                 'checkpoint', 'VideoMAE',
                 lambda s: ndim(_unprefixed(s, 'backbone.'),
                                'patch_embed.projection.weight') == 5,
                 'videomae'),
        FileKind('full_av', 'a full CAVA / CA2ST checkpoint: convert it with '
                 'tools/convert/convert_checkpoint.py instead', None,
                 lambda s: any(k.startswith('ast_') or '.ast_' in k
                               for k in _unprefixed(s, 'backbone.'))),
        FileKind('full_cast', 'a full CAST checkpoint: convert it with '
                 'tools/convert/convert_checkpoint.py instead', None,
                 lambda s: 'clip_conv1.weight' in _unprefixed(s,
                                                              'backbone.')),
        FileKind('clip', 'a CLIP checkpoint (OpenAI / open_clip layout)',
                 'CLIP', lambda s: 'conv1.weight' in _unprefixed(
                     s, 'backbone.') or _has(_unprefixed(s, 'backbone.'),
                                             'visual.'), 'clip'),
        FileKind('videomae', 'a VideoMAE checkpoint (the authors\' layout)',
                 'VideoMAE', lambda s: ndim(_unprefixed(s, 'backbone.'),
                                            'patch_embed.proj.weight') == 5
                 or ndim(_unprefixed(s, 'backbone.'),
                         'encoder.patch_embed.proj.weight') == 5,
                 'videomae'),
        FileKind('clip_timm', 'a timm CLIP image tower', 'CLIP',
                 lambda s: _timm_like(_unprefixed(s, 'backbone.')) and
                 'norm_pre.weight' in _unprefixed(s, 'backbone.'), 'clip'),
        FileKind('deit', 'an AST / DeiT checkpoint', 'AST',
                 lambda s: _timm_like(_unprefixed(s, 'backbone.')) and (
                     'dist_token' in _unprefixed(s, 'backbone.') or _has(
                         _unprefixed(s, 'backbone.'), 'v.')), 'ast'),
        FileKind('timm_vit', 'a timm ImageNet-style ViT (no norm_pre, so not '
                 'a CLIP tower)', None,
                 lambda s: _timm_like(_unprefixed(s, 'backbone.'))),
):
    register_file_kind(_kind)


def file_kind(state, config=None):
    """The :class:`FileKind` of a state dict, or None: the first kind whose
    ``architectures`` match the transformers config, else the first whose
    ``detect`` accepts the state dict."""
    arch = ((config or {}).get('architectures') or [''])[0]
    for kind in FILE_KINDS:
        if arch and arch.startswith(kind.architectures or ('\0', )):
            return kind
    s = _unprefixed(state, 'module.')
    for kind in FILE_KINDS:
        if kind.detect(s):
            return kind
    return None


def kind_of(state, config=None):
    """The name of the kind of a state dict (:data:`FILE_KINDS`), or
    None."""
    kind = file_kind(state, config)
    return None if kind is None else kind.name


def describe(state, config=None):
    """``(what it is, the expert that takes it or None)`` or ``(None,
    None)``."""
    kind = file_kind(state, config)
    return (None, None) if kind is None else (kind.label, kind.owner)


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
           'FileKind', 'FILE_KINDS', 'register_file_kind', 'file_kind',
           'config_value', 'check_activation', 'eps_note',
           'squeeze_leading', 'ndim', 'HF_WEIGHTS']
