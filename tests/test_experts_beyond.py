"""Experts beyond the paper: any timm ViT as the spatial expert
(``TimmViTExpert``), VideoMAE V2 as the temporal expert
(``VideoMAEv2Expert``) and the config that pairs EVA-02-CLIP with VideoMAE V2
(docs/experts.md).

The timm tests build tiny versions of several timm families with timm
itself, save their state dicts, load them through the expert and compare
with timm's own ``forward_features`` / pooled features; the VideoMAE V2 tests
write the authors' checkpoint layout (OpenGVLab/VideoMAEv2
``models/modeling_finetune.py`` names and shapes) and compare with a
forward computed here from the raw tensors."""
import copy
import os.path as osp
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cast_mmaction.checkpoints.state_dict import fit_report
from cast_mmaction.models.presets import cast_recognizer_cfg
from cast_mmaction.utils import build_model, param_counts

timm = pytest.importorskip('timm')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = dict(embed_dim=64, depth=2, num_heads=4)

# name -> (timm model name, frame size, extra timm arguments, what it covers)
FAMILIES = {
    'siglip': ('vit_base_patch16_siglip_224', 32, {},
               'no class token, attention-pool head'),
    'eva02_clip': ('eva02_base_patch16_clip_224', 32, {},
                   'RoPE, SwiGLU, attention / MLP scale norms'),
    'eva02_mim': ('eva02_tiny_patch14_224', 28, {},
                  'patch 14, RoPE, packed SwiGLU, average pool + fc_norm'),
    'dinov2_reg4': ('vit_small_patch14_reg4_dinov2', 28, {},
                    '4 register tokens, layer scale, no pos for prefix'),
    'clip_quickgelu': ('vit_base_patch16_clip_quickgelu_224', 32, {},
                       'pre-transformer norm, QuickGELU'),
}


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _timm_reference(name, size, extra, seed=0):
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=0,
                              img_size=size, **TINY, **extra).eval()
    with torch.no_grad():  # make every parameter matter (no all-ones norms)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _save(state, path):
    if str(path).endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, str(path))
    return str(path)


def _timm_expert(name, size, extra, pretrained, num_frames=4, **kw):
    from cast_mmaction.models.experts import TimmViTExpert
    torch.manual_seed(123)  # another init than the reference
    return TimmViTExpert(name, pretrained=pretrained, img_size=size,
                         num_frames=num_frames, model_kwargs=extra or None,
                         **TINY, **kw)


def _frames(x, start=1, step=2):
    f = x[:, :, start::step]
    b, c, t, h, w = f.shape
    return f.transpose(1, 2).reshape(b * t, c, h, w)


