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


def _version_tuple(text):
    parts = []
    for piece in text.split('.')[:3]:
        digits = ''.join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _patch_multimodal_with_new_transformers():
    """mmaction2 <= 1.2.0 imports its VindLU models whenever
    ``transformers>=4.28`` is installed (``WITH_MULTIMODAL``), and VindLU's
    ``modeling_bert.py`` imports ``apply_chunking_to_forward`` (and two
    pruning helpers) from ``transformers.modeling_utils``, which
    transformers 4.56 stopped re-exporting; so with transformers >= 4.56 in
    the environment ``import mmaction.models`` raises ImportError and no
    MMAction2 model can be built. We switch ``WITH_MULTIMODAL`` off before
    ``mmaction.models`` is imported: MMAction2 then registers its own
    placeholders for the three VindLU models (building one says to install
    the multimodal extras), everything else imports normally. Older
    transformers, a newer mmaction2 or an absent transformers are left
    alone."""
    import importlib.metadata as md
    if 'mmaction.models' in sys.modules:
        return False
    try:
        tf_version = _version_tuple(md.version('transformers'))
        mm_version = _version_tuple(md.version('mmaction2'))
    except md.PackageNotFoundError:
        return False
    if tf_version < (4, 56) or mm_version > (1, 2, 0):
        return False
    from mmaction.utils import dependency
    if not getattr(dependency, 'WITH_MULTIMODAL', False):
        return False
    dependency.WITH_MULTIMODAL = False
    return True


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
    """mmengine <= 0.10.7 opens checkpoints with a bare ``torch.load(path)``
    (``load_from_local``; ``load_from_http`` through torch.hub with
    ``weights_only=False``). Under torch < 2.6 that unpickles anything, so a
    file can run code when it is opened; under torch >= 2.6 ``torch.load``
    defaults to ``weights_only=True`` and refuses the checkpoints mmengine
    itself writes (NumPy values and the message hub in them), so
    ``--resume``, ``load_from`` and ``tools/test.py`` fail. We re-register
    mmengine's loaders of local files and of ``http(s)://`` URLs (which
    ``torchvision://``, ``open-mmlab://`` and ``mmcls://`` resolve to) with
    :mod:`cast_mmaction.safe_load`: ``weights_only=True`` plus the
    allow-list of the benign types real checkpoints carry; other files are
    refused unless the user trusts them (docs/security.md)."""
    import mmengine
    from mmengine.runner import checkpoint as ckpt_mod
    from mmengine.utils import digit_version

    from . import safe_load

    if digit_version(mmengine.__version__) > digit_version('0.10.7'):
        return False  # a later mmengine: not known to have the defect
    loader = ckpt_mod.CheckpointLoader
    if getattr(loader, '_cast_mmaction_patched', False):
        return False
    loader.register_scheme(prefixes='', force=True)(safe_load.load_from_local)
    loader.register_scheme(prefixes=('http://', 'https://'),
                           force=True)(safe_load.load_from_url)
    ckpt_mod.load_from_http = safe_load.load_from_url  # torchvision:// etc.
    loader._cast_mmaction_patched = True
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


#: temporary files of interrupted writes: ``.<name>.partial-<pid>-<rand>``
PARTIAL_MARK = '.partial-'


def fsync_file(f):
    """``os.fsync`` of an open file (a function, so that tests can simulate a
    kill at this point)."""
    f.flush()
    os.fsync(f.fileno())


