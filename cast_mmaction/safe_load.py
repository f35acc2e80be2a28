"""Open checkpoint and prediction files without running code they carry.

A ``.pth`` / ``.pt`` / ``.pkl`` file is a pickle, and unpickling can call
any Python function the file names (``os.system`` included). Every file this
package opens goes through this module:

* PyTorch files: ``torch.load(..., weights_only=True)`` with a short
  allow-list (:func:`allowed_globals`) of the benign types real checkpoints
  carry besides tensors, active only during our loads
  (``torch.serialization.safe_globals``, no global registration);
* ``.safetensors``: tensors and string metadata only (:func:`save_safetensors`
  / :func:`load_safetensors`; our checkpoints keep ``meta`` there as JSON);
* TorchScript archives (the OpenAI CLIP release): the tensors are read from
  the zip by a restricted unpickler (:func:`read_torchscript_state`); the
  archive's code is neither compiled nor run (``torch.jit.load`` would run
  the archive's ``__setstate__`` methods, which can write files);
* plain pickles (EPIC-KITCHENS score files): a restricted unpickler
  (:func:`load_pickle`) that builds containers, numbers, strings, NumPy
  arrays and tensors only;
* sharded checkpoint folders (``torch.distributed.checkpoint``): the
  pickled ``.metadata`` file by a restricted unpickler that builds DCP's
  metadata records only (:func:`read_dcp_metadata`); shard tensors with
  ``weights_only=True``; pickled (non-tensor) entries refused
  (:func:`safe_dcp_reader`).

A file that needs anything else is refused with
:class:`UntrustedCheckpointError`, which names what the file asked for. A
file the user trusts is opened without restrictions only when the user says
so for that file: ``--trust-checkpoint`` on the tools, ``trust_checkpoint``
in a config (:func:`trust_config`), or :func:`trusted` / :func:`trust` in
Python. See docs/security.md.
"""
import contextlib
import io
import json
import os
import os.path as osp
import pickle
import re
import zipfile

__all__ = [
    'UntrustedCheckpointError', 'allowed_globals', 'load_checkpoint',
    'load_from_local', 'load_from_url', 'load_pickle', 'load_safetensors',
    'save_safetensors', 'read_torchscript_state', 'is_torchscript_archive',
    'trust', 'trusted', 'is_trusted', 'trust_config', 'trust_inputs',
    'add_trust_argument', 'pop_trust', 'read_dcp_metadata', 'safe_dcp_reader',
    'TRUST_HINT'
]