# ---------------------------------------------------------------------------
# TimmViTExpert
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_timm_expert_equals_timm_forward(tmp_path, family):
    """Loaded from a saved timm state dict, the expert's per-frame tokens are
    timm's ``forward_features`` and its pooled feature timm's pre-logits
    feature averaged over the seen frames."""
    name, size, extra, _ = FAMILIES[family]
    ref = _timm_reference(name, size, extra)
    ext = '.safetensors' if family != 'eva02_clip' else '.pth'
    state = ref.state_dict()
    if family == 'dinov2_reg4':  # a DDP-wrapped file
        state = {'module.' + k: v for k, v in state.items()}
    if family == 'eva02_clip':  # open_clip's layout: timm trunk + text tower
        state = {'visual.trunk.' + k: v for k, v in state.items()}
        state['visual.head.proj.weight'] = torch.randn(32, 64)
        state['text.token_embedding.weight'] = torch.randn(10, 32)
    path = _save(state, tmp_path / f'w{ext}')
    expert = _timm_expert(name, size, extra, path).eval()
    x = torch.randn(2, 3, 4, size, size)
    with torch.no_grad():
        before = expert.features(x)
        expert.init_weights()
        got = expert.features(x)
        want = ref.forward_features(_frames(x))
        pooled = expert.forward_plain(x)
        want_pooled = ref.forward_head(want, pre_logits=True).reshape(
            2, 2, -1).mean(1)
    assert got.shape == want.shape == (
        4, ref.num_prefix_tokens + (size // expert.patch_size[0])**2, 64)
    assert _rel(before, want) > 1e-2  # the weights come from the file
    assert _rel(got, want) <= 1e-5
    assert _rel(pooled, want_pooled) <= 1e-5
    assert expert.num_prefix_tokens == ref.num_prefix_tokens
    # frozen: only the final norms stay trainable
    for n, p in expert.named_parameters():
        assert p.requires_grad == n.startswith(
            ('model.norm.', 'model.fc_norm.')), n


def test_timm_expert_post_norm_blocks(tmp_path):
    """timm's post-norm ``ResPostBlock`` (norm after the attention and the
    MLP) is driven the same way."""
    from timm.models.vision_transformer import ResPostBlock
    extra = dict(block_fn=ResPostBlock)
    ref = _timm_reference('vit_base_patch16_224', 32, extra)
    path = _save(ref.state_dict(), tmp_path / 'w.safetensors')
    expert = _timm_expert('vit_base_patch16_224', 32, extra, path).eval()
    expert.init_weights()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert _rel(expert.features(x), ref.forward_features(_frames(x))) \
            <= 1e-5


def _cast_cfg(family, clip_path=None, vmae=None, num_classes=3):
    """The tiny CAST recognizer with the timm expert as ``clip`` (and a
    VideoMAE V2 ``vmae`` of the same patch grid)."""
    name, size, extra, _ = FAMILIES[family]
    patch = 14 if size == 28 else 16
    cfg = cast_recognizer_cfg(num_classes=num_classes, num_frames=4,
                              img_size=size, patch_size=patch, **TINY)
    bb = cfg['backbone']
    bb['experts']['clip'] = dict(
        type='TimmViTExpert', model_name=name, pretrained=clip_path,
        frame_start=1, frame_step=2, model_kwargs=extra or None, **TINY)
    bb['experts']['vmae'] = vmae or dict(
        type='VideoMAEv2Expert', arch='base', patch_size=patch, **TINY)
    return cfg


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_cast_with_timm_expert_links_off_is_the_timm_feature(tmp_path,
                                                             family):
    """In the CAST backbone with its links removed and the adapters fresh
    (zero-initialised), the spatial stream is timm's own feature."""
    name, size, extra, _ = FAMILIES[family]
    ref = _timm_reference(name, size, extra)
    path = _save(ref.state_dict(), tmp_path / 'w.safetensors')
    cfg = _cast_cfg(family, path)
    cfg['backbone']['links'] = []
    model = build_model(cfg).eval()
    model.init_weights()
    x = torch.randn(2, 3, 4, size, size)
    with torch.no_grad():
        spatial = model.backbone(x)[0]
        want = ref.forward_head(ref.forward_features(_frames(x)),
                                pre_logits=True).reshape(2, 2, -1).mean(1)
    assert _rel(spatial, want) <= 1e-5


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_cast_training_step_with_timm_expert(tmp_path, family):
    """One CAST training step (loss, backward, AdamW step) with the timm
    expert: gradients reach the adapters, links, head and the experts'
    declared trainable norms only; the frozen weights do not move; the link
    carries information between the streams."""
    from mmengine.optim import OptimWrapper
    from mmaction.structures import ActionDataSample
    name, size, extra, _ = FAMILIES[family]
    ref = _timm_reference(name, size, extra)
    path = _save(ref.state_dict(), tmp_path / 'w.safetensors')
    torch.manual_seed(0)
    model = build_model(_cast_cfg(family, path)).train()
    model.init_weights()
    with torch.no_grad():  # move zero-init parts so every gradient flows
        for n, p in model.named_parameters():
            if p.requires_grad and p.ndim == 2 and p.abs().sum() == 0:
                p.normal_(0, 0.02)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters()
                 if p.requires_grad}
    assert frozen and trainable
    samples = []
    for i in range(2):
        ds = ActionDataSample()
        ds.set_gt_label(i)
        samples.append(ds)
    data = dict(inputs=[torch.randn(1, 3, 4, size, size) for _ in range(2)],
                data_samples=samples)
    wrapper = OptimWrapper(torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3))
    losses = model.train_step(data, wrapper)
    assert torch.isfinite(losses['loss_cls'])
    allowed = ('backbone.links.', 'backbone.attn_adapters.',
               'backbone.mlp_adapters.', 'cls_head.',
               'backbone.experts.clip.model.norm.',
               'backbone.experts.clip.model.fc_norm.',
               'backbone.experts.vmae.fc_norm.')
    for n, p in model.named_parameters():
        if n in frozen:
            assert p.grad is None, n
            assert torch.equal(p, frozen[n]), n
        else:
            assert n.startswith(allowed), n
    moved = [n for n, p in model.named_parameters()
             if n in trainable and not torch.equal(p, trainable[n])]
    assert any(n.startswith('backbone.links.') for n in moved)
    assert any(n.startswith('backbone.attn_adapters.clip.') for n in moved)
    assert any(n.startswith('backbone.mlp_adapters.clip.') for n in moved)
    # the link is live: the spatial stream changes when a frame only the
    # temporal expert sees changes
    model.eval()
    x = torch.randn(1, 3, 4, size, size)
    y = x.clone()
    y[:, :, 0] += 3.0  # frame 0: seen by VideoMAE, not by the timm expert
    with torch.no_grad():
        assert not torch.allclose(model.backbone(x)[0], model.backbone(y)[0])


