"""FSDP / DeepSpeed config variants (MMEngine FlexibleRunner) build on CPU,
and the FSDP wrap units are the modules whose forward the backbone calls.

FSDP2 (FSDP2Strategy) runs on CPUs: test_fsdp.py trains with it on 2
processes. MMEngine's FSDP1 FSDPStrategy needs GPUs (PyTorch refuses it on
CPU-only hosts) and DeepSpeed is not installed here."""
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

    from cast_mmaction.engine.fsdp2 import FSDP2Strategy
    cfg = _cfg('cast_ssv2_fsdp.py')
    base = _cfg('cast_ssv2.py')
    assert cfg.runner_type == 'FlexibleRunner'
    assert cfg.strategy.type == 'FSDP2Strategy'
    assert cfg.strategy.mixed_precision.param_dtype == 'bf16'
    # the recipe is unchanged otherwise: model, optimizer, accumulation
    assert cfg.model == base.model
    assert cfg.optim_wrapper.accumulative_counts == base.update_freq
    assert cfg.optim_wrapper.optimizer == base.optim_wrapper.optimizer
    assert cfg.optim_wrapper.paramwise_cfg == base.optim_wrapper.paramwise_cfg
    # bf16 by FSDP2's MixedPrecisionPolicy: no autocast, no loss scaler
    assert cfg.optim_wrapper.type == 'GuardedOptimWrapper'
    strategy = STRATEGIES.build(cfg.strategy)
    assert isinstance(strategy, FSDP2Strategy)
    assert strategy.mp_policy.param_dtype == torch.bfloat16
    assert strategy.mp_policy.reduce_dtype == torch.float32
    # MMEngine's FSDP1 strategy (GPUs only) still builds with our policy
    fsdp1 = STRATEGIES.build(dict(
        type='FSDPStrategy', model_wrapper=dict(auto_wrap_policy=dict(
            type='cast_fsdp_wrap_policy', min_num_params=0),
            use_orig_params=True)))
    assert type(fsdp1).__name__ == 'FSDPStrategy'
    with FUNCTIONS.switch_scope_and_registry(None):
        assert FUNCTIONS.get('cast_fsdp_wrap_policy') is cast_fsdp_wrap_policy


def test_fsdp2_strategy_refuses_bad_options_by_name():
    from cast_mmaction.engine.fsdp2 import FSDP2Strategy
    with pytest.raises(ValueError, match=r'mixed_precision.param_dtype'):
        FSDP2Strategy(mixed_precision=dict(param_dtype='fp8'))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['dtype'\]"):
        FSDP2Strategy(mixed_precision=dict(dtype='bf16'))
    with pytest.raises(ValueError, match='takes no model_wrapper'):
        FSDP2Strategy(model_wrapper=dict(type='MMFullyShardedDataParallel'))


def test_demo_fsdp_config_is_the_demo_on_gloo():
    cfg = _cfg('cast_demo_fsdp.py')
    base = _cfg('cast_demo.py')
    assert cfg.runner_type == 'FlexibleRunner'
    assert cfg.strategy.type == 'FSDP2Strategy'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model == base.model
    assert cfg.optim_wrapper == base.optim_wrapper
    assert cfg.train_dataloader == base.train_dataloader


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
