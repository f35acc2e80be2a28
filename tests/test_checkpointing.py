"""Selective activation checkpointing: the gradients of the plain model, with
only the policy's operator outputs kept."""
import pytest
import torch
import torch.nn as nn
import torch.utils.checkpoint as tcp

from cast_mmaction.models import checkpointing
from cast_mmaction.models.checkpointing import SavePolicy, make_policy
from cast_mmaction.models.presets import cast_recognizer_cfg
from cast_mmaction.utils import build_model


def _tiny(**backbone):
    cfg = cast_recognizer_cfg(num_classes=5, embed_dim=64, depth=2,
                              num_heads=4, num_frames=8, img_size=32)
    cfg['backbone'].update(drop_path_rate=0.2, **backbone)
    return build_model(cfg)


def _grads(model, x):
    model.train()
    torch.manual_seed(3)  # the same drop-path masks on every model
    sum(f.pow(2).sum() for f in model.backbone(x)).backward()
    return {n: p.grad for n, p in model.named_parameters()
            if p.grad is not None}


@pytest.mark.parametrize('policy, with_cp, layers', [
    ('selective', False, {0, 1}), ('attention', False, {0, 1}),
    ('full', True, {0, 1}), ('full', False, {0, 1}), ('selective', 1, {1}),
    ('narrow', False, {0, 1}),
    (SavePolicy(widen=(3, 4), min_k=16), False, {0, 1}),
    (SavePolicy(widen=(), narrow=True, min_k=16), False, {0, 1})])
def test_selective_checkpointing_gives_the_plain_gradients(policy, with_cp,
                                                           layers):
    ref = _tiny()
    torch.manual_seed(1)
    for p in ref.parameters():
        if p.requires_grad and p.ndim > 1:
            nn.init.normal_(p, std=0.05)
    model = _tiny(checkpoint_policy=policy, with_cp=with_cp)
    model.load_state_dict(ref.state_dict())
    assert model.backbone.cp_layers == layers
    x = torch.randn(2, 3, 8, 32, 32)
    want, got = _grads(ref, x), _grads(model, x)
    assert want.keys() == got.keys() and len(want) > 10
    for n in want:
        # the recompute runs the same operators on the same inputs
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-6,
                                   msg=n)


def test_the_policy_keeps_attention_and_qkv_and_recomputes_the_rest():
    """Record the policy's decision per operator over one checkpointed layer
    of a ViT-B-width model (k = 768)."""
    decisions = []
    policy = make_policy('selective')

    def recording(ctx, op, *args, **kwargs):
        d = policy(ctx, op, *args, **kwargs)
        if not ctx.is_recompute:
            decisions.append((str(op), tuple(args[0].shape) if args and
                              hasattr(args[0], 'shape') else None, d))
        return d

    dim, heads, n = 768, 12, 20
    ln = nn.LayerNorm(dim)
    qkv, proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
    fc1, fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
    down = nn.Linear(dim, dim // 4)

    def layer(x):
        from cast_mmaction.models.layers import linear, sdpa_heads
        q, k, v = linear(ln(x), qkv.weight, qkv.bias).chunk(3, -1)
        x = x + linear(sdpa_heads(q, k, v, heads), proj.weight, proj.bias)
        h = torch.nn.functional.gelu(linear(ln(x), fc1.weight, fc1.bias))
        return x + linear(h, fc2.weight, fc2.bias) + down(x).sum()

    import functools
    x = torch.randn(1, n, dim, requires_grad=True)
    y = tcp.checkpoint(layer, x, use_reentrant=False, context_fn=functools
                       .partial(tcp.create_selective_checkpoint_contexts,
                                recording))
    y.sum().backward()
    kept = [op for op, _, d in decisions
            if d == tcp.CheckpointPolicy.MUST_SAVE]
    assert any('scaled_dot_product' in op for op in kept), decisions
    # one matmul kept: q/k/v; proj, fc1 (4x), fc2, the adapter-like down
    # projection are recomputed
    mm_kept = [op for op in kept if 'scaled_dot_product' not in op]
    assert len(mm_kept) == 1, decisions
    recomputed = [op for op, _, d in decisions
                  if d != tcp.CheckpointPolicy.MUST_SAVE]
    assert any('layer_norm' in op for op in recomputed)
    assert any('gelu' in op for op in recomputed)
    assert sum(('mm' in op or 'linear' in op) for op in recomputed) >= 4


def test_bad_policy_names_the_field():
    with pytest.raises(ValueError, match='checkpoint_policy'):
        _tiny(checkpoint_policy='cheap')
    assert make_policy('full') is None and make_policy(None) is None
    assert checkpointing.POLICIES == ('full', 'attention', 'selective',
                                    'narrow')