def test_timm_expert_declarations():
    """FSDP units, layer ids and stream role come from the expert's
    declarations."""
    from timm.layers import Attention, Mlp
    from timm.models.eva import EvaAttention

    from cast_mmaction.engine.strategies import fsdp_units
    from cast_mmaction.inference import stream_info
    units = fsdp_units()
    assert all(isinstance(u, type) for u in units)
    assert {Attention, EvaAttention, Mlp} <= set(units)
    cfg = _cast_cfg('dinov2_reg4')
    model = build_model(cfg)
    expert = model.backbone.experts['clip']
    assert expert.get_layer_id('model.pos_embed', 2) == 0
    assert expert.get_layer_id('model.reg_token', 2) == 0
    assert expert.get_layer_id('model.blocks.1.mlp.fc1.weight', 2) == 2
    assert expert.get_layer_id('model.norm.weight', 2) == 3
    from cast_mmaction.engine.strategies import cast_fsdp_wrap_policy
    wrapped = {n for n, m in model.named_modules()
               if cast_fsdp_wrap_policy(m, False, 10**9)}
    for i in range(2):  # the modules whose forward the backbone calls
        for part in ('attn', 'mlp'):
            assert f'backbone.experts.clip.model.blocks.{i}.{part}' in wrapped
    assert [r[:2] for r in stream_info(model)] == [('spatial', 'clip'),
                                                   ('temporal', 'vmae')]


