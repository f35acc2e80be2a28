"""The CLIP-based PEFT baselines (ST-Adapter, AIM) as models of the plugin:
the official reference dumps, switch combinations against the official
computation written out functionally here (from the official parameter
names, through the converters users run), invariants of fresh adapters,
the converters' errors and ``tools/convert/convert_checkpoint.py --tower``, the
optimizer groups and the start-up check."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from cast_mmaction.checkpoints import (CheckpointFitError, convert_official,
                                       load_official_aim,
                                       load_official_st_adapter)
from cast_mmaction.models.presets_peft import (aim_recognizer_cfg,
                                               st_adapter_recognizer_cfg)
from cast_mmaction.parity import check_dump, find_family, read_meta
from cast_mmaction.utils import build_model
from conftest import ROOT, shared_fixture

PEFT_DUMPS = {'st_adapter_pre_attn_mlp': 'st_adapter', 'aim_tadapter1': 'aim'}


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.mark.parametrize('name', sorted(PEFT_DUMPS))
def test_peft_dumps_match(name):
    path = shared_fixture(name)
    assert find_family(read_meta(path)).name == PEFT_DUMPS[name]
    rows = check_dump(path)
    assert {r[0] for r in rows} == {'cls_score', 'feature'}
    for out, diff, tol, ok in rows:
        assert ok, f'{name}/{out}: max|diff| {diff:.3e} > {tol:.3e}'


# -- the official computation, written out on the official names -------------
D, HEADS, DEPTH, PATCH, IMG, T, B, CLASSES = 32, 2, 2, 16, 32, 4, 2, 5


def _rand(g, *shape, scale=0.2):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def clip_tower(g, prefix=''):
    """A random OpenAI-named CLIP visual state dict (``proj`` included)."""
    n = (IMG // PATCH)**2 + 1
    sd = {'conv1.weight': _rand(g, D, 3, PATCH, PATCH, scale=0.05),
          'class_embedding': _rand(g, D), 'positional_embedding':
          _rand(g, n, D), 'proj': _rand(g, D, 16)}
    for ln in ('ln_pre', 'ln_post'):
        sd[f'{ln}.weight'] = 1 + _rand(g, D, scale=0.1)
        sd[f'{ln}.bias'] = _rand(g, D, scale=0.1)
    for i in range(DEPTH):
        b = f'transformer.resblocks.{i}.'
        sd.update({
            b + 'attn.in_proj_weight': _rand(g, 3 * D, D),
            b + 'attn.in_proj_bias': _rand(g, 3 * D),
            b + 'attn.out_proj.weight': _rand(g, D, D),
            b + 'attn.out_proj.bias': _rand(g, D),
            b + 'mlp.c_fc.weight': _rand(g, 4 * D, D),
            b + 'mlp.c_fc.bias': _rand(g, 4 * D),
            b + 'mlp.c_proj.weight': _rand(g, D, 4 * D),
            b + 'mlp.c_proj.bias': _rand(g, D)})
        for ln in ('ln_1', 'ln_2'):
            sd[b + ln + '.weight'] = 1 + _rand(g, D, scale=0.1)
            sd[b + ln + '.bias'] = _rand(g, D, scale=0.1)
    return {prefix + k: v for k, v in sd.items()}


def _ln(x, sd, k):
    return F.layer_norm(x, x.shape[-1:], sd[k + '.weight'], sd[k + '.bias'],
                        1e-5)


def _lin(x, sd, k):
    return x @ sd[k + '.weight'].T + sd[k + '.bias']


def _mha(x, sd, k):
    n, L, d = x.shape
    qkv = x @ sd[k + '.in_proj_weight'].T + sd[k + '.in_proj_bias']
    q, kk, v = (t.reshape(n, L, HEADS, d // HEADS).transpose(1, 2)
                for t in qkv.split(d, -1))
    a = (q @ kk.transpose(-1, -2) / math.sqrt(d // HEADS)).softmax(-1)
    o = (a @ v).transpose(1, 2).reshape(n, L, d)
    return _lin(o, sd, k + '.out_proj')


def _mlp(x, sd, k):
    h = _lin(x, sd, k + '.c_fc')
    return _lin(h * torch.sigmoid(1.702 * h), sd, k + '.c_proj')


def _tokens(sd, video, p=''):
    b, c, t, h, w = video.shape
    f = video.transpose(1, 2).reshape(b * t, c, h, w)
    x = F.conv2d(f, sd[p + 'conv1.weight'], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    cls = sd[p + 'class_embedding'].expand(b * t, 1, -1)
    return torch.cat([cls, x], 1) + sd[p + 'positional_embedding']


def ref_st_adapter(sd, video):
    """linziyi96/st-adapter's VisionTransformer, functionally."""
    def adapter(x, k):
        bt, L, d = x.shape
        side = math.isqrt(L - 1)
        w = sd[k + '.conv.weight']
        y = _lin(x[:, 1:], sd, k + '.fc1')
        y = y.reshape(bt // T, T, side, side, -1).permute(0, 4, 1, 2, 3)
        y = F.conv3d(y, w, sd[k + '.conv.bias'],
                     padding=tuple(s // 2 for s in w.shape[2:]),
                     groups=w.shape[0])
        y = y.permute(0, 2, 3, 4, 1).reshape(bt, L - 1, -1)
        out = x.clone()
        out[:, 1:] += _lin(y, sd, k + '.fc2')
        return out

    x = _ln(_tokens(sd, video), sd, 'ln_pre')
    for i in range(DEPTH):
        b = f'transformer.resblocks.{i}.'
        if b + 'adapter_pre_attn.fc1.weight' in sd:
            x = adapter(x, b + 'adapter_pre_attn')
        x = x + _mha(_ln(x, sd, b + 'ln_1'), sd, b + 'attn')
        if b + 'adapter_pre_mlp.fc1.weight' in sd:
            x = adapter(x, b + 'adapter_pre_mlp')
        x = x + _mlp(_ln(x, sd, b + 'ln_2'), sd, b + 'mlp')
    feat = _ln(x[:, 0].reshape(video.shape[0], T, D).mean(1), sd, 'ln_post')
    return feat, _lin(feat, sd, 'fc')


def ref_aim(sd, video, num_tadapter, scale):
    """taoyang1122/adapt-image-models' ViT_CLIP + I3DHead, functionally."""
    p = 'backbone.'

    def adapter(x, k, skip):
        h = _lin(F.gelu(_lin(x, sd, k + '.D_fc1')), sd, k + '.D_fc2')
        return x + h if skip else h

    b = video.shape[0]
    x = _tokens(sd, video, p)
    bt, L, d = x.shape
    x = (x.reshape(b, T, L, d)
         + sd[p + 'temporal_embedding'][0][None, :, None]).reshape(bt, L, d)
    x = _ln(x, sd, p + 'ln_pre')
    for i in range(DEPTH):
        k = f'{p}transformer.resblocks.{i}.'
        xt = x.reshape(b, T, L, d).transpose(1, 2).reshape(b * L, T, d)
        h = _ln(xt, sd, k + 'ln_1')
        if num_tadapter == 2:
            h = adapter(h, k + 'T_Adapter_in', True)
        h = adapter(_mha(h, sd, k + 'attn'), k + 'T_Adapter', False)
        x = x + h.reshape(b, L, T, d).transpose(1, 2).reshape(bt, L, d)
        x = x + adapter(_mha(_ln(x, sd, k + 'ln_1'), sd, k + 'attn'),
                        k + 'S_Adapter', True)
        xn = _ln(x, sd, k + 'ln_2')
        x = x + _mlp(xn, sd, k + 'mlp') + scale * adapter(
            xn, k + 'MLP_Adapter', False)
    feat = _ln(x[:, 0], sd, p + 'ln_post').reshape(b, T, d)
    score = _lin(feat.mean(1), sd, 'cls_head.fc_cls')
    return feat.transpose(1, 2)[..., None, None], score


def st_release(g, adapter_layers, pre_attn, pre_mlp, kernel, width=8):
    sd = {}
    for i in range(DEPTH - adapter_layers, DEPTH):
        for pos, on in (('attn', pre_attn), ('mlp', pre_mlp)):
            if not on:
                continue
            k = f'transformer.resblocks.{i}.adapter_pre_{pos}.'
            sd.update({k + 'fc1.weight': _rand(g, width, D),
                       k + 'fc1.bias': _rand(g, width),
                       k + 'conv.weight': _rand(g, width, 1, *kernel),
                       k + 'conv.bias': _rand(g, width),
                       k + 'fc2.weight': _rand(g, D, width),
                       k + 'fc2.bias': _rand(g, D)})
    sd['fc.weight'], sd['fc.bias'] = _rand(g, CLASSES, D), _rand(g, CLASSES)
    return sd


def aim_checkpoint(g, num_tadapter):
    sd = clip_tower(g, 'backbone.')
    del sd['backbone.proj']  # AIM deletes it before loading CLIP
    sd['backbone.temporal_embedding'] = _rand(g, 1, T, D)
    names = ['T_Adapter', 'S_Adapter', 'MLP_Adapter'] + (
        ['T_Adapter_in'] if num_tadapter == 2 else [])
    for i in range(DEPTH):
        for n in names:
            k = f'backbone.transformer.resblocks.{i}.{n}.'
            sd.update({k + 'D_fc1.weight': _rand(g, D // 4, D),
                       k + 'D_fc1.bias': _rand(g, D // 4),
                       k + 'D_fc2.weight': _rand(g, D, D // 4),
                       k + 'D_fc2.bias': _rand(g, D)})
    sd['cls_head.fc_cls.weight'] = _rand(g, CLASSES, D)
    sd['cls_head.fc_cls.bias'] = _rand(g, CLASSES)
    return {'state_dict': sd, 'meta': {}}


def _close(got, ref, what):
    tol = 1e-4 * max(1.0, ref.abs().max().item())
    diff = (got.double() - ref).abs().max().item()
    assert diff <= tol, f'{what}: max|diff| {diff:.3e} > {tol:.3e}'


def _st_model(**kw):
    return build_model(st_adapter_recognizer_cfg(
        embed_dim=D, depth=DEPTH, num_heads=HEADS, patch_size=PATCH,
        num_frames=T, img_size=IMG, num_classes=CLASSES, **kw)).eval()


def _aim_model(**kw):
    return build_model(aim_recognizer_cfg(
        embed_dim=D, depth=DEPTH, num_heads=HEADS, patch_size=PATCH,
        num_frames=T, img_size=IMG, num_classes=CLASSES, **kw)).eval()


@pytest.mark.parametrize('adapter_layers,pre_attn,pre_mlp,kernel', [
    (DEPTH, False, True, (3, 1, 1)),  # their K400 model: pre-MLP only
    (1, True, True, (3, 1, 1)),  # adapters in the last layer only
    (DEPTH, True, False, (3, 3, 3)),  # pre-attention only, a 3-D kernel
])
def test_st_adapter_switches_match_reference(adapter_layers, pre_attn,
                                             pre_mlp, kernel):
    g = torch.Generator().manual_seed(adapter_layers * 10 + pre_attn)
    tower = clip_tower(g)
    release = st_release(g, adapter_layers, pre_attn, pre_mlp, kernel)
    model = _st_model(adapter_width=8, adapter_layers=adapter_layers,
                      adapter_pre_attn=pre_attn, adapter_pre_mlp=pre_mlp,
                      adapter_kernel_size=kernel)
    load_official_st_adapter(model, {'model': release},
                             tower={k: v.float() for k, v in tower.items()})
    video = torch.randn(B, 3, T, IMG, IMG, generator=g, dtype=torch.float64)
    with torch.no_grad():
        feat = model.backbone(video.float())
        score = model.cls_head(feat)
    ref_feat, ref_score = ref_st_adapter({**tower, **release}, video)
    _close(feat, ref_feat, 'feature')
    _close(score, ref_score, 'cls_score')


@pytest.mark.parametrize('num_tadapter,scale', [(2, 1.0), (1, 0.5)])
def test_aim_switches_match_reference(num_tadapter, scale):
    g = torch.Generator().manual_seed(num_tadapter)
    ckpt = aim_checkpoint(g, num_tadapter)
    model = _aim_model(num_tadapter=num_tadapter, adapter_scale=scale)
    load_official_aim(model, ckpt)
    video = torch.randn(B, 3, T, IMG, IMG, generator=g, dtype=torch.float64)
    with torch.no_grad():
        feat = model.backbone(video.float())
        score = model.cls_head(feat)
    ref_feat, ref_score = ref_aim(ckpt['state_dict'], video, num_tadapter,
                                  scale)
    assert feat.shape == (B, D, T, 1, 1)
    _close(feat, ref_feat, 'feature')
    _close(score, ref_score, 'cls_score')


def test_fresh_adapters_leave_clip_unchanged():
    """Zero-initialised adapters (ST-Adapter's conv, AIM's fc2 and temporal
    embedding) make both models the plain CLIP tower on every frame."""
    torch.manual_seed(0)
    video = torch.randn(B, 3, T, IMG, IMG)
    st = _st_model(adapter_width=8, adapter_pre_attn=True)
    clip = st.backbone.experts['clip']
    with torch.no_grad():
        assert torch.equal(st.backbone(video), clip.forward_plain(video))
    aim = _aim_model(num_tadapter=2)
    clip = aim.backbone.experts['clip']
    with torch.no_grad():
        x = clip.embed(video)
        for i in range(DEPTH):
            x = x + clip.attn_branch(i, x)
            x = x + clip.mlp_branch(i, clip.mlp_norm(i, x))
        plain = clip.frame_features(x, B).transpose(1, 2)[..., None, None]
        torch.testing.assert_close(aim.backbone(video), plain, rtol=0,
                                   atol=1e-5)
    # ...and the adapters are not dead: a changed fc2 bias changes the output
    with torch.no_grad():
        fc2 = aim.backbone.t_adapters['clip'][0].fc2
        fc2.bias.copy_(torch.linspace(-1, 1, D))
        assert not torch.allclose(aim.backbone(video), plain, atol=1e-3)


def test_trainable_parameters_are_the_official_ones():
    st = _st_model(adapter_width=8, adapter_layers=1, adapter_pre_attn=True)
    names = {n for n, p in st.named_parameters() if p.requires_grad}
    assert names == {f'backbone.pre_{p}_adapters.clip.1.{m}.{t}'
                     for p in ('attn', 'mlp') for m in ('fc1', 'conv', 'fc2')
                     for t in ('weight', 'bias')} | {
                         'cls_head.fc_cls.weight', 'cls_head.fc_cls.bias'}
    aim = _aim_model(num_tadapter=1)
    names = {n for n, p in aim.named_parameters() if p.requires_grad}
    frozen = {n for n, p in aim.named_parameters() if not p.requires_grad}
    # AIM's training script: temporal_embedding, ln_post, cls_head, Adapter
    assert {'backbone.temporal_embedding',
            'backbone.experts.clip.ln_post.weight',
            'cls_head.fc_cls.weight'} <= names
    assert all('adapters' in n for n in names if 'clip' not in n
               and 'temporal' not in n and 'cls_head' not in n)
    assert all(n.startswith('backbone.experts.clip.') for n in frozen)
    assert 'backbone.experts.clip.ln_post.weight' not in frozen


# -- converters --------------------------------------------------------------
def test_st_adapter_release_needs_its_tower_and_names_what_differs():
    g = torch.Generator().manual_seed(3)
    release = {'model': st_release(g, DEPTH, True, True, (3, 1, 1)),
               'next_epoch': 12}
    model = _st_model(adapter_width=8, adapter_pre_attn=True)
    with pytest.raises(ValueError, match='trained parameters only.*--tower'):
        convert_official(release, model)
    tower = clip_tower(g)
    # a release without the pre-attention adapters the model has
    pre_mlp = {'model': st_release(g, DEPTH, False, True, (3, 1, 1))}
    with pytest.raises(CheckpointFitError,
                       match=r'missing keys.*pre_attn_adapters\.clip\.0'):
        load_official_st_adapter(model, pre_mlp, tower=tower)
    # a model without them: the release's pre-attention keys are unexpected
    model = _st_model(adapter_width=8)
    with pytest.raises(CheckpointFitError,
                       match=r'unexpected keys.*pre_attn_adapters'):
        load_official_st_adapter(model, release, tower=tower)
    # the release given as its own tower
    with pytest.raises(ValueError, match='tower file is itself'):
        convert_official(release, tower=release['model'])
    # a path that is not a CLIP tower: the CLIP reader's words
    bad = os.path.join(shared_fixture('aim_tadapter1'), 'input.pt')
    with pytest.raises(ValueError, match='CLIP'):
        convert_official(release, tower=bad)


def test_aim_converter_names_missing_and_foreign_keys():
    g = torch.Generator().manual_seed(4)
    ckpt = aim_checkpoint(g, 1)
    out, rep = convert_official(ckpt)
    assert rep['kind'] == 'aim' and not rep['unmapped']
    assert 'backbone.t_adapters.clip.1.fc2.weight' in out
    assert 'backbone.experts.clip.transformer.resblocks.0.attn.' \
           'in_proj_weight' in out
    with pytest.raises(CheckpointFitError,
                       match=r'missing keys.*t_in_adapters\.clip\.0'):
        load_official_aim(_aim_model(num_tadapter=2), ckpt)
    ckpt['state_dict']['backbone.foo'] = torch.zeros(1)
    with pytest.raises(CheckpointFitError,
                       match=r'unexpected keys.*backbone\.foo'):
        load_official_aim(_aim_model(), ckpt)
    with pytest.raises(ValueError, match='takes no tower'):
        convert_official(ckpt, tower={'conv1.weight': torch.zeros(1)})


def test_positional_and_temporal_tables_are_resized():
    g = torch.Generator().manual_seed(5)
    ckpt = aim_checkpoint(g, 1)
    model = build_model(aim_recognizer_cfg(
        embed_dim=D, depth=DEPTH, num_heads=HEADS, patch_size=PATCH,
        num_frames=2 * T, img_size=2 * IMG, num_classes=CLASSES))
    rep = load_official_aim(model, ckpt)
    assert any('temporal_embedding' in n for n in rep['notes'])
    assert any('positional_embedding' in n for n in rep['notes'])
    assert model.backbone.temporal_embedding.shape == (1, 2 * T, D)


def test_convert_tool_reads_release_and_tower(tmp_path, capsys):
    """tools/convert/convert_checkpoint.py on the shared ST-Adapter dump, checked
    against configs/st_adapter_ssv2.py at the dump's sizes; without
    --tower it stops naming the option."""
    import importlib.util
    dump = shared_fixture('st_adapter_pre_attn_mlp')
    from _tools import tool_path
    path = tool_path('convert_checkpoint')
    spec = importlib.util.spec_from_file_location('_convert_tool', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = os.path.join(dump, 'official_checkpoint.pth')
    dst = str(tmp_path / 'st.pth')
    sizes = ['model.backbone.img_size=64', 'model.backbone.num_frames=8',
             'model.backbone.expert.embed_dim=96',
             'model.backbone.expert.depth=3',
             'model.backbone.expert.num_heads=4',
             'model.backbone.adapter_width=48',
             'model.backbone.adapter_layers=3',
             'model.cls_head.num_classes=10', 'model.cls_head.in_channels=96']
    cfg = os.path.join(ROOT, 'configs', 'st_adapter_ssv2.py')
    with pytest.raises(SystemExit, match=r'^ValueError: an official ST-Adapter '
                       r'checkpoint .*\(tools/convert/convert_checkpoint\.py '
                       r'--tower PATH'):
        tool.main([src, dst, '--config', cfg, '--cfg-options', *sizes])
    tool.main([src, dst, '--tower', os.path.join(dump, 'clip_visual.pth'),
               '--config', cfg, '--cfg-options', *sizes])
    out = capsys.readouterr().out
    assert '[st_adapter] converted' in out and 'fits the model' in out
    # the K400 recipe has no pre-attention adapters: the tool names them
    cfg = os.path.join(ROOT, 'configs', 'st_adapter_k400.py')
    with pytest.raises(SystemExit, match='unexpected keys.*pre_attn'):
        tool.main([src, str(tmp_path / 'k.pth'), '--tower',
                   os.path.join(dump, 'clip_visual.pth'), '--config', cfg,
                   '--cfg-options', *sizes])
    from cast_mmaction.safe_load import load_checkpoint
    state = load_checkpoint(dst)['state_dict']
    model = _build_sized(sizes, os.path.join(ROOT, 'configs',
                                             'st_adapter_ssv2.py'))
    model.load_state_dict(state)  # strict: every key, nothing else
    # the tower alone (--expert) against the single-expert backbone's
    # model.backbone.expert (the tool looked under experts only)
    tool.main([os.path.join(dump, 'clip_visual.pth'),
               str(tmp_path / 'clip.safetensors'), '--expert', 'clip',
               '--config', cfg, '--cfg-options', *sizes])
    assert 'loads into model.backbone.expert of' in capsys.readouterr().out


def test_convert_tool_names_a_missing_tower_config_or_expert_file(
        tmp_path, capsys):
    """A --tower, --config or --expert SRC that does not exist stops naming
    that option (the readers' own message told the user to set
    model.backbone.experts.clip.pretrained, which this command does not
    read; a missing --config was a FileNotFoundError traceback after the
    conversion)."""
    import importlib.util
    dump = shared_fixture('st_adapter_pre_attn_mlp')
    from _tools import tool_path
    spec = importlib.util.spec_from_file_location(
        '_convert_tool', tool_path('convert_checkpoint'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = os.path.join(dump, 'official_checkpoint.pth')
    dst = str(tmp_path / 'st.pth')
    missing = str(tmp_path / 'ViT-B-16.pt')
    with pytest.raises(SystemExit) as err:
        tool.main([src, dst, '--tower', missing, '--quiet'])
    assert str(err.value.code) == (f'FileNotFoundError: --tower {missing}: '
                                   f'no such file or folder')
    with pytest.raises(SystemExit) as err:
        tool.main([missing, dst, '--expert', 'clip', '--quiet'])
    assert str(err.value.code) == (f'FileNotFoundError: SRC {missing}: no '
                                   f'such file or folder')
    with pytest.raises(SystemExit) as err:
        tool.main([src, dst, '--tower', os.path.join(dump, 'clip_visual.pth'),
                   '--config', str(tmp_path / 'st.py'), '--quiet'])
    assert err.value.code == 2
    assert f'--config {tmp_path / "st.py"}: no such file' in \
        capsys.readouterr().err
    assert not os.path.exists(dst)


def _build_sized(options, config):
    from mmengine.config import Config, DictAction  # noqa: F401
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({k: _value(v) for k, v in
                         (o.split('=', 1) for o in options)})
    cfg.model.backbone.expert.pretrained = None
    return build_model(cfg.model)


def _value(v):
    return int(v) if v.isdigit() else v


# -- engine: optimizer groups, start-up check ---------------------------------
def test_optimizer_groups_follow_the_declared_containers():
    from cast_mmaction.engine.optimizers import (
        CASTLayerDecayOptimWrapperConstructor, get_layer_id)
    model = _aim_model(num_tadapter=2)
    bb = model.backbone
    assert get_layer_id('backbone.t_in_adapters.clip.1.fc1.weight', DEPTH,
                        bb) == 2
    assert get_layer_id('backbone.s_adapters.clip.0.fc2.weight', DEPTH,
                        bb) == 1
    assert get_layer_id('backbone.temporal_embedding', DEPTH, bb) == DEPTH + 1
    ctor = CASTLayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        dict(layer_decay_rate=0.5))
    groups = ctor.param_groups(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g['params']} == trainable
    by_id = {id(p): g for g in groups for p in g['params']}
    fc1 = bb.mlp_adapters['clip'][0].fc1
    assert by_id[id(fc1.weight)]['lr_scale'] == 0.5**DEPTH
    assert by_id[id(fc1.bias)]['weight_decay'] == 0.0
    assert by_id[id(fc1.weight)]['weight_decay'] == 0.05
    st = _st_model(adapter_width=8)
    assert get_layer_id('backbone.pre_mlp_adapters.clip.1.conv.weight',
                        DEPTH, st.backbone) == 2


def test_startup_check_names_a_head_width_mismatch():
    from cast_mmaction.engine.hooks.startup_check_hook import check_model
    cfg = st_adapter_recognizer_cfg(embed_dim=D, depth=1, num_heads=HEADS,
                                    num_frames=T, img_size=IMG,
                                    adapter_width=8)
    check_model(build_model(cfg))
    cfg['cls_head']['in_channels'] = 48
    with pytest.raises(ValueError, match=r'in_channels=48.*embed_dim=32'):
        check_model(build_model(cfg))


def test_bad_switches_are_refused():
    with pytest.raises(ValueError, match='adapter_layers=5'):
        _st_model(adapter_layers=5)
    with pytest.raises(ValueError, match='adapter_pre_attn and / or'):
        _st_model(adapter_pre_mlp=False)
    with pytest.raises(ValueError, match='three odd sizes'):
        _st_model(adapter_kernel_size=(2, 1, 1))
    with pytest.raises(ValueError, match='num_tadapter=3'):
        _aim_model(num_tadapter=3)
    model = _aim_model()
    with pytest.raises(ValueError, match='set model.backbone.num_frames'):
        model.backbone(torch.zeros(1, 3, T + 1, IMG, IMG))


def test_stream_roles_and_pooled_features_for_the_tools():
    """tools/analysis_tools/extract_features.py and tools/infer.py read the backbone
    through inference.stream_info / pooled_features: one spatial stream of
    width D (AIM's (B, D, T, 1, 1) map averaged as its I3DHead does)."""
    from cast_mmaction.inference import (capture_backbone, pooled_features,
                                         stream_info)
    torch.manual_seed(1)
    video = torch.randn(B, 3, T, IMG, IMG)
    for model in (_st_model(adapter_width=8), _aim_model()):
        assert stream_info(model) == [('spatial', 'clip', 'CLIPViTExpert')]
        with torch.no_grad(), capture_backbone(model) as calls:
            out = model.backbone(video)
        (feat, ) = pooled_features(calls, B)
        assert feat.shape == (B, D)
        ref = out if out.ndim == 2 else out.mean((2, 3, 4))
        torch.testing.assert_close(feat, ref)


@pytest.mark.parametrize('name,kind', [('st_adapter_pre_attn_mlp',
                                        'st_adapter'),
                                       ('aim_tadapter1', 'aim')])
def test_each_peft_release_is_one_kind_and_fully_mapped(name, kind):
    from cast_mmaction.checkpoints import (CONVERTERS, convert_state,
                                           detect_kind)
    from cast_mmaction.checkpoints.common import read_state_dict
    state = read_state_dict(os.path.join(shared_fixture(name),
                                         'official_checkpoint.pth'), name)
    assert detect_kind(state) == kind
    out, unmapped = convert_state(kind, state)
    assert unmapped == [] and len(out) == len(state)
    for other in set(CONVERTERS) - {kind}:
        with pytest.raises(ValueError, match='not an '):
            convert_state(other, state)


@pytest.mark.parametrize('recipe', ['st_adapter_k400.py', 'st_adapter_ssv2.py',
                                    'aim_k400.py', 'aim_ssv2.py'])
def test_recipes_name_their_missing_paths(recipe, tmp_path):
    """The start-up path check names the CLIP weights field of the
    single-expert backbone (and the data), and the recipe's backbone is the
    preset's at ViT-B size."""
    from mmengine.config import Config
    from cast_mmaction.engine.checks import MissingPathError, check_paths
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', recipe))
    with pytest.raises(MissingPathError) as e:
        check_paths(cfg, 'train', config_name=f'configs/{recipe}')
    msg = str(e.value)
    assert 'model.backbone.expert.pretrained' in msg
    assert 'checkpoints/ViT-B-16.pt' in msg and 'ann_file' in msg
    preset = (st_adapter_recognizer_cfg if recipe.startswith('st_') else
              aim_recognizer_cfg)()['backbone']
    bb = cfg.model.backbone.to_dict()
    for key in ('type', 'expert'):
        want = dict(preset[key], pretrained=bb['expert']['pretrained']) \
            if key == 'expert' else preset[key]
        assert bb[key] == want, key


def _write_dump(path, meta, ckpt, inputs, expected, tower=None):
    import json
    path.mkdir()
    (path / 'meta.json').write_text(json.dumps(meta))
    torch.save(ckpt, path / 'official_checkpoint.pth')
    torch.save(inputs.half(), path / 'input.pt')
    torch.save({k: v.float() for k, v in expected.items()},
               path / 'expected.pt')
    if tower is not None:
        torch.save({k: v.float() for k, v in tower.items()},
                   path / 'clip_visual.pth')
    return str(path)


def test_dumps_are_built_from_their_meta(tmp_path):
    """Dumps in the shared format with other switches (ST-Adapter pre-MLP
    only in the last layer; AIM num_tadapter=2, adapter_scale=1) and a
    name that says nothing: tools/check_parity.py builds each from its
    meta.json and matches the official computation."""
    g = torch.Generator().manual_seed(11)
    video = torch.randn(B, 3, T, IMG, IMG, generator=g).half().double()
    sizes = dict(input_resolution=IMG, patch_size=PATCH, width=D,
                 layers=DEPTH, heads=HEADS)
    tower = clip_tower(g)
    release = st_release(g, 1, False, True, (3, 1, 1), width=8)
    feat, score = ref_st_adapter({**tower, **release}, video)
    st = _write_dump(tmp_path / 'dump_a', dict(
        model='ST-Adapter (linziyi96/st-adapter b914b38, models_adapter.py '
              'VisionTransformer)',
        constructor_args=dict(sizes, num_classes=CLASSES, adapter_width=8,
                              adapter_layers=1, adapter_kernel_size=[3, 1, 1],
                              adapter_pre_attn=False, adapter_pre_mlp=True),
        num_frames=T), {'model': {k: v.float() for k, v in release.items()}},
        video, dict(cls_score=score, feature=feat), tower)
    ckpt = aim_checkpoint(g, 2)
    feat, score = ref_aim(ckpt['state_dict'], video, 2, 1.0)
    ckpt['state_dict'] = {k: v.float() for k, v in ckpt['state_dict'].items()}
    aim = _write_dump(tmp_path / 'dump_b', dict(
        model='AIM ViT_CLIP (taoyang1122/adapt-image-models b3580d2)',
        constructor_args=dict(sizes, num_frames=T, drop_path_rate=0.2,
                              num_tadapter=2, adapter_scale=1.0),
        num_classes=CLASSES), ckpt, video,
        dict(cls_score=score, feature=feat))
    for path, fam in ((st, 'st_adapter'), (aim, 'aim')):
        assert find_family(read_meta(path)).name == fam
        rows = check_dump(path)
        assert len(rows) == 2 and all(r[3] for r in rows), rows


def test_trainable_only_checkpoints_work_for_the_baselines(tmp_path):
    """TrainableCheckpointHook drops the frozen CLIP tower (pretrained:
    the dump's clip_visual.pth) and restores it; a moved tower file is
    named by its config field, model.backbone.expert.pretrained."""
    import json
    import shutil
    from types import SimpleNamespace
    from cast_mmaction.engine.trainable_checkpoint import (
        TrainableCheckpointHook, restore_frozen_experts)
    from cast_mmaction.parity.peft import st_adapter_sizes_from_meta
    dump = shared_fixture('st_adapter_pre_attn_mlp')
    tower = str(tmp_path / 'clip_visual.pth')
    shutil.copy(os.path.join(dump, 'clip_visual.pth'), tower)
    meta = json.load(open(os.path.join(dump, 'meta.json')))
    cfg = st_adapter_sizes_from_meta(st_adapter_recognizer_cfg(), meta)
    cfg['backbone']['expert']['pretrained'] = tower

    def build():
        m = build_model(cfg).eval()
        m.init_weights()  # the tower from its file
        return m

    model = build()
    load_official_st_adapter(
        model, os.path.join(dump, 'official_checkpoint.pth'), tower=tower)
    full = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = {'state_dict': dict(full)}
    TrainableCheckpointHook().before_save_checkpoint(
        SimpleNamespace(model=model), ckpt)
    kept = set(ckpt['state_dict'])
    assert kept == {n for n, p in model.named_parameters()
                    if p.requires_grad}  # adapters and fc only
    assert ckpt['frozen_experts']['clip']['pretrained'] == tower
    fresh = build_model(cfg).eval()
    assert restore_frozen_experts(fresh, ckpt) == ['clip']
    fresh.load_state_dict(ckpt['state_dict'])  # strict
    video = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh.backbone(video), model.backbone(video))
    os.remove(tower)
    ckpt['state_dict'] = {k: full[k] for k in kept}
    with pytest.raises(FileNotFoundError,
                       match=r'model\.backbone\.expert\.pretrained'):
        restore_frozen_experts(build_model(cfg), ckpt)


def test_checkpoint_check_names_the_expert_field():
    """A checkpoint of another tower width: the start-up checkpoint check
    points at model.backbone.expert (the single-expert backbones' field)."""
    from cast_mmaction.engine.checkpoint_check import (
        CheckpointMismatchError, check_checkpoint)
    small = _st_model(adapter_width=8)
    other = build_model(st_adapter_recognizer_cfg(
        embed_dim=2 * D, depth=DEPTH, num_heads=HEADS, num_frames=T,
        img_size=IMG, num_classes=CLASSES, adapter_width=8))
    with pytest.raises(CheckpointMismatchError,
                       match=r'model\.backbone\.expert\b'):
        check_checkpoint(small, {'state_dict': other.state_dict()})
    assert check_checkpoint(small, {'state_dict': small.state_dict()}) > 0


def test_st_adapter_sampling_as_their_loader():
    """STAdapterSample (the ST-Adapter recipes): their frame indices,
    computed by hand for a few video lengths."""
    import numpy as np
    from cast_mmaction.datasets.transforms.clip_peft_sampling import (
        STAdapterSample, st_adapter_indices)
    # K400, every 16th frame: 3 test windows from the start to the end
    idx = st_adapter_indices(200, 8, 16, num_clips=3, test_mode=True)
    starts = [0, 44, 87]  # slide 200 - 113 = 87; round(43.5) = 44
    assert idx.tolist() == [s + 16 * k for s in starts for k in range(8)]
    assert idx.max() == 199
    # a short video: padded with its last frame
    assert st_adapter_indices(50, 8, 16, num_clips=3, test_mode=True
                              ).tolist() == ([0, 16, 32, 48] + [49] * 4) * 3
    assert st_adapter_indices(50, 8, 16).tolist() == [0, 16, 32, 48] + \
        [48] * 4
    rng = np.random.RandomState(0)
    for _ in range(20):
        idx = st_adapter_indices(200, 8, 16, rng=rng)
        assert 0 <= idx[0] < 200 - 112 and np.all(np.diff(idx) == 16)
    # SSv2, segments: (n - 1) / 8 = 4.875 -> bounds round(4.875 i)
    bounds = [(0, 5), (5, 10), (10, 15), (15, 20), (20, 24), (24, 29),
              (29, 34), (34, 39)]
    assert st_adapter_indices(40, 8, 0, test_mode=True).tolist() == [
        (a + b) // 2 for a, b in bounds]
    for _ in range(20):
        idx = st_adapter_indices(40, 8, 0, rng=rng)
        assert all(a <= i <= b for i, (a, b) in zip(idx, bounds))
    t = STAdapterSample(8, 16, num_clips=3, test_mode=True)
    out = t.transform(dict(total_frames=200, start_index=0))
    assert out['num_clips'] == 3 and out['clip_len'] == 8
    assert len(out['frame_inds']) == 24
    with pytest.raises(ValueError, match='one temporal view'):
        STAdapterSample(8, 0, num_clips=3, test_mode=True)


@pytest.mark.parametrize('recipe,views', [
    ('st_adapter_k400.py', 3), ('st_adapter_ssv2.py', 3),
    ('aim_k400.py', 3), ('aim_ssv2.py', 3)])
def test_recipe_pipelines_run(tmp_path, recipe, views):
    """Every pipeline of the recipes on a short synthetic video: 8 frames
    of 224 px, the test views of the published protocol (3 x 1 or 1 x 3)."""
    import copy
    import numpy as np
    from mmengine.config import Config
    from mmengine.dataset import Compose
    from cast_mmaction.datasets.synthetic import render_clip, write_mp4
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', recipe))
    video = str(tmp_path / 'v.mp4')
    write_mp4(video, render_clip(np.random.default_rng(0), 0, 0, 40, 64))
    for loader, n in (('train_dataloader', 1), ('val_dataloader', 1),
                      ('test_dataloader', views)):
        pipe = Compose(copy.deepcopy(cfg[loader].dataset.pipeline))
        np.random.seed(0)
        out = pipe(dict(filename=video, label=1, start_index=0,
                        modality='RGB'))
        assert tuple(out['inputs'].shape) == (n, 3, 8, 224, 224), loader


def test_aim_drop_path_draws_per_token_position():
    """The official layout (tokens, batch x frames, C) makes timm's DropPath
    drop a token position for every clip and frame at once; ours keeps
    that. Eval mode: no drop."""
    model = _aim_model(drop_path_rate=0.9)
    bb = model.backbone.train()
    torch.manual_seed(0)
    x = torch.ones(B * T, 197, D)  # 197 token positions: some kept
    base = torch.full_like(x, 2.0)
    # x + drop(y) at p = 0.9 in the last layer, on ones added to twos:
    # 2 where dropped, 2 + 1 / 0.9 kept
    y = bb._add_drop(DEPTH - 1, base, x) - 2
    per_token = y[:, :, 0]  # (B*T, tokens)
    assert torch.equal(per_token, per_token[:1].expand_as(per_token))
    keep = 1 - bb.drop_path[DEPTH - 1].p
    kept = float(torch.ones(()).div_(keep).add_(2.0)) - 2
    assert {float(v) for v in per_token.unique()} <= {0.0, kept}
    assert (per_token == 0).any() and (per_token != 0).any()
    assert torch.equal(y, y[:, :, :1].expand_as(y))
    assert y.is_contiguous()  # laid out as x, not as the transposed draw
    bb.eval()
    assert torch.equal(bb._add_drop(DEPTH - 1, base, x), base + x)
    assert torch.equal(bb._add_drop(DEPTH - 1, base, x, 0.5),
                       base + 0.5 * x)


def test_meta_values_the_authors_code_reads_its_own_way():
    """Found with dumps of the authors' code at other settings: their
    ST-Adapter puts adapters in every block when adapter_layers names more
    (ours refused the dump), their AIM builds a second temporal adapter for
    num_tadapter == 2 only (3 acts as 1), and an MSCA mlp_dim that
    mlp_dim / hidden * hidden truncates below (490 at 120) keeps its width."""
    import json
    from cast_mmaction.models.backbones.msca_vit import FrameViTBlock
    from cast_mmaction.parity.peft import (aim_sizes_from_meta,
                                           st_adapter_sizes_from_meta)
    st = json.load(open(os.path.join(shared_fixture(
        'st_adapter_pre_attn_mlp'), 'meta.json')))
    st['constructor_args'] = dict(st['constructor_args'], adapter_layers=7)
    cfg = st_adapter_sizes_from_meta(st_adapter_recognizer_cfg(), st)
    assert cfg['backbone']['adapter_layers'] == st['constructor_args'][
        'layers']
    aim = json.load(open(os.path.join(shared_fixture('aim_tadapter1'),
                                      'meta.json')))
    for given, built in ((3, 1), (2, 2), (1, 1), (0, 1)):
        aim['constructor_args'] = dict(aim['constructor_args'],
                                       num_tadapter=given)
        cfg = aim_sizes_from_meta(aim_recognizer_cfg(), aim)
        assert cfg['backbone']['num_tadapter'] == built, given
    block = FrameViTBlock(120, 8, mlp_ratio=490 / 120)
    assert block.mlp.fc1.out_features == 490
    assert FrameViTBlock(8, 2, mlp_ratio=2.5).mlp.fc1.out_features == 20
