"""Check, before a run starts, that every path a config needs exists.

A long distributed job should not die after minutes of start-up because one
path is wrong, nor with an error deep inside a worker. :func:`check_paths`
collects the paths the run mode needs:

* ``train``: the training (and validation, when ``val_cfg`` is set) data:
  annotation files and video folders, and the experts' ``pretrained``
  weights (plus ``load_from`` when set);
* ``test``: the test data and the checkpoint to test;

and raises one :class:`MissingPathError` listing every missing path with
the config field that names it: the top-level variable when the config has
one holding that value (``ann_file_train``, ``clip_weights``, ...) and the
nested field it ended up in (``train_dataloader.dataset.ann_file``).

:func:`check_resumable` checks that a file to resume from (``resume=True``
with ``load_from``, ``tools/train.py --resume FILE``) holds a training
state, not weights only.
"""
import os
import os.path as osp

_SCHEMES = ('http://', 'https://', 's3://', 'open_clip:', 'hf-hub:', 'hf:',
            'torchvision://', 'mmcls://', 'openmmlab://', 'pavi://')


class MissingPathError(FileNotFoundError):
    """One or more paths named by the config do not exist."""


def _is_remote(path):
    return isinstance(path, str) and path.startswith(_SCHEMES)


def _get(cfg, key, default=None):
    try:
        return cfg.get(key, default)
    except AttributeError:
        return default


def _dataset_paths(ds, field):
    """(field, path, kind) of a dataset config, following wrappers."""
    out = []
    if not isinstance(ds, dict):
        return out
    if 'dataset' in ds:  # RepeatDataset, ClassBalancedDataset, ...
        out += _dataset_paths(ds['dataset'], field + '.dataset')
    for k, sub in enumerate(ds.get('datasets', []) or []):  # ConcatDataset
        out += _dataset_paths(sub, f'{field}.datasets[{k}]')
    root = ds.get('data_root') or ''
    ann = ds.get('ann_file')
    if isinstance(ann, str) and ann:
        if '{split}' in ann and ds.get('split') is not None:  # UCF-101
            ann = ann.replace('{split}', str(ds['split']))
        path = ann if osp.isabs(ann) or not root else osp.join(root, ann)
        out.append((field + '.ann_file', path, 'file'))
    prefix = ds.get('data_prefix')
    if isinstance(prefix, dict):
        for key, value in prefix.items():
            if isinstance(value, str) and value:
                path = value if osp.isabs(value) or not root else osp.join(
                    root, value)
                out.append((f'{field}.data_prefix.{key}', path, 'dir'))
    return out


def _pretrained_paths(obj, field):
    """Every ``pretrained`` / ``init_cfg.checkpoint`` string under ``obj``."""
    out = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            sub = f'{field}.{key}'
            if key == 'pretrained' and isinstance(value, str) and value:
                is_dir = osp.isdir(osp.expanduser(value))  # transformers
                out.append((sub, value, 'dir' if is_dir else 'file'))
            elif (key == 'checkpoint' and isinstance(value, str) and value
                  and isinstance(obj.get('type'), str)
                  and obj.get('type') == 'Pretrained'):
                out.append((sub, value, 'file'))
            else:
                out += _pretrained_paths(value, sub)
    elif isinstance(obj, (list, tuple)):
        for k, value in enumerate(obj):
            out += _pretrained_paths(value, f'{field}[{k}]')
    return out


#: the field names of paths given on the command line (no config variable
#: to edit): tools/test.py's CHECKPOINT, tools/train.py's --resume PATH
CHECKPOINT_ARG = 'CHECKPOINT (argument of tools/test.py)'
RESUME_ARG = '--resume (argument of tools/train.py)'


def required_paths(cfg, mode, checkpoint=None, resume=None):
    """The (field, path, kind) triples that ``mode`` ('train' or 'test')
    needs; kind is 'file', 'dir' or 'checkpoint' (a file, or a sharded
    checkpoint folder). ``checkpoint``: tools/test.py's CHECKPOINT;
    ``resume``: the path of tools/train.py's ``--resume PATH`` (it sets
    ``load_from``), named as that argument."""
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    paths = []
    if mode == 'train':
        loaders = ['train_dataloader']
        if _get(cfg, 'val_cfg') and _get(cfg, 'val_dataloader'):
            loaders.append('val_dataloader')
        paths += _pretrained_paths(_get(cfg, 'model', {}), 'model')
        load_from = _get(cfg, 'load_from')
        if isinstance(load_from, str) and load_from:
            paths.append((RESUME_ARG if resume is not None and
                          load_from == resume else 'load_from', load_from,
                          'checkpoint'))
    else:
        loaders = ['test_dataloader']
        ckpt = checkpoint if checkpoint is not None else _get(
            cfg, 'load_from')
        if not ckpt:
            raise MissingPathError(
                'testing needs a checkpoint: give CHECKPOINT to tools/test.py '
                '(or set load_from in the config)')
        paths.append((CHECKPOINT_ARG if checkpoint is not None else
                      'load_from', ckpt, 'checkpoint'))
    for name in loaders:
        loader = _get(cfg, name)
        if loader:
            paths += _dataset_paths(_get(loader, 'dataset'),
                                    f'{name}.dataset')
    return [(f, p, k) for f, p, k in paths if not _is_remote(p)]


