"""FSDP / DeepSpeed config variants (MMEngine FlexibleRunner) build on CPU,
and the FSDP wrap units are the modules whose forward the backbone calls.

FSDP itself needs GPUs (PyTorch refuses it on CPU-only hosts) and DeepSpeed
is not installed here; the multi-process CPU path is DDP (test_ddp.py)."""
import importlib.util
import os

import pytest
import torch

from cast_mmaction.engine.strategies import cast_fsdp_wrap_policy, fsdp_units
from cast_mmaction.models.presets import cast_recognizer_cfg
from cast_mmaction.utils import build_model
from conftest import ROOT


def _cfg(name):
    from mmengine.config import Config
    return Config.fromfile(os.path.join(ROOT, 'configs', name))


def test_fsdp_variant_builds_its_strategy_on_cpu():
    from mmengine.registry import FUNCTIONS, STRATEGIES
    cfg = _cfg('cast_ssv2_fsdp.py')
    base = _cfg('cast_ssv2.py')
    assert cfg.runner_type == 'FlexibleRunner'
    assert cfg.strategy.type == 'FSDPStrategy'
    assert cfg.optim_wrapper.use_fsdp is True
    # the recipe is unchanged otherwise
    assert cfg.model == base.model
    assert cfg.optim_wrapper.accumulative_counts == base.update_freq
    strategy = STRATEGIES.build(cfg.strategy)
    assert type(strategy).__name__ == 'FSDPStrategy'
    policy = cfg.strategy.model_wrapper.auto_wrap_policy.type
    # looked up as MMFullyShardedDataParallel does
    with FUNCTIONS.switch_scope_and_registry(None):
        assert FUNCTIONS.get(policy) is cast_fsdp_wrap_policy


def test_deepspeed_variant_config():
    from mmengine.registry import STRATEGIES
    cfg = _cfg('cast_ssv2_deepspeed.py')
    base = _cfg('cast_ssv2.py')
    assert cfg.runner_type == 'FlexibleRunner'
    assert cfg.strategy.type == 'DeepSpeedStrategy'
    assert cfg.strategy.gradient_accumulation_steps == base.update_freq
    assert cfg.strategy.fp16.initial_scale_power == 7  # the authors' 2^7
    assert cfg.optim_wrapper.type == 'DeepSpeedOptimWrapper'
    assert 'accumulative_counts' not in cfg.optim_wrapper
    assert cfg.optim_wrapper.optimizer.lr == base.base_lr
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == \
        base.layer_decay
    if importlib.util.find_spec('deepspeed') is None:
        with pytest.raises(AssertionError, match='DeepSpeed is not installed'):
            STRATEGIES.build(cfg.strategy)
    else:
        assert type(STRATEGIES.build(cfg.strategy)).__name__ == \
            'DeepSpeedStrategy'


def _tiny():
    torch.manual_seed(0)
    model = build_model(cast_recognizer_cfg(
        num_classes=5, embed_dim=64, depth=2, num_heads=4, num_frames=8,
        img_size=32))
    for p in model.parameters():  # let every branch act
        if p.requires_grad and p.ndim > 1:
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def _units(model):
    return [m for m in model.modules()
            if cast_fsdp_wrap_policy(m, False, sum(
                p.numel() for p in m.parameters()))]


def test_wrap_units_cover_the_heavy_modules():
    model = _tiny()
    units = _units(model)
    kinds = {type(m).__name__ for m in units}
    assert kinds == {'CLIPAttention', 'CLIPMlp', 'VideoMAEAttention',
                     'VideoMAEMlp', 'BottleneckCrossAttention'}
    assert len(units) == 2 * 2 * 2 + 2  # (attn, mlp) x 2 experts x 2 layers
    in_units = sum(p.numel() for m in units for p in m.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert in_units > 0.5 * total  # ViT-B: 0.92 (docs/benchmarks.md)
    assert cast_fsdp_wrap_policy(model, True, 0)  # recurse into children
    assert not cast_fsdp_wrap_policy(units[0], False, 10, min_num_params=11)
    assert all(isinstance(m, fsdp_units()) for m in units)


def test_unit_parameters_are_used_only_inside_their_forward():
    """What FSDP relies on: a unit's weights are gathered only while its
    forward runs. Outside, they are replaced by NaNs here; the backbone
    must still give the reference output."""
    model = _tiny()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        ref = model.backbone(x)
    units = _units(model)
    saved = {}

    def poison(m):
        for p in m.parameters():
            saved[p] = p.data
            p.data = torch.full_like(p.data, float('nan'))

    def pre(m, args, kwargs=None):
        for p in m.parameters():
            p.data = saved[p]

    def post(m, args, out):
        poison(m)

    hooks = []
    for m in units:
        poison(m)
        hooks.append(m.register_forward_pre_hook(pre))
        hooks.append(m.register_forward_hook(post))
    try:
        with torch.no_grad():
            out = model.backbone(x)
    finally:
        for h in hooks:
            h.remove()
        for m in units:
            pre(m, ())
    for a, b in zip(out, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