def test_timm_expert_errors(tmp_path):
    from cast_mmaction.models.experts import TimmViTExpert
    with pytest.raises(ValueError, match='model_name'):
        TimmViTExpert('no_such_vit_xyz', img_size=32, **TINY)
    with pytest.raises(TypeError, match='supported are timm'):
        TimmViTExpert('resnet18')
    with pytest.raises(ValueError, match='img_size'):
        TimmViTExpert('vit_base_patch16_224', img_size=30, **TINY)
    with pytest.raises(ValueError, match='model_kwargs.pretrained'):
        TimmViTExpert('vit_base_patch16_224', img_size=32,
                      model_kwargs=dict(pretrained=True), **TINY)
    e = _timm_expert('vit_base_patch16_224', 32, {}, None)
    with pytest.raises(ValueError, match='set the model img_size to 64'):
        e.embed(torch.randn(1, 3, 4, 64, 64))
    # a video checkpoint given to the image expert
    path = _save({'encoder.patch_embed.proj.weight':
                  torch.zeros(64, 3, 2, 16, 16)}, tmp_path / 'v.pth')
    e.pretrained = path
    with pytest.raises(ValueError, match='timm could not convert|'
                                         'does not fit'):
        e.init_weights()
    path = _save({'fc.weight': torch.zeros(2, 2)}, tmp_path / 'r.pth')
    e.pretrained = path
    with pytest.raises(ValueError, match='not a ViT image model'):
        e.init_weights()
    # another width: a shape mismatch naming the key
    other = timm.create_model('vit_base_patch16_224', pretrained=False,
                              num_classes=0, img_size=32, embed_dim=32,
                              depth=2, num_heads=4)
    e.pretrained = _save(other.state_dict(), tmp_path / 'o.safetensors')
    with pytest.raises(ValueError, match='shape mismatches'):
        e.init_weights()


