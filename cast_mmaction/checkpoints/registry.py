"""The converters of the authors' released checkpoints, as data.

Each :class:`Converter` record says how to recognise a file (``detect``),
which key table maps it to our names (``key_map``), what to do with keys a
table cannot express (``finish``) and how to fit position tables to a model
of other input sizes (``adapt``). ``CONVERTERS`` lists every record
explicitly; :func:`detect_kind`, :func:`convert_state`,
:func:`convert_official` and :func:`load_official` are the only code that
runs them (``tools/convert/convert_checkpoint.py``, the parity checks and the
``load_official_*`` helpers below). To add a converter, write its key table
and detection next to the others and add one record here
(docs/checkpoints.md).
"""
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from .ablation_official import (ABLATION_EXPECTS, adapt_ablation,
                                is_cast_ablation)
from .av_official import (CA2ST_EXPECTS, CAVA_EXPECTS, IGNORED as AV_IGNORED,
                          adapt_av_to_model, ca2st_key_map, cava_key_map,
                          check_tied, is_ca2st, is_cava)
from .cast_official import CAST_EXPECTS, CAST_KEY_MAP, is_cast
from .common import read_state_dict, unwrap
from .key_rows import compile_rows, map_keys
from .state_dict import check_fit, fit_report, strip_prefixes
from .peft_official import (AIM_EXPECTS, AIM_IGNORED, AIM_KEY_MAP,
                            ST_ADAPTER_EXPECTS, ST_ADAPTER_IGNORED,
                            ST_ADAPTER_KEY_MAP, adapt_peft, is_aim,
                            is_st_adapter, read_clip_tower)
from .timm_vit import (MSCA_EXPECTS, MSCA_KEY_MAP, MSCA_PREFIXES, adapt_msca,
                       is_official_msca, pack_qkv)


@dataclass(frozen=True)
class Converter:
    """One official checkpoint layout.

    ``key_map``: the table, or a function of the (prefix-stripped) state
    dict returning it (e.g. CA2ST picks its head rows; it may raise for an
    unsupported variant). ``prefixes`` are stripped in turn before mapping;
    keys matching ``ignored`` are dropped on purpose. ``finish(out,
    unmapped, state) -> (out, unmapped)`` handles rows a regex cannot
    express (MSCA packs q/k/v). ``adapt(state, model) -> (state, notes)``
    resizes position tables; ``check(state, model)`` runs last (CA2ST tied
    projections). ``expects`` and ``fit_hint`` word the errors.

    ``tower``: for a release that holds the trained parameters only (ST-
    Adapter), ``tower(path) -> state dict`` reads the frozen pretrained
    tower in the release's names; the release's own keys are laid over it
    before conversion. ``tower_what`` names that file in errors (and the
    ``--tower`` option of ``tools/convert/convert_checkpoint.py``).
    """
    name: str
    title: str
    detect: Callable[[dict], bool]
    key_map: Union[Sequence, Callable[[dict], Sequence]]
    adapt: Callable
    expects: str
    fit_hint: str
    prefixes: tuple = ('module.', )
    ignored: tuple = ()
    finish: Optional[Callable] = None
    check: Optional[Callable] = None
    tower: Optional[Callable] = None
    tower_what: str = ''

    def table(self, state):
        rows = self.key_map(state) if callable(self.key_map) else self.key_map
        return _compiled(tuple(rows))


_CACHE = {}


def _compiled(rows):
    if rows not in _CACHE:
        _CACHE[rows] = compile_rows(rows)
    return _CACHE[rows]


CAST = Converter(
    name='cast', title='official CAST checkpoint', detect=is_cast,
    key_map=CAST_KEY_MAP, adapt=adapt_ablation, expects=CAST_EXPECTS,
    fit_hint='(is the config the same architecture: single-label vs '
             'verb/noun head, embed_dim, depth, links?)')
CAST_ABLATION = Converter(
    name='cast_ablation', title='official CAST ablation checkpoint '
    '(joohyun7u/CA2ST)', detect=is_cast_ablation, key_map=CAST_KEY_MAP,
    adapt=adapt_ablation, expects=ABLATION_EXPECTS,
    fit_hint='(does the config set the same switches: link layers, '
             'adapter_layers, attn_layers / mlp_layers, depth, experts, head '
             'fusion? parity/cast_ablation.ablation_model_cfg maps them)')
_AV_HINT = ('(is the config the same architecture: embed_dim, depth, link '
            'layers, revision (time encodings), the spectrogram length '
            'input_tdim, single-label vs verb/noun head?)')
CAVA = Converter(
    name='cava', title='official CAVA checkpoint', detect=is_cava,
    key_map=cava_key_map, adapt=adapt_av_to_model, expects=CAVA_EXPECTS,
    ignored=AV_IGNORED, check=check_tied, fit_hint=_AV_HINT)
CA2ST = Converter(
    name='ca2st', title='official CA2ST checkpoint', detect=is_ca2st,
    key_map=ca2st_key_map, adapt=adapt_av_to_model, expects=CA2ST_EXPECTS,
    ignored=AV_IGNORED, check=check_tied, fit_hint=_AV_HINT)
