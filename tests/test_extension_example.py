"""The worked example of docs/architecture.md: a new expert, a new window
policy, a new link type and a new dataset, each written in the user's own file
(docs/examples/my_extension.py) plus a config, with no edit of the package.
Every place that used to need a hand-kept list picks the new pieces up from
their own declarations."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from cast_mmaction.datasets.annotation_checks import (AnnotationError,
                                                      check_dataset_annotations)
from cast_mmaction.engine.optimizers import (
    CASTLayerDecayOptimWrapperConstructor, get_layer_id)
from cast_mmaction.engine.strategies import cast_fsdp_wrap_policy, fsdp_units
from cast_mmaction.inference import stream_info
from cast_mmaction.models.fusion import (WINDOW_POLICIES,
                                         position_table_layout,
                                         register_window_policy)
from cast_mmaction.utils import build_model
from conftest import ROOT

EXAMPLES = osp.join(ROOT, 'docs', 'examples')


@pytest.fixture
def example(monkeypatch):
    """The example config, loaded as a user would: its custom_imports bring
    in my_extension.py from the PYTHONPATH."""
    monkeypatch.syspath_prepend(EXAMPLES)
    cfg = Config.fromfile(osp.join(EXAMPLES, 'my_extension_config.py'))
    import my_extension
    return cfg, my_extension


def _model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with torch.no_grad():  # let the links act (their up-projections start
        for name, p in model.named_parameters():  # at zero)
            if '.up.' in name:
                p.normal_(0, 0.02)
    return model


def test_new_expert_and_window_policy_run_in_the_backbone(example):
    cfg, ext = example
    model = _model(cfg)
    bb = model.backbone
    assert isinstance(bb.experts['diff'], ext.FrameDiffExpert)
    link = bb.links['clip_diff']['0']
    assert {a.window for a in link.attn.values()} == {'global_time'}
    # the policy's tables: one over each side's time steps
    assert link.attn['clip'].q_pos.shape == (4, 32)  # CLIP: frames 1,3,5,7
    assert link.attn['clip'].kv_pos.shape == (7, 32)  # 7 frame differences
    assert not hasattr(link.attn['clip'], 'q_pos_t')
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        feats = model.backbone(x)
        assert [f.shape for f in feats] == [(2, 64), (2, 64)]
        assert model.cls_head(feats).shape == (2, 3)
        # the link changes the CLIP stream (it sees the diff expert)
        x2 = x.clone()
        x2[:, :, 2] += 1.0  # a frame CLIP does not see (frames 1, 3, ...)
        assert not torch.allclose(model.backbone(x2)[0], feats[0])


def test_pieces_declare_themselves(example):
    cfg, ext = example
    model = _model(cfg)
    # FSDP units: the new expert's attention / MLP modules
    assert {ext.DiffAttention, ext.DiffMlp} <= set(fsdp_units())
    units = [m for m in model.modules()
             if cast_fsdp_wrap_policy(m, False, 10**9)]
    assert sum(isinstance(m, ext.DiffAttention) for m in units) == 2
    # stream roles (inference / feature extraction) from Expert.role
    assert [r for r, _, _ in stream_info(model)] == ['spatial', 'temporal']
    # layer-wise lr decay: its embeddings are layer 0, its blocks 1..depth
    bb = model.backbone
    assert get_layer_id('backbone.experts.diff.pos_embed', 2, bb) == 0
    assert get_layer_id('backbone.experts.diff.patch_embed.weight', 2,
                        bb) == 0
    assert get_layer_id('backbone.experts.diff.blocks.1.mlp.0.weight', 2,
                        bb) == 2
    # no weight decay: the new policy's tables and the expert's pos_embed
    for p in bb.experts['diff'].parameters():
        p.requires_grad_(True)
    ctor = CASTLayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)))
    groups = ctor.param_groups(model)
    no_decay = {id(p) for g in groups if g.get('weight_decay') == 0.0
                for p in g['params']}
    assert id(bb.experts['diff'].pos_embed) in no_decay
    assert id(bb.links['clip_diff']['0'].attn['diff'].q_pos) in no_decay
    # converters: what each window table spans
    layout = position_table_layout(model)
    assert layout['backbone.links.clip_diff.0.attn.clip.q_pos'] == ('clip',
                                                                    't')
    assert layout['backbone.links.clip_diff.0.attn.clip.kv_pos'] == ('diff',
                                                                     't')


def test_window_policy_table_refuses_a_clash_and_an_unknown_name(example):
    from cast_mmaction.models.fusion import WindowPolicy
    assert 'global_time' in WINDOW_POLICIES
    with pytest.raises(KeyError, match='global_time'):
        register_window_policy(WindowPolicy('global_time', None, ()))
    with pytest.raises(ValueError, match="axis 'x'"):
        WindowPolicy('bad', None, (('', 'x'), ))
    cfg, _ = example
    cfg.model.backbone.links[0].windows.diff = 'nearby'
    with pytest.raises(ValueError, match="one of .*global_time.*'nearby'"):
        build_model(cfg.model)


def test_wrong_expert_registrations_are_named_before_the_forward(example):
    """An expert entry that is not registered, whose class leaves an
    interface method unimplemented, does not set its sizes or is no Expert
    at all (a head) is refused when the backbone is built, naming the entry
    and what to fix (they were MMEngine's KeyError, a bare
    NotImplementedError in the first forward, an AttributeError about
    another name, a TypeError that did not say the class is no expert)."""
    from mmaction.registry import MODELS
    from cast_mmaction.models.experts import Expert
    cfg, ext = example

    class PlainModule(torch.nn.Module):
        def __init__(self, **kwargs):
            super().__init__()

    class NoSplitExpert(ext.FrameDiffExpert):
        split = Expert.split  # what a subclass that forgot it inherits

    class NoGridExpert(ext.FrameDiffExpert):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            del self.grid_t

    classes = (PlainModule, NoSplitExpert, NoGridExpert)
    for cls in classes:
        MODELS.register_module(module=cls)
    try:
        cases = [
            ('PlainModule', r"backbone.experts.diff: PlainModule does not "
             r"set \['embed_dim', 'depth', 'num_heads', 'grid_t', 'grid_n'\]"
             r".* \(PlainModule is not a subclass of "
             r"cast_mmaction.models.experts.Expert"),
            ('CASTHead', r"backbone.experts.diff: CASTHead.__init__\(\) .* "
             r"\(CASTHead is not a subclass of cast_mmaction.models.experts"),
            ('NoSuchExpert', "backbone.experts.diff.type='NoSuchExpert' is "
             "not a registered expert; registered: .*CLIPViTExpert"),
            ('NoSplitExpert', r"NoSplitExpert does not implement \['split'\]"
             ' of the Expert interface'),
            ('NoGridExpert', r"backbone.experts.diff: NoGridExpert does not "
             r"set \['grid_t'\]"),
        ]
        for type_name, match in cases:
            bad = copy.deepcopy(cfg.model)
            bad.backbone.experts.diff.type = type_name
            with pytest.raises((TypeError, ValueError), match=match):
                build_model(bad)
    finally:
        for cls in classes:
            MODELS._module_dict.pop(cls.__name__, None)
    build_model(cfg.model)  # the example itself still builds


def test_expert_modality_outside_the_backbone_inputs_is_refused(example):
    """An expert whose modality is none of the inputs the backbone hands
    out ('video', 'audio') is refused when the backbone is built, naming
    the entry and the allowed values; unchecked, it built and failed in the
    first forward (a KeyError on a dict input) or read the video tensor."""
    from mmaction.registry import MODELS
    cfg, ext = example

    class DepthExpert(ext.FrameDiffExpert):
        modality = 'depth'

    class TypoExpert(ext.FrameDiffExpert):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.modality = 'Video'

    classes = (DepthExpert, TypoExpert)
    for cls in classes:
        MODELS.register_module(module=cls)
    try:
        for cls, value in ((DepthExpert, 'depth'), (TypoExpert, 'Video')):
            bad = copy.deepcopy(cfg.model)
            bad.backbone.experts.diff.type = cls.__name__
            with pytest.raises(ValueError) as err:
                build_model(bad)
            assert str(err.value) == (
                f'backbone.experts.diff: {cls.__name__}.modality={value!r} '
                f'is not an input the backbone reads; set it to one of '
                f"['video', 'audio'] (the key of the model's dict input)")
    finally:
        for cls in classes:
            MODELS._module_dict.pop(cls.__name__, None)
    build_model(cfg.model)  # the example's own expert ('video') builds


def test_new_link_type_builds_trains_shards_and_reports_attention(example):
    """The user's own link type (TimePoolLink, from the config's
    custom_imports) runs in the backbone, trains, is an FSDP unit, has its
    no-decay table and reports the attention weights its forward used."""
    cfg, ext = example
    model = _model(cfg)
    bb = model.backbone
    link = bb.links['clip_diff_pool']['1']
    assert isinstance(link, ext.TimePoolLink) and list(
        bb.links['clip_diff_pool']) == ['1']
    assert link.down['clip'].out_features == 32  # the backbone's down_ratio
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        plain = bb(x)
        with bb.record_attention(links=['clip_diff_pool']) as rec:
            recorded = bb(x)
    # recording changes nothing; the weights are a softmax over the 7
    # frame-difference steps for each CLIP patch token (4 frames x 4)
    assert all(torch.equal(a, b) for a, b in zip(plain, recorded))
    assert set(rec) == {(1, 'clip_diff_pool', 'clip'),
                        (1, 'clip_diff_pool', 'diff')}
    w = rec[1, 'clip_diff_pool', 'clip']
    assert w.shape == (2, 2, 4 * 4, 7) and rec.info[
        1, 'clip_diff_pool', 'clip'] == dict(source='diff')
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    # one training step reaches the link (its up-projection moves)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    before = link.up['clip'].weight.detach().clone()
    # (the head's adapters start at zero: a loss on the features instead)
    loss = sum((f**2).mean() for f in bb(x))
    loss.backward()
    opt.step()
    assert not torch.equal(before, link.up['clip'].weight)
    # FSDP: the class declares itself a unit; one instance (layer 1)
    assert ext.TimePoolLink in fsdp_units()
    units = [m for m in model.modules()
             if cast_fsdp_wrap_policy(m, False, 10**9)]
    assert sum(isinstance(m, ext.TimePoolLink) for m in units) == 1
    # no weight decay for its declared table
    ctor = CASTLayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)))
    no_decay = {id(p) for g in ctor.param_groups(model)
                if g.get('weight_decay') == 0.0 for p in g['params']}
    assert id(link.pool['diff'].time_pos) in no_decay
    assert id(link.q['clip'].weight) not in no_decay
    # its own keys are checked by the class, naming the field
    cfg.model.backbone.links[1].windows = dict(clip='time', diff='time')
    with pytest.raises(ValueError, match=r"backbone.links\[1\]: unknown "
                       r"keys \['windows'\] for link type TimePoolLink"):
        build_model(cfg.model)


def test_new_link_type_shares_its_declared_parts(example):
    """share_projections ties what the link classes declare shareable: the
    B-CA link's and TimePoolLink's down projections of layer 1."""
    cfg, ext = example
    cfg.model.backbone.share_projections = True
    bb = build_model(cfg.model).backbone
    bca, pool = bb.links['clip_diff']['1'], bb.links['clip_diff_pool']['1']
    assert pool.down['clip'] is bca.down['clip']
    assert pool.down['diff'] is bca.down['diff']
    assert bb.links['clip_diff']['0'].down['clip'] is not bca.down['clip']


def _dataset(cfg, tmp_path, rows):
    from mmaction.registry import DATASETS
    ann = tmp_path / 'clips.csv'
    ann.write_text('video,label\n' + ''.join(f'{v},{lab}\n'
                                            for v, lab in rows))
    ds_cfg = cfg.train_dataloader.dataset.to_dict()
    ds_cfg.update(ann_file=str(ann),
                  data_prefix=dict(video=str(tmp_path / 'videos')))
    return DATASETS.build(ds_cfg), str(ann)


def test_new_dataset_checks_its_own_annotations(example, tmp_path):
    cfg, ext = example
    ds, ann = _dataset(cfg, tmp_path, [('a.mp4', 0), ('b.mp4', 2)])
    assert isinstance(ds, ext.CsvClipDataset)
    assert check_dataset_annotations(ds) == 2
    ds, ann = _dataset(cfg, tmp_path, [('a.mp4', 0), ('b.mp4', 3)])
    with pytest.raises(AnnotationError,
                       match=rf'{ann}, line 3: label 3 is outside 0..2'):
        check_dataset_annotations(ds)
    ds, ann = _dataset(cfg, tmp_path, [('a.mp4', 0), ('a.mp4', 1)])
    with pytest.raises(AnnotationError, match=rf'{ann}, line 3: .*repeats'):
        check_dataset_annotations(ds)
    ds, ann = _dataset(cfg, tmp_path, [('../x.mp4', 0)])
    with pytest.raises(AnnotationError, match='outside the data root'):
        check_dataset_annotations(ds)
