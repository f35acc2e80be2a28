"""Layer-wise lr decay param groups of CASTLayerDecayOptimWrapperConstructor
checked name by name on tiny CAST models."""
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper

from cast_mmaction.models.presets import cast_recognizer_cfg
from cast_mmaction.utils import build_model

BASE_LR, WD, DECAY = 1e-3, 0.05, 0.75


def tiny_cfg(depth=2, **kw):
    return cast_recognizer_cfg(num_classes=5, embed_dim=32, depth=depth,
                               num_heads=2, num_frames=4, img_size=32,
                               patch_size=16, **kw)


def optim_cfg(**paramwise):
    return dict(type='OptimWrapper',
                optimizer=dict(type='AdamW', lr=BASE_LR, betas=(0.9, 0.999),
                               weight_decay=WD),
                constructor='CASTLayerDecayOptimWrapperConstructor',
                paramwise_cfg=dict(layer_decay_rate=DECAY, **paramwise))


def groups_by_name(model, wrapper):
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in wrapper.optimizer.param_groups:
        for p in g['params']:
            n = names[id(p)]
            assert n not in out, f'{n} is in two param groups'
            out[n] = g
    return out


def expected_layer(name, depth, streams=('clip', 'vmae'), link='clip_vmae'):
    """The published assignment, spelled out per name prefix."""
    table = [('cls_head.', depth + 1)]
    for s in streams:
        table += [(f'backbone.experts.{s}.ln_post.', depth + 1),
                  (f'backbone.experts.{s}.fc_norm.', depth + 1)]
    table += [(f'backbone.experts.{streams[0]}.{k}', 0) for k in (
        'conv1.', 'class_embedding', 'positional_embedding', 'ln_pre.')]
    table += [(f'backbone.experts.{streams[1]}.patch_embed.', 0)]
    for i in range(depth):
        table += [(f'backbone.experts.{streams[0]}.transformer.resblocks.'
                   f'{i}.', i + 1),
                  (f'backbone.experts.{streams[1]}.blocks.{i}.', i + 1),
                  (f'backbone.links.{link}.{i}.', i + 1)]
        for s in streams:
            table += [(f'backbone.attn_adapters.{s}.{i}.', i + 1),
                      (f'backbone.mlp_adapters.{s}.{i}.', i + 1)]
    hits = [lid for prefix, lid in table if name.startswith(prefix)]
    assert len(hits) == 1, f'{name}: no single rule in the test table'
    return hits[0]


def expected_no_decay(name, param):
    last = name.rsplit('.', 1)[-1]
    return (param.ndim == 1 or last == 'bias'
            or last in ('q_pos', 'kv_pos'))


def check_groups(model, wrapper, depth, **kw):
    got = groups_by_name(model, wrapper)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(got) == trainable  # frozen parameters: no group at all
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        g = got[name]
        lid = expected_layer(name, depth, **kw)
        assert g['layer_id'] == lid, name
        scale = DECAY**(depth + 1 - lid)
        assert g['lr_scale'] == pytest.approx(scale), name
        assert g['lr'] == pytest.approx(BASE_LR * scale), name
        wd = 0.0 if expected_no_decay(name, p) else WD
        assert g['weight_decay'] == wd, name
    return got


def test_frozen_experts_published_groups():
    model = build_model(tiny_cfg(depth=2))
    wrapper = build_optim_wrapper(model, optim_cfg())
    got = check_groups(model, wrapper, depth=2)
    # spot checks of the rules, by hand
    g = got['backbone.links.clip_vmae.1.attn.clip.q_pos']
    assert (g['layer_id'], g['weight_decay']) == (2, 0.0)
    g = got['backbone.links.clip_vmae.0.attn.vmae.q.weight']
    assert (g['layer_id'], g['weight_decay'], g['lr']) == (
        1, WD, pytest.approx(BASE_LR * DECAY**2))
    g = got['cls_head.fc_cls.weight']
    assert (g['layer_id'], g['lr'], g['weight_decay']) == (3, BASE_LR, WD)
    assert got['backbone.experts.clip.ln_post.weight']['weight_decay'] == 0
    # no frozen expert weights anywhere
    assert not any(n.startswith('backbone.experts.clip.transformer')
                   for n in got)
    # the first group (the one MMEngine logs) runs at the base lr
    assert wrapper.optimizer.param_groups[0]['lr'] == BASE_LR
    # groups are (layer, decay) pairs: depth + 2 layer ids at most, x2
    keys = {(g['layer_id'], g['weight_decay'])
            for g in wrapper.optimizer.param_groups}
    assert len(keys) == len(wrapper.optimizer.param_groups)


