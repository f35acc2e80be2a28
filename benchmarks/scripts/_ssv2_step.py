"""The CAST ViT-B SSv2 model the benchmark scripts time, as
tools/benchmark.py builds it (configs/cast_ssv2.py, fp32, random weights,
CPU), with one random clip at batch 1 and its optimizer. Scripts run from
the repository root (``PYTHONPATH=$PWD python benchmarks/scripts/X.py``)."""
import sys
from types import SimpleNamespace

import torch

sys.path.insert(0, 'tools')
import benchmark as B  # noqa: E402


def ssv2_step(speedups=None):
    """``speedups``: a ``--speedups`` text (None: as the config has it).
    Returns a namespace: ``built`` (tools/benchmark.py's), ``model``,
    ``x`` / ``labels`` (one clip), ``frames`` / ``size``, and the
    callables ``train()`` (forward, backward, optimizer step) and
    ``infer()`` (forward without autograd)."""
    args = B.parse_args(['configs/cast_ssv2.py', '--device', 'cpu'] + (
        ['--speedups', speedups] if speedups else []))
    built = B.build_ours(args, B._load_cfg(args))
    size = built['size'] if isinstance(built['size'], tuple) else (
        built['size'], ) * 2
    torch.manual_seed(0)
    x = torch.randn(1, 3, built['frames'], *size)
    labels = torch.tensor([1])
    opt = built['optimizer']()

    def train():
        built['train_forward'](x, labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer():
        with torch.no_grad():
            built['infer_forward'](x)

    return SimpleNamespace(built=built, model=built['model'], x=x,
                           labels=labels, frames=built['frames'], size=size,
                           train=train, infer=infer)
