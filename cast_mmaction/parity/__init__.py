"""Check our models against reference dumps of the authors' code.

A dump folder holds ``meta.json``, ``official_checkpoint.pth``, ``input.pt``
and ``expected.pt`` (see tests/fixtures/README.md). :func:`check_dump` picks
the dump's family from ``meta.json`` (:data:`FAMILIES`), builds our model,
converts the official checkpoint with the same code users run
(``tools/convert/convert_checkpoint.py``), runs the input in float32 and compares
every expected output.

A family is one :class:`Family` record: the ``meta['model']`` texts it
serves, meta keys that must be set (e.g. ``train_mode``), and
``build(meta, dump_dir, model_cfg=None) -> run``, where ``run(inputs)``
returns ``{output name: tensor}`` for the names of ``expected.pt``. The
family modules (``cast``, ``av``, ``msca``, ``peft``) import nothing from this
package's ``__init__``; adding a family is one module plus one record here.
"""
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from ..safe_load import load_checkpoint  # weights_only + allow-list
from .av import av_sizes_from_meta, build_ca2st, build_cava
from .cast import build_cast, cast_sizes_from_meta
from .cast_ablation import ablation_model_cfg, build_cast_ablation
from .msca import build_frame_vit, frame_vit_sizes_from_meta
from .peft import (aim_sizes_from_meta, build_aim, build_st_adapter,
                   st_adapter_sizes_from_meta)
from .train import check_train_dump


@dataclass(frozen=True)
class Family:
    """Dumps whose ``meta['model']`` contains one of ``models`` and whose
    meta has every key of ``require`` set (truthy) are checked with
    ``build``; ``run`` is called under ``torch.no_grad()`` unless ``grad``
    (a training-step family needs the backward pass)."""
    name: str
    models: Tuple[str, ...]
    build: Callable
    require: Tuple[str, ...] = ()
    grad: bool = False
    #: a family whose check is not "run the input, compare the outputs"
    #: (training dumps: loss, gradients, optimizer groups, schedule) gives
    #: ``check(dump_dir, rtol_scale, config=None, speedups=None) -> rows``
    #: instead of
    #: ``build``
    check: Optional[Callable] = None

    def matches(self, meta):
        model = meta.get('model', '')
        return any(m in model for m in self.models) and all(
            meta.get(k) for k in self.require)


# The first matching record wins: a family that specialises another (e.g.
# training-step dumps, require=('train_mode',)) goes before it.
FAMILIES = (
    Family('cast_train', ('official CAST STCrossTransformer', ), None,
           require=('train_mode', ), grad=True, check=check_train_dump),
    Family('cast', ('official CAST STCrossTransformer', ), build_cast),
    Family('cast_ablation', ('CAST STCrossTransformer with ablation '
                             'switches', ), build_cast_ablation),
    Family('cava', ('official CAVA STCrossTransformer', ), build_cava),
    Family('ca2st', ('official CA^2ST STCrossTransformer', ), build_ca2st),
    Family('frame_vit', ('official MSCA-KV', 'official TokenShift',
                         'official frame-wise ViT baseline'),
           build_frame_vit),
    Family('st_adapter', ('linziyi96/st-adapter', ), build_st_adapter),
    Family('aim', ('taoyang1122/adapt-image-models', ), build_aim),
)


def find_family(meta):
    for fam in FAMILIES:
        if fam.matches(meta):
            return fam
    known = [m for fam in FAMILIES for m in fam.models]
    raise ValueError(f'unknown dump model {meta.get("model")!r}; known: '
                     f'{known}')


def _to_float(x):
    if torch.is_tensor(x):
        return x.float()
    if isinstance(x, dict):
        return {k: _to_float(v) for k, v in x.items()}
    return x


def compare(got, expected, rtol_scale=1e-4):
    """Rows (name, max_abs_diff, tolerance, ok) for every expected output;
    tolerance = ``rtol_scale * max(1, max|expected|)``."""
    rows = []
    for name, ref in expected.items():
        ref = ref.float()
        tol = rtol_scale * max(1.0, ref.abs().max().item())
        if name not in got:
            rows.append((name, float('nan'), tol, False))
            continue
        out = got[name].float()
        if out.shape != ref.shape:
            rows.append((name, float('inf'), tol, False))
            continue
        diff = (out - ref).abs().max().item()
        rows.append((name, diff, tol, diff <= tol))
    return rows


def read_meta(dump_dir):
    if not os.path.isdir(dump_dir):
        raise FileNotFoundError(f'dump folder {dump_dir} does not exist')
    path = os.path.join(dump_dir, 'meta.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{dump_dir} has no meta.json: not a reference dump folder '
            f'(format: tests/fixtures/README.md)')
    with open(path) as f:
        return json.load(f)


def check_dump(dump_dir, rtol_scale=1e-4, model_cfg=None, config=None,
               speedups=None):
    """Returns a list of rows (name, max_abs_diff, tolerance, ok). With
    ``model_cfg`` (a recognizer config dict) the model is built from it with
    the dump's sizes; a training-dump family reads the recipe from the
    ``config`` file instead (default: the family's recipe). ``speedups``
    (a ``backbone.speedups`` value, e.g. ``'cpu'``) is applied to every
    ``CASTBackbone`` of the built models (models/speedups.py); for a
    training dump it replaces the recipe's (``'none'``: the reference)."""
    meta = read_meta(dump_dir)
    fam = find_family(meta)
    if fam.check is not None:
        return fam.check(dump_dir, rtol_scale, config=config,
                         speedups=speedups)
    kwargs = {'model_cfg': model_cfg} if model_cfg is not None else {}
    run = fam.build(meta, dump_dir, **kwargs)
    if speedups not in (None, 'none'):
        from ..models.speedups import apply_model_speedups
        for model in run.models:
            apply_model_speedups(model, speedups)
    inputs = _to_float(load_checkpoint(os.path.join(dump_dir, 'input.pt')))
    expected = load_checkpoint(os.path.join(dump_dir, 'expected.pt'))
    with torch.set_grad_enabled(fam.grad):
        got = run(inputs)
    return compare(got, expected, rtol_scale)


__all__ = ['Family', 'FAMILIES', 'find_family', 'check_dump', 'compare',
           'read_meta', 'check_train_dump',
           'cast_sizes_from_meta', 'av_sizes_from_meta', 'ablation_model_cfg',
           'frame_vit_sizes_from_meta', 'st_adapter_sizes_from_meta',
           'aim_sizes_from_meta']