MSCA = Converter(
    name='msca', title='authors\' TokenShift/MSCA checkpoint',
    detect=is_official_msca, key_map=MSCA_KEY_MAP, adapt=adapt_msca,
    expects=MSCA_EXPECTS, prefixes=MSCA_PREFIXES, finish=pack_qkv,
    fit_hint='(check the backbone arch / num_classes / patch_size)')

_PEFT_HINT = ('(is the config the same architecture: embed_dim, depth, '
              'num_heads, patch_size; ST-Adapter adapter_layers / '
              'adapter_pre_attn / adapter_pre_mlp / adapter_width; AIM '
              'num_tadapter? the parity meta.json constructor_args name '
              'them)')
ST_ADAPTER = Converter(
    name='st_adapter', title='official ST-Adapter checkpoint',
    detect=is_st_adapter, key_map=ST_ADAPTER_KEY_MAP, adapt=adapt_peft,
    expects=ST_ADAPTER_EXPECTS, ignored=ST_ADAPTER_IGNORED,
    fit_hint=_PEFT_HINT, tower=read_clip_tower,
    tower_what='OpenAI CLIP ViT file the release was trained on (ViT-B-16.pt'
               ', or its visual state dict)')
AIM = Converter(
    name='aim', title='official AIM checkpoint', detect=is_aim,
    key_map=AIM_KEY_MAP, adapt=adapt_peft, expects=AIM_EXPECTS,
    ignored=AIM_IGNORED, fit_hint=_PEFT_HINT)

# every converter, in the order detection reports them
CONVERTERS = {c.name: c for c in (CAST, CAST_ABLATION, CAVA, CA2ST, MSCA,
                                  ST_ADAPTER, AIM)}

_NOT_OFFICIAL_HINT = (
    'For the weights of one expert (CLIP, VideoMAE, AST, ImageNet ViT) set '
    'that expert\'s `pretrained` field instead; a checkpoint of this package '
    'is used directly (tools/test.py, load_from).')


def _sample(state, n=6):
    return ', '.join(list(state)[:n])


def _already_ours(state):
    """An MMAction2 recognizer's keys (``backbone.*``, ``cls_head.*``) that
    no official kind claims (AIM's release has such keys too): a checkpoint
    of this package."""
    return any(k.startswith(('backbone.', 'cls_head.')) for k in state) and \
        not any(c.detect(state) for c in CONVERTERS.values())


_OURS = ('the file is already in this package\'s format (an MMAction2 '
         'recognizer\'s keys: backbone.*, cls_head.*; what tools/train.py and '
         'tools/convert/convert_checkpoint.py write) and is used directly '
         '(tools/test.py, tools/infer.py --checkpoint, load_from): there is '
         'nothing to convert (a checkpoint of another MMAction2 model has '
         'these keys too and no converter here)')


