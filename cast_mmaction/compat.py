"""The one place for work-arounds of upstream defects in the OpenMMLab stack.

Every patch here names the defect it covers and is idempotent. :func:`apply`
runs on ``import cast_mmaction`` before anything imports ``mmaction.models``.
Nothing here changes behaviour on an installation that does not have the
defect (each patch checks for it first).
"""
import importlib.util
import os
import sys
import types
import warnings

_APPLIED = False


def _mmaction_root():
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            'cast_mmaction needs mmaction2 (pip install "mmaction2==1.2.0"); '
            'see README.md, "Install".')
    return list(spec.submodule_search_locations)[0]


def _patch_missing_drn():
    """mmaction2 1.2.0 on PyPI ships without ``mmaction/models/localizers/drn``
    although ``mmaction/models/localizers/__init__.py`` imports it, so
    ``import mmaction.models`` raises ModuleNotFoundError. We register an
    empty stand-in package whose ``DRN`` explains the gap when built; every
    other model of the wheel imports as usual. A source install of mmaction2
    has the folder and is left alone."""
    root = _mmaction_root()
    if os.path.exists(os.path.join(root, 'models', 'localizers', 'drn',
                                   'drn.py')):
        return False
    name = 'mmaction.models.localizers.drn'
    if name in sys.modules:
        return False
    pkg = types.ModuleType(name)
    pkg.__path__ = []  # a package, so that ``.drn.drn`` resolves
    mod = types.ModuleType(name + '.drn')

    class DRN:  # noqa: D401 - placeholder with an explanatory error
        """Placeholder for the DRN localizer missing from the mmaction2 1.2.0
        wheel."""

        def __init__(self, *args, **kwargs):
            raise ImportError(
                'DRN is not part of the mmaction2 1.2.0 wheel on PyPI '
                '(mmaction/models/localizers/drn is missing); install '
                'mmaction2 from source to use it.')

    mod.DRN = DRN
    pkg.drn = mod
    sys.modules[name] = pkg
    sys.modules[name + '.drn'] = mod
    return True


def _patch_torch_load_weights_only():
    """mmengine 0.10.7 loads checkpoints with ``torch.load(path)``; since
    torch 2.6 that defaults to ``weights_only=True`` and refuses the
    checkpoints mmengine itself writes (they pickle the message hub, numpy
    scalars and the config), so ``--resume`` and ``load_from`` fail. We
    re-register mmengine's local-file loader with ``weights_only=False``.
    This only affects files the user points mmengine at (their own runs or
    checkpoints written by ``tools/convert_checkpoint.py``)."""
    import torch
    from mmengine.runner.checkpoint import CheckpointLoader

    if getattr(CheckpointLoader, '_cast_mmaction_patched', False):
        return False

    def load_from_local(filename, map_location):
        filename = os.path.expanduser(filename)
        if not os.path.isfile(filename):
            raise FileNotFoundError(f'checkpoint file {filename} not found')
        return torch.load(filename, map_location=map_location,
                          weights_only=False)

    CheckpointLoader.register_scheme(prefixes='', force=True)(load_from_local)
    CheckpointLoader._cast_mmaction_patched = True
    return True


def _check_pkg_resources():
    """``_base_ = 'mmaction::...'`` in configs makes mmengine import
    ``pkg_resources``, which setuptools >= 81 no longer provides. We pin
    ``setuptools<81`` in setup.py; this warns early when it is absent
    instead of failing deep inside config parsing."""
    if importlib.util.find_spec('pkg_resources') is None:
        warnings.warn(
            'pkg_resources is missing (setuptools >= 81): configs that use '
            "_base_ = 'mmaction::...' will fail. Run: pip install "
            '"setuptools<81"', stacklevel=2)
        return False
    return True


def _patch_color_jitter_hue():
    """mmaction2 1.2.0 ``ColorJitter.adjust_hue`` adds ``int(factor * 255)``
    to the uint8 hue channel; with NumPy >= 2 (NEP 50) any negative hue
    factor raises ``OverflowError: Python integer -N out of bounds for
    uint8``, so ``ColorJitter(hue=...)`` crashes about half the time. We
    compute the same ``(h + offset) % 180`` in int16 (what NumPy 1 did)."""
    import numpy as np
    if np.lib.NumpyVersion(np.__version__) < '2.0.0':
        return False
    from mmaction.datasets.transforms import processing
    cj = getattr(processing, 'ColorJitter', None)
    if cj is None or getattr(cj, '_cast_mmaction_patched', False):
        return False
    import cv2

    def adjust_hue(img, factor):
        img = np.clip(img, 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hue = hsv[..., 0].astype(np.int16) + int(factor * 255)
        hsv[..., 0] = np.mod(hue, 180).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)

    cj.adjust_hue = staticmethod(adjust_hue)
    cj._cast_mmaction_patched = True
    return True


def load_file(path, map_location='cpu'):
    """``torch.load`` for foreign checkpoint files (OpenAI CLIP, VideoMAE,
    DeepSpeed dumps) that contain pickled non-tensor objects: under
    torch >= 2.6 ``weights_only=True`` rejects them. Only call this on files
    the user chose."""
    import torch
    return torch.load(path, map_location=map_location, weights_only=False)


def apply():
    """Apply every patch once. Safe to call repeatedly."""
    global _APPLIED
    if _APPLIED:
        return
    _patch_missing_drn()
    _patch_torch_load_weights_only()
    _check_pkg_resources()
    _patch_color_jitter_hue()
    _APPLIED = True
