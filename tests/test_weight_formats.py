"""Expert weights in the formats people download, checked against the library
that writes each format.

Every test builds a tiny model with the real library (transformers, timm,
MMAction2), gives it random weights (biases and norms included, so that a
dropped, swapped or transposed tensor changes the output), saves it the way
that library saves, loads it through our expert's normal ``pretrained``
field, and compares the expert's features with the library's own forward on
the same input (relative error <= 1e-5). Both sides run in float64 after
loading, so the float32 rounding of two attention implementations stays far
below the tolerance and anything above it is a loading error.
"""
import os
import os.path as osp
import shutil

import pytest
import timm
import torch
import transformers

from cast_mmaction.checkpoints import hf_cache
from cast_mmaction.models.experts import CLIPViTExpert, VideoMAEExpert
from cast_mmaction.models.experts.ast import ASTExpert
from conftest import ROOT
from _tools import load_tool

TOL = 1e-5
DIM, DEPTH, HEADS, MLP = 32, 2, 4, 64


def randomize(model, seed):
    """Random values everywhere: norms around 1, the rest around 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            norm = 'norm' in name.lower() and p.ndim == 1
            p.copy_(1 + 0.1 * noise if norm and name.endswith('weight')
                    else 0.1 * noise)
    return model.eval()


def f64(*modules):
    """The loaded expert / the library's model in float64 (after saving and
    loading in the library's float32)."""
    for m in modules:
        m.double()
    return modules[0] if len(modules) == 1 else modules


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def assert_close(ours, ref, what):
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err = rel_err(ours.double(), ref.double())
    assert err <= TOL, f'{what}: relative error {err:.2e}'


def expert_tokens(expert, x):
    """The expert's tokens after its last block (before the final norm)."""
    h = expert.embed(x)
    for i in range(expert.depth):
        h = h + expert.attn_branch(i, h)
        h = h + expert.mlp_branch(i, expert.mlp_norm(i, h))
    return h




# ---------------------------------------------------------------------------
# VideoMAE: transformers
# ---------------------------------------------------------------------------
def hf_videomae_config(**kw):
    args = dict(image_size=32, patch_size=8, num_channels=3, num_frames=4,
                tubelet_size=2, hidden_size=DIM, num_hidden_layers=DEPTH,
                num_attention_heads=HEADS, intermediate_size=MLP,
                decoder_hidden_size=DIM, decoder_num_hidden_layers=1,
                decoder_num_attention_heads=HEADS,
                decoder_intermediate_size=MLP, num_labels=3)
    args.update(kw)
    return transformers.VideoMAEConfig(**args)


def vmae_expert(config, **kw):
    return VideoMAEExpert(embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                          patch_size=8, tubelet_size=2, img_size=32,
                          num_frames=4, mlp_ratio=MLP / DIM,
                          eps=config.layer_norm_eps, **kw)


def _videomae_reference(model, video):
    """(tokens, pooled or None) of the transformers model; ``video`` is
    ours, (B, C, T, H, W)."""
    pixel_values = video.permute(0, 2, 1, 3, 4)  # transformers: (B, T, C..)
    with torch.no_grad():
        if isinstance(model, transformers.VideoMAEModel):
            return model(pixel_values).last_hidden_state, None
        if isinstance(model, transformers.VideoMAEForPreTraining):
            return model.videomae(pixel_values).last_hidden_state, None
        feats = {}
        hook = model.classifier.register_forward_hook(
            lambda m, inp, out: feats.setdefault('x', inp[0]))
        out = model(pixel_values, output_hidden_states=True)
        hook.remove()
        return out.hidden_states[-1], feats['x']


@pytest.mark.parametrize('cls,safe', [
    ('VideoMAEModel', True), ('VideoMAEForPreTraining', False),
    ('VideoMAEForVideoClassification', True)])
