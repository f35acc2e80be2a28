"""Reading checkpoint files: the one place where a weight file is opened
(:func:`read_state_dict`) and the container unwrapping shared by every
loader and converter. Fitting a state dict to a model is in
:mod:`.state_dict`."""
import os

import torch

from ..safe_load import UntrustedCheckpointError, load_checkpoint  # security

WRAPPER_KEYS = ('module', 'model', 'state_dict', 'model_state')


def check_output(path, what='dst'):
    """Check, before a tool reads its input, that the file ``path`` can be
    written: not a folder, and its nearest existing ancestor a writable
    folder (the missing folders are created when the file is written).
    Raises ``ValueError`` naming ``what`` and the obstacle."""
    if os.path.isdir(path):
        raise ValueError(f'{what} {path} is a folder: give the file to write')
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f'{what} {path}: {folder} is a file, so the folder '
                         f'cannot be created; give a path in a folder')
    if not os.access(folder, os.W_OK):
        raise ValueError(f'{what} {path}: the folder {folder} is not '
                         f'writable')


def read_state_dict(path, what):
    """Load ``path`` and unwrap the usual containers ({'module': ...},
    {'model': ...}, {'state_dict': ...}). Raises a clear error for a missing
    or unreadable file. ``what`` names the expected content for messages."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'{what}: expected a file path, got {type(path)}')
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what}: file not found: {path}')
    kind = 'safetensors' if path.endswith('.safetensors') else 'PyTorch'
    try:  # safetensors; weights_only + allow-list; TorchScript not run
        obj = load_checkpoint(path, what=what)
    except UntrustedCheckpointError:  # names the type and the trust flag
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f'{what}: cannot read {path} as a {kind} '
                         f'checkpoint ({type(e).__name__}: {e})') from e
    return unwrap(obj, f'{what} ({path})')


def unwrap(obj, what):
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        inner = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)]
        if not inner or any(torch.is_tensor(v) for v in obj.values()):
            break
        obj = obj[inner[0]]
    if not isinstance(obj, dict) or not any(
            torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f'{what}: no state dict of tensors found')
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}
