"""Shared helpers of the checkpoint loaders and converters."""
import os

import torch
from mmengine.logging import print_log

from ..safe_load import UntrustedCheckpointError, load_checkpoint  # security

WRAPPER_KEYS = ('module', 'model', 'state_dict', 'model_state')


def read_state_dict(path, what):
    """Load ``path`` and unwrap the usual containers ({'module': ...},
    {'model': ...}, {'state_dict': ...}). Raises a clear error for a missing
    or unreadable file. ``what`` names the expected content for messages."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'{what}: expected a file path, got {type(path)}')
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what}: file not found: {path}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file as load_st
        obj = load_st(path)
    else:
        try:  # weights_only + allow-list, TorchScript read without running
            obj = load_checkpoint(path, what=what)
        except UntrustedCheckpointError:  # names the type and the trust flag
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise ValueError(f'{what}: cannot read {path} as a PyTorch '
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


def strip_prefix(state, prefixes):
    """Strip the first matching prefix of each key (keys without any of the
    prefixes are kept as they are)."""
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def load_into(module, state, what, ignore_unexpected=()):
    """``load_state_dict(strict=False)`` that checks shapes first and reports
    missing / unexpected keys. Unexpected keys starting with an entry of
    ``ignore_unexpected`` are reported as ignored."""
    own = module.state_dict()
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
           if k in own and own[k].shape != v.shape]
    if bad:
        lines = '\n'.join(f'  {k}: file {a} vs model {b}' for k, a, b in bad[:10])
        raise ValueError(f'{what}: {len(bad)} tensor shapes do not match the '
                         f'model (wrong size or architecture?):\n{lines}')
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    result = module.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys
                  if not k.startswith(tuple(ignore_unexpected))]
    ignored = len(result.unexpected_keys) - len(unexpected)
    msg = (f'{what}: loaded {len(state) - len(result.unexpected_keys)} '
           f'tensors; missing {len(result.missing_keys)}'
           f'{_few(result.missing_keys)}; unexpected {len(unexpected)}'
           f'{_few(unexpected)}; ignored {ignored}')
    print_log(msg, logger='current')
    return result.missing_keys, unexpected


def _few(keys, n=5):
    if not keys:
        return ''
    more = f', ... (+{len(keys) - n})' if len(keys) > n else ''
    return ' (' + ', '.join(keys[:n]) + more + ')'
