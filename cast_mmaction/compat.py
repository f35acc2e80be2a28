"""The one place for work-arounds of upstream defects in the OpenMMLab stack.

Only defect fixes live here (features are hooks and utilities of
``cast_mmaction.engine``). Every patch names the defect it covers, runs only
on the versions that have it (:func:`_affected`: the last release checked is
the upper bound, a later release is left alone) and checks for the defect
itself, and is idempotent. :func:`apply` runs on ``import cast_mmaction``
before anything imports ``mmaction.models``.

=========================  =============================  ================
patch                      defect                         gated on
=========================  =============================  ================
_patch_missing_drn         mmaction2 wheel lacks          mmaction2 <= 1.2.0
                           models/localizers/drn          (wheel only)
                           (open-mmlab/mmaction2#2714)
_patch_torch_load_...      mmengine loads its own         (its own docstring)
                           checkpoints with torch.load
                           (weights_only since torch 2.6)
_check_pkg_resources       mmengine imports pkg_resources mmengine <= 0.10.7,
                           (gone in setuptools >= 81)     no pkg_resources
                                                          (a warning)
_patch_color_jitter_hue    ColorJitter.adjust_hue uint8   mmaction2 <= 1.2.0,
                           overflow under NumPy 2         numpy >= 2
_patch_cpu_distributed     mmengine DDP assumes CUDA      mmengine <= 0.10.7,
                                                          no accelerator
_patch_elastic_restart_... torchrun's restarted workers torch <= 2.15.0
  _store                   read the dead workers' keys
                           in the agent's c10d store
_patch_flexible_runner_    FlexibleRunner loads the       mmengine <= 0.10.7,
  resume                   checkpoint before before_run   order seen in the
                                                          source
_patch_low_precision_...   BaseHead.loss_by_feat calls    mmaction2 <= 1.2.0
                           .numpy() on bf16 scores
_defer_vindlu_import       VindLU imported by every       mmaction2 <= 1.2.0,
                           import (1-2.4 s, 144 MiB);     transformers
                           its helpers moved out of       installed
                           modeling_utils (4.56)
_defer_transformers_...    mmengine.optim imports         mmengine <= 0.10.7,
  adafactor                transformers for Adafactor     transformers
                           (17 MiB, up to 1 s each)       installed
end_gloo_process_group     a rank that exits without      torch <= 2.15.0,
  (called by tools/train.py destroy_process_group() may   a gloo default
  and tools/test.py)        abort at exit (SIGABRT)       group
silence_upstream_warnings  two import-time warnings on    mmaction2 <= 1.2.0
                           every command (mmcv-lite's     (runs on import of
                           MultiScaleDeformableAttention, this module)
                           VindLU's timm.models.layers)
=========================  =============================  ================
"""
import importlib.metadata
import importlib.util
import os
import re
import sys
import types
import warnings

_APPLIED = False