def atomic_write(path, data):
    """Write ``data`` (bytes or str) to ``path`` so that a reader (or a run
    killed at any moment) sees either the old file or the complete new one:
    a temporary file in the same folder, fsync, rename, fsync of the
    folder."""
    import tempfile
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}{PARTIAL_MARK}{os.getpid()}-',
                               dir=folder)
    os.close(fd)
    try:
        with open(tmp, 'wb') as f:
            f.write(data.encode('utf-8') if isinstance(data, str) else data)
            fsync_file(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some file systems refuse fsync on folders
        pass


def _checkpoint_files(folder):
    """Complete checkpoint files of a work dir, newest first (``best_*``
    excluded: they are not resumption points)."""
    out = []
    for name in os.listdir(folder):
        if name.startswith(('.', 'best_')) or not name.endswith('.pth'):
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            out.append((os.path.getmtime(path), path))
    return [p for _, p in sorted(out, reverse=True)]


def _patch_atomic_checkpoints():
    """mmengine 0.10.7 writes checkpoints in place
    (``LocalBackend.put``: ``open(path, 'wb').write``): a run killed during
    the write leaves a truncated ``epoch_N.pth``. Worse, ``CheckpointHook``
    deletes the oldest kept checkpoint *before* writing the new one, so with
    ``max_keep_ckpts=1`` a kill mid-write leaves nothing to resume from, and
    ``last_checkpoint`` (written in place after the save) can be empty or
    name a deleted file; ``--resume`` then fails.

    We make ``LocalBackend.put`` / ``put_text`` atomic (:func:`atomic_write`),
    delay ``CheckpointHook``'s removals (old and previous-best checkpoints)
    until the new checkpoint and ``last_checkpoint`` are written, and make
    ``find_latest_checkpoint`` (what ``--resume`` without a file uses) fall
    back to the newest complete ``*.pth`` of the work dir when
    ``last_checkpoint`` is empty or names a missing file; it also deletes
    temporary files left by interrupted writes. Remote backends are
    untouched."""
    from mmengine.fileio.backends import local_backend
    from mmengine.hooks import checkpoint_hook
    from mmengine.runner import checkpoint as ckpt_mod
    from mmengine.runner import runner as runner_mod

    LocalBackend = local_backend.LocalBackend
    if getattr(LocalBackend, '_cast_mmaction_atomic', False):
        return False

    def put(self, obj, filepath):
        atomic_write(str(filepath), obj)

    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write(str(filepath), obj.encode(encoding))

    put.__doc__ = 'Atomic ' + (LocalBackend.put.__doc__ or '')
    put_text.__doc__ = 'Atomic ' + (LocalBackend.put_text.__doc__ or '')
    LocalBackend.put, LocalBackend.put_text = put, put_text
    LocalBackend._cast_mmaction_atomic = True

    class _DeferRemovals:
        """A file backend whose remove / rmtree wait for :meth:`flush`."""

        def __init__(self, backend):
            self._backend, self._removals = backend, []

        def remove(self, path):
            self._removals.append(('remove', path))

        def rmtree(self, path):
            self._removals.append(('rmtree', path))

        def __getattr__(self, name):
            return getattr(self._backend, name)

        def flush(self):
            for method, path in self._removals:
                getattr(self._backend, method)(path)

    def deferring(original):
        def wrapper(self, *args, **kwargs):
            backend = getattr(self, 'file_backend', None)
            if backend is None or isinstance(backend, _DeferRemovals):
                return original(self, *args, **kwargs)
            proxy = _DeferRemovals(backend)
            self.file_backend = proxy
            try:
                result = original(self, *args, **kwargs)
            finally:
                self.file_backend = backend
            proxy.flush()  # only once the new checkpoint is complete
            return result
        wrapper.__wrapped__ = original
        wrapper.__doc__ = original.__doc__
        return wrapper

    hook = checkpoint_hook.CheckpointHook
    hook._save_checkpoint_with_step = deferring(
        hook._save_checkpoint_with_step)
    hook._save_best_checkpoint = deferring(hook._save_best_checkpoint)

    original_find = ckpt_mod.find_latest_checkpoint

    def find_latest_checkpoint(path):
        from mmengine.logging import print_log
        if not os.path.isdir(path):
            return original_find(path)
        for name in os.listdir(path):
            if PARTIAL_MARK in name and name.startswith('.'):
                os.remove(os.path.join(path, name))
                print_log(f'removed {name}, a partial file left by an '
                          f'interrupted write', logger='current')
        record = os.path.join(path, 'last_checkpoint')
        last = None
        if os.path.exists(record):
            with open(record) as f:
                last = f.read().strip() or None
        if last is not None and ('://' in last or os.path.isfile(last)):
            return last
        found = _checkpoint_files(path)
        if not found:
            if last is None:
                return original_find(path)
            print_log(f'last_checkpoint names {last!r}, which is gone, and '
                      f'{path} holds no other checkpoint: starting afresh',
                      logger='current', level=30)
            return None
        print_log(f'last_checkpoint in {path} is '
                  f'{"missing" if last is None else repr(last) + " (gone)"}'
                  f'; resuming from the newest complete checkpoint, '
                  f'{found[0]}', logger='current', level=30)
        return found[0]

    find_latest_checkpoint.__doc__ = original_find.__doc__
    ckpt_mod.find_latest_checkpoint = find_latest_checkpoint
    runner_mod.find_latest_checkpoint = find_latest_checkpoint
    import mmengine.runner as runner_pkg
    runner_pkg.find_latest_checkpoint = find_latest_checkpoint
    try:
        from mmengine.runner import _flexible_runner
        _flexible_runner.find_latest_checkpoint = find_latest_checkpoint
    except ImportError:  # optional dependencies of FlexibleRunner
        pass
    return True


def _patch_cpu_distributed():
    """MMEngine's DDP path assumes GPUs: ``init_dist('pytorch')`` calls
    ``torch.cuda.set_device`` and the Runner wraps the model with
    ``device_ids=[LOCAL_RANK]``, both of which fail on a CPU-only host. There
    (no CUDA, no other accelerator) the process group is initialised with
    ``gloo`` (``nccl`` needs GPUs; a configured ``gloo`` or ``mpi`` is kept)
    and ``MMDistributedDataParallel`` gets no ``device_ids`` for a CPU
    module, so ``tools/dist_train.sh`` runs multi-process DDP on CPUs."""
    import torch
    try:
        from mmengine.dist import utils as dist_utils
        from mmengine.model.wrappers import distributed as ddp_mod
    except ImportError:
        return False
    if getattr(dist_utils._init_dist_pytorch, '_cast_cpu', False):
        return True
    original_init = dist_utils._init_dist_pytorch

    def _accelerator():
        from mmengine.device import (is_mlu_available, is_musa_available,
                                     is_npu_available)
        return (torch.cuda.is_available() or is_npu_available()
                or is_mlu_available() or is_musa_available())

    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if _accelerator() or init_backend != 'torch':
            return original_init(backend, init_backend=init_backend,
                                 **kwargs)
        if backend == 'nccl':
            backend = 'gloo'
        torch.distributed.init_process_group(backend=backend, **kwargs)

    _init_dist_pytorch._cast_cpu = True
    dist_utils._init_dist_pytorch = _init_dist_pytorch

    ddp_cls = ddp_mod.MMDistributedDataParallel
    original_ddp_init = ddp_cls.__init__

    def __init__(self, module, detect_anomalous_params=False, **kwargs):
        if kwargs.get('device_ids') is not None and all(
                p.device.type == 'cpu' for p in module.parameters()):
            kwargs['device_ids'] = None
        original_ddp_init(self, module,
                          detect_anomalous_params=detect_anomalous_params,
                          **kwargs)

    ddp_cls.__init__ = __init__
    return True


def _patch_low_precision_head_loss():
    """MMAction2's ``BaseHead.loss_by_feat`` computes top-k accuracy through
    ``cls_scores.numpy()``, which fails for bf16 scores ("Got unsupported
    ScalarType BFloat16": bf16 autocast training). The scores are cast to
    fp32 first (the loss runs in fp32 under autocast anyway)."""
    import torch
    try:
        from mmaction.models.heads.base import BaseHead
    except ImportError:
        return False
    original = BaseHead.loss_by_feat
    if getattr(original, '_cast_fp32', False):
        return True

    def loss_by_feat(self, cls_scores, data_samples):
        if isinstance(cls_scores, torch.Tensor) and cls_scores.dtype in (
                torch.bfloat16, torch.float16):
            cls_scores = cls_scores.float()
        return original(self, cls_scores, data_samples)

    loss_by_feat._cast_fp32 = True
    BaseHead.loss_by_feat = loss_by_feat
    return True


def apply():
    """Apply every patch once. Safe to call repeatedly."""
    global _APPLIED
    if _APPLIED:
        return
    _patch_missing_drn()
    _patch_multimodal_with_new_transformers()
    _patch_torch_load_weights_only()
    _check_pkg_resources()
    _patch_color_jitter_hue()
    _patch_atomic_checkpoints()
    _patch_cpu_distributed()
    _patch_low_precision_head_loss()
    _APPLIED = True