def test_transformers_videomae(tmp_path, cls, safe):
    config = hf_videomae_config()
    model = randomize(getattr(transformers, cls)(config), 1)
    folder = tmp_path / 'videomae'
    model.save_pretrained(folder, safe_serialization=safe)
    weights = 'model.safetensors' if safe else 'pytorch_model.bin'
    assert (folder / weights).is_file() and (folder / 'config.json').is_file()
    video = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)
    ref_tokens, ref_pooled = _videomae_reference(f64(model), video)
    for source in (folder, folder / weights):  # the folder, the file alone
        expert = vmae_expert(config, pretrained=str(source))
        expert.init_weights()
        # transformers' VideoMAEForVideoClassification builds fc_norm with
        # nn.LayerNorm's default eps 1e-5, not config.layer_norm_eps (1e-12;
        # the original VideoMAE uses 1e-6 for both): a 1e-5 relative
        # difference of the pooled feature otherwise
        expert.fc_norm.eps = 1e-5
        f64(expert)
        with torch.no_grad():
            assert_close(expert_tokens(expert, video), ref_tokens,
                         f'{cls} tokens <- {source}')
            if ref_pooled is not None:  # fc_norm(mean) of the classifier
                assert_close(expert.forward_plain(video), ref_pooled,
                             f'{cls} pooled <- {source}')


def test_transformers_sharded_folder(tmp_path):
    """Big models are saved in shards with an index: every shard is read."""
    config = hf_videomae_config()
    model = randomize(transformers.VideoMAEModel(config), 12)
    model.save_pretrained(tmp_path / 'm', max_shard_size='20KB')
    assert (tmp_path / 'm' / 'model.safetensors.index.json').is_file()
    assert len(list((tmp_path / 'm').glob('model-*.safetensors'))) > 1
    video = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    ref, _ = _videomae_reference(f64(model), video)
    expert = vmae_expert(config, pretrained=str(tmp_path / 'm'))
    expert.init_weights()
    with torch.no_grad():
        assert_close(expert_tokens(f64(expert), video), ref, 'sharded')


def test_transformers_videomae_transposed_weight_is_caught(tmp_path):
    """The comparison above fails for a wrongly packed q;k;v (so a wrong
    key map could not pass)."""
    config = hf_videomae_config()
    model = randomize(transformers.VideoMAEModel(config), 2)
    model.save_pretrained(tmp_path / 'm')
    video = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    ref, _ = _videomae_reference(f64(model), video)
    expert = vmae_expert(config, pretrained=str(tmp_path / 'm'))
    expert.init_weights()
    f64(expert)
    assert rel_err(expert_tokens(expert, video).detach(), ref) <= TOL
    w = expert.blocks[0].attn.qkv.weight
    with torch.no_grad():
        w.copy_(torch.cat(w.chunk(3)[::-1]))  # v;k;q instead of q;k;v
        assert rel_err(expert_tokens(expert, video), ref) > 1e-2


# ---------------------------------------------------------------------------
# VideoMAE: MMAction2 model zoo (Recognizer3D + VisionTransformer)
# ---------------------------------------------------------------------------
def mmaction_recognizer(**backbone):
    from mmaction.registry import MODELS
    from mmengine.registry import DefaultScope
    import mmaction.models  # noqa: F401  (registers VisionTransformer)
    cfg = dict(
        type='Recognizer3D',
        backbone=dict(type='VisionTransformer', img_size=32, patch_size=8,
                      embed_dims=DIM, depth=DEPTH, num_heads=HEADS,
                      mlp_ratio=MLP / DIM, num_frames=4, tubelet_size=2,
                      norm_cfg=dict(type='LN', eps=1e-6), **backbone),
        cls_head=dict(type='TimeSformerHead', num_classes=3, in_channels=DIM),
        data_preprocessor=dict(type='ActionDataPreprocessor',
                               format_shape='NCTHW'))
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MODELS.build(cfg)


def test_mmaction2_videomae_checkpoint(tmp_path):
    model = randomize(mmaction_recognizer(), 3)
    path = tmp_path / 'vit-base-p16_videomae.pth'
    torch.save({'meta': {'mmaction_version': '1.2.0'},
                'state_dict': model.state_dict()}, path)
    assert 'backbone.patch_embed.projection.weight' in model.state_dict()
    video = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)
    expert = VideoMAEExpert(embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                            patch_size=8, img_size=32, num_frames=4,
                            mlp_ratio=MLP / DIM, pretrained=str(path))
    expert.init_weights()
    f64(expert, model)
    with torch.no_grad():
        ref = model.backbone(video)  # fc_norm(mean of the tokens)
        assert_close(expert.forward_plain(video), ref, 'MMAction2 ViT')