def detect_kind(state, kinds=None):
    """The one converter name among ``kinds`` (default all) whose detection
    accepts ``state``; a clear error for none or several."""
    kinds = list(kinds or CONVERTERS)
    hits = [n for n in kinds if CONVERTERS[n].detect(state)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ValueError(f'checkpoint matches several kinds {hits}; pass '
                         f'--kind')
    if _already_ours(state):
        raise ValueError(f'{_OURS} (keys: {_sample(state)}, ...)')
    raise ValueError(f'unknown checkpoint layout (keys: {_sample(state)}, '
                     f'...); known kinds: {sorted(CONVERTERS)}. Pass --kind.')


def _refuse(state, kinds, what):
    expects = '; or '.join(CONVERTERS[k].expects for k in kinds)
    others = sorted(set(CONVERTERS) - set(kinds))
    if _already_ours(state):
        raise ValueError(f'not an {what}: {_OURS} (keys: {_sample(state)}, '
                         f'...)')
    raise ValueError(f'not an {what} (expected {expects}; found '
                     f'{_sample(state)}, ...). Other official kinds: '
                     f'{others} (tools/convert/convert_checkpoint.py detects them). '
                     f'{_NOT_OFFICIAL_HINT}')


def convert_state(kind, state):
    """Official state dict -> ours with converter ``kind``: (converted,
    unmapped keys). Raises when the state dict is not of that kind."""
    conv = CONVERTERS[kind]
    if not conv.detect(state):
        _refuse(state, [kind], conv.title)
    for p in conv.prefixes:
        state = strip_prefixes(state, p)
    ignored = [re.compile(p + '$') for p in conv.ignored]
    out, unmapped, _ = map_keys(state, conv.table(state), ignored)
    if conv.finish is not None:
        out, unmapped = conv.finish(out, unmapped, state)
    return out, unmapped


def _a(title):
    """``title`` with its indefinite article."""
    return f'{"an" if title[:1].lower() in "aeiou" else "a"} {title}'


def with_tower(kind, state, tower):
    """``state`` laid over the frozen tower a trained-parameters-only
    release needs (``Converter.tower``); other kinds: ``state`` itself
    (a ``tower`` given to them is an error)."""
    conv = CONVERTERS[kind]
    if conv.tower is None:
        if tower is not None:
            raise ValueError(f'{_a(conv.title)} holds the whole model: it '
                             f'takes no tower file (got {tower!r})')
        return state
    if tower is None:
        raise ValueError(
            f'{_a(conv.title)} holds the trained parameters only ('
            f'{len(state)} tensors, e.g. {_sample(state, 3)}); the frozen '
            f'tower comes from the {conv.tower_what}: pass it '
            f'(tools/convert/convert_checkpoint.py --tower PATH; tower= in '
            f'Python)')
    base = conv.tower(tower) if not isinstance(tower, dict) else dict(tower)
    if conv.detect(base):
        raise ValueError(f'the tower file is itself a {conv.title} (it has '
                         f'{_sample(base, 3)}, ...): give the '
                         f'{conv.tower_what}')
    return {**base, **state}  # a release that holds tower keys too wins


def convert_official(path_or_state, model=None, kinds=None, what=None,
                     tower=None):
    """Read (if a path), detect among ``kinds`` and convert an official
    checkpoint (laid over ``tower``, a path or state dict, for a release
    of the trained parameters only: :func:`with_tower`). With ``model``:
    adapt position tables and check the fit (shape mismatches are an
    error). Returns (state, report) with report keys ``kind``,
    ``unmapped``, ``notes``, ``missing``, ``unexpected``."""
    kinds = list(kinds or CONVERTERS)
    what = what or ' / '.join(CONVERTERS[k].title for k in kinds)
    if isinstance(path_or_state, dict):
        state = unwrap(path_or_state, what)
    else:
        state = read_state_dict(path_or_state, what)
    hits = [k for k in kinds if CONVERTERS[k].detect(state)]
    if not hits:
        _refuse(state, kinds, what)
    kind = detect_kind(state, hits)
    conv = CONVERTERS[kind]
    out, unmapped = convert_state(kind, with_tower(kind, state, tower))
    report = dict(kind=kind, unmapped=unmapped, notes=[], missing=[],
                  unexpected=[])
    if model is None:
        return out, report
    out, report['notes'] = conv.adapt(out, model)
    fit = check_fit(fit_report(model, out), conv.title,
                    'the configured model', conv.fit_hint,
                    allow_missing=True, allow_unexpected=True)
    report['missing'], report['unexpected'] = fit.missing, fit.unexpected
    if conv.check is not None:
        conv.check(out, model)
    return out, report


def load_official(model, path_or_state, kinds=None, strict=True, what=None,
                  tower=None):
    """Convert and load into ``model``. With ``strict`` a missing,
    unexpected or unmapped key is an error naming the keys (unmapped keys
    are reported as unexpected). Returns the report of
    :func:`convert_official`."""
    state, rep = convert_official(path_or_state, model, kinds, what, tower)
    fit = fit_report(model, state)
    fit.unexpected += rep['unmapped']
    if strict:
        check_fit(fit, CONVERTERS[rep['kind']].title, 'the configured model',
                  CONVERTERS[rep['kind']].fit_hint)
    own = model.state_dict()
    model.load_state_dict({k: state[k].to(own[k].dtype)
                           for k in fit.loadable}, strict=False)
    return rep


# -- the named helpers (one family each) --------------------------------------
def convert_official_cast(path_or_state, model=None):
    return convert_official(path_or_state, model, ['cast'])


def load_official_cast(model, path_or_state, strict=True):
    return load_official(model, path_or_state, ['cast'], strict)


_AV = ['cava', 'ca2st']
_AV_WHAT = 'official CAVA / CA2ST checkpoint'


def convert_official_av(path_or_state, model=None):
    return convert_official(path_or_state, model, _AV, _AV_WHAT)


def load_official_av(model, path_or_state, strict=True):
    return load_official(model, path_or_state, _AV, strict, _AV_WHAT)


def load_official_msca(model, path_or_state, strict=True):
    return load_official(model, path_or_state, ['msca'], strict)


def convert_official_msca(state):
    """The authors' VideoNet state dict (ViT / TokShift / AttentionShift,
    possibly wrapped in ``state_dict``) -> ours: (converted, unmapped)."""
    return convert_state('msca', unwrap(state, MSCA.title))


def load_official_st_adapter(model, path_or_state, tower, strict=True):
    """An ST-Adapter release (trained parameters) + its CLIP ``tower``."""
    return load_official(model, path_or_state, ['st_adapter'], strict,
                         tower=tower)


def load_official_aim(model, path_or_state, strict=True):
    return load_official(model, path_or_state, ['aim'], strict)


def convert_cast_state_dict(state):
    return convert_state('cast', state)


__all__ = ['Converter', 'CONVERTERS', 'CAST', 'CAST_ABLATION', 'CAVA', 'CA2ST', 'MSCA',
           'detect_kind', 'convert_state', 'convert_official',
           'load_official', 'convert_official_cast', 'load_official_cast',
           'convert_official_av', 'load_official_av', 'load_official_msca',
           'convert_official_msca', 'convert_cast_state_dict',
           'ST_ADAPTER', 'AIM', 'with_tower', 'load_official_st_adapter',
           'load_official_aim']
