"""MSCA, TokenShift and the frame-wise ViT: parity with the authors' dumps,
the shift semantics, cost, weight loading and training through the Runner.

Run: .venv/bin/pytest -x -q tests/test_msca.py
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cast_mmaction.checkpoints import (CONVERTERS, convert_official_msca,
                                       detect_kind, load_official_msca,
                                       load_timm_vit, read_timm_vit)
from cast_mmaction.models.backbones.msca_vit import (MSCAViT,
                                                     frame_vit_recognizer_cfg,
                                                     shift_frames)
from cast_mmaction.models.layers import resize_grid_embed
from cast_mmaction.parity import check_dump
from cast_mmaction.utils import build_model
from cast_mmaction.safe_load import load_checkpoint
from _metric_check import dump_evaluator, top1_of_dump
from conftest import ROOT, shared_fixture

TINY = dict(embed_dim=48, depth=2, num_heads=4, mlp_ratio=2.0, patch_size=8,
            img_size=32)
VARIANTS = ('q', 'k', 'v', 'kv', 'qkv')


def tiny(mode='plain', seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(TINY)
    args.update(kw)
    return MSCAViT(mode=mode, **args).eval()


def clip(b=1, t=5, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, t, size, size, generator=g)


# -- parity with the authors' code -------------------------------------------
@pytest.mark.parametrize('name', ['msca_kv', 'tokshift', 'vit_framewise'])
def test_reference_dump(name):
    rows = check_dump(shared_fixture(name))
    assert {r[0] for r in rows} == {'cls_score', 'frame_logits',
                                    'frame_cls_feature'}
    bad = [r for r in rows if not r[3]]
    assert not bad, f'{name}: outputs beyond tolerance: {bad}'


def test_dump_checkpoint_detected_and_fully_mapped():
    path = osp.join(shared_fixture('msca_kv'), 'official_checkpoint.pth')
    raw = load_checkpoint(path)
    assert detect_kind(raw['state_dict']) == 'msca'
    out, unmapped = convert_official_msca(raw)
    assert unmapped == []
    # 3 blocks x 12 tensors (q, k, v packed into one qkv), 4 embedding,
    # 2 final norm and 2 head tensors
    assert len(out) == 3 * 12 + 4 + 2 + 2
    w = out['backbone.blocks.1.attn.qkv.weight']
    sd = raw['state_dict']
    pre = 'module.base_model.transformer.encoder.layer.1.attn.'
    assert torch.equal(w[96:192], sd[pre + 'key.weight'])
    assert torch.equal(out['backbone.blocks.1.attn.qkv.bias'][192:],
                       sd[pre + 'value.bias'])


def test_official_checkpoint_needs_the_configured_sizes():
    path = osp.join(shared_fixture('msca_kv'), 'official_checkpoint.pth')
    model = build_model(frame_vit_recognizer_cfg(
        num_classes=7, embed_dim=96, depth=3, num_heads=12, mlp_ratio=4.0))
    with pytest.raises(ValueError, match='cls_head.fc_cls.weight'):
        load_official_msca(model, path)  # 10 classes in the file, 7 here
    # another input size: the position table is resized
    model = build_model(frame_vit_recognizer_cfg(
        num_classes=10, embed_dim=96, depth=3, num_heads=12, mlp_ratio=4.0,
        img_size=160))
    rep = load_official_msca(model, path)
    assert rep['notes'] and '(1, 101, 96)' in rep['notes'][0]


# -- the shifts ----------------------------------------------------------------
@pytest.mark.parametrize('mode,extra', [
    ('msca_heads', dict(shift_qkv=v)) for v in VARIANTS
] + [('msca_patches', dict(shift_qkv='kv')),
     ('msca_patches', dict(shift_qkv='q', shift_tokens='all',
                           token_pattern='strided')),
     ('tokenshift', {})])
def test_zero_shift_is_the_plain_vit_exactly(mode, extra):
    plain = tiny('plain')
    x = clip()
    ref = plain(x)
    # shift_div=0: nothing shifted, but the shift code path still runs
    zero = tiny(mode, shift_div=0, **extra)
    zero.load_state_dict(plain.state_dict())
    assert torch.equal(zero(x), ref)
    # and a real shift does change the output
    shifted = tiny(mode, shift_div=4, **extra)
    shifted.load_state_dict(plain.state_dict())
    assert not torch.allclose(shifted(x), ref, atol=1e-4)


def _identity_proj(attn):
    with torch.no_grad():
        attn.proj.weight.copy_(torch.eye(attn.proj.weight.shape[0]))
        attn.proj.bias.zero_()


def _contexts(attn, x, t, heads):
    """Per-head attention contexts (T, N, H, d) of one clip."""
    with torch.no_grad():
        y = attn(x, t)
    return y.reshape(t, x.shape[1], heads, -1)


@pytest.mark.parametrize('variant', VARIANTS)
def test_perturbing_a_frame_reaches_only_designated_heads(variant):
    model = tiny('msca_heads', shift_div=4, shift_qkv=variant)
    attn = model.blocks[0].attn
    _identity_proj(attn)
    t, n, h, s = 5, 17, 4, 2
    x = torch.randn(t, n, 48)
    x2 = x.clone()
    x2[s] += torch.randn(n, 48)
    changed = (_contexts(attn, x, t, h) - _contexts(attn, x2, t, h)).abs()
    changed = changed.amax(-1) > 0  # (T, N, H)
    expect = torch.zeros(t, n, h, dtype=torch.bool)
    expect[s] = True
    expect[s - 1, :, 0] = True  # head 0 of frame s-1 reads frame s (t+1)
    expect[s + 1, :, 3] = True  # head 3 of frame s+1 reads frame s (t-1)
    if variant == 'qkv':  # heads 0 and 3 of frame s read only s+1 / s-1
        expect[s, :, 0] = expect[s, :, 3] = False
    assert torch.equal(changed, expect)


def test_patch_variant_shifts_only_the_designated_tokens():
    model = tiny('msca_patches', shift_div=4, shift_qkv='q')
    attn = model.blocks[0].attn
    fwd, bwd = attn.shift_fwd.tolist(), attn.shift_bwd.tolist()
    assert fwd == [1, 2, 3, 4] and bwd == [13, 14, 15, 16]  # 16 patches // 4
    _identity_proj(attn)
    t, n, s = 5, 17, 2
    x = torch.randn(t, n, 48)
    x2 = x.clone()
    x2[s] += torch.randn(n, 48)
    changed = (_contexts(attn, x, t, 4) - _contexts(attn, x2, t, 4)).abs()
    changed = changed.amax(-1) > 0
    expect = torch.zeros(t, n, 4, dtype=torch.bool)
    expect[s] = True
    expect[s - 1, fwd] = True  # the query tokens taken from frame s
    expect[s + 1, bwd] = True
    assert torch.equal(changed, expect)
    # K/V along tokens: the shifted tensor differs only at those tokens
    k = torch.randn(t, 4, n, 12)
    k2 = k.clone()
    k2[s] += 1
    idx = (torch.tensor(fwd), torch.tensor(bwd))
    d = (shift_frames(k, t, 1, *idx) - shift_frames(k2, t, 1, *idx)).abs()
    d = d.amax(dim=(1, 3)) > 0  # (T, N)
    e = torch.zeros(t, n, dtype=torch.bool)
    e[s] = True
    e[s, fwd] = e[s, bwd] = False  # at s these now hold s+1's / s-1's
    e[s - 1, fwd] = True
    e[s + 1, bwd] = True
    assert torch.equal(d, e)
    strided = tiny('msca_patches', shift_div=4, token_pattern='strided')
    assert strided.blocks[0].attn.shift_fwd.tolist() == [1, 5, 9, 13]
    assert strided.blocks[0].attn.shift_bwd.tolist() == [2, 6, 10, 14]


def test_tokenshift_moves_only_class_token_channels():
    model = tiny('tokenshift', shift_div=4)
    ts = model.blocks[0].token_shift
    t, n, s, f = 5, 17, 2, 12  # 48 channels // 4
    x = torch.randn(t, n, 48)
    x2 = x.clone()
    x2[s] += torch.randn(n, 48)
    changed = (ts(x, t) - ts(x2, t)).abs() > 0
    expect = torch.zeros(t, n, 48, dtype=torch.bool)
    expect[s] = True
    expect[s, 0, :2 * f] = False  # now frame s+1's / s-1's channels
    expect[s - 1, 0, :f] = True
    expect[s + 1, 0, f:2 * f] = True
    assert torch.equal(changed, expect)
    y = ts(x, t)  # clip ends are zero-filled
    assert torch.all(y[t - 1, 0, :f] == 0) and torch.all(y[0, 0, f:2 * f] == 0)
    assert torch.equal(y[:, 1:], x[:, 1:])


@pytest.mark.parametrize('variant', VARIANTS)
def test_boundary_heads_see_zeros(variant):
    model = tiny('msca_heads', shift_div=4, shift_qkv=variant)
    attn = model.blocks[0].attn
    _identity_proj(attn)
    t, n = 4, 17
    x = torch.randn(2 * t, n, 48)  # two clips: ends inside the batch too
    ctx = _contexts(attn, x, t, 4).reshape(2, t, n, 4, 12)
    with torch.no_grad():
        v = attn.qkv(x)[..., 96:].reshape(2, t, n, 4, 12)
    # head 0 of the last frame has no t+1, head 3 of the first frame no t-1
    for frame, head in ((t - 1, 0), (0, 3)):
        got = ctx[:, frame, :, head]
        if 'v' in variant:  # zero values -> zero context
            assert torch.all(got == 0)
        else:  # zero query or zero keys -> uniform attention over the frame
            mean_v = v[:, frame, :, head].mean(1, keepdim=True)
            torch.testing.assert_close(got, mean_v.expand_as(got),
                                       rtol=1e-5, atol=1e-6)
    # interior frames are not zero
    assert ctx[:, 1, :, 0].abs().max() > 0


@pytest.mark.parametrize('mode,depth,reach', [
    ('plain', 2, 0), ('msca_heads', 2, 2), ('msca_patches', 2, 2),
    ('tokenshift', 1, 1), ('tokenshift', 2, 3)])
def test_temporal_receptive_field(mode, depth, reach):
    """MSCA reaches one frame further per block; TokenShift shifts twice
    per block (before the attention and before the MLP) but its first shift
    moves a class token that no pixel has touched yet: 2 x depth - 1 frames.
    The plain ViT sees one frame."""
    model = tiny(mode, depth=depth, shift_div=4)
    t, s = 7, 3
    x = clip(t=t)
    x2 = x.clone()
    x2[:, :, s] += 1.0
    with torch.no_grad():
        d = (model(x) - model(x2)).abs().amax(-1)[0]  # (T,)
    changed = (d > 0).tolist()
    assert changed == [abs(i - s) <= reach for i in range(t)]


def _flops(model, x):
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            model(x)
    counts = {str(k): v for k, v in fc.get_flop_counts()['Global'].items()}
    return fc.get_total_flops(), counts


def test_no_new_parameters_and_same_flops():
    plain = tiny('plain')
    x = clip(t=4)
    flops, counts = _flops(plain, x)
    assert any('scaled_dot_product' in k for k in counts), counts
    n_params = sum(p.numel() for p in plain.parameters())
    keys = {k: v.shape for k, v in plain.state_dict().items()}
    others = [tiny('msca_heads', shift_div=4, shift_qkv=v) for v in VARIANTS]
    others += [tiny('msca_patches', shift_div=4), tiny('tokenshift',
                                                       shift_div=4)]
    for m in others:
        assert sum(p.numel() for p in m.parameters()) == n_params
        assert {k: v.shape for k, v in m.state_dict().items()} == keys
        f, c = _flops(m, x)
        assert f == flops and c == counts


def test_vit_b_names_and_size_match_timm():
    timm = pytest.importorskip('timm')
    with torch.device('meta'):  # shapes only: no memory, no init cost
        ref = timm.create_model('vit_base_patch16_224', pretrained=False,
                                num_classes=0)
        ours = MSCAViT(arch='base', mode='msca_heads', shift_div=12)
    one = MSCAViT(arch='base', depth=1, mode='msca_heads', shift_div=12)
    assert one.blocks[0].attn.shift_fwd.tolist() == [0]  # heads from t+1
    assert one.blocks[0].attn.shift_bwd.tolist() == [11]  # heads from t-1
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert a == b
    assert sum(p.numel() for p in ours.parameters()) == 85_798_656


# -- ImageNet weights ------------------------------------------------------------
def _timm_tiny(img_size=32, num_classes=0, seed=0):
    timm = pytest.importorskip('timm')
    torch.manual_seed(seed)
    m = timm.create_model('vit_base_patch16_224', pretrained=False,
                          img_size=img_size, patch_size=8, embed_dim=48,
                          depth=2, num_heads=4, mlp_ratio=2.0,
                          num_classes=num_classes).eval()
    with torch.no_grad():  # timm zero-inits biases; make them count
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def _timm_frame_tokens(m, x):
    b, c, t, h, w = x.shape
    with torch.no_grad():
        feats = m.forward_features(x.transpose(1, 2).reshape(b * t, c, h, w))
    return feats[:, 0].reshape(b, t, -1)


@pytest.mark.parametrize('fmt', ['safetensors', 'bin'])
def test_timm_state_dict_loads(tmp_path, fmt):
    ref = _timm_tiny(num_classes=10)
    sd = ref.state_dict()
    path = str(tmp_path / f'vit.{fmt}')
    if fmt == 'safetensors':
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        torch.save(sd, path)
    ours = tiny('msca_heads', shift_div=0, pretrained=path)
    dropped = load_timm_vit(ours, path)
    assert sorted(dropped) == ['head.bias', 'head.weight']
    x = clip(b=2, t=3)
    torch.testing.assert_close(ours(x), _timm_frame_tokens(ref, x),
                               rtol=1e-5, atol=1e-5)
    # the Runner path: init_weights() loads `pretrained`
    other = tiny('plain', seed=5, pretrained=path)
    other.init_weights()
    assert torch.equal(other.pos_embed, ref.pos_embed)


def _to_jax(sd, heads):
    """timm state dict -> arrays named as in the original ViT .npz."""
    def a(t):
        return t.detach().numpy().astype(np.float32)

    d = sd['cls_token'].shape[-1]
    out = {
        'embedding/kernel': a(sd['patch_embed.proj.weight'].permute(2, 3, 1, 0)),
        'embedding/bias': a(sd['patch_embed.proj.bias']),
        'cls': a(sd['cls_token']),
        'Transformer/posembed_input/pos_embedding': a(sd['pos_embed']),
        'Transformer/encoder_norm/scale': a(sd['norm.weight']),
        'Transformer/encoder_norm/bias': a(sd['norm.bias']),
    }
    i = 0
    while f'blocks.{i}.norm1.weight' in sd:
        r, p = f'Transformer/encoderblock_{i}/', f'blocks.{i}.'
        mha = r + 'MultiHeadDotProductAttention_1/'
        out[r + 'LayerNorm_0/scale'] = a(sd[p + 'norm1.weight'])
        out[r + 'LayerNorm_0/bias'] = a(sd[p + 'norm1.bias'])
        out[r + 'LayerNorm_2/scale'] = a(sd[p + 'norm2.weight'])
        out[r + 'LayerNorm_2/bias'] = a(sd[p + 'norm2.bias'])
        w = sd[p + 'attn.qkv.weight'].chunk(3)
        b = sd[p + 'attn.qkv.bias'].chunk(3)
        for j, name in enumerate(('query', 'key', 'value')):
            out[mha + name + '/kernel'] = a(w[j].t().reshape(d, heads, -1))
            out[mha + name + '/bias'] = a(b[j].reshape(heads, -1))
        out[mha + 'out/kernel'] = a(sd[p + 'attn.proj.weight'].t()
                                    .reshape(heads, -1, d))
        out[mha + 'out/bias'] = a(sd[p + 'attn.proj.bias'])
        for j, fc in enumerate(('fc1', 'fc2')):
            out[r + f'MlpBlock_3/Dense_{j}/kernel'] = a(sd[p + f'mlp.{fc}.weight'].t())
            out[r + f'MlpBlock_3/Dense_{j}/bias'] = a(sd[p + f'mlp.{fc}.bias'])
        i += 1
    return out


def test_jax_npz_loads(tmp_path):
    from timm.models.vision_transformer import _load_weights
    ref = _timm_tiny()
    arrays = _to_jax(ref.state_dict(), heads=4)
    arrays['head/kernel'] = np.zeros((48, 5), np.float32)
    arrays['head/bias'] = np.zeros((5, ), np.float32)
    path = str(tmp_path / 'ViT-tiny.npz')
    np.savez(path, **arrays)
    # the file is a faithful JAX checkpoint: timm's own reader gets ref back
    check = _timm_tiny(seed=3)
    _load_weights(check, path)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(check.state_dict()[k], v)
    ours = tiny('tokenshift', shift_div=0)
    dropped = load_timm_vit(ours, path)
    assert sorted(dropped) == ['head.bias', 'head.weight']
    x = clip(b=1, t=3)
    torch.testing.assert_close(ours(x), _timm_frame_tokens(ref, x),
                               rtol=1e-5, atol=1e-5)
    # big_vision block names and the 'opt/target/' prefix
    renamed = {('opt/target/' + k).replace('MultiHeadDotProductAttention_1',
                                           'MultiHeadDotProductAttention_0')
               .replace('MlpBlock_3', 'MlpBlock_0')
               .replace('LayerNorm_2', 'LayerNorm_1'): v
               for k, v in arrays.items()}
    path2 = str(tmp_path / 'bv.npz')
    np.savez(path2, **renamed)
    sd2 = read_timm_vit(path2)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(sd2[k], v)


def test_position_embedding_resized(tmp_path):
    ref = _timm_tiny(img_size=32)
    path = str(tmp_path / 'vit.pth')
    torch.save({'state_dict': {'module.' + k: v
                               for k, v in ref.state_dict().items()}}, path)
    ours = tiny('plain', img_size=48)  # 6x6 patches instead of 4x4
    load_timm_vit(ours, path)
    assert ours.pos_embed.shape == (1, 37, 48)
    want = resize_grid_embed(ref.pos_embed.detach(), (4, 4), (6, 6), 1)
    assert torch.equal(ours.pos_embed.detach(), want)
    assert torch.equal(ours.pos_embed[:, 0], ref.pos_embed[:, 0])
    ours(clip(t=2, size=48))  # runs at the new size


def test_wrong_weight_files_give_clear_errors(tmp_path):
    ours = tiny('msca_heads', shift_div=4)
    with pytest.raises(FileNotFoundError, match='pretrained'):
        load_timm_vit(ours, str(tmp_path / 'missing.safetensors'))
    clip_like = str(tmp_path / 'clip.pt')
    torch.save({'conv1.weight': torch.zeros(48, 3, 8, 8),
                'transformer.resblocks.0.ln_1.weight': torch.zeros(48)},
               clip_like)
    with pytest.raises(ValueError, match='not a timm VisionTransformer.*CLIP'):
        load_timm_vit(ours, clip_like)
    official = osp.join(shared_fixture('msca_kv'), 'official_checkpoint.pth')
    with pytest.raises(ValueError, match='convert_checkpoint'):
        load_timm_vit(ours, official)
    bad_npz = str(tmp_path / 'bad.npz')
    np.savez(bad_npz, foo=np.zeros(3))
    with pytest.raises(ValueError, match='not an original ViT .npz'):
        load_timm_vit(ours, bad_npz)
    not_npz = str(tmp_path / 'broken.npz')
    with open(not_npz, 'w') as f:
        f.write('hello')
    with pytest.raises(ValueError, match='cannot read'):
        load_timm_vit(ours, not_npz)
    wide = _timm_tiny()
    path = str(tmp_path / 'vit.bin')
    torch.save(wide.state_dict(), path)
    with pytest.raises(ValueError, match='width 48.*arch'):
        load_timm_vit(tiny('plain', embed_dim=64), path)
    with pytest.raises(ValueError, match='has 2 blocks, the model 1'):
        load_timm_vit(tiny('plain', depth=1), path)
    with pytest.raises(ValueError, match='patch size'):
        load_timm_vit(tiny('plain', patch_size=16), path)
    with pytest.raises(ValueError, match='shift_qkv'):
        tiny('msca_heads', shift_qkv='kx')
    with pytest.raises(ValueError, match='shift_div >= 2'):
        tiny('msca_heads', shift_div=1)
    with pytest.raises(ValueError, match='img_size'):
        ours(clip(size=48))
    with pytest.raises(ValueError, match='not an authors'):
        convert_official_msca({'a': torch.zeros(1)})
    assert 'msca' in CONVERTERS


# -- training and testing through the Runner -----------------------------------
def _shrink_pipeline(pipeline, size):
    out = []
    for t in copy.deepcopy(pipeline):
        kind = t['type']
        if kind in ('SampleFrames', ):
            t.update(clip_len=4, frame_interval=2)
            if t.get('num_clips', 1) > 1:
                t['num_clips'] = 2
        elif kind == 'UniformSample':
            t['clip_len'] = 4
        elif kind == 'RandomRescale':
            t['scale_range'] = (size, size + 8)
        elif kind == 'RandomCrop':
            t['size'] = size
        elif kind == 'Resize':
            t['scale'] = (-1, size)
        elif kind == 'ThreeCrop':
            t['crop_size'] = size
        elif kind == 'mmcv.RandomApply':
            t['prob'] = 1.0  # make the colour jitter run
        out.append(t)
    return out


@pytest.fixture(scope='module')
def synthetic_videos(tmp_path_factory):
    from cast_mmaction.datasets import synthetic
    root = tmp_path_factory.mktemp('msca_videos')
    return synthetic.write_synthetic_video_dataset(
        str(root), num_train_per_class=2, num_val_per_class=1,
        num_frames=8, size=32, seed=0)


@pytest.mark.parametrize('config,mode', [
    ('msca_k400.py', 'msca_heads'), ('tokshift_k400.py', 'tokenshift'),
    ('vit_framewise_k400.py', 'plain'), ('msca_ssv2.py', 'msca_heads')])
def test_train_and_test_from_config(tmp_path, synthetic_videos, config, mode):
    from mmengine.config import Config
    from mmengine.runner import Runner

    data = synthetic_videos
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    assert cfg.model.backbone.mode == mode
    assert cfg.model.backbone.arch == 'base' and cfg.model.cls_head.init_std == 0
    cfg.model.backbone.update(embed_dim=48, depth=1, num_heads=4,
                              patch_size=8, img_size=32, pretrained=None)
    cfg.model.cls_head.update(num_classes=data['num_classes'],
                              in_channels=48, init_std=0.02)
    for split, ann in (('train', data['train_ann']), ('val', data['val_ann']),
                       ('test', data['val_ann'])):
        dl = cfg[f'{split}_dataloader']
        dl.update(batch_size=4 if split == 'train' else 2, num_workers=0,
                  persistent_workers=False)
        dl.dataset.update(ann_file=ann,
                          data_prefix=dict(video=data['root']))
        dl.dataset.pipeline = _shrink_pipeline(dl.dataset.pipeline, 32)
    cfg.train_cfg.max_epochs = 1
    cfg.param_scheduler[0].update(end=1, milestones=[1])
    cfg.optim_wrapper.accumulative_counts = 2
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(tmp_path)
    cfg.experiment_name = f'msca_{mode}_{config}'
    dump = tmp_path / 'preds.pkl'
    cfg.test_evaluator = dump_evaluator(cfg.test_evaluator, dump)
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    after = runner.model.state_dict()
    for k in ('cls_head.fc_cls.weight', 'backbone.blocks.0.attn.qkv.weight',
              'backbone.pos_embed'):
        assert not torch.equal(before[k], after[k]), f'{k} did not train'
    ckpt = osp.join(str(tmp_path), 'epoch_1.pth')
    assert osp.isfile(ckpt)
    metrics = runner.test()
    top1, count = top1_of_dump(dump)
    with open(data['val_ann']) as f:
        assert count == len(f.read().split('\n')) - 1  # one per val video
    assert metrics['acc/top1'] == pytest.approx(top1)
    if config != 'msca_k400.py':
        return
    # the checkpoint restores the trained model in a fresh runner
    cfg2 = copy.deepcopy(cfg)
    cfg2.load_from = ckpt
    cfg2.work_dir = str(tmp_path / 'test')
    cfg2.experiment_name += '_test'
    metrics2 = Runner.from_cfg(cfg2).test()
    assert metrics2['acc/top1'] == pytest.approx(metrics['acc/top1'])


def test_colour_jitter_with_negative_hue():
    """The recipe's hue jitter (-0.5..0.5) needs the compat fix of
    mmaction2's ColorJitter under NumPy 2."""
    from mmaction.datasets.transforms import ColorJitter
    imgs = [np.random.randint(0, 255, (8, 8, 3)).astype(np.uint8)
            for _ in range(2)]
    cj = ColorJitter(brightness=(1.0, 1.0), contrast=(1.0, 1.0),
                     saturation=(1.0, 1.0), hue=(-0.5, -0.4))
    out = cj.transform(dict(imgs=imgs))['imgs']
    assert len(out) == 2 and out[0].shape == (8, 8, 3)
    assert not np.array_equal(out[0].astype(np.uint8), imgs[0])