#: what a refusal tells the user to do for a file they trust
TRUST_HINT = (
    'If you trust this file (you made it, or its source is one you trust), '
    'open it with the trust flag: --trust-checkpoint on tools/train.py, '
    'test.py, infer.py, extract_features.py, attention_maps.py, '
    'convert_checkpoint.py and to_safetensors.py; in a config, '
    'trust_checkpoint=True at the top level (load_from / resume) or in the '
    'dict that names a `pretrained` file (e.g. model.backbone.experts.clip);'
    ' in Python, `with cast_mmaction.safe_load.trusted(path): ...`. Then '
    'keep a safe copy: python tools/convert/to_safetensors.py FILE OUT.safetensors '
    '--trust-checkpoint. See docs/security.md.')


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A file needs a type outside the allow-list and was not trusted."""


# ----------------------------------------------------------------------------
# trusted files
# ----------------------------------------------------------------------------
_TRUSTED = set()  # real paths of files and folders, or URLs


def _key(path):
    path = str(path)
    if '://' in path:
        return path
    return osp.realpath(osp.expanduser(path))


def trust(*paths):
    """Trust these files (or every file under these folders, or these URLs)
    for the rest of the process: they may be unpickled without restrictions.
    ``None`` entries are ignored."""
    for p in paths:
        if p:
            _TRUSTED.add(_key(p))


@contextlib.contextmanager
def trusted(*paths):
    """Trust these files (folders, URLs) inside the ``with`` block only."""
    keys = {_key(p) for p in paths if p} - _TRUSTED
    _TRUSTED.update(keys)
    try:
        yield
    finally:
        _TRUSTED.difference_update(keys)


def is_trusted(path):
    key = _key(path)
    if key in _TRUSTED:
        return True
    return any(osp.isdir(t) and key.startswith(t.rstrip(os.sep) + os.sep)
               for t in _TRUSTED if '://' not in t)


def add_trust_argument(parser, what='the checkpoint named on the command '
                       'line'):
    """The ``--trust-checkpoint`` flag of the tools."""
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help=f'{what} is a file you trust: if it holds Python objects '
        'outside the allow-list of docs/security.md, unpickle it without '
        'restrictions (this can run code the file carries). Without the '
        'flag such a file is refused.')


def trust_config(cfg):
    """Apply a config's ``trust_checkpoint`` fields and remove them from the
    model dicts (the models do not take them):

    * top level ``trust_checkpoint = True``: the config's ``load_from`` file,
      and with ``resume = True`` and no ``load_from`` the files of
      ``work_dir`` (where the run resumes from);
    * ``trust_checkpoint=True`` in any dict under ``model`` that has a
      ``pretrained`` file (an expert, the MSCA backbone) or is an
      ``init_cfg`` with a ``checkpoint``: that file.

    Returns the trusted paths."""
    added = []
    if cfg.get('trust_checkpoint', False):
        if cfg.get('load_from'):
            added.append(cfg.load_from)
        elif cfg.get('resume') and cfg.get('work_dir'):
            added.append(cfg.work_dir)
    model = cfg.get('model')
    if model is not None:
        added += _pop_model_trust(model, 'model')
    trust(*added)
    return added


def trust_inputs(cfg, checkpoint, trust_flag):
    """What the inference tools do: apply the config's ``trust_checkpoint``
    fields (:func:`trust_config`) and, with ``--trust-checkpoint``, trust
    ``checkpoint``."""
    trust_config(cfg)
    if trust_flag:
        trust(checkpoint)


def pop_trust(cfg, where):
    """Apply and remove the ``trust_checkpoint`` field of one model dict
    (an expert's, the MSCA backbone's) where the model is built, so that
    the field works under any entry point (MMAction2's own tools, a plain
    ``Runner.from_cfg``), not only where :func:`trust_config` ran first.
    Returns ``cfg`` without the field (a copy when it had one)."""
    if not isinstance(cfg, dict) or 'trust_checkpoint' not in cfg:
        return cfg
    cfg = dict(cfg)
    trust(*_pop_node_trust(cfg, where))
    return cfg


def _pop_node_trust(node, where):
    """Remove the ``trust_checkpoint`` field of the dict ``node``; the file
    it trusts (``pretrained`` or ``checkpoint``), as a list (empty when the
    field is False)."""
    flag = node.pop('trust_checkpoint')
    source = node.get('pretrained') or node.get('checkpoint')
    if flag and not isinstance(source, str):
        raise ValueError(f'{where}.trust_checkpoint=True, but {where} names '
                         f'no file (no `pretrained` or `checkpoint` field)')
    return [source] if flag else []


def _pop_model_trust(node, where):
    found = []
    if isinstance(node, dict):
        if 'trust_checkpoint' in node:
            found += _pop_node_trust(node, where)
        for k, v in node.items():
            found += _pop_model_trust(v, f'{where}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found += _pop_model_trust(v, f'{where}[{i}]')
    return found


# ----------------------------------------------------------------------------
# the allow-list
# ----------------------------------------------------------------------------
def _numpy_core():
    import numpy as np
    return getattr(np, '_core', None) or np.core  # NumPy 2 / NumPy 1


def _history_buffer_class():
    """MMEngine's ``HistoryBuffer`` as our loads may build it.

    ``HistoryBuffer.__setstate__`` merges the pickled ``statistics_methods``
    into a dict shared by every buffer of the process, and MMEngine later
    calls those entries. This subclass accepts only HistoryBuffer's own
    statistics functions there, then turns the object into a plain
    HistoryBuffer (so that it pickles as before)."""
    from mmengine.logging.history_buffer import HistoryBuffer

    class _CheckedHistoryBuffer(HistoryBuffer):

        def __setstate__(self, state):
            methods = state.get('statistics_methods', {}) if isinstance(
                state, dict) else None
            if not isinstance(methods, dict):
                raise pickle.UnpicklingError(
                    'HistoryBuffer state is not a dict')
            bad = [k for k, f in methods.items()
                   if not _is_buffer_statistic(HistoryBuffer, k, f)]
            if bad:
                raise pickle.UnpicklingError(
                    f'HistoryBuffer statistics {bad} are not HistoryBuffer '
                    f'methods')
            self.__class__ = HistoryBuffer
            HistoryBuffer.__setstate__(self, state)

    return _CheckedHistoryBuffer


#: the statistics MMEngine registers on every HistoryBuffer
_STATISTICS = ('min', 'max', 'current', 'mean')


def _is_buffer_statistic(cls, name, func):
    return name in _STATISTICS and func is vars(cls).get(name)


def _statistics_getattr(obj, name):
    """``getattr`` as MMEngine checkpoints use it: pickle protocol 2 writes
    the functions in ``HistoryBuffer._statistics_methods`` as
    ``getattr(HistoryBuffer, 'mean')``. Nothing else is reachable."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if (isinstance(obj, type) and issubclass(obj, HistoryBuffer)
            and name in _STATISTICS and name in vars(HistoryBuffer)):
        return vars(HistoryBuffer)[name]
    raise pickle.UnpicklingError(
        f'getattr({getattr(obj, "__name__", type(obj).__name__)}, '
        f'{name!r}) is not allowed: only HistoryBuffer statistics methods')