def test_mmaction2_files_the_expert_cannot_represent(tmp_path):
    expert = VideoMAEExpert(embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                            patch_size=8, img_size=32, num_frames=4,
                            mlp_ratio=MLP / DIM)
    from cast_mmaction.checkpoints import load_videomae_expert
    learned = randomize(mmaction_recognizer(use_learnable_pos_emb=True), 4)
    torch.save({'state_dict': learned.state_dict()}, tmp_path / 'pos.pth')
    with pytest.raises(ValueError, match='learned position table'):
        load_videomae_expert(expert, str(tmp_path / 'pos.pth'))
    scaled = randomize(mmaction_recognizer(init_values=0.1), 5)
    torch.save({'state_dict': scaled.state_dict()}, tmp_path / 'ls.pth')
    with pytest.raises(ValueError, match='layer scale'):
        load_videomae_expert(expert, str(tmp_path / 'ls.pth'))


# ---------------------------------------------------------------------------
# AST: transformers
# ---------------------------------------------------------------------------
def hf_ast_config(**kw):
    args = dict(hidden_size=DIM, num_hidden_layers=DEPTH,
                num_attention_heads=HEADS, intermediate_size=MLP,
                patch_size=16, frequency_stride=10, time_stride=10,
                max_length=64, num_mel_bins=32, num_labels=3)
    args.update(kw)
    return transformers.ASTConfig(**args)


def ast_expert(config, **kw):
    args = dict(embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                mlp_ratio=MLP / DIM, input_fdim=32, input_tdim=64,
                eps=config.layer_norm_eps)
    args.update(kw)
    return ASTExpert(**args)


@pytest.mark.parametrize('cls', ['ASTModel', 'ASTForAudioClassification'])
def test_transformers_ast(tmp_path, cls):
    config = hf_ast_config()
    model = randomize(getattr(transformers, cls)(config), 6)
    model.save_pretrained(tmp_path / 'ast')
    # (B, time frames, mel bins) in both
    spec = torch.randn(2, 64, 32, dtype=torch.float64)
    base = model if cls == 'ASTModel' else model.audio_spectrogram_transformer
    with torch.no_grad():
        out = f64(base)(spec)
    expert = ast_expert(config, pretrained=str(tmp_path / 'ast'))
    expert.init_weights()
    f64(expert)
    with torch.no_grad():
        assert_close(expert.norm(expert_tokens(expert, spec)),
                     out.last_hidden_state, f'{cls} tokens')
        assert_close(expert.forward_plain(spec), out.pooler_output,
                     f'{cls} pooled')


def test_transformers_ast_strides_and_grid_from_config(tmp_path):
    config = hf_ast_config(frequency_stride=8, time_stride=8)
    randomize(transformers.ASTModel(config), 7).save_pretrained(tmp_path / 'a')
    from cast_mmaction.checkpoints import load_ast_expert
    with pytest.raises(ValueError, match='fstride=8, tstride=8'):
        load_ast_expert(ast_expert(config), str(tmp_path / 'a'))
    # the (3, 7) grid of the config, resized to a longer input's (3, 9)
    longer = ast_expert(config, fstride=8, tstride=8, input_tdim=80)
    assert (longer.f_dim, longer.t_dim) == (3, 9)
    load_ast_expert(longer, str(tmp_path / 'a'))


# ---------------------------------------------------------------------------
# CLIP: transformers and timm
# ---------------------------------------------------------------------------
def hf_clip_vision(**kw):
    args = dict(hidden_size=DIM, intermediate_size=MLP,
                num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                image_size=32, patch_size=8, projection_dim=16)
    args.update(kw)
    return args


def clip_expert(**kw):
    """One frame per clip, so the expert's pooled feature is the image's."""
    return CLIPViTExpert(embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                         patch_size=8, img_size=32, num_frames=1,
                         frame_start=0, frame_step=1, mlp_ratio=MLP / DIM,
                         **kw)


@pytest.mark.parametrize('cls', ['CLIPVisionModel', 'CLIPModel'])
def test_transformers_clip(tmp_path, cls):
    if cls == 'CLIPModel':
        config = transformers.CLIPConfig(
            vision_config=hf_clip_vision(),
            text_config=dict(hidden_size=DIM, intermediate_size=MLP,
                             num_hidden_layers=1, num_attention_heads=HEADS,
                             vocab_size=64),
            projection_dim=16)
    else:
        config = transformers.CLIPVisionConfig(**hf_clip_vision())
    model = randomize(getattr(transformers, cls)(config), 8)
    model.save_pretrained(tmp_path / 'clip')
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = f64(model).vision_model(pixel_values=images)
    expert = clip_expert(pretrained=str(tmp_path / 'clip'))
    expert.init_weights()
    f64(expert)
    video = images[:, :, None]
    with torch.no_grad():
        assert_close(expert_tokens(expert, video), out.last_hidden_state,
                     f'{cls} tokens')
        assert_close(expert.forward_plain(video), out.pooler_output,
                     f'{cls} pooled')


