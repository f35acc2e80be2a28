"""Sharded checkpoints of :class:`~cast_mmaction.engine.fsdp2.FSDP2Strategy`
runs, written and read with ``torch.distributed.checkpoint`` (DCP).

A checkpoint is a folder (named as the checkpoint hook names the file,
e.g. ``epoch_2.pth/``)::

    epoch_2.pth/
        __0_0.distcp ... __{N-1}_0.distcp   each rank's shards (DCP)
        .metadata                           DCP's index: which shard holds
                                            which slice of which tensor
        extras.pth                          the rest of an MMEngine
                                            checkpoint: meta, message hub,
                                            schedulers, random states, the
                                            optimizer's param groups
        cast_checkpoint.json                completion marker: world size,
                                            every file and its size

* Atomic: all ranks write into ``.epoch_2.pth.partial-*`` next to it; rank
  0 adds ``extras.pth`` and the marker once DCP has finished (its
  ``.metadata`` is written after every rank's shards) and renames the
  folder. A kill leaves a hidden partial folder (removed on ``--resume``)
  and the previous checkpoints, never a half-written ``epoch_2.pth``.
* Any world size: tensors are saved under their parameter names with their
  global shapes; loading reshards them onto the current ranks (2 -> 1,
  1 -> 2, ...), optimizer states included.
* Checked: :func:`verify` refuses a folder whose marker, ``.metadata``,
  ``extras.pth`` or one rank's shard file is missing or truncated, naming
  it; ``--resume`` without a file then falls back to the newest complete
  checkpoint (``checkpoint_files.resolve_last_checkpoint``).
* Safe: read through :mod:`cast_mmaction.safe_load` (restricted unpickler
  for ``.metadata``, ``weights_only`` for tensors and ``extras.pth``).

:func:`consolidate` turns a folder into one ordinary checkpoint
(``tools/convert/consolidate_checkpoint.py``).
"""
import io
import json
import os
import os.path as osp
import shutil
import tempfile

import torch

from .checkpoint_files import (  # noqa: F401 (re-exported)
    FORMAT, MARKER, PARTIAL_MARK, IncompleteCheckpointError, atomic_write,
    is_complete, is_sharded, verify)

__all__ = ['MARKER', 'EXTRAS', 'FORMAT', 'IncompleteCheckpointError',
           'is_sharded', 'verify', 'is_complete', 'save', 'load',
           'load_extras', 'shape_state_dict', 'consolidate']

EXTRAS = 'extras.pth'


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save(folder, model, optimizer=None, extras=None):
    """Write the sharded checkpoint ``folder`` (collective: every rank calls
    it). ``model``: the ``fully_shard``-ed model; ``optimizer``: its torch
    optimizer (None: weights only); ``extras``: the non-tensor rest of the
    checkpoint (rank 0's is written)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict, get_optimizer_state_dict)
    folder = osp.abspath(str(folder))
    parent, name = osp.split(folder)
    rank, world = dist.get_rank(), dist.get_world_size()
    box = [None]
    if rank == 0:
        os.makedirs(parent, exist_ok=True)
        box[0] = tempfile.mkdtemp(
            prefix=f'.{name}{PARTIAL_MARK}{os.getpid()}-', dir=parent)
    dist.broadcast_object_list(box, src=0)
    tmp = box[0]
    state = dict(model=get_model_state_dict(model))
    extras = dict(extras or {})
    extras['trainable'] = [n for n, p in model.named_parameters()
                           if p.requires_grad]
    extras['frozen'] = [n for n, p in model.named_parameters()
                        if not p.requires_grad]
    if optimizer is not None:
        osd = get_optimizer_state_dict(model, optimizer)
        state['optimizer'] = osd['state']
        extras['param_groups'] = osd['param_groups']
    # every rank writes its shards; rank 0 writes .metadata after all
    dcp.save(state, storage_writer=dcp.FileSystemWriter(tmp))
    if rank == 0:
        extras['world_size'] = world
        buf = io.BytesIO()
        torch.save(extras, buf)
        atomic_write(osp.join(tmp, EXTRAS), buf.getvalue())
        files = {n: osp.getsize(osp.join(tmp, n)) for n in os.listdir(tmp)
                 if PARTIAL_MARK not in n}
        atomic_write(osp.join(tmp, MARKER), json.dumps(dict(
            format=FORMAT, world_size=world, files=files), indent=1))
        old = None
        if osp.lexists(folder):  # overwritten: move the old one aside first
            old = tempfile.mkdtemp(prefix=f'.{name}{PARTIAL_MARK}old-',
                                   dir=parent)
            os.replace(folder, osp.join(old, name))
        os.replace(tmp, folder)
        _fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def load_extras(folder):
    """The non-tensor part of a verified checkpoint folder (``meta``,
    ``message_hub``, ``param_schedulers``, ``param_groups``...)."""
    from ..safe_load import load_checkpoint
    verify(folder)
    return load_checkpoint(osp.join(folder, EXTRAS),
                           what='sharded checkpoint extras')


def _tensor_entries(folder, prefix):
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from ..safe_load import read_dcp_metadata
    md = read_dcp_metadata(folder)
    return {k[len(prefix):]: v for k, v in md.state_dict_metadata.items()
            if k.startswith(prefix) and isinstance(v, TensorStorageMetadata)}


def shape_state_dict(folder):
    """``{name: meta tensor}``: the model entries of ``folder`` with their
    global shapes and dtypes and no data (what the start-up check compares
    with the model before anything is loaded)."""
    return {k: torch.empty(tuple(v.size), dtype=v.properties.dtype,
                           device='meta')
            for k, v in _tensor_entries(folder, 'model.').items()}


def load(folder, model, optimizer=None, param_groups=None):
    """Load ``folder`` into the ``fully_shard``-ed ``model`` (and
    ``optimizer``), resharding for the current world size (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict, get_optimizer_state_dict, set_model_state_dict,
        set_optimizer_state_dict)

    from ..safe_load import safe_dcp_reader
    verify(folder)
    state = dict(model=get_model_state_dict(model))
    if optimizer is not None:
        if param_groups is None or not any(
                k.startswith('optimizer.')
                for k in _tensor_entries(folder, '')):
            raise KeyError(
                f'{folder} holds no optimizer state (saved with '
                f'save_optimizer=False): resume needs one; load its weights '
                f'with load_from instead')
        state['optimizer'] = get_optimizer_state_dict(model,
                                                      optimizer)['state']
    reader, planner = safe_dcp_reader(folder)
    dcp.load(state, storage_reader=reader, planner=planner)
    set_model_state_dict(model, state['model'])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, dict(
            state=state['optimizer'], param_groups=param_groups))