_ALLOWED = None
#: type codes of the NumPy dtypes a checkpoint may carry
_PLAIN_DTYPES = '?bBhHiIlLqQefdgFDGOUS'


def allowed_globals():
    """The globals our ``torch.load`` calls accept besides PyTorch's own
    (tensors, storages, dtypes, ``torch.Size``, ``OrderedDict``, ``set``,
    ``bytes``...). Each entry is needed by files that real runs write; see
    docs/security.md for how each was found."""
    global _ALLOWED
    if _ALLOWED is None:
        import argparse

        import numpy as np
        mu = _numpy_core().multiarray
        history_buffer = _history_buffer_class()
        _ALLOWED = [
            # NumPy arrays: the NumPy RNG state of exact resume
            # (np.random.get_state(), engine/reliability.py), arrays in
            # MMEngine's message hub and in the authors' checkpoints. A
            # ndarray is rebuilt from its shape, dtype and raw bytes; an
            # object array from a list of already-unpickled (allowed) items.
            (mu._reconstruct, 'numpy._core.multiarray._reconstruct'),
            (mu._reconstruct, 'numpy.core.multiarray._reconstruct'),  # NumPy 1
            np.ndarray,
            # dtype of every NumPy array and scalar, built from a type code;
            # NumPy 2 returns an instance of a per-type class
            # (numpy.dtypes.Float64DType...) whose state is then set: the
            # classes of the plain dtypes (bool, integers, floats, complex,
            # str, bytes, object), nothing structured
            np.dtype,
            *sorted({type(np.dtype(c)) for c in _PLAIN_DTYPES} - {np.dtype},
                    key=lambda t: t.__name__),
            # NumPy scalars (np.float64 losses / metrics in the message hub,
            # np.int64 counters): a dtype and the value's bytes
            (mu.scalar, 'numpy._core.multiarray.scalar'),
            (mu.scalar, 'numpy.core.multiarray.scalar'),  # NumPy 1
            # MMEngine's message hub ('message_hub' of every checkpoint the
            # Runner writes): the logged scalars as HistoryBuffer objects,
            # whose statistics methods are checked (_history_buffer_class)
            (history_buffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
            # ... and pickled as getattr(HistoryBuffer, 'mean') etc.: a
            # getattr restricted to exactly those
            (_statistics_getattr, 'builtins.getattr'),
            # The authors' CAST / VideoMAE training scripts save
            # {'model': ..., 'optimizer': ..., 'epoch': ..., 'args': args}
            # without DeepSpeed: their argparse namespace (plain attributes)
            argparse.Namespace,
        ]
    return list(_ALLOWED)


def _allow_list():
    import torch
    if hasattr(torch.serialization, 'safe_globals'):  # torch >= 2.5
        return torch.serialization.safe_globals(allowed_globals())
    return contextlib.nullcontext()  # older torch: PyTorch's own list only


# ----------------------------------------------------------------------------
# refusals
# ----------------------------------------------------------------------------
_BOILERPLATE = ('Weights only load failed', 'Check the documentation of',
                'In PyTorch 2.6', 'Re-running `torch.load`', 'Please file an '
                'issue')


def _offenders(path):
    """Every global of ``path``'s pickle outside the allow-list (read from
    the opcodes, nothing is run); [] when it cannot tell."""
    import torch
    try:
        with _allow_list():
            return sorted(
                torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint, old torch
        return []


def _refusal(path, what, error):
    text = str(error)
    detail = ' '.join(
        line.strip() for line in text.splitlines()
        if line.strip() and not line.strip().startswith(_BOILERPLATE))
    names = _offenders(path) if osp.isfile(str(path)) else []
    if not names:
        names = re.findall(r"GLOBAL ([\w.]+\w)|<class '([\w.]+)'>", text)
        names = [a or b for a, b in names]
    needs = (f'needs {", ".join(names)}, which '
             f'{"is" if len(names) == 1 else "are"} not on the allow-list'
             if names else 'holds something outside the allow-list')
    return (f'{what} {path}: refused to open: the file {needs} of plain data '
            f'types (tensors, containers, numbers, strings, NumPy arrays and '
            f'the few types of docs/security.md). A .pth/.pt/.pkl file is a '
            f'pickle, and opening a pickle can run any code it names, so a '
            f'file that needs other objects is not opened by default '
            f'[unpickler: {detail or text.strip()}]. {TRUST_HINT}')


def _warn_trusted(path, what):
    import warnings
    warnings.warn(f'{what} {path}: opened WITHOUT restrictions because you '
                  f'marked it as trusted (it holds objects outside the '
                  f'allow-list; unpickling it can run code)', stacklevel=3)


# ----------------------------------------------------------------------------
# loaders
# ----------------------------------------------------------------------------
def load_checkpoint(path, map_location='cpu', what='checkpoint', mmap=False):
    """Open a checkpoint file of any kind this package reads and return what
    it holds: a ``.safetensors`` file (:func:`load_safetensors`), a
    TorchScript archive (its tensors, :func:`read_torchscript_state`) or a
    ``torch.save`` file (``weights_only=True`` + :func:`allowed_globals`;
    with ``mmap`` a zip archive's tensors are mapped, not read: a cheap look
    at what the file holds).

    Raises :class:`UntrustedCheckpointError` for a file that needs anything
    else, unless the file is trusted (:func:`trust`, :func:`trusted`)."""
    import torch
    path = osp.expanduser(str(path))
    if osp.isdir(path):
        raise FileNotFoundError(
            f'{what}: {path} is a folder, not a checkpoint file; a sharded '
            f'checkpoint folder (FSDP2) is read by a config with the FSDP2 '
            f'strategy, or made one file by '
            f'tools/convert/consolidate_checkpoint.py (docs/distributed.md)')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what}: file not found: {path}')
    if path.endswith('.safetensors'):
        return load_safetensors(path, map_location)
    if is_torchscript_archive(path):
        try:
            return read_torchscript_state(path, what)
        except UntrustedCheckpointError:
            if not is_trusted(path):
                raise
            _warn_trusted(path, what)
            jit = torch.jit.load(path, map_location='cpu')
            return dict(jit.state_dict())
    if not zipfile.is_zipfile(path):  # the legacy format is a pickle
        with open(path, 'rb') as f:
            if f.read(1) != pickle.PROTO:
                raise ValueError(f'{what} {path}: not a PyTorch checkpoint '
                                 f'(neither a complete zip archive nor a '
                                 f'pickle: truncated, or another format)')
    lazy = dict(mmap=True) if mmap and zipfile.is_zipfile(path) else {}
    try:
        with _allow_list():
            return torch.load(path, map_location=map_location,
                              weights_only=True, **lazy)
    except pickle.UnpicklingError as e:
        if not is_trusted(path):
            raise UntrustedCheckpointError(_refusal(path, what, e)) from None
        _warn_trusted(path, what)
        return torch.load(path, map_location=map_location, weights_only=False,
                          **lazy)


def load_from_local(filename, map_location=None):
    """MMEngine's loader of local checkpoint files (``load_from``,
    ``--resume``, ``tools/test.py``, ``init_cfg=dict(type='Pretrained')``),
    re-registered by ``compat.py``: :func:`load_checkpoint`."""
    return load_checkpoint(filename, map_location=map_location)


def load_from_url(filename, map_location=None, model_dir=None,
                  progress=None):
    """MMEngine's loader of ``http(s)://`` checkpoints (and of
    ``torchvision://``, ``open-mmlab://``, ``mmcls://``, which resolve to
    URLs): download once into torch's hub cache (rank 0 first), then
    :func:`load_checkpoint` (trust a URL with :func:`trust` on the URL)."""
    import torch
    from mmengine.dist import get_dist_info
    from torch.hub import download_url_to_file, get_dir
    from urllib.parse import urlparse

    folder = model_dir or osp.join(get_dir(), 'checkpoints')
    cached = osp.join(folder, osp.basename(urlparse(filename).path))
    rank, world_size = get_dist_info()

    def fetch():
        if not osp.isfile(cached):
            os.makedirs(folder, exist_ok=True)
            download_url_to_file(filename, cached, progress=bool(progress))

    if rank == 0:
        fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            fetch()
    with trusted(*([cached] if is_trusted(filename) else [])):
        return load_checkpoint(cached, map_location=map_location,
                               what=f'checkpoint {filename}, cached as')


# ----------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------
_ST_MARK = 'cast_mmaction'  # metadata key of checkpoints written here
#: what only ``--resume`` reads (not kept in .safetensors)
_RESUME_ONLY = ('optimizer', 'param_schedulers', 'message_hub', 'rng_state')


def save_safetensors(checkpoint, path):
    """Write a checkpoint as ``.safetensors``: the tensors of its state dict
    (``checkpoint['state_dict']``, or ``checkpoint`` itself when it is a
    dict of tensors) and, as JSON metadata, its other entries that JSON can
    hold (``meta``, ``frozen_experts``, ...). Optimizer and scheduler states
    (resuming needs the ``.pth``) are left out; returns their names."""
    import torch
    from safetensors.torch import save_file
    if not isinstance(checkpoint, dict):
        raise TypeError(f'expected a checkpoint dict, got '
                        f'{type(checkpoint).__name__}')
    if isinstance(checkpoint.get('state_dict'), dict):
        state, extra = checkpoint['state_dict'], {
            k: v for k, v in checkpoint.items() if k != 'state_dict'}
    else:
        state = {k: v for k, v in checkpoint.items() if torch.is_tensor(v)}
        extra = {k: v for k, v in checkpoint.items() if k not in state}
    bad = [k for k, v in state.items() if not torch.is_tensor(v)]
    if bad or not state:
        raise ValueError(f'{path}: the state dict must be non-empty and hold '
                         f'tensors only (not: {bad[:5]})')
    tensors, seen = {}, set()
    for k, v in state.items():  # safetensors refuses shared memory
        v = v.detach().cpu().contiguous()
        storage = v.untyped_storage()
        if v.numel() and (storage.data_ptr() in seen or storage.nbytes()
                          != v.numel() * v.element_size()):
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        tensors[k] = v
    metadata, dropped = {_ST_MARK: '1'}, []
    for k, v in extra.items():
        if k in _RESUME_ONLY:
            dropped.append(k)
            continue
        try:
            metadata[k] = json.dumps(v)
        except (TypeError, ValueError):
            dropped.append(k)
    tmp = f'{path}.partial-{os.getpid()}'
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)
    return dropped