# ---------------------------------------------------------------------------
# VideoMAE V2
# ---------------------------------------------------------------------------
def _v2_state(dim, depth, heads, patch, tubelet, hidden, layer_scale=False,
              classes=710, seed=0, make=torch.randn):
    """A state dict with the names and shapes of OpenGVLab/VideoMAEv2
    ``VisionTransformer`` (models/modeling_finetune.py)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape, scale=0.2, shift=0.0):
        if make is not torch.randn:
            return make(*shape)
        return shift + scale * torch.randn(*shape, generator=g)

    sd = {'patch_embed.proj.weight': t(dim, 3, tubelet, patch, patch),
          'patch_embed.proj.bias': t(dim)}
    for i in range(depth):
        p = f'blocks.{i}.'
        sd.update({
            p + 'norm1.weight': t(dim, shift=1.0), p + 'norm1.bias': t(dim),
            p + 'attn.q_bias': t(dim), p + 'attn.v_bias': t(dim),
            p + 'attn.qkv.weight': t(3 * dim, dim),
            p + 'attn.proj.weight': t(dim, dim), p + 'attn.proj.bias': t(dim),
            p + 'norm2.weight': t(dim, shift=1.0), p + 'norm2.bias': t(dim),
            p + 'mlp.fc1.weight': t(hidden, dim), p + 'mlp.fc1.bias':
                t(hidden),
            p + 'mlp.fc2.weight': t(dim, hidden), p + 'mlp.fc2.bias': t(dim)})
        if layer_scale:
            sd[p + 'gamma_1'] = t(dim, shift=0.5)
            sd[p + 'gamma_2'] = t(dim, shift=0.5)
    sd.update({'fc_norm.weight': t(dim, shift=1.0), 'fc_norm.bias': t(dim),
               'head.weight': t(classes, dim), 'head.bias': t(classes)})
    return sd


def _sinusoid(n, d):
    """The fixed table of VideoMAE V2 ``get_sinusoid_encoding_table``."""
    pos = np.arange(n)[:, None].astype(np.float64)
    j = np.arange(d)[None, :]
    angle = pos / np.power(10000, 2 * (j // 2) / d)
    angle[:, 0::2] = np.sin(angle[:, 0::2])
    angle[:, 1::2] = np.cos(angle[:, 1::2])
    return torch.tensor(angle, dtype=torch.float32)


def _v2_reference(sd, x, heads, tubelet, patch, eps=1e-6):
    """The V2 fine-tuning forward (mean-pooling variant) from raw tensors."""
    dim = sd['patch_embed.proj.weight'].shape[0]
    x = F.conv3d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                 stride=(tubelet, patch, patch)).flatten(2).transpose(1, 2)
    x = x + _sinusoid(x.shape[1], dim)
    depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks'))
    b, n, _ = x.shape
    for i in range(depth):
        p = f'blocks.{i}.'
        h = F.layer_norm(x, (dim, ), sd[p + 'norm1.weight'],
                         sd[p + 'norm1.bias'], eps)
        bias = torch.cat([sd[p + 'attn.q_bias'],
                          torch.zeros_like(sd[p + 'attn.v_bias']),
                          sd[p + 'attn.v_bias']])
        qkv = (h @ sd[p + 'attn.qkv.weight'].t() + bias).reshape(
            b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = ((q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)).softmax(-1)
        a = (att @ v).transpose(1, 2).reshape(b, n, -1)
        a = a @ sd[p + 'attn.proj.weight'].t() + sd[p + 'attn.proj.bias']
        if p + 'gamma_1' in sd:
            a = sd[p + 'gamma_1'] * a
        x = x + a
        h = F.layer_norm(x, (dim, ), sd[p + 'norm2.weight'],
                         sd[p + 'norm2.bias'], eps)
        h = F.gelu(h @ sd[p + 'mlp.fc1.weight'].t() + sd[p + 'mlp.fc1.bias'])
        h = h @ sd[p + 'mlp.fc2.weight'].t() + sd[p + 'mlp.fc2.bias']
        if p + 'gamma_2' in sd:
            h = sd[p + 'gamma_2'] * h
        x = x + h
    return F.layer_norm(x.mean(1), (dim, ), sd['fc_norm.weight'],
                        sd['fc_norm.bias'], eps)


# (V2 arch the sizes imitate, expert kwargs, state kwargs, file wrapper)
V2_CASES = {
    'base_distilled': (dict(arch='base', embed_dim=64, depth=2, num_heads=4),
                       dict(dim=64, depth=2, heads=4, patch=16, tubelet=2,
                            hidden=256), 'module'),
    # giant-like: patch 14, MLP 48/11 x width, compiled (_orig_mod.) keys
    'giant_like': (dict(arch='giant', embed_dim=88, depth=2, num_heads=2),
                   dict(dim=88, depth=2, heads=2, patch=14, tubelet=2,
                        hidden=384), 'compiled'),
    'layer_scale': (dict(arch='base', embed_dim=64, depth=2, num_heads=4,
                         init_values=0.1),
                    dict(dim=64, depth=2, heads=4, patch=16, tubelet=2,
                         hidden=256, layer_scale=True), 'model'),
}


def _write_v2(sd, wrapper, path):
    if wrapper == 'compiled':
        sd = {'module': {'_orig_mod.' + k: v for k, v in sd.items()}}
    else:
        sd = {wrapper: sd}
    torch.save(sd, str(path))
    return str(path)


@pytest.mark.parametrize('case', sorted(V2_CASES))
def test_videomae_v2_expert_equals_reference(tmp_path, case):
    from cast_mmaction.models.experts import VideoMAEv2Expert
    ekw, skw, wrapper = V2_CASES[case]
    sd = _v2_state(**skw)
    size = 2 * skw['patch']
    path = _write_v2(sd, wrapper, tmp_path / 'v2.pth')
    torch.manual_seed(1)
    expert = VideoMAEv2Expert(img_size=size, num_frames=4, pretrained=path,
                              **ekw).eval()
    assert expert.patch_size == skw['patch']
    assert expert.mlp_hidden == skw['hidden']
    x = torch.randn(2, 3, 4, size, size)
    with torch.no_grad():
        before = expert.forward_plain(x)
        expert.init_weights()
        got = expert.forward_plain(x)
        want = _v2_reference(sd, x, skw['heads'], skw['tubelet'],
                             skw['patch'])
    assert _rel(before, want) > 1e-2
    assert _rel(got, want) <= 1e-5
    assert {n for n, p in expert.named_parameters() if p.requires_grad} == {
        'fc_norm.weight', 'fc_norm.bias'}


def test_videomae_v2_base_is_videomae_v1_with_the_same_weights(tmp_path):
    """Without layer scale, V2-B is the VideoMAE expert's network."""
    from cast_mmaction.models.experts import VideoMAEExpert, VideoMAEv2Expert
    sd = _v2_state(64, 2, 4, 16, 2, 256)
    v2 = VideoMAEv2Expert(img_size=32, num_frames=4, **TINY,
                          pretrained=_write_v2(sd, 'module',
                                               tmp_path / 'a.pth')).eval()
    v2.init_weights()
    v1 = VideoMAEExpert(img_size=32, num_frames=4, **TINY).eval()
    v1.load_state_dict({k: v for k, v in sd.items()
                        if not k.startswith('head.')})
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(v1.forward_plain(x), v2.forward_plain(x),
                              rtol=0, atol=1e-6)