def test_unfrozen_experts_embeddings_and_blocks():
    cfg = tiny_cfg(depth=2)
    for e in cfg['backbone']['experts'].values():
        e['frozen'] = False
    model = build_model(cfg)
    wrapper = build_optim_wrapper(model, optim_cfg())
    got = check_groups(model, wrapper, depth=2)
    for name in ('backbone.experts.clip.conv1.weight',
                 'backbone.experts.clip.class_embedding',
                 'backbone.experts.clip.positional_embedding',
                 'backbone.experts.clip.ln_pre.weight',
                 'backbone.experts.vmae.patch_embed.proj.weight'):
        assert got[name]['layer_id'] == 0, name
        assert got[name]['lr'] == pytest.approx(BASE_LR * DECAY**3)
    g = got['backbone.experts.clip.transformer.resblocks.1.attn.'
            'in_proj_weight']
    assert (g['layer_id'], g['weight_decay']) == (2, WD)
    g = got['backbone.experts.vmae.blocks.0.attn.q_bias']
    assert (g['layer_id'], g['weight_decay']) == (1, 0.0)


def test_any_depth_and_expert_names():
    cfg = tiny_cfg(depth=3)
    bb = cfg['backbone']
    bb['experts'] = {'spatial': bb['experts']['clip'],
                     'temporal': bb['experts']['vmae']}
    bb['links'] = [dict(experts=('spatial', 'temporal'),
                        windows=dict(spatial='time', temporal='space'),
                        layers=[0, 2])]
    model = build_model(cfg)
    assert model.backbone.depth == 3
    wrapper = build_optim_wrapper(model, optim_cfg())
    got = check_groups(model, wrapper, depth=3,
                       streams=('spatial', 'temporal'),
                       link='spatial_temporal')
    assert got['backbone.links.spatial_temporal.2.up.temporal.weight'][
        'lr'] == pytest.approx(BASE_LR * DECAY**1)
    assert got['cls_head.fc_cls.bias']['lr'] == BASE_LR


def test_no_decay_rate_one_and_num_layers_override():
    model = build_model(tiny_cfg(depth=2))
    wrapper = build_optim_wrapper(
        model, dict(optim_cfg(), paramwise_cfg=dict(layer_decay_rate=1.0)))
    assert all(g['lr'] == BASE_LR for g in wrapper.optimizer.param_groups)
    wrapper = build_optim_wrapper(model, optim_cfg(num_layers=4))
    got = groups_by_name(model, wrapper)
    assert got['cls_head.fc_cls.weight']['layer_id'] == 5
    g = got['backbone.links.clip_vmae.0.down.clip.weight']
    assert g['lr'] == pytest.approx(BASE_LR * DECAY**4)


def test_optimizer_state_only_for_trainable():
    model = build_model(tiny_cfg(depth=1))
    wrapper = build_optim_wrapper(model, optim_cfg())
    x = torch.randn(2, 3, 4, 32, 32)
    model.train()
    # make the zero-initialised adapters / up-projections non-trivial
    feats = model.backbone(x)
    loss = model.cls_head(feats).sum() + sum(f.sum() for f in feats)
    wrapper.update_params(loss)
    state_ids = set(id(p) for p in wrapper.optimizer.state)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert state_ids and state_ids <= trainable
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and all(id(p) not in state_ids for p in frozen)


def test_errors_name_the_field():
    model = build_model(tiny_cfg(depth=1))
    with pytest.raises(ValueError, match='paramwise_cfg: unknown keys'):
        build_optim_wrapper(model, optim_cfg(layer_decay=0.5))
    with pytest.raises(ValueError, match='layer_decay_rate'):
        build_optim_wrapper(model, dict(optim_cfg(),
                                        paramwise_cfg=dict(
                                            layer_decay_rate=1.5)))
    plain = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match='paramwise_cfg.num_layers'):
        build_optim_wrapper(plain, optim_cfg())
    frozen = copy.deepcopy(model)
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameter'):
        build_optim_wrapper(frozen, optim_cfg())


@pytest.mark.parametrize('config', ['cast_ssv2', 'cast_k400', 'cast_ek100',
                                    'cava_vggsound', 'ca2st_ek100'])
def test_recipe_fused_adamw_matches_for_loop(config):
    """The recipes ask for fused AdamW (one kernel over all trainable
    tensors); it must build from the recipe's own optimizer dict and take
    the same steps as the default for-loop AdamW."""
    from mmengine.config import Config
    cfg = Config.fromfile(f'configs/{config}.py')
    opt = cfg.optim_wrapper.optimizer.to_dict()
    assert opt.get('fused') is True, f'{config}: fused AdamW not set'
    params = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = build_model(tiny_cfg(depth=1))
        wrapper = build_optim_wrapper(model, dict(
            type='OptimWrapper', optimizer=dict(opt, fused=fused),
            constructor=cfg.optim_wrapper.constructor,
            paramwise_cfg=cfg.optim_wrapper.paramwise_cfg.to_dict()))
        assert wrapper.optimizer.defaults['fused'] is fused
        model.train()
        for _ in range(3):
            feats = model.backbone(torch.randn(2, 3, 4, 32, 32,
                                               generator=torch.Generator()
                                               .manual_seed(1)))
            loss = model.cls_head(feats).sum() + sum(f.sum() for f in feats)
            wrapper.update_params(loss)
        params[fused] = {n: p.detach().clone()
                         for n, p in model.named_parameters()}
    for n, p in params[True].items():
        torch.testing.assert_close(p, params[False][n], rtol=1e-5, atol=1e-6,
                                   msg=n)