def test_configs_build_the_published_models():
    from mmengine.config import Config
    want = {'msca_k400.py': ('msca_heads', 12, 400),
            'tokshift_k400.py': ('tokenshift', 4, 400),
            'vit_framewise_k400.py': ('plain', 12, 400),
            'msca_ssv2.py': ('msca_heads', 12, 174)}
    for name, (mode, div, classes) in want.items():
        cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
        bb, head = cfg.model.backbone, cfg.model.cls_head
        assert (bb.mode, bb.shift_div, head.num_classes) == (mode, div, classes)
        assert cfg.model.data_preprocessor.mean == [127.5] * 3
        opt = cfg.optim_wrapper
        assert opt.optimizer.type == 'SGD' and opt.optimizer.lr == 0.1
        assert opt.optimizer.momentum == 0.9 and opt.optimizer.weight_decay == 0
        assert opt.clip_grad.max_norm == 1.0
        assert cfg.param_scheduler[0].milestones == [10, 15]
        assert cfg.train_cfg.max_epochs == 18 and head.label_smooth_eps == 0.1
        flips = [t for t in cfg.train_dataloader.dataset.pipeline
                 if t['type'] == 'Flip']
        assert bool(flips) == (name != 'msca_ssv2.py')
        test = {t['type']: t for t in cfg.test_dataloader.dataset.pipeline}
        assert 'ThreeCrop' in test
        if name == 'msca_ssv2.py':
            assert test['UniformSample']['clip_len'] == 8
        else:
            s = test['SampleFrames']
            assert (s['clip_len'], s['frame_interval'], s['num_clips']) == \
                (8, 32, 10)


if __name__ == '__main__':
    import sys
    sys.exit(pytest.main([__file__, '-q']))