def test_transformers_clip_wrong_kinds(tmp_path):
    from cast_mmaction.checkpoints import load_clip_expert
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        hidden_size=DIM, intermediate_size=MLP, num_hidden_layers=1,
        num_attention_heads=HEADS, vocab_size=64))
    text.save_pretrained(tmp_path / 'text')
    for source in (tmp_path / 'text', tmp_path / 'text' / 'model.safetensors'):
        with pytest.raises(ValueError, match='transformers CLIPTextModel'):
            load_clip_expert(clip_expert(), str(source))
    gelu = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        **hf_clip_vision(hidden_act='gelu')))
    gelu.save_pretrained(tmp_path / 'gelu')
    with pytest.raises(ValueError, match="'gelu'.*'quick_gelu'"):
        load_clip_expert(clip_expert(), str(tmp_path / 'gelu'))


def timm_clip(name, seed):
    model = timm.create_model(name, pretrained=False, embed_dim=DIM,
                              depth=DEPTH, num_heads=HEADS,
                              mlp_ratio=MLP / DIM, img_size=32, patch_size=8)
    return randomize(model, seed)


def test_timm_clip_image_tower(tmp_path, monkeypatch):
    # OpenAI's CLIP computes QuickGELU: timm's *_quickgelu_* definition is
    # the one whose forward the expert must reproduce
    model = timm_clip('vit_base_patch16_clip_quickgelu_224.openai', 9)
    torch.save(model.state_dict(), tmp_path / 'timm_clip.pth')
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    expert = clip_expert(pretrained=str(tmp_path / 'timm_clip.pth'))
    expert.init_weights()
    f64(expert, model)
    video = images[:, :, None]
    with torch.no_grad():
        feats = model.forward_features(images)  # norm(tokens)
        assert_close(expert.ln_post(expert_tokens(expert, video)), feats,
                     'timm CLIP tokens')
        assert_close(expert.forward_plain(video),
                     model.forward_head(feats, pre_logits=True),
                     'timm CLIP pooled')
    # as timm publishes it on the Hugging Face hub (config.json +
    # model.safetensors), through the local cache
    from timm.models._hub import save_for_hf
    save_for_hf(model.float(), str(tmp_path / 'hub_folder'),
                safe_serialization=True)
    hub = tmp_path / 'hub'
    _fill_cache(hub, 'timm/vit_base_patch16_clip_224.openai',
                tmp_path / 'hub_folder')
    monkeypatch.setenv('HF_HUB_CACHE', str(hub))
    cached = clip_expert(pretrained='hf:timm/vit_base_patch16_clip_224.openai')
    cached.init_weights()
    with torch.no_grad():
        assert_close(f64(cached).forward_plain(video),
                     f64(model).forward_head(model.forward_features(images),
                                             pre_logits=True),
                     'timm CLIP from the hub cache')
    # the same file from timm's GELU definition of the OpenAI weights loads
    # (the file cannot say which activation it was run with)
    gelu = timm_clip('vit_base_patch16_clip_224.openai', 9)
    assert gelu.state_dict().keys() == model.state_dict().keys()


def test_timm_imagenet_vit_is_not_a_clip_tower(tmp_path):
    from cast_mmaction.checkpoints import load_clip_expert
    vit = timm.create_model('vit_base_patch16_224.augreg_in21k',
                            pretrained=False, embed_dim=DIM, depth=1,
                            num_heads=HEADS, img_size=32, patch_size=8)
    torch.save(vit.state_dict(), tmp_path / 'vit.pth')
    with pytest.raises(ValueError, match='timm ImageNet-style ViT'):
        load_clip_expert(clip_expert(), str(tmp_path / 'vit.pth'))


