"""The CPU speed-ups (models/speedups.py) are one opt-in layer: the default
model is plain PyTorch, each speed-up computes what the reference computes
(outputs and gradients, on CAST and CAVA), and where it does not apply
(fp64, autocast, CUDA) the reference code runs."""
import pytest
import torch
import torch.nn as nn

from cast_mmaction.models import speedups
from cast_mmaction.models.presets import cast_backbone_cfg
from cast_mmaction.models.presets_av import cava_backbone_cfg
from cast_mmaction.utils import build_model

SIZES = dict(embed_dim=32, depth=2, num_heads=2, num_frames=4, img_size=32)
AMD512 = dict(cpu_vendor='AuthenticAMD', cpu_model='AMD EPYC',
              cpu_isa=['avx2', 'avx512f'])


def _backbone(kind, spec=None, **extra):
    cfg = (cast_backbone_cfg(**SIZES) if kind == 'cast' else
           cava_backbone_cfg(input_tdim=60, **SIZES))
    cfg.update(drop_path_rate=0.2, speedups=spec, **extra)
    return build_model(cfg)


def _inputs(kind, dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    video = torch.randn(2, 3, 4, 32, 32, generator=g, dtype=dtype)
    if kind == 'cast':
        return video
    return dict(video=video, audio=torch.randn(2, 60, 128, generator=g,
                                               dtype=dtype))


def _pair(kind, spec):
    ref = _backbone(kind)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():  # zero-initialised ups / adapters too
            if p.requires_grad:
                p.normal_(0, 0.1)
    fast = _backbone(kind, spec)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _step(bb, x):
    bb.train()
    bb.zero_grad(set_to_none=True)
    torch.manual_seed(3)  # the same drop-path masks on both models
    out = bb(x)
    sum(f.pow(2).sum() for f in out).backward()
    return [o.detach() for o in out], {
        n: p.grad for n, p in bb.named_parameters() if p.grad is not None}


# (spec, forward tolerance, gradient tolerance): oneDNN and the frozen MLP
# (QuickGELU as a scaled SiLU) sum / round in another order than MKL and
# autograd: fp32 rounding; the fusion regions recompute the same operators:
# the same forward bit for bit, gradients to accumulation order
SPECS = [
    (dict(onednn_linear=True), 1e-5, 1e-4),
    (dict(frozen_mlp=True), 1e-5, 1e-4),
    (dict(checkpoint='fusion'), 0.0, 1e-6),
    ('cpu', 1e-5, 1e-4),
]


@pytest.mark.parametrize('kind', ['cast', 'cava'])
@pytest.mark.parametrize('spec, tol_out, tol_grad', SPECS)
def test_each_speedup_gives_the_reference_outputs_and_gradients(
        kind, spec, tol_out, tol_grad):
    ref, fast = _pair(kind, spec)
    x = _inputs(kind)
    out_ref, want = _step(ref, x)
    out, got = _step(fast, x)
    for a, b in zip(out, out_ref):
        torch.testing.assert_close(a, b, rtol=tol_out, atol=tol_out)
    assert want.keys() == got.keys() and len(want) > 10
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=tol_grad,
                                   atol=tol_grad, msg=n)
    # the rewritten model: same state dict, the same module classes
    # (subclasses), and on fp32 CPU the speed-up really ran
    assert fast.state_dict().keys() == ref.state_dict().keys()
    for (n, a), (_, b) in zip(ref.named_modules(), fast.named_modules()):
        assert isinstance(b, type(a)), n
    if spec == 'cpu' or 'checkpoint' not in spec:
        assert any(type(m) is not type(r) for m, r in
                   zip(fast.modules(), ref.modules()))