def _expert_sources(cfg_text):
    """{expert name: (type, pretrained)} of the run's config text."""
    from mmengine.config import Config
    try:
        cfg = Config.fromstring(cfg_text, file_format='.py')
    except Exception:  # noqa: BLE001 - no config: nothing can be dropped
        return {}
    experts = cfg.get('model', {}).get('backbone', {}).get('experts') or {}
    return {name: (e.get('type'), e.get('pretrained'))
            for name, e in experts.items() if isinstance(e, dict)}


def consolidate(folder, trainable_only=False, cfg_text=None):
    """One ordinary checkpoint ``{'state_dict', 'meta'}`` from a sharded
    folder, in one process (no process group).

    ``trainable_only``: as ``TrainableCheckpointHook`` writes them, the
    frozen weights of every expert whose ``pretrained`` file exists are
    left out and recorded (file, SHA-256 fingerprint) under
    ``frozen_experts``; loading with the hook in the config reads them back
    from that file and checks the fingerprint. ``cfg_text``: the config
    that names the experts' files (default: the run's, saved in the
    checkpoint)."""
    import torch.distributed.checkpoint as dcp

    from ..safe_load import safe_dcp_reader
    from .trainable_checkpoint import (KEY, PREFIX, _is_source,
                                               fingerprint)
    extras = load_extras(folder)
    entries = _tensor_entries(folder, 'model.')
    state = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype)
             for k, v in entries.items()}
    reader, planner = safe_dcp_reader(folder)
    dcp.load(dict(model=state), storage_reader=reader, planner=planner,
             no_dist=True)
    meta = dict(extras.get('meta', {}))
    meta['consolidated_from'] = dict(
        folder=osp.abspath(str(folder)), world_size=extras.get('world_size'),
        trainable_only=bool(trainable_only))
    out = dict(meta=meta, state_dict=state)
    if not trainable_only:
        return out
    frozen = set(extras.get('frozen', ()))
    record = {}
    sources = _expert_sources(cfg_text or meta.get('cfg', ''))
    for name, (kind, source) in sources.items():
        prefix = f'{PREFIX}{name}.'
        keys = sorted(k for k in frozen if k.startswith(prefix))
        if not keys or not _is_source(source):
            continue  # no file to restore them from: they stay
        tensors = {k[len(prefix):]: state[k] for k in keys}
        record[name] = dict(
            pretrained=source, type=kind, num_tensors=len(keys),
            num_params=sum(t.numel() for t in tensors.values()),
            fingerprint=fingerprint(tensors))
        for k in keys:
            del state[k]
    if record:
        out[KEY] = record
    return out