def load_safetensors(path, map_location='cpu'):
    """A ``.safetensors`` file: ``{'state_dict': tensors, **metadata}`` for
    files :func:`save_safetensors` wrote, the plain dict of tensors for
    others (timm, open_clip, Hugging Face)."""
    from safetensors import safe_open
    device = map_location if isinstance(map_location, str) else 'cpu'
    with safe_open(path, framework='pt', device=device) as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get(_ST_MARK) != '1':
        return tensors
    out = {'state_dict': tensors}
    for k, v in meta.items():
        if k != _ST_MARK:
            out[k] = json.loads(v)
    return out


# ----------------------------------------------------------------------------
# restricted unpickler (TorchScript archives, plain pickles)
# ----------------------------------------------------------------------------
class _ScriptObject:
    """A TorchScript object (module) of an archive: its class name and the
    state the archive stores for it; nothing of its code."""
    qualname = None

    def __setstate__(self, state):
        self.state = state


def _identity_list(data):
    return list(data)


def _restore_type_tag(value, type_str):
    return value


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with every global looked up in ``allowed``
    (a dict 'module.name' -> object) and BUILD limited to the types in
    ``buildable``. Unpickling calls only what ``allowed`` holds."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, allowed, buildable, persistent=None,
                 placeholder_prefix=None):
        super().__init__(file, encoding='latin1')
        self._allowed = allowed
        self._buildable = tuple(buildable)
        self._persistent = persistent
        self._prefix = placeholder_prefix
        self._classes = {}

    def find_class(self, module, name):
        full = f'{module}.{name}'
        if full in self._allowed:
            return self._allowed[full]
        if self._prefix and module.startswith(self._prefix):
            if full not in self._classes:
                self._classes[full] = type(
                    '_ScriptObject', (_ScriptObject, ), {'qualname': full})
            return self._classes[full]
        raise pickle.UnpicklingError(
            f'Unsupported global: GLOBAL {full} is not allowed')

    def persistent_load(self, pid):
        if self._persistent is None:
            raise pickle.UnpicklingError('persistent ids are not allowed')
        return self._persistent(pid)

    def load_build(self):
        inst = self.stack[-2]  # below the state
        if not isinstance(inst, self._buildable):
            raise pickle.UnpicklingError(
                f'cannot set the state of a {type(inst).__name__} object')
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def _torch_storage_types():
    import torch
    return {f'torch.{name}': dtype for name, dtype in (
        ('FloatStorage', torch.float32), ('DoubleStorage', torch.float64),
        ('HalfStorage', torch.float16), ('BFloat16Storage', torch.bfloat16),
        ('LongStorage', torch.int64), ('IntStorage', torch.int32),
        ('ShortStorage', torch.int16), ('CharStorage', torch.int8),
        ('ByteStorage', torch.uint8), ('BoolStorage', torch.bool))}