@pytest.mark.parametrize('kind', ['cast', 'cava'])
def test_the_frozen_mlps_add_into_the_residual_outside_checkpoints(
        kind, monkeypatch):
    """With ``frozen_mlp`` each stream's MLP output product accumulates
    into its residual (``x`` + the MLP adapter's part) once per layer, in
    the plain layer and outside the regions of ``checkpoint='fusion'``
    (the same numbers in both); never inside a checkpointed layer
    (``with_cp``), whose selective policies keep ``addmm`` outputs, nor
    with bf16 frozen experts or on oneDNN (its linear's output is added to
    the residual handed to it); the reference model never. The residual
    goes through the MLP module's call (its hooks run)."""
    MLP = dict(onednn_linear=False, onednn_attention=False, frozen_mlp=True)
    calls = []
    real = speedups._mm_t_into

    def counting(residual, *args, **kwargs):
        calls.append(tuple(residual.shape))
        return real(residual, *args, **kwargs)

    monkeypatch.setattr(speedups, '_mm_t_into', counting)
    x = _inputs(kind)
    ref, _ = _pair(kind, None)
    outs = {}
    for name, spec, extra in [
            ('preset', MLP, {}),
            ('fusion', dict(MLP, checkpoint='fusion'), {}),
            ('with_cp', MLP, dict(with_cp=True)),
            ('bf16', MLP, dict(frozen_dtype='bfloat16')),
            ('reference', None, {})] + ([
                ('onednn', dict(MLP, onednn_linear=True), {})]
                                        if speedups._LP is not None else []):
        bb = _backbone(kind, spec, **extra)
        bb.load_state_dict(ref.state_dict())
        # the residual goes through the MLP module's call, so its hooks
        # run (an FSDP unit unshards its weights in one)
        hooked = []
        for m in bb.modules():
            if isinstance(m, (speedups.FrozenCLIPMlp,
                              speedups.FrozenVideoMAEMlp)):
                m.register_forward_pre_hook(
                    lambda mod, args, kwargs: hooked.append(
                        'residual' in kwargs), with_kwargs=True)
        calls.clear()
        outs[name] = _step(bb, x)
        streams = len(bb.stream_names)
        want = streams * len(bb.mlp_layers) if name in ('preset',
                                                        'fusion') else 0
        assert len(calls) == want, (name, calls)
        # on oneDNN the module is handed the residual too, and adds it
        assert sum(hooked) == (streams * len(bb.mlp_layers) if name == (
            'onednn') else want), (name, hooked)
    for a, b in zip(outs['fusion'][0], outs['preset'][0]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(outs['preset'][0], outs['reference'][0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_reference_model_is_plain_pytorch():
    """No speed-up class, no custom autograd node, no layer runner in the
    default model."""
    bb = _backbone('cast')
    assert bb.layer_runner is None and bb.speedups.enabled == []
    mods = {type(m).__module__ for m in bb.modules()}
    assert 'cast_mmaction.models.speedups' not in mods
    assert all(type(m) is nn.Linear for m in bb.modules()
               if isinstance(m, nn.Linear))
    bb.train()
    out = bb(_inputs('cast'))
    seen, stack = set(), [sum(o.sum() for o in out).grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        assert 'BackwardCFunction' not in type(fn).__mro__[1].__name__, fn
        stack.extend(f for f, _ in fn.next_functions)


@pytest.mark.parametrize('kind', ['cast', 'cava'])
def test_speedups_are_a_no_op_in_fp64_and_under_autocast(kind, monkeypatch):
    """Where a speed-up does not apply the rewritten model runs the
    reference code: the same numbers bit for bit, no region, no oneDNN."""
    ref, fast = _pair(kind, dict(onednn_linear=True, frozen_mlp=True,
                                 checkpoint='fusion'))
    calls = []
    monkeypatch.setattr(speedups, 'fusion_layer',
                        lambda *a: calls.append(a) or None)
    lp = []
    if speedups._LP is not None:
        real = speedups._LP
        monkeypatch.setattr(speedups, '_LP',
                            lambda *a: lp.append(1) or real(*a))
    ref64, fast64 = ref.double(), fast.double()
    x = _inputs(kind, torch.float64)
    out_ref, want = _step(ref64, x)
    out, got = _step(fast64, x)
    for a, b in zip(out, out_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=0, msg=n)
    ref, fast = ref64.float(), fast64.float()
    x = _inputs(kind)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out_ref, want = _step(ref, x)
        out, got = _step(fast, x)
    for a, b in zip(out, out_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=0, msg=n)
    assert not calls and not lp


INTEL512 = dict(cpu_vendor='GenuineIntel', cpu_model='Intel Xeon',
                cpu_isa=['avx2', 'avx512f'])
# the C++ kernels decided by the CPU rule (not in the preset: their build)
AUTO = dict(preset='cpu', cpu_attention='auto', cpu_mlp='auto')


@pytest.mark.parametrize('key', ['cpu_attention', 'cpu_mlp'])
def test_the_cpp_kernels_auto_decided_from_cpu_and_toolchain(
        key, monkeypatch):
    """'auto': on for an Intel CPU with AVX-512F where
    a compiler and ninja are found; off, with the reason, on AMD, without
    AVX-512F or without the toolchain; never an error."""
    from cast_mmaction.models import cpp_extensions
    monkeypatch.setattr(cpp_extensions, 'toolchain',
                        lambda: (True, 'a compiler and ninja found'))
    sp = speedups.resolve(AUTO, facts=INTEL512)
    assert sp[key] is True and key in sp.enabled
    assert 'Intel with AVX-512' in sp.reasons[key]
    off = {
        'AMD': AMD512,
        'AVX-512F': dict(INTEL512, cpu_isa=['avx2', 'fma']),
    }
    for why, facts in off.items():
        sp = speedups.resolve(AUTO, facts=facts)
        assert sp[key] is False and why in sp.reasons[key], sp.reasons[key]
    monkeypatch.setattr(cpp_extensions, 'toolchain',
                        lambda: (False, 'no ninja on PATH'))
    sp = speedups.resolve(AUTO, facts=INTEL512)
    assert sp[key] is False and 'no ninja on PATH' in sp.reasons[key]
    # the decision is logged and travels in a checkpoint's meta
    assert f'{key}: off (auto:' in sp.summary()
    assert sp.meta()['runs'][key]['on'] is False


def test_the_toolchain_facts_name_what_is_missing(monkeypatch, tmp_path):
    """A compiler, ninja and Python's C headers: each missing one named
    (the preset's rule then leaves the C++ kernels off, with that reason)."""
    import sysconfig
    from cast_mmaction.models import cpp_extensions
    ok, why = cpp_extensions.toolchain()
    if not ok:
        pytest.skip(f'no C++ toolchain here: {why}')
    assert 'Python.h found' in why
    real = sysconfig.get_paths
    monkeypatch.setattr(sysconfig, 'get_paths', lambda: dict(
        real(), include=str(tmp_path)))
    ok, why = cpp_extensions.toolchain()
    assert not ok and 'no Python.h' in why and str(tmp_path) in why
    sp = speedups.resolve(AUTO, facts=INTEL512)
    assert sp['cpu_attention'] is False and 'no Python.h' in \
        sp.reasons['cpu_attention']
    monkeypatch.setenv('CXX', 'no-such-compiler-xyz')
    ok, why = cpp_extensions.toolchain()
    assert not ok and 'no-such-compiler-xyz' in why


def test_auto_leaves_the_pass_to_the_frozen_mlp_and_onednn(
        monkeypatch):
    """cpu_mlp='auto' is off without frozen_mlp (it is a pass of that node)
    and where oneDNN's fused linear runs, not an error."""
    from cast_mmaction.models import cpp_extensions
    monkeypatch.setattr(cpp_extensions, 'toolchain',
                        lambda: (True, 'a compiler and ninja found'))
    sp = speedups.resolve(dict(AUTO, frozen_mlp=False),
                          facts=INTEL512)
    assert sp['cpu_mlp'] is False and 'frozen_mlp' in sp.reasons['cpu_mlp']
    assert sp['cpu_attention'] is True
    sp = speedups.resolve(dict(AUTO, onednn_linear=True),
                          facts=INTEL512)
    assert sp['cpu_mlp'] is False and 'onednn_linear' in sp.reasons['cpu_mlp']


def test_the_decision_per_device_dtype_and_autocast():
    sp = speedups.resolve(dict(preset='cpu', checkpoint='fusion',
                               malloc_mmap_threshold=1 << 20,
                               malloc_trim=True, cpu_block_cache=True),
                          AMD512)
    on_cpu = sp.decide('cpu', torch.float32, False)
    # the C++ kernels are not in the preset (their first-use build)
    for key in ('cpu_attention', 'cpu_mlp'):
        on, why = on_cpu.pop(key)
        assert not on and 'not requested' in why, key
    assert speedups.resolve('cpu', AMD512)['cpu_attention'] is False
    assert all(on for on, _ in on_cpu.values()) is (speedups._LP is not None)
    for where in (('cuda', torch.float32, False), ('cpu', torch.float64,
                                                   False),
                  ('cpu', torch.float32, True), ('cuda', torch.bfloat16,
                                                 True), ('meta',
                                                         torch.float32,
                                                         False)):
        rows = sp.decide(*where)
        assert not any(on for on, _ in rows.values()), where
        assert all('fp32 CPU outside autocast only' in why
                   for k, (_, why) in rows.items()
                   if k not in ('cpu_attention', 'cpu_mlp')), rows
    none = speedups.resolve(None)
    assert none.enabled == [] and not any(
        on for on, _ in none.decide().values())
    meta = sp.meta('cuda')
    assert meta['runs']['frozen_mlp']['on'] is False
    assert meta['settings']['frozen_mlp'] is True
    assert meta['requested']['preset'] == 'cpu'
    import json
    json.dumps(meta)  # plain data for a checkpoint
    assert 'onednn_linear: ' in sp.summary()


def test_bad_speedup_config_names_the_field():
    for bad, match in ((dict(onednn=True), "unknown keys \\['onednn'\\]"),
                       ('fast', "speedups='fast'"),
                       (dict(preset='gpu'), 'speedups.preset'),
                       (dict(onednn_linear='yes'), 'speedups.onednn_linear'),
                       (dict(frozen_mlp=1), 'speedups.frozen_mlp'),
                       (dict(checkpoint='full'), 'speedups.checkpoint'),
                       (3, 'speedups=3')):
        with pytest.raises(ValueError, match=match):
            speedups.resolve(bad, AMD512)
    with pytest.raises(ValueError, match='backbone.speedups'):
        _backbone('cast', dict(frozen=True))


def test_every_config_records_its_speedup_decision():
    """Every config's runner has the SpeedupsHook (log + checkpoint meta)
    and names only valid speed-ups."""
    import glob
    import os.path as osp

    from mmengine.config import Config
    from conftest import ROOT
    paths = sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')))
    assert len(paths) > 10
    for path in paths:
        cfg = Config.fromfile(path)
        hooks = cfg.get('default_hooks', {})
        assert hooks.get('speedups', {}).get('type') == 'SpeedupsHook', path
        spec = cfg.model.backbone.get('speedups')
        speedups.resolve(spec, AMD512)  # valid


@pytest.mark.parametrize('layer_scale', [None, 0.1])
def test_an_mlp_with_a_layer_scale_is_not_added_into_the_residual(
        layer_scale):
    """VideoMAE V2 with a layer scale (``gamma_2``) multiplies its MLP
    branch: it names no MLP module, so the backbone adds the branch as it
    is; without one its frozen MLP adds into the residual, the same sum."""
    from cast_mmaction.models.experts import VideoMAEv2Expert
    e = VideoMAEv2Expert(arch='base', embed_dim=32, depth=1, num_heads=2,
                         img_size=32, num_frames=4, init_values=layer_scale)
    assert speedups._swap(e, speedups.FROZEN_MLP_MODULES) == 1
    xn, res = torch.randn(2, 8, 32), torch.randn(2, 8, 32)
    adder = e.mlp_adder(0, xn)
    if layer_scale:
        assert e.mlp_module(0) is None and adder is None
    else:
        assert e.mlp_module(0) is e.blocks[0].mlp and adder is not None
        with torch.no_grad():
            torch.testing.assert_close(adder(res), res + e.mlp_branch(0, xn),
                                       rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # fp64: the speed-up's path does not apply
        e = e.double()
        xn, res = xn.double(), res.double()
        assert e.mlp_adder(0, xn) is None
        m = e.blocks[0].mlp
        # a residual where the path does not apply: the plain sum
        torch.testing.assert_close(m(xn, residual=res), res + m(xn), rtol=0,
                                   atol=0)