#: the last release of each package on which the defects below were seen
#: (and the patches tested); a later release is left alone
LAST_CHECKED = {'mmaction2': '1.2.0', 'mmengine': '0.10.7', 'torch': '2.15.0'}


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version):
    """(major, minor, patch) of a version string ('1.2.0rc1' -> (1, 2, 0))."""
    parts = [int(re.match(r'\d*', p).group() or 0)
             for p in str(version).split('+')[0].split('.')[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def _affected(dist):
    """True when the installed ``dist`` is not newer than the last release
    checked for its defects (``LAST_CHECKED``); unknown versions count as
    affected (each patch still checks for the defect itself)."""
    version = _version(dist)
    return version is None or _release(version) <= _release(
        LAST_CHECKED[dist])


#: the import-time warnings of the stack that say nothing to a user of this
#: plugin: (message regex, category, module regex, the defect). Each filter
#: matches that message, that category, from that module only; every other
#: warning is shown as usual.
UPSTREAM_WARNINGS = (
    # mmcv 2.1 ``mmcv/cnn/bricks/transformer.py`` tries to re-export
    # ``MultiScaleDeformableAttention`` from the compiled ``mmcv.ops`` at
    # import time and warns when it is absent, which it always is with
    # mmcv-lite (the install this plugin uses on machines without a compiled
    # mmcv, tools/install_deps.py). MMAction2 imports that module for every
    # model; no model of this plugin (nor MMAction2's recognizers) uses the
    # deformable attention, so the warning fires on every command and means
    # nothing here. A model that does use it still fails loudly when built.
    (r'Fail to import ``MultiScaleDeformableAttention`` from '
     r'``mmcv\.ops\.multi_scale_deform_attn``', UserWarning,
     r'mmcv\.cnn\.bricks\.transformer$',
     'mmcv-lite has no mmcv.ops; mmcv/cnn/bricks/transformer.py warns on '
     'import'),
    # mmaction2 1.2.0 ``models/multimodal/vindlu/temporal_model.py`` does
    # ``from timm.models.layers import DropPath``, a path timm >= 0.9 keeps
    # only as a deprecated alias (FutureWarning on import). MMAction2 imports
    # VindLU whenever transformers is installed, so every command prints it;
    # the fix (``timm.layers``) is upstream's to make.
    (r'Importing from timm\.models\.layers is deprecated, please import '
     r'via timm\.layers', FutureWarning, r'timm\.models\.layers$',
     'mmaction2 1.2.0 VindLU imports the deprecated timm.models.layers'),
)


def silence_upstream_warnings():
    """Ignore exactly the warnings of :data:`UPSTREAM_WARNINGS` (message,
    category and module must all match). Runs when this module is imported,
    so a tool that imports ``cast_mmaction`` (or ``cast_mmaction.compat``)
    before anything imports mmcv or mmaction prints neither; with a newer
    mmaction2 (not checked) nothing is filtered. Idempotent."""
    if not _affected('mmaction2'):
        return False
    for message, category, module, _defect in UPSTREAM_WARNINGS:
        # append=False puts the filter first; filterwarnings removes an
        # identical earlier entry, so repeated calls add nothing
        warnings.filterwarnings('ignore', message=message, category=category,
                                module=module)
    return True


def _mmaction_root():
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            'cast_mmaction needs mmaction2 (pip install "mmaction2==1.2.0"); '
            'see docs/install.md.')
    return list(spec.submodule_search_locations)[0]


def _patch_missing_drn():
    """mmaction2 1.2.0 on PyPI ships without ``mmaction/models/localizers/drn``
    although ``mmaction/models/localizers/__init__.py`` imports it, so
    ``import mmaction.models`` raises ModuleNotFoundError. We register an
    empty stand-in package whose ``DRN`` explains the gap when built; every
    other model of the wheel imports as usual. A source install of mmaction2
    has the folder and is left alone. Upstream: open-mmlab/mmaction2#2714
    (open; the 1.2.0 wheel is the latest release)."""
    if not _affected('mmaction2'):
        return False
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


#: what ``mmaction/models/multimodal/vindlu`` registers (mmaction2 1.2.0),
#: by registry: the lazy entries of :func:`_defer_vindlu_import`
VINDLU_NAMES = {
    'MODELS': ('BeitModel3D', 'VindLURetrieval', 'VindLURetrievalMC',
               'VindLUVQA', 'XBertForMaskedLM', 'XBertModel', 'BertDecoder'),
    'TOKENIZER': ('VindLUTokenizer', ),
}
_TRANSFORMERS_HELPERS = ('apply_chunking_to_forward',
                         'find_pruneable_heads_and_indices',
                         'prune_linear_layer')


def _defer_vindlu_import():
    """Two defects of mmaction2 <= 1.2.0's VindLU models, which it imports
    on every ``import mmaction.models`` whenever ``transformers`` >= 4.28 is
    installed:

    - the import costs every process (each rank, each spawned data worker,
      each tool) 1-2.4 s and 144 MiB of resident memory (transformers' models
      pull in ``torch._dynamo``, ``torch._inductor`` and ``torchvision``;
      measured by ``benchmarks/scripts/import_cost.py``), for models no CAST
      config builds;
    - ``vindlu/modeling_bert.py`` takes ``apply_chunking_to_forward``,
      ``find_pruneable_heads_and_indices`` and ``prune_linear_layer`` from
      ``transformers.modeling_utils``; transformers 4.56 and later keep them
      only in ``transformers.pytorch_utils``, so the import fails
      (``ImportError: cannot import name 'apply_chunking_to_forward'``).

    MMAction2's ``WITH_MULTIMODAL`` switch is turned off before
    ``mmaction.models`` loads and its placeholder registration is replaced:
    every name VindLU registers (:data:`VINDLU_NAMES`) gets a lazy entry
    that, when a config builds it, gives the three helpers back to
    ``modeling_utils`` (the same functions, only where missing), imports
    VindLU (which registers the real classes in place of the lazy entries)
    and builds the real class; ``import mmaction.models.multimodal.vindlu``
    in user code does the same (:class:`_VindLUFinder`). A transformers
    that has the helpers nowhere gets an ImportError naming them when a
    VindLU model is built; nothing else is affected. No upstream issue
    found."""
    if not _affected('mmaction2') or \
            importlib.util.find_spec('transformers') is None or \
            'mmaction.models' in sys.modules:
        return False
    from mmaction.utils import dependency
    if not dependency.WITH_MULTIMODAL or \
            getattr(dependency, '_cast_vindlu_deferred', False):
        return False
    dependency.WITH_MULTIMODAL = False
    dependency.register_multimodal_placeholder = _register_lazy_vindlu
    sys.meta_path.insert(0, _VindLUFinder())
    dependency._cast_vindlu_deferred = True
    return True


def _defer_transformers_adafactor():
    """mmengine <= 0.10.7 imports ``transformers`` (and with it
    ``huggingface_hub``, ``requests``, ``tokenizers``, ``jinja2``) when
    ``mmengine.optim`` loads, only to register transformers' ``Adafactor``
    in its OPTIMIZERS registry (``optim/optimizer/builder.py``,
    ``register_transformers_optimizers``). Every training process, rank and
    tool pays for it: 17 MiB of resident memory and up to 1 s of import
    time (``benchmarks/scripts/import_cost.py``), for an optimizer no CAST
    recipe names.

    ``mmengine.optim`` is imported here with ``transformers`` marked
    unimportable (``sys.modules['transformers'] = None``, the import
    system's own way to make an import fail) for that one import, so
    mmengine registers nothing; then ``Adafactor`` gets a lazy entry whose
    construction imports transformers and returns its ``Adafactor`` (the
    first parameter is ``params``, which mmengine's optimizer constructor
    reads from the signature), and ``TRANSFORMERS_OPTIMIZERS`` names it as
    before. Skipped where mmengine.optim or transformers is already imported
    (nothing is then saved, nothing changes), where transformers is not
    installed, or where builder.py no longer imports it. No upstream issue
    found."""
    if not _affected('mmengine') or 'mmengine.optim' in sys.modules or \
            'transformers' in sys.modules or \
            importlib.util.find_spec('transformers') is None:
        return False
    spec = importlib.util.find_spec('mmengine')
    builder = os.path.join(list(spec.submodule_search_locations)[0], 'optim',
                           'optimizer', 'builder.py')
    try:
        with open(builder, encoding='utf-8') as f:
            if 'from transformers import Adafactor' not in f.read():
                return False
    except OSError:
        return False
    sys.modules['transformers'] = None
    try:
        from mmengine.optim.optimizer import builder as builder_mod
    finally:
        if sys.modules.get('transformers', 0) is None:
            del sys.modules['transformers']
    if 'Adafactor' not in builder_mod.OPTIMIZERS.module_dict:
        builder_mod.OPTIMIZERS.register_module('Adafactor',
                                               module=_LazyAdafactor)
        builder_mod.TRANSFORMERS_OPTIMIZERS.append('Adafactor')
    return True


class _LazyAdafactor:
    """OPTIMIZERS' ``Adafactor`` until one is built: builds
    ``transformers.Adafactor`` (see :func:`_defer_transformers_adafactor`)."""

    def __new__(cls, params, *args, **kwargs):
        from transformers import Adafactor
        return Adafactor(params, *args, **kwargs)


def _vindlu_registries():
    from mmaction import registry
    return {name: getattr(registry, name) for name in VINDLU_NAMES}


def _register_lazy_vindlu(names=None, registry=None):
    """Stands in for MMAction2's ``register_multimodal_placeholder`` (its
    arguments, the three model names and MODELS, are a subset of
    :data:`VINDLU_NAMES`): registers the lazy entries of every VindLU
    name."""
    for reg_name, registry in _vindlu_registries().items():
        for name in VINDLU_NAMES[reg_name]:
            if name not in registry.module_dict:
                registry.register_module(name, module=_lazy_vindlu(
                    reg_name, name))


def _lazy_vindlu(reg_name, name):

    def build_vindlu(*args, **kwargs):
        return _import_vindlu()[reg_name].get(name)(*args, **kwargs)

    build_vindlu.__name__ = build_vindlu.__qualname__ = name
    build_vindlu._cast_lazy_vindlu = True
    return build_vindlu


_VINDLU = 'mmaction.models.multimodal.vindlu'


def _import_vindlu():
    """Import MMAction2's VindLU package (once; :class:`_VindLUFinder`
    prepares the import). Returns the registries by name."""
    importlib.import_module(_VINDLU)
    return _vindlu_registries()


class _VindLUFinder:
    """On sys.meta_path while VindLU is deferred: however VindLU gets
    imported (a lazy entry built, or ``import mmaction.models.multimodal.
    vindlu`` in user code), its loader first gives transformers' helpers back
    and takes the lazy entries out of the registries, so that VindLU's own
    registrations succeed; a failed import puts them back."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _VINDLU:
            return None
        import importlib.machinery
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _VindLULoader(spec.loader)
        return spec


class _VindLULoader:

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        from transformers import modeling_utils, pytorch_utils
        missing = [n for n in _TRANSFORMERS_HELPERS
                   if not hasattr(modeling_utils, n)]
        nowhere = [n for n in missing if not hasattr(pytorch_utils, n)]
        if nowhere:
            import transformers
            raise ImportError(
                f"MMAction2's VindLU models need {', '.join(nowhere)} from "
                'transformers.modeling_utils (or transformers.pytorch_utils);'
                f' the installed transformers {transformers.__version__} has '
                'them in neither: install a transformers that does (4.55.4 is '
                'the one tested here).')
        for n in missing:
            setattr(modeling_utils, n, getattr(pytorch_utils, n))
        registries = _vindlu_registries()
        removed = {}
        for reg_name, registry in registries.items():
            for name in VINDLU_NAMES[reg_name]:
                entry = registry.module_dict.get(name)
                if getattr(entry, '_cast_lazy_vindlu', False):
                    # mmengine's Registry has no public way to unregister
                    removed[(reg_name, name)] = registry._module_dict.pop(
                        name)
        try:
            self.loader.exec_module(module)
        except BaseException:
            for (reg_name, name), entry in removed.items():
                registries[reg_name]._module_dict.setdefault(name, entry)
            raise


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
    instead of failing deep inside config parsing (mmengine <= 0.10.7
    imports ``pkg_resources`` in ``mmengine.utils.package_utils``; the
    same removal breaks mmcv's setup, open-mmlab/mmcv#3325)."""
    if not _affected('mmengine'):
        return False
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
    compute the same ``(h + offset) % 180`` in int16 (what NumPy 1 did).
    No upstream issue found; the same NumPy 2 defect in torchvision is
    pytorch/vision#8536."""
    import numpy as np
    if not _affected('mmaction2') or \
            np.lib.NumpyVersion(np.__version__) < '2.0.0':
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


def _patch_cpu_distributed():
    """MMEngine's DDP path assumes GPUs: ``init_dist('pytorch')`` and
    ``init_dist('slurm')`` call ``torch.cuda.set_device`` and the Runner
    wraps the model with ``device_ids=[LOCAL_RANK]``, both of which fail on
    a CPU-only host. There (no CUDA, no other accelerator) the process group
    is initialised with ``gloo`` (``nccl`` needs GPUs; a configured ``gloo``
    or ``mpi`` is kept) and ``MMDistributedDataParallel`` gets no
    ``device_ids`` for a CPU module, so ``tools/dist_train.sh`` and
    ``tools/slurm_train.sh`` run multi-process DDP on CPUs.
    Only where neither CUDA nor another accelerator exists (the defect
    cannot occur elsewhere); no upstream issue found."""
    import torch
    if not _affected('mmengine'):
        return False
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

    # the SLURM path (--launcher slurm) has the same torch.cuda.set_device
    # call after it has read SLURM_PROCID / SLURM_NTASKS / SLURM_NODELIST;
    # it runs with that call made a no-op (only here, without accelerator)
    original_slurm = dist_utils._init_dist_slurm

    def _init_dist_slurm(backend, port=None, init_backend='torch', **kwargs):
        if _accelerator() or init_backend != 'torch':
            return original_slurm(backend, port=port,
                                  init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            backend = 'gloo'
        set_device = torch.cuda.set_device
        torch.cuda.set_device = lambda device: None
        try:
            return original_slurm(backend, port=port,
                                  init_backend=init_backend, **kwargs)
        finally:
            torch.cuda.set_device = set_device

    dist_utils._init_dist_slurm = _init_dist_slurm

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


def _patch_elastic_restart_store():
    """torchrun's restarted workers (``--max-restarts``) reuse the agent's
    c10d store, which still holds the keys of the workers that died; torch
    2.x adds no per-attempt prefix ("We create a new TCPStore for every
    retry", ``torch/distributed/rendezvous.py``, which the static
    rendezvous does not do), so a restarted gloo / NCCL group can read a dead
    worker's address and wait for it until ``env_cfg.dist_cfg.timeout``
    (seen here in 2 of 3 runs: the restarted ranks hung in gloo's
    ``connectFullMesh``, or the restarted rank 0 failed). The workers' store gets
    the prefix ``/worker/attempt_<TORCHELASTIC_RESTART_COUNT>`` (what torch
    1.x did) when it is the agent's store. Every worker restarted by one
    agent has the same count; ``tools/dist_train.sh`` refuses restarts
    with several nodes, whose agents count differently. Checked on torch
    2.15.0; no upstream issue found."""
    if not _affected('torch'):
        return False
    try:  # the module: torch.distributed.rendezvous is also a function
        rdzv = importlib.import_module('torch.distributed.rendezvous')
    except ImportError:
        return False
    original = getattr(rdzv, '_create_c10d_store', None)
    serves = getattr(rdzv, '_agent_store_serves', None)
    if original is None or serves is None:
        return False  # a torch without the defect's code path
    if getattr(original, '_cast_attempt', False):
        return True

    def _create_c10d_store(hostname, port, rank, world_size, timeout,
                           *args, **kwargs):
        store = original(hostname, port, rank, world_size, timeout, *args,
                         **kwargs)
        attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT')
        if attempt and serves(hostname, port):
            from torch.distributed import PrefixStore
            store = PrefixStore(f'/worker/attempt_{attempt}', store)
        return store

    _create_c10d_store._cast_attempt = True
    rdzv._create_c10d_store = _create_c10d_store


def _patch_flexible_runner_resume():
    """MMEngine's ``FlexibleRunner.train()`` (and ``val`` / ``test``) calls
    ``load_or_resume()`` *before* the ``before_run`` hooks, the reverse of
    ``Runner.train()``; a hook that makes ``--resume`` (auto) find a usable
    checkpoint in ``before_run`` (``AtomicCheckpointHook``: an empty, stale
    or incomplete ``last_checkpoint``, e.g. a sharded folder with a missing
    shard) acts too late, and the resume fails. Here ``load_or_resume``
    first calls ``prepare_resume(runner)`` of every hook that has one. Gated
    on the order in ``FlexibleRunner.train``'s source; no upstream issue
    found."""
    import inspect
    if not _affected('mmengine'):
        return False
    try:
        from mmengine.runner import FlexibleRunner
        src = inspect.getsource(FlexibleRunner.train)
    except (ImportError, OSError, TypeError):
        return False
    original = FlexibleRunner.load_or_resume
    if getattr(original, '_cast_prepare', False):
        return True
    if not (0 <= src.find('load_or_resume(') < src.find("'before_run'")):
        return False  # the hooks run first: nothing to fix

    def load_or_resume(self):
        if not self._has_loaded:
            for hook in self.hooks:
                prepare = getattr(hook, 'prepare_resume', None)
                if callable(prepare):
                    prepare(self)
        return original(self)

    load_or_resume._cast_prepare = True
    FlexibleRunner.load_or_resume = load_or_resume
    return True


def _patch_low_precision_head_loss():
    """MMAction2's ``BaseHead.loss_by_feat`` computes top-k accuracy through
    ``cls_scores.numpy()``, which fails for bf16 scores ("Got unsupported
    ScalarType BFloat16": bf16 autocast training). The scores are cast to
    fp32 first (the loss runs in fp32 under autocast anyway). No upstream
    issue found."""
    import torch
    if not _affected('mmaction2'):
        return False
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


def end_gloo_process_group():
    """Destroy the default process group when it is gloo's, at the end of
    a run that succeeded (``tools/train.py`` and ``tools/test.py`` call it
    after ``runner.train()`` / ``runner.test()`` return), while the
    interpreter is fully alive. Returns True when it destroyed one.

    Defect: a process that exits without ``destroy_process_group()`` can
    leave gloo's worker threads holding work objects with Python
    references, which interpreter finalization then destroys: the rank
    aborts after a run that finished (``terminate called without an active
    exception``, SIGABRT) and torchrun reports the run as failed
    (pytorch/pytorch#179291, an ``atexit`` fix proposed and abandoned). Seen
    here once in the two-rank gloo run of
    ``tests/test_sample_timeout.py::test_ddp_run_finishes_when_one_ranks_sample_hangs``,
    after the checkpoint was saved. Only on success: a failing rank exits as
    before (destroying a group waits for its pending work, which a peer that
    hangs would hold up). NCCL groups are left to torch (not seen, and their
    teardown is not testable without a GPU here)."""
    if not _affected('torch'):
        return False
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        return False
    if 'gloo' not in str(dist.get_backend()).lower():
        return False
    dist.destroy_process_group()
    return True


def apply():
    """Apply every patch once. Safe to call repeatedly."""
    global _APPLIED
    if _APPLIED:
        return
    silence_upstream_warnings()
    _defer_transformers_adafactor()  # before anything imports mmengine.optim
    _patch_missing_drn()
    _defer_vindlu_import()
    _patch_torch_load_weights_only()
    _check_pkg_resources()
    _patch_color_jitter_hue()
    _patch_cpu_distributed()
    _patch_elastic_restart_store()
    _patch_flexible_runner_resume()
    _patch_low_precision_head_loss()
    _APPLIED = True


# before the importer (a tool, a config's custom_imports) goes on to import
# mmcv / mmaction: the warnings fire on their first import
silence_upstream_warnings()