@pytest.mark.parametrize('arch, dim, depth, heads, patch, hidden', [
    ('base', 768, 12, 12, 16, 3072),  # vit_b_k710_dl_from_giant.pth
    ('small', 384, 12, 6, 16, 1536),  # vit_s_k710_dl_from_giant.pth
    ('giant', 1408, 40, 16, 14, 6144),  # vit_g_hybrid_pt_1200e_*_ft
])
def test_videomae_v2_full_size_layouts(arch, dim, depth, heads, patch,
                                       hidden):
    """The released V2 models' key names and shapes fit the expert of that
    arch exactly (built on the meta device: no memory)."""
    from cast_mmaction.models.experts import VideoMAEv2Expert
    with torch.device('meta'):
        expert = VideoMAEv2Expert(arch=arch)
        sd = _v2_state(dim, depth, heads, patch, 2, hidden,
                       make=lambda *s: torch.empty(*s))
    rep = fit_report(expert, sd, ignore_unexpected=('head.', ))
    assert rep.ok, rep.message('V2 layout', arch)
    assert expert.num_heads == heads and expert.embed_dim // heads == (
        88 if arch == 'giant' else 64)


def test_videomae_v2_errors(tmp_path):
    from cast_mmaction.models.experts import VideoMAEv2Expert
    base = VideoMAEv2Expert(img_size=32, num_frames=4, **TINY)
    giant = _v2_state(88, 2, 2, 14, 2, 384)
    base.pretrained = _write_v2(giant, 'module', tmp_path / 'g.pth')
    with pytest.raises(ValueError) as e:
        base.init_weights()
    msg = str(e.value)
    assert 'embed_dim=88' in msg and 'patch_size=14' in msg
    assert 'model.backbone.experts.vmae' in msg
    # a layer-scale file into an expert without it
    ls = _v2_state(64, 2, 4, 16, 2, 256, layer_scale=True)
    base.pretrained = _write_v2(ls, 'module', tmp_path / 'ls.pth')
    with pytest.raises(ValueError, match='init_values'):
        base.init_weights()
    # an image model
    img = {'patch_embed.proj.weight': torch.zeros(64, 3, 16, 16)}
    base.pretrained = _write_v2(img, 'model', tmp_path / 'i.pth')
    with pytest.raises(ValueError, match='spatial expert'):
        base.init_weights()
    # cosine attention
    cos = _v2_state(64, 2, 4, 16, 2, 256)
    cos['blocks.0.attn.scale'] = torch.zeros(4, 1, 1)
    base.pretrained = _write_v2(cos, 'module', tmp_path / 'c.pth')
    with pytest.raises(ValueError, match='cosine attention'):
        base.init_weights()
    # a block missing
    part = _v2_state(64, 2, 4, 16, 2, 256)
    part = {k: v for k, v in part.items() if 'blocks.1.attn.proj' not in k}
    base.pretrained = _write_v2(part, 'module', tmp_path / 'p.pth')
    with pytest.raises(ValueError, match='blocks.1.attn.proj'):
        base.init_weights()
    with pytest.raises(ValueError, match='arch'):
        VideoMAEv2Expert(arch='tiny')


