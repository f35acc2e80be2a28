"""Link types and the other pieces that declare themselves: the consumer
(backbone, start-up check, single-view inference, file-kind messages,
annotation checks) asks the class, so a class no list names is handled."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from mmaction.registry import MODELS, TRANSFORMS


def _backbone(links=None, **kw):
    from cast_mmaction.models.presets import cast_backbone_cfg
    from cast_mmaction.utils import build_model
    cfg = cast_backbone_cfg(embed_dim=32, depth=2, num_heads=2, num_frames=4,
                            img_size=16, patch_size=8, tubelet_size=2)
    if links is not None:
        cfg['links'] = links
    cfg.update(kw)
    torch.manual_seed(0)
    return build_model(cfg).eval()


# ---------------------------------------------------------------------------
# links
# ---------------------------------------------------------------------------
def test_default_link_type_is_bca_with_the_same_model():
    """``type`` defaults to the B-CA link: the same modules, keys and
    numbers as naming it."""
    from cast_mmaction.models.fusion import BottleneckCrossAttention
    from cast_mmaction.models.presets import cast_backbone_cfg
    cfg_links = cast_backbone_cfg(embed_dim=32, depth=2, num_heads=2,
                                  num_frames=4, img_size=16, patch_size=8,
                                  tubelet_size=2)['links']
    assert all('type' not in l for l in cfg_links)
    plain = _backbone()
    named = _backbone([dict(l, type='BottleneckCrossAttention')
                       for l in cfg_links])
    assert isinstance(plain.links['clip_vmae']['0'],
                      BottleneckCrossAttention)
    a, b = plain.state_dict(), named.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_link_config_errors_name_the_field():
    from cast_mmaction.models.presets import cast_backbone_cfg
    base = cast_backbone_cfg(embed_dim=32, depth=2, num_heads=2,
                             num_frames=4, img_size=16, patch_size=8,
                             tubelet_size=2)['links'][0]
    with pytest.raises(ValueError, match=r"backbone.links\[0\]: unknown keys "
                       r"\['window'\] for link type BottleneckCrossAttention; "
                       r"known: \[.*'windows'"):
        _backbone([dict(base, window='time')])
    with pytest.raises(ValueError, match=r"backbone.links\[0\].type='Nope' "
                       r"is not a registered link type; registered: "
                       r"\[.*'BottleneckCrossAttention'"):
        _backbone([dict(base, type='Nope')])
    with pytest.raises(ValueError, match=r"type='CASTHead' .*not a subclass "
                       r"of cast_mmaction.models.fusion.Link"):
        _backbone([dict(base, type='CASTHead')])
    with pytest.raises(TypeError, match=r"backbone.links\[0\] "
                       r"\(BottleneckCrossAttention\): .*windows"):
        _backbone([{k: v for k, v in base.items() if k != 'windows'}])


def _mean_link_class():
    """A link type defined here (no list in the package names it): each
    receiver gets a gated mean of the other stream's tokens; no weights to
    report."""
    from cast_mmaction.models.fusion import Link

    @MODELS.register_module(force=True)
    class GatedMeanTestLink(Link):
        shareable_parts = ('down', )
        no_weight_decay_names = ('gate', )

        def __init__(self, experts, receivers=None, width=16):
            super().__init__(experts, receivers)
            self.down = nn.ModuleDict(
                {n: nn.Linear(e.embed_dim, width)
                 for n, e in experts.items()})
            self.gate = nn.Parameter(torch.zeros(width))
            self.up = nn.ModuleDict({n: nn.Linear(width, experts[n].embed_dim)
                                     for n in self.receivers})

        def attend(self, downs, experts, batch, time_enc=None,
                   queries=None):
            out = {}
            for q in queries or self.receivers:
                src = next(n for n in self.names if n != q)
                _, grid = experts[src].split(downs[src], batch)
                mean = grid.mean((1, 2))  # (B, width)
                x = downs[q]
                upd = (torch.tanh(self.gate) * mean).repeat_interleave(
                    x.shape[0] // batch, 0)[:, None]
                out[q] = self.up[q](upd.expand_as(x))
            return out

    return GatedMeanTestLink


def test_a_link_type_of_ones_own_is_asked_not_listed():
    from cast_mmaction.engine.optimizers import default_no_decay_names
    from cast_mmaction.engine.strategies import fsdp_units
    cls = _mean_link_class()
    bb = _backbone([dict(type='GatedMeanTestLink', experts=('clip', 'vmae'),
                         layers=[1], width=16, directions=['vmae->clip'])])
    link = bb.links['clip_vmae']['1']
    assert isinstance(link, cls) and link.receivers == ['clip']
    assert cls in fsdp_units() and 'gate' in default_no_decay_names()
    x = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        nn.init.normal_(link.up['clip'].weight)
        closed = bb(x)  # gate 0: the link adds nothing
        link.gate.fill_(1.0)
        opened = bb(x)
        with bb.record_attention() as rec:
            bb(x)
    # the CLIP stream receives the update; VideoMAE (no receiver) does not
    assert not torch.allclose(closed[0], opened[0])
    assert torch.equal(closed[1], opened[1])
    assert dict(rec) == {} and rec.silent == [(1, 'clip_vmae')]
    with pytest.raises(ValueError, match=r"unknown keys \['windows'\] for "
                       r"link type GatedMeanTestLink"):
        _backbone([dict(type='GatedMeanTestLink', experts=('clip', 'vmae'),
                        windows=dict(clip='time', vmae='space'))])


def test_share_projections_ties_the_declared_parts_across_types():
    _mean_link_class()
    from cast_mmaction.models.presets import cast_backbone_cfg
    bca = cast_backbone_cfg(embed_dim=32, depth=2, num_heads=2, num_frames=4,
                            img_size=16, patch_size=8,
                            tubelet_size=2)['links'][0]
    links = [bca, dict(type='GatedMeanTestLink', name='mean',
                       experts=('clip', 'vmae'), width=16)]
    bb = _backbone(links, share_projections=True)
    for i in ('0', '1'):
        for n in ('clip', 'vmae'):
            assert bb.links['mean'][i].down[n] is bb.links['clip_vmae'][
                i].down[n]
    # the B-CA up projections are not the mean link's (its 'up' is not
    # declared shareable)
    assert bb.links['mean']['0'].up['clip'] is not bb.links['clip_vmae'][
        '0'].up['clip']
    with pytest.raises(ValueError, match=r"different 'down' modules for "
                       r"expert 'clip' at layer 0"):
        _backbone([bca, dict(links[1], width=8)], share_projections=True)


def test_recording_attention_changes_no_training_step():
    """Under the 'fusion' checkpoint regions of the CPU speed-ups (the
    links' attend recomputed in backward) recording gives the same outputs
    and gradients, bit for bit, and still fills the record."""
    bb = _backbone(speedups=dict(checkpoint='fusion')).train()
    with torch.no_grad():
        for name, p in bb.named_parameters():
            if '.up.' in name:
                p.normal_(0, 0.02)
    x = torch.randn(2, 3, 4, 16, 16)

    def step():
        bb.zero_grad()
        out = bb(x)
        sum((f**2).sum() for f in out).backward()
        return out, {n: p.grad.clone() for n, p in bb.named_parameters()
                     if p.grad is not None}

    out, grads = step()
    with bb.record_attention() as rec:
        out2, grads2 = step()
    assert all(torch.equal(a, b) for a, b in zip(out, out2))
    assert grads.keys() == grads2.keys() and any(
        '.up.' in n for n in grads)
    assert all(torch.equal(grads[n], grads2[n]) for n in grads)
    assert len(rec) == 4 and not any(w.requires_grad for w in rec.values())


# ---------------------------------------------------------------------------
# start-up check: heads declare their input widths
# ---------------------------------------------------------------------------
def _model(head, widths=(32, 32)):
    experts = {n: SimpleNamespace(embed_dim=w)
               for n, w in zip(('clip', 'vmae', 'audio'), widths)}
    return SimpleNamespace(backbone=SimpleNamespace(experts=experts),
                           cls_head=head)


def test_heads_declare_input_widths(monkeypatch):
    from cast_mmaction.engine.hooks import check_model
    from cast_mmaction.models.heads import CASTHead, CASTVerbNounHead
    head = CASTHead(num_classes=3, in_channels=32, num_streams=2)
    assert check_model(_model(head)) == [32, 32]
    with pytest.raises(ValueError, match=r"in_channels=32 does not match the "
                       r"experts' widths \{'clip': 32, 'vmae': 48\}"):
        check_model(_model(head, (32, 48)))
    with pytest.raises(ValueError, match=r'num_streams=2 but the backbone '
                       r'returns 3 streams'):
        check_model(_model(head, (32, 32, 32)))
    vn = CASTVerbNounHead(num_verbs=3, num_nouns=4, in_channels=32,
                          verb_stream=2)
    with pytest.raises(ValueError,
                       match=r"reads streams \{'verb_stream': 2\}"):
        check_model(_model(vn))

    class WideNarrowHead(nn.Module):  # a head of one's own, declared
        def input_widths(self, num_streams):
            return [64, 32]

    assert check_model(_model(WideNarrowHead(), (64, 32))) == [64, 32]
    with pytest.raises(ValueError, match=r'expects widths \[64, 32\]'):
        check_model(_model(WideNarrowHead(), (32, 32)))

    class PlainHead(nn.Module):  # undeclared, with in_channels: generic
        in_channels = 32

    with pytest.raises(ValueError, match='PlainHead declares no input_widths'):
        check_model(_model(PlainHead(), (32, 16)))
    logged = []
    import mmengine.logging
    monkeypatch.setattr(mmengine.logging, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    assert check_model(_model(nn.Identity())) is None  # neither: reported
    assert logged and 'Identity' in logged[0] and 'not checked' in logged[0]


# ---------------------------------------------------------------------------
# single-view inference: multi-view transforms declare their one view
# ---------------------------------------------------------------------------
def test_single_view_asks_the_transforms():
    from mmaction.datasets.transforms import ThreeCrop
    from mmcv.transforms import BaseTransform
    from cast_mmaction import inference as inf

    @TRANSFORMS.register_module(force=True)
    class FiveViewsTest(BaseTransform):  # declares its one view
        @classmethod
        def one_view_cfg(cls, cfg):
            return dict(cfg, views=1)

        def transform(self, results):
            return results

    @TRANSFORMS.register_module(force=True)
    class MyThreeCropTest(ThreeCrop):  # a subclass of a registered one
        pass

    pipe = [dict(type='SampleFrames', clip_len=8, num_clips=4),
            dict(type='TenCrop', crop_size=32),
            dict(type='FiveViewsTest', views=5),
            dict(type='MyThreeCropTest', crop_size=24),
            dict(type='Resize', scale=(-1, 32))]
    out = inf.single_view(pipe)
    assert out == [dict(type='SampleFrames', clip_len=8, num_clips=1),
                   dict(type='CenterCrop', crop_size=32),
                   dict(type='FiveViewsTest', views=1),
                   dict(type='CenterCrop', crop_size=24),
                   dict(type='Resize', scale=(-1, 32))]
    assert pipe[1]['type'] == 'TenCrop'  # the input is not changed

    class ExternalTest(BaseTransform):  # not ours to edit: registered
        def transform(self, results):
            return results

    inf.register_one_view(ExternalTest, lambda t: dict(type='Identity'))
    try:
        assert inf.single_view([dict(type=ExternalTest)]) == [
            dict(type='Identity')]
    finally:
        del inf.ONE_VIEW_TRANSFORMS[ExternalTest]


# ---------------------------------------------------------------------------
# expert file kinds are records
# ---------------------------------------------------------------------------
def test_file_kinds_are_records():
    from cast_mmaction.checkpoints import expert_formats as ef
    fmt = ef.FileKind('my_tower', 'a MyTower checkpoint', 'MyTower',
                      lambda s: 'my_tower.cls' in s, 'mytower')
    state = {'my_tower.cls': torch.zeros(1), 'patch_embed.proj.weight':
             torch.zeros(4, 3, 2, 2)}
    assert ef.kind_of(state) == 'timm_vit'  # before: a timm ViT
    ef.register_file_kind(fmt, before='timm_vit')
    try:
        assert ef.kind_of(state) == 'my_tower'
        assert ef.describe({'module.my_tower.cls': 1}) == (
            'a MyTower checkpoint', 'MyTower')
        err = ef.wrong_kind('CLIP expert', 'x.pth', 'a CLIP image tower',
                            state, None, 'CLIP', 'model.backbone.experts.'
                            'clip.pretrained')
        assert "pass it as the MyTower expert's pretrained file" in str(err)
        with pytest.raises(KeyError, match='exists already'):
            ef.register_file_kind(fmt)
        with pytest.raises(KeyError, match="before='nope'"):
            ef.register_file_kind(ef.FileKind('x', 'x', None, bool),
                                  before='nope')
    finally:
        ef.FILE_KINDS.remove(fmt)
    # transformers configs: by architecture, the text tower first
    assert ef.kind_of({}, {'architectures': ['CLIPTextModel']}) == \
        'clip_text'
    assert ef.kind_of({}, {'architectures': ['CLIPModel']}) == 'clip_hf'


# ---------------------------------------------------------------------------
# annotation checks: wrappers declare what they wrap
# ---------------------------------------------------------------------------
class _Checked:
    def __init__(self, n):
        self.n, self.calls = n, []

    def verify_annotations(self, num_classes=None, num_classes_field=''):
        self.calls.append((num_classes, num_classes_field))
        return self.n


def test_dataset_wrappers_declare_what_they_wrap():
    from mmengine.dataset import ClassBalancedDataset  # noqa: F401
    from cast_mmaction.datasets import annotation_checks as ac
    from cast_mmaction.datasets.robust import RobustDataset

    class PairWrapper:  # a wrapper of one's own, declared
        def __init__(self, a, b):
            self.a, self.b = a, b

        def wrapped_datasets(self):
            return [self.a, self.b]

    a, b = _Checked(2), _Checked(3)
    assert ac.check_dataset_annotations(PairWrapper(a, b), 7, 'f') == 5
    assert a.calls == b.calls == [(7, 'f')]

    class ExternalWrapper:  # not ours to edit: registered
        def __init__(self, inner):
            self.dataset = inner

        ann_file = None

    c = _Checked(4)
    assert ac.check_dataset_annotations(ExternalWrapper(c)) == 0  # not known
    ac.register_dataset_wrapper(ExternalWrapper, lambda d: [d.dataset])
    try:
        assert ac.check_dataset_annotations(ExternalWrapper(c)) == 4
    finally:
        del ac.WRAPPERS[ExternalWrapper]
    # RobustDataset declares its inner dataset
    robust = RobustDataset.__new__(RobustDataset)
    robust.dataset = a
    assert ac.wrapped_datasets(robust) == [a]
    assert ac.wrapped_datasets(a) is None