# ---------------------------------------------------------------------------
# every loader names the format of a file that belongs to another expert
# ---------------------------------------------------------------------------
def test_wrong_expert_names_the_format(tmp_path):
    from cast_mmaction.checkpoints import (load_ast_expert, load_clip_expert,
                                           load_videomae_expert)
    vm = hf_videomae_config()
    transformers.VideoMAEForPreTraining(vm).save_pretrained(tmp_path / 'vm')
    ast = hf_ast_config()
    transformers.ASTModel(ast).save_pretrained(tmp_path / 'ast')
    clip = transformers.CLIPVisionConfig(**hf_clip_vision())
    transformers.CLIPVisionModel(clip).save_pretrained(tmp_path / 'clip')
    torch.save({'state_dict': mmaction_recognizer().state_dict()},
               tmp_path / 'mma.pth')
    cases = [
        (load_clip_expert, clip_expert(), 'vm',
         'transformers VideoMAE checkpoint: pass it as the VideoMAE'),
        (load_clip_expert, clip_expert(), 'mma.pth',
         'MMAction2 VisionTransformer .*pass it as the VideoMAE'),
        (load_videomae_expert, vmae_expert(vm), 'ast',
         'transformers AST .*pass it as the AST'),
        (load_videomae_expert, vmae_expert(vm), 'clip',
         'transformers CLIP checkpoint: pass it as the CLIP'),
        (load_ast_expert, ast_expert(ast), 'clip',
         'transformers CLIP checkpoint: pass it as the CLIP'),
        (load_ast_expert, ast_expert(ast), 'vm',
         'transformers VideoMAE checkpoint: pass it as the VideoMAE'),
    ]
    for load, expert, name, msg in cases:
        with pytest.raises(ValueError, match=msg):
            load(expert, str(tmp_path / name))


# ---------------------------------------------------------------------------
# hf:ORG/NAME from the local Hugging Face cache
# ---------------------------------------------------------------------------
def _fill_cache(hub, repo, folder, commit='0123abcd' * 5):
    root = hub / ('models--' + repo.replace('/', '--'))
    snap = root / 'snapshots' / commit
    shutil.copytree(folder, snap)
    (root / 'refs').mkdir(parents=True)
    (root / 'refs' / 'main').write_text(commit)
    return snap


def test_hf_reference_from_local_cache(tmp_path, monkeypatch):
    config = hf_videomae_config()
    model = randomize(transformers.VideoMAEForPreTraining(config), 10)
    model.save_pretrained(tmp_path / 'saved')
    for var in ('HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HOME',
                'XDG_CACHE_HOME'):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / 'hf_home'
    monkeypatch.setenv('HF_HOME', str(home))
    ref = 'hf:MCG-NJU/videomae-base'
    missing = str(home / 'hub' / 'models--MCG-NJU--videomae-base')
    with pytest.raises(FileNotFoundError) as err:
        vmae_expert(config, pretrained=ref).init_weights()
    assert missing in str(err.value) and 'HF_HOME' in str(err.value)
    snap = _fill_cache(home / 'hub', 'MCG-NJU/videomae-base',
                       tmp_path / 'saved')
    # the same folder huggingface_hub itself resolves, offline
    import huggingface_hub
    assert hf_cache.resolve(ref) == huggingface_hub.snapshot_download(
        'MCG-NJU/videomae-base', cache_dir=str(home / 'hub'),
        local_files_only=True) == str(snap)
    expert = vmae_expert(config, pretrained=ref)
    expert.init_weights()
    video = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    ref_tokens, _ = _videomae_reference(f64(model), video)
    f64(expert)
    with torch.no_grad():
        assert_close(expert_tokens(expert, video), ref_tokens, ref)
    # HF_HUB_CACHE wins over HF_HOME; another revision is named when absent
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'elsewhere'))
    with pytest.raises(FileNotFoundError, match='elsewhere'):
        hf_cache.resolve(ref)
    monkeypatch.delenv('HF_HUB_CACHE')
    with pytest.raises(FileNotFoundError, match="revision 'v2'"):
        hf_cache.resolve(ref + '@v2')
    with pytest.raises(ValueError, match='hf:ORG/NAME'):
        hf_cache.resolve('hf:videomae-base')


def test_transformers_folder_is_opened_by_the_safe_loader(tmp_path):
    """A pytorch_model.bin of a saved folder goes through the allow-list
    like any .pth (docs/security.md): a pickle that runs code is refused."""
    from cast_mmaction.safe_load import UntrustedCheckpointError

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {tmp_path / "MARKER"}', ))

    folder = tmp_path / 'evil'
    folder.mkdir()
    torch.save({'x': torch.zeros(1), 'y': Evil()},
               folder / 'pytorch_model.bin')
    (folder / 'config.json').write_text('{"architectures": ["VideoMAEModel"]}')
    with pytest.raises(UntrustedCheckpointError):
        vmae_expert(hf_videomae_config(),
                    pretrained=str(folder)).init_weights()
    assert not (tmp_path / 'MARKER').exists()