def test_videomae_v2_self_supervised_file(tmp_path):
    """A V2 pre-training file (``encoder.`` keys, encoder ``norm``, decoder)
    loads everything but ``fc_norm``, which keeps its initialisation."""
    from cast_mmaction.models.experts import VideoMAEv2Expert
    sd = _v2_state(64, 2, 4, 16, 2, 256)
    enc = {'encoder.' + k: v for k, v in sd.items()
           if not k.startswith(('fc_norm.', 'head.'))}
    enc['encoder.norm.weight'] = torch.ones(64)
    enc['decoder.blocks.0.norm1.weight'] = torch.ones(32)
    enc['mask_token'] = torch.zeros(1, 1, 32)
    expert = VideoMAEv2Expert(img_size=32, num_frames=4, **TINY,
                              pretrained=_write_v2(enc, 'model',
                                                   tmp_path / 'pt.pth'))
    expert.init_weights()
    assert torch.equal(expert.blocks[1].mlp.fc2.weight,
                       sd['blocks.1.mlp.fc2.weight'])
    assert torch.equal(expert.fc_norm.weight, torch.ones(64))


# ---------------------------------------------------------------------------
# the config
# ---------------------------------------------------------------------------
CONFIG = 'cast_ssv2_eva02_videomaev2.py'


def _load_config():
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, 'configs', CONFIG))


def test_config_builds_and_trains_at_tiny_size():
    """The config's model with the sizes overridden: the experts are the
    config's (timm EVA-02-CLIP, VideoMAE V2), a forward and a backward run."""
    cfg = _load_config()
    assert cfg.model.backbone.experts.clip.pretrained == cfg.clip_weights
    assert cfg.model.backbone.experts.vmae.pretrained == cfg.vmae_weights
    model_cfg = copy.deepcopy(cfg.model)
    bb = model_cfg.backbone
    bb.update(num_frames=4, img_size=32)
    for e in bb.experts.values():
        e.update(pretrained=None, **TINY)
    model_cfg.cls_head.update(in_channels=64, num_classes=5)
    model_cfg.data_preprocessor.pop('blending')
    model = build_model(model_cfg).train()
    clip, vmae = model.backbone.experts['clip'], model.backbone.experts['vmae']
    assert type(clip).__name__ == 'TimmViTExpert'
    assert clip.model_name == 'eva02_base_patch16_clip_224'
    assert type(vmae).__name__ == 'VideoMAEv2Expert'
    assert clip.token_grid == vmae.token_grid == (2, 4)
    with torch.no_grad():  # move zero-init parts (head) so gradients flow
        for p in model.parameters():
            if p.requires_grad and p.ndim == 2 and p.abs().sum() == 0:
                p.normal_(0, 0.02)
        model.backbone.attn_adapters['clip']['0'].fc2.weight.zero_()
    out = model.cls_head(model.backbone(torch.randn(2, 3, 4, 32, 32)))
    assert out.shape == (2, 5)
    # the recipe's optimiser: layer-wise lr decay groups over the trainable
    # parameters (the timm expert's final norm after the last layer)
    from mmengine.optim import build_optim_wrapper
    ow = copy.deepcopy(cfg.optim_wrapper)
    ow.update(type='OptimWrapper', accumulative_counts=1)
    ow.pop('loss_scale')
    ow.optimizer.fused = False
    wrapper = build_optim_wrapper(model, ow)
    groups = {p: g['lr_scale'] for g in wrapper.optimizer.param_groups
              for p in g['params']}
    norm = model.backbone.experts['clip'].model.norm.weight
    assert groups[norm] == 1.0
    assert set(groups) == {p for p in model.parameters() if p.requires_grad}
    wrapper.update_params(out.logsumexp(-1).sum())
    assert model.backbone.attn_adapters['clip']['0'].fc2.weight.abs().sum() \
        > 0