def is_torchscript_archive(path):
    """A zip whose top folder holds ``constants.pkl`` (how torch.load tells
    TorchScript archives from ``torch.save`` files)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.count('/') == 1 and n.endswith('/constants.pkl')
                   for n in zf.namelist())


def _declared_state(code, qualname):
    """Names of the parameters and buffers that class ``qualname``
    declares in the archive's code (``__parameters__`` / ``__buffers__``
    lines; the code is read as text, never run); None when not found."""
    module, _, cls = qualname.rpartition('.')
    text = code.get(module.replace('.', '/') + '.py')
    if text is None:
        return None
    m = re.search(rf'^class {re.escape(cls)}\(Module\):\n'
                  rf'  __parameters__ = \[(.*?)\]\n'
                  rf'  __buffers__ = \[(.*?)\]', text, re.M)
    if m is None:
        return None
    return set(re.findall(r'"([^"]+)"', m.group(1) + m.group(2)))


def read_torchscript_state(path, what='TorchScript archive'):
    """The parameters and buffers of a TorchScript archive (e.g. OpenAI's
    ``ViT-B-16.pt``) as ``{dotted name: tensor}``, what
    ``torch.jit.load(path).state_dict()`` returns, without compiling or
    running any of the archive's code: ``data.pkl`` is unpickled with
    placeholders for the TorchScript classes, PyTorch's tensor-rebuild
    functions and the storages of the zip, nothing else."""
    import torch
    allowed = dict(_torch_storage_types())
    allowed['torch._utils._rebuild_tensor_v2'] = \
        torch._utils._rebuild_tensor_v2
    allowed['collections.OrderedDict'] = __import__('collections').OrderedDict
    for name in ('build_intlist', 'build_doublelist', 'build_boollist',
                 'build_tensorlist'):  # typed lists of TorchScript
        allowed[f'torch.jit._pickle.{name}'] = _identity_list
    allowed['torch.jit._pickle.restore_type_tag'] = _restore_type_tag
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        top = names[0].split('/')[0]
        order = f'{top}/byteorder'
        if order in names and zf.read(order).strip() != b'little':
            raise ValueError(f'{what} {path}: big-endian archive')
        code = {n[len(top) + 6:]: zf.read(n).decode('utf-8', 'replace')
                for n in names if n.startswith(f'{top}/code/')
                and n.endswith('.py')}
        storages = {}

        def storage(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5
                    and pid[0] == 'storage'):
                raise pickle.UnpicklingError(f'unexpected persistent id '
                                             f'{pid!r:.80}')
            _, dtype, key, _location, numel = pid
            if not isinstance(dtype, torch.dtype):
                raise pickle.UnpicklingError(f'bad storage type {dtype!r}')
            if key not in storages:
                raw = zf.read(f'{top}/data/{key}')
                size = torch.empty((), dtype=dtype).element_size()
                if len(raw) != numel * size:
                    raise ValueError(f'{what} {path}: storage {key} holds '
                                     f'{len(raw)} bytes, not {numel} x '
                                     f'{size}')
                untyped = torch.UntypedStorage.from_buffer(
                    raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
                storages[key] = torch.storage.TypedStorage(
                    wrap_storage=untyped, dtype=dtype, _internal=True)
            return storages[key]

        pkl = zf.read(f'{top}/data.pkl')
        try:
            root = _RestrictedUnpickler(
                io.BytesIO(pkl), allowed, buildable=(_ScriptObject, ),
                persistent=storage, placeholder_prefix='__torch__').load()
        except pickle.UnpicklingError as e:
            raise UntrustedCheckpointError(_refusal(path, what, e)) from None
    out = {}
    _collect_script_state(root, '', code, out, path, what)
    if not out:
        raise ValueError(f'{what} {path}: no tensors found in the archive')
    return out


def _collect_script_state(obj, prefix, code, out, path, what):
    import torch
    state = getattr(obj, 'state', None)
    if not isinstance(state, dict):
        raise UntrustedCheckpointError(_refusal(
            path, what, f'TorchScript object {obj.qualname} stores its state '
            f'through its own __getstate__ code ({type(state).__name__}), '
            f'which would have to run to read it'))
    declared = _declared_state(code, obj.qualname)
    for name, value in state.items():
        if isinstance(value, _ScriptObject):
            _collect_script_state(value, f'{prefix}{name}.', code, out, path,
                                  what)
        elif torch.is_tensor(value) and (declared is None
                                         or name in declared):
            out[prefix + name] = value


def _safe_load_from_bytes(data):
    """``torch.storage._load_from_bytes`` (how a tensor inside a plain pickle
    stores its data) with ``weights_only=True``."""
    import torch
    with _allow_list():
        return torch.load(io.BytesIO(data), weights_only=True)


def load_pickle(path, what='pickle file'):
    """A plain pickle (``pickle.dump``: EPIC-KITCHENS score files) holding
    containers, numbers, strings, NumPy arrays / scalars and tensors only;
    anything else is refused (:class:`UntrustedCheckpointError`) unless the
    file is trusted."""
    import collections

    import numpy as np
    import torch
    mu = _numpy_core().multiarray
    numeric = _numpy_core().numeric
    allowed = {
        'collections.OrderedDict': collections.OrderedDict,
        # NumPy arrays, scalars, dtypes (see allowed_globals)
        'numpy._core.multiarray._reconstruct': mu._reconstruct,
        'numpy.core.multiarray._reconstruct': mu._reconstruct,
        'numpy._core.multiarray.scalar': mu.scalar,
        'numpy.core.multiarray.scalar': mu.scalar,
        'numpy.ndarray': np.ndarray,
        'numpy.dtype': np.dtype,
        # arrays of pickle protocol 5: raw bytes + dtype + shape (NumPy
        # refuses object dtypes there)
        'numpy._core.numeric._frombuffer': numeric._frombuffer,
        'numpy.core.numeric._frombuffer': numeric._frombuffer,
        # tensors: PyTorch's rebuild function and a weights_only load of
        # the storage bytes
        'torch._utils._rebuild_tensor_v2': torch._utils._rebuild_tensor_v2,
        'torch.storage._load_from_bytes': _safe_load_from_bytes,
        '_codecs.encode': __import__('codecs').encode,  # bytes, protocol 2
    }
    with open(path, 'rb') as f:
        try:
            return _RestrictedUnpickler(
                f, allowed, buildable=(np.ndarray, np.dtype)).load()
        except pickle.UnpicklingError as e:
            if not is_trusted(path):
                raise UntrustedCheckpointError(
                    _refusal(path, what, e)) from None
    _warn_trusted(path, what)
    with open(path, 'rb') as f:
        return pickle.load(f)


# ----------------------------------------------------------------------------
# torch.distributed.checkpoint folders
# ----------------------------------------------------------------------------
def _dcp_allowed():
    import pathlib

    import torch
    from torch.distributed.checkpoint import filesystem, metadata
    allowed = {f'torch.distributed.checkpoint.metadata.{n}': getattr(
        metadata, n) for n in (
            'Metadata', 'TensorStorageMetadata', 'BytesStorageMetadata',
            'TensorProperties', 'ChunkStorageMetadata', 'MetadataIndex',
            'StorageMeta', '_MEM_FORMAT_ENCODING')}
    allowed['torch.distributed.checkpoint.filesystem._StorageInfo'] = \
        filesystem._StorageInfo
    allowed['torch.Size'] = torch.Size
    # a layout by its name (torch.strided...): a table look-up
    allowed['torch.serialization._get_layout'] = \
        torch.serialization._get_layout
    for name in ('float32', 'float64', 'float16', 'bfloat16', 'int64',
                 'int32', 'int16', 'int8', 'uint8', 'bool', 'complex64',
                 'complex128'):
        allowed[f'torch.{name}'] = getattr(torch, name)
    allowed['pathlib.PosixPath'] = pathlib.PosixPath  # the folder's path
    allowed['pathlib.WindowsPath'] = pathlib.PurePosixPath
    allowed['collections.OrderedDict'] = __import__('collections').OrderedDict
    buildable = tuple(v for k, v in allowed.items()
                      if k.startswith('torch.distributed') and
                      isinstance(v, type))
    return allowed, buildable


def read_dcp_metadata(folder):
    """The ``.metadata`` of a ``torch.distributed.checkpoint`` folder, read
    by a restricted unpickler that builds DCP's metadata records (and
    ``torch.Size``, dtypes, paths) only: ``pickle.load``, which
    ``FileSystemReader`` uses, could run code a crafted file names.
    Raises :class:`UntrustedCheckpointError` for anything else."""
    path = osp.join(folder, '.metadata')
    allowed, buildable = _dcp_allowed()
    with open(path, 'rb') as f:
        try:
            return _RestrictedUnpickler(f, allowed, buildable).load()
        except pickle.UnpicklingError as e:
            raise UntrustedCheckpointError(
                f'{path}: not the metadata of a torch.distributed.checkpoint '
                f'folder, or it asks for more than DCP metadata ({e})'
            ) from None


def safe_dcp_reader(folder):
    """A ``FileSystemReader`` for ``folder`` whose metadata is read by
    :func:`read_dcp_metadata` and a load planner that refuses pickled
    (non-tensor) entries; tensors are read with ``weights_only=True`` (as
    ``FileSystemReader`` does). Returns ``(reader, planner)`` for
    ``torch.distributed.checkpoint.load``."""
    from torch.distributed.checkpoint import (DefaultLoadPlanner,
                                              FileSystemReader)

    class _Reader(FileSystemReader):

        def read_metadata(self, *args, **kwargs):
            from torch.distributed.checkpoint.metadata import StorageMeta
            md = read_dcp_metadata(folder)
            if getattr(md, 'storage_meta', None) is None:
                md.storage_meta = StorageMeta()
            md.storage_meta.load_id = self.load_id
            return md

    class _Planner(DefaultLoadPlanner):

        def load_bytes(self, read_item, value):
            raise UntrustedCheckpointError(
                f'{folder}: entry {read_item.dest_index.fqn!r} is a pickled '
                f'object, not a tensor; sharded checkpoints written here '
                f'hold tensors only')

    return _Reader(folder), _Planner()