# ---------------------------------------------------------------------------
# tools/convert/convert_checkpoint.py --expert
# ---------------------------------------------------------------------------
EXPERT_CFG = '''
model = dict(type='Recognizer3D', backbone=dict(
    type='CASTBackbone', num_frames=4, img_size=32,
    experts=dict(
        clip=dict(type='CLIPViTExpert', embed_dim=32, depth=2, num_heads=4,
                  patch_size=8, mlp_ratio=2.0),
        vmae=dict(type='VideoMAEExpert', embed_dim=32, depth=2, num_heads=4,
                  patch_size=8, tubelet_size=2, mlp_ratio=2.0, eps=1e-12)),
    links=[dict(experts=('clip', 'vmae'), windows=dict(clip='time',
                                                        vmae='space'))]),
    cls_head=dict(type='CASTHead', num_classes=3))
'''


@pytest.mark.parametrize('ext', ['pth', 'safetensors'])
def test_convert_tool_expert_mode(tmp_path, monkeypatch, capsys, ext):
    tool = load_tool('convert_checkpoint')
    config = hf_videomae_config()
    model = randomize(transformers.VideoMAEForVideoClassification(config), 11)
    model.save_pretrained(tmp_path / 'saved')
    cfg = tmp_path / 'tiny.py'
    cfg.write_text(EXPERT_CFG)
    out = tmp_path / f'vmae.{ext}'
    tool.main([str(tmp_path / 'saved'), str(out), '--expert', 'videomae',
               '--config', str(cfg)])
    log = capsys.readouterr().out
    assert 'loads into model.backbone.experts.vmae' in log
    assert 'unexpected none' in log and f'wrote {out}' in log
    # the written file is the expert's own layout: it loads as it is and
    # computes what transformers computes
    expert = vmae_expert(config, pretrained=str(out))
    expert.init_weights()
    video = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    _, ref = _videomae_reference(f64(model), video)
    expert.fc_norm.eps = 1e-5  # transformers' fc_norm (see above)
    f64(expert)
    with torch.no_grad():
        assert_close(expert.forward_plain(video), ref, f'converted .{ext}')
    # a file of the wrong kind: the loader's error, no traceback, no output
    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        **hf_clip_vision()))
    clip.save_pretrained(tmp_path / 'clip')
    with pytest.raises(SystemExit) as err:
        tool.main([str(tmp_path / 'clip'), str(tmp_path / 'x.pth'),
                   '--expert', 'videomae'])
    assert 'pass it as the CLIP' in str(err.value.code)
    assert not (tmp_path / 'x.pth').exists()
    # expert weights without --expert: told which flag to pass
    with pytest.raises(SystemExit, match='Pass --expert clip'):
        tool.main([str(tmp_path / 'clip'), str(tmp_path / 'x.pth')])
    with pytest.raises(SystemExit, match='Pass --expert videomae'):
        tool.main([str(tmp_path / 'saved' / 'model.safetensors'),
                   str(tmp_path / 'x.pth')])
    # the CLIP expert of the same config, from the folder
    tool.main([str(tmp_path / 'clip'), str(tmp_path / 'clip.pth'),
               '--expert', 'clip', '--config', str(cfg)])
    assert 'loads into model.backbone.experts.clip of' in capsys.readouterr().out


def test_folders_and_hf_references_pass_the_start_up_check(tmp_path):
    """tools/train.py checks `pretrained` paths before building: a
    transformers folder is a path that exists, an hf: reference is resolved
    when the expert loads (with the error of the hf: test above)."""
    from mmengine.config import Config

    from cast_mmaction.engine.checks import missing_paths
    from cast_mmaction.engine.trainable_checkpoint import _is_source
    folder = tmp_path / 'saved'
    folder.mkdir()
    cfg = Config(dict(model=dict(backbone=dict(experts=dict(
        clip=dict(pretrained='hf:openai/clip-vit-base-patch16'),
        vmae=dict(pretrained=str(folder)),
        audio=dict(pretrained=str(tmp_path / 'absent'))))),
        train_dataloader=None))
    missing = [f for f, *_ in missing_paths(cfg, 'train')]
    assert missing == ['model.backbone.experts.audio.pretrained']
    assert _is_source(str(folder)) and _is_source('hf:MCG-NJU/videomae-base')
    assert not _is_source(str(tmp_path / 'absent'))