def _documented_counts():
    text = open(osp.join(ROOT, 'docs', 'experts.md'), encoding='utf-8').read()
    m = re.search(r'`configs/cast_ssv2_eva02_videomaev2\.py`[^\n]*\| '
                  r'([\d,]+) \| ([\d,]+) \|', text)
    assert m, 'docs/experts.md: no parameter-count row for the config'
    return tuple(int(g.replace(',', '')) for g in m.groups())


class _Sized(torch.nn.Module):
    """A parameter-free stand-in with an expert's width, depth and grid:
    all the CAST backbone and its links read of an expert when they build
    the adapters and links."""

    def __init__(self, embed_dim, depth, num_heads, grid, modality,
                 num_frames=None, img_size=None):
        super().__init__()
        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, \
            num_heads
        self.grid_t, self.grid_n = grid
        self.token_grid = grid
        self.modality = modality


def test_config_parameter_counts_at_full_size():
    """The full-size counts documented in docs/experts.md and in the config:
    the experts are built on the meta device (exact counts, no memory), the
    adapters, links and head at full size around parameter-free stand-ins
    of the experts' width, depth and grid."""
    from cast_mmaction.models.experts import TimmViTExpert, VideoMAEv2Expert
    cfg = _load_config()
    model_cfg = copy.deepcopy(cfg.model)
    bb = model_cfg.backbone
    experts = {}
    with torch.device('meta'):
        for name, e in bb.experts.items():
            e = dict(e, pretrained=None)
            e.setdefault('num_frames', bb.num_frames)
            e.setdefault('img_size', bb.img_size)
            experts[name] = build_model(e)
    assert isinstance(experts['clip'], TimmViTExpert)
    assert isinstance(experts['vmae'], VideoMAEv2Expert)
    assert experts['clip'].embed_dim == experts['vmae'].embed_dim == 768
    expert_train, expert_total = (sum(c) for c in zip(
        *(param_counts(e) for e in experts.values())))
    bb.experts = {n: dict(type=_Sized, embed_dim=e.embed_dim, depth=e.depth,
                          num_heads=e.num_heads, grid=e.token_grid,
                          modality=e.modality)
                  for n, e in experts.items()}
    model_cfg.data_preprocessor.pop('blending')
    fusion = param_counts(build_model(model_cfg))[1]  # all trainable
    total = expert_total + fusion
    train = expert_train + fusion
    assert (train, total) == _documented_counts()
    text = open(osp.join(ROOT, 'configs', CONFIG)).read().replace('\n# ', ' ')
    assert f'{train:,} trainable of {total:,} in total' in text


@pytest.mark.parametrize('family', ['siglip', 'eva02_clip'])
def test_timm_expert_with_frozen_bf16_weights(family):
    """``frozen_dtype='bfloat16'``: the frozen timm blocks run in bf16 (the
    attention pool and norms stay fp32) and the features stay close to the
    fp32 ones."""
    name, size, extra, _ = FAMILIES[family]
    cfg = _cast_cfg(family)
    torch.manual_seed(0)
    full = build_model(cfg).eval()
    cfg['backbone']['frozen_dtype'] = 'bfloat16'
    low = build_model(cfg).eval()
    low.load_state_dict(full.state_dict())
    low.backbone.experts['clip'].cast_frozen(torch.bfloat16)
    blk = low.backbone.experts['clip'].model.blocks[0]
    assert next(blk.attn.parameters()).dtype == torch.bfloat16
    x = torch.randn(2, 3, 4, size, size)
    with torch.no_grad():
        a, b = full.backbone(x)[0], low.backbone(x)[0]
    assert b.dtype == torch.float32
    assert _rel(b, a) < 5e-2