def _variables_for(cfg, path):
    """Top-level config variables whose value is ``path``."""
    names = []
    try:
        items = cfg.items()
    except AttributeError:
        return names
    for key, value in items:
        if isinstance(value, str) and value == path:
            names.append(key)
    return names


def missing_paths(cfg, mode, checkpoint=None, resume=None):
    """(field, path, kind, variables) of the required paths that do not
    exist."""
    out = []
    for field, path, kind in required_paths(cfg, mode, checkpoint, resume):
        full = osp.expanduser(path)
        # a checkpoint: a file, or a sharded checkpoint folder (FSDP2)
        ok = (osp.isfile(full) if kind == 'file' else osp.isdir(full) if
              kind == 'dir' else osp.isfile(full) or osp.isdir(full))
        if not ok:
            out.append((field, path, kind, _variables_for(cfg, path)))
    return out


def check_paths(cfg, mode, checkpoint=None, config_name=None, resume=None):
    """Raise :class:`MissingPathError` listing every missing path of a
    ``mode`` run ('train' or 'test'), each with the config field(s) that
    name it (or the command-line argument: ``checkpoint``, ``resume``, see
    :func:`required_paths`). Returns the list of checked (field, path,
    kind)."""
    checked = required_paths(cfg, mode, checkpoint, resume)
    missing = missing_paths(cfg, mode, checkpoint, resume)
    if not missing:
        return checked
    what = 'training' if mode == 'train' else 'testing'
    src = f' with {config_name}' if config_name else ''
    lines, nested = [], []
    for field, path, kind, variables in missing:
        if field in (CHECKPOINT_ARG, RESUME_ARG):
            variables = []  # the tool copies it into load_from
        else:
            nested.append(field)
        name = ' / '.join(variables + [field] if field not in variables
                          else variables)
        thing = 'folder' if kind == 'dir' else 'file'
        lines.append(f'  {name} = {path!r}: {thing} not found')
    hint = ''
    if nested:
        hint = ('\nEdit the variable in the config file that sets it (the '
                'dataset paths of the recipes: configs/_base_/datasets/), or '
                'override the nested '
                f'field, e.g. --cfg-options {nested[0]}=PATH (a top-level '
                'variable given with --cfg-options does not reach the fields '
                'it was copied into). See docs/training.md ("Data layout for SSv2 and '
                'K400") for the data layout.')
    cwd = os.getcwd()
    raise MissingPathError(
        f'{len(missing)} path(s) needed for {what}{src} do not exist '
        f'(relative paths are taken from {cwd}):\n' + '\n'.join(lines) +
        hint)


class NotResumableError(ValueError):
    """The file to resume from holds no training state (weights only)."""


#: what MMEngine's ``Runner.resume`` reads from a checkpoint without a
#: default (a bare ``KeyError`` there otherwise)
RESUME_NEEDS = ('meta.epoch', 'meta.iter', 'message_hub')


def resume_lacks(ckpt):
    """What of :data:`RESUME_NEEDS` the loaded checkpoint ``ckpt`` lacks
    (empty: it can be resumed)."""
    return [k for k in RESUME_NEEDS if not _holds(ckpt, k)]


def _start_fresh(path):
    return (f'To start a new run from its weights, give it as load_from '
            f'without resuming: tools/train.py CONFIG --cfg-options '
            f'load_from={path}')


def not_resumable_message(what, path, lacks):
    """The refusal of ``path`` (named as ``what``) lacking ``lacks``."""
    return (f'{what} {path}: not a training checkpoint (it lacks '
            f'{", ".join(lacks)}: a converted or weights-only file), so a '
            f'run cannot resume from it. {_start_fresh(path)}')


def _holds(ckpt, dotted):
    for part in dotted.split('.'):
        if not isinstance(ckpt, dict) or part not in ckpt:
            return False
        ckpt = ckpt[part]
    return True


def check_resumable(cfg, field='load_from'):
    """Raise :class:`NotResumableError` when ``cfg`` resumes
    (``resume=True``) from a ``load_from`` file without a training state:
    a ``.safetensors`` file (weights only, always), a converted official
    checkpoint or an expert's weights; the message says how to start a run
    from its weights instead. A folder (a sharded FSDP2 checkpoint, which
    its runner checks), a remote path or a missing file is left to the
    runner and :func:`check_paths`. Reads a zip checkpoint's pickle only
    (its tensors are mapped, not read)."""
    path = _get(cfg, 'load_from')
    if not (_get(cfg, 'resume') is True and isinstance(path, str) and path
            and not _is_remote(path) and osp.isfile(osp.expanduser(path))):
        return
    if path.endswith('.safetensors'):
        raise NotResumableError(
            f'{field} {path}: a .safetensors file holds weights only (no '
            f'optimizer, schedulers or progress), so a run cannot resume '
            f'from it; resume from the training checkpoint (.pth) it was '
            f'made from. {_start_fresh(path)}')
    from .. import safe_load
    try:
        ckpt = safe_load.load_checkpoint(path, what='checkpoint to resume',
                                         mmap=True)
    except safe_load.UntrustedCheckpointError:
        return  # the runner's load says so, naming --trust-checkpoint
    lacks = resume_lacks(ckpt)
    if lacks:
        raise NotResumableError(not_resumable_message(field, path, lacks))
