"""The state-dict toolkit (checkpoints/state_dict.py), the converter
registry (checkpoints/registry.py) and the parity family registry."""
import json
import os

import pytest
import torch
import torch.nn as nn

from cast_mmaction.checkpoints import (CONVERTERS, CheckpointFitError,
                                       check_fit, convert_state, detect_kind,
                                       fit_report, load_fitted,
                                       load_official_cast, select_prefix,
                                       strip_prefixes)
from cast_mmaction.safe_load import load_checkpoint as load_file
from cast_mmaction.parity import FAMILIES, Family, find_family
from conftest import shared_fixture


class Tiny(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.a = nn.Linear(3, width)
        self.b = nn.LayerNorm(width)


def test_strip_prefixes_removes_the_first_matching_prefix_once():
    sd = {'module.backbone.x': 1, 'backbone.y': 2, 'z': 3, 'xmodule.w': 4}
    out = strip_prefixes(sd, ('module.', 'backbone.'))
    assert out == {'backbone.x': 1, 'y': 2, 'z': 3, 'xmodule.w': 4}
    assert strip_prefixes(sd) == {'backbone.x': 1, 'backbone.y': 2, 'z': 3,
                                  'xmodule.w': 4}  # default: module.
    assert strip_prefixes({'encoder.a': 1}, 'encoder.') == {'a': 1}
    assert select_prefix({'visual.a': 1, 'text.b': 2, 'visualx': 3},
                         'visual.') == {'a': 1}


def test_fit_report_lists_missing_unexpected_and_mismatched():
    model = Tiny()
    sd = dict(Tiny().state_dict())
    del sd['b.bias']
    sd['a.weight'] = torch.zeros(5, 3)
    sd['extra.w'] = torch.zeros(1)
    sd['head.w'] = torch.zeros(1)
    rep = fit_report(model, sd, ignore_unexpected=('head.', ))
    assert rep.missing == ['b.bias']
    assert rep.unexpected == ['extra.w']
    assert rep.ignored == ['head.w']
    assert rep.mismatched == [('a.weight', (5, 3), (4, 3))]
    assert sorted(rep.loadable) == ['a.bias', 'b.weight']
    assert not rep.ok
    # the same against a reference state dict instead of a module
    assert fit_report(model.state_dict(), sd).missing == ['b.bias']
    assert fit_report(model, model.state_dict()).ok

    msg = rep.message('ckpt.pth', 'the model', hint='(same config?)')
    lines = msg.split('\n')
    assert lines[0] == 'ckpt.pth does not fit the model:'
    assert "1 missing keys" in msg and "['b.bias']" in msg
    assert '1 unexpected keys' in msg and 'extra.w' in msg
    assert 'a.weight: checkpoint (5, 3) vs model (4, 3)' in msg
    assert lines[-1].strip() == '(same config?)'
    assert 'head.w' not in msg  # ignored on purpose
    only = rep.message('x', missing=False, unexpected=False)
    assert 'missing' not in only and 'a.weight' in only


def test_check_fit_policies_and_error_class():
    model = Tiny()
    sd = dict(model.state_dict())
    sd.pop('b.bias')
    rep = fit_report(model, sd)
    with pytest.raises(CheckpointFitError, match=r'x does not fit the model'
                       r':\n  1 missing keys'):
        check_fit(rep, 'x')
    assert issubclass(CheckpointFitError, ValueError)
    assert check_fit(rep, 'x', allow_missing=True) is rep

    class MyError(RuntimeError):
        pass

    with pytest.raises(MyError, match='b.bias'):
        check_fit(rep, 'x', error=MyError)
    sd['b.weight'] = torch.zeros(7)
    with pytest.raises(CheckpointFitError, match='shape mismatches'):
        check_fit(fit_report(model, sd), 'x', allow_missing=True)


def test_load_fitted_loads_casts_and_refuses_before_loading():
    src, dst = Tiny(), Tiny()
    sd = {k: v.double() + 1 for k, v in src.state_dict().items()}
    sd['unused'] = torch.zeros(2)
    with pytest.raises(CheckpointFitError, match='unused'):
        load_fitted(dst, sd, 'src')
    rep = load_fitted(dst, sd, 'src', allow_unexpected=True, log=False)
    assert rep.unexpected == ['unused']
    for k, v in dst.state_dict().items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, sd[k].float())
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    bad = dict(sd)
    bad['b.weight'] = torch.zeros(9)
    with pytest.raises(CheckpointFitError, match='b.weight: checkpoint'):
        load_fitted(dst, bad, 'bad', allow_unexpected=True)
    for k, v in dst.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k])


# -- converter registry -------------------------------------------------------
KINDS = {'cast_single': 'cast', 'cast_composition': 'cast',
         'cava_single': 'cava', 'cava_single_rev': 'cava',
         'ca2st_single': 'ca2st', 'ca2st_composition': 'ca2st',
         'msca_kv': 'msca'}


def _official(name):
    return load_file(os.path.join(shared_fixture(name),
                                  'official_checkpoint.pth'))


@pytest.mark.parametrize('name,kind', sorted(KINDS.items()))
def test_each_official_file_is_one_kind_and_fully_mapped(name, kind):
    raw = _official(name)
    state = next(v for v in raw.values() if isinstance(v, dict))
    assert detect_kind(state) == kind
    out, unmapped = convert_state(kind, state)
    assert unmapped == []
    # AV files carry an unused audio_ln_post (dropped on purpose); MSCA's
    # separate query / key / value are packed into one qkv
    dropped = sum('audio_ln_post' in k for k in state)
    assert dropped == (2 if kind in ('cava', 'ca2st') else 0)
    qkv = sum(k.endswith(('query.weight', 'key.weight', 'value.weight',
                          'query.bias', 'key.bias', 'value.bias'))
              for k in state)
    assert len(out) == len(state) - dropped - qkv * 2 // 3
    for other in set(CONVERTERS) - {kind}:
        with pytest.raises(ValueError, match='not an '):
            convert_state(other, state)


def test_strict_official_load_reports_unmapped_keys():
    from cast_mmaction.models.presets import cast_recognizer_cfg
    from cast_mmaction.utils import build_model
    meta = json.load(open(os.path.join(shared_fixture('cast_single'),
                                       'meta.json')))
    model = build_model(cast_recognizer_cfg(
        num_classes=meta['num_classes'], embed_dim=meta['embed_dim'],
        depth=meta['depth'], num_heads=meta['num_heads']))
    sd = dict(_official('cast_single')['module'])
    sd['blocks.0.mystery.weight'] = torch.zeros(3)
    with pytest.raises(CheckpointFitError, match='unexpected keys.*mystery'):
        load_official_cast(model, {'module': sd})
    rep = load_official_cast(model, {'module': sd}, strict=False)
    assert rep['unmapped'] == ['blocks.0.mystery.weight']
    got = model.state_dict()['backbone.experts.clip.conv1.weight']
    assert torch.equal(got, sd['clip_conv1.weight'].float())


# -- parity family registry ---------------------------------------------------
@pytest.mark.parametrize('dump,family', [
    ('cast_single', 'cast'), ('cast_composition', 'cast'),
    ('cava_single_rev', 'cava'), ('ca2st_composition', 'ca2st'),
    ('msca_kv', 'frame_vit'), ('tokshift', 'frame_vit'),
    ('vit_framewise', 'frame_vit')])
def test_dumps_dispatch_to_their_family(dump, family):
    meta = json.load(open(os.path.join(shared_fixture(dump), 'meta.json')))
    assert find_family(meta).name == family


def test_family_records_match_on_model_text_and_required_keys():
    train = Family('train', ('official CAST', ), build=None,
                   require=('train_mode', ), grad=True)
    meta = {'model': 'official CAST STCrossTransformer (...)'}
    assert not train.matches(meta)
    assert train.matches(dict(meta, train_mode=True))
    assert not train.matches({'model': 'official CAVA', 'train_mode': True})
    assert [f.name for f in FAMILIES] == ['cast_train', 'cast',
                                          'cast_ablation', 'cava', 'ca2st',
                                          'frame_vit', 'st_adapter', 'aim']
    assert find_family({'model': "authors' extended CAST STCrossTransformer "
                                 "with ablation switches"}).name == (
        'cast_ablation')
    # a training dump goes to the training family, a forward dump past it
    assert find_family(dict(meta, train_mode=True)).name == 'cast_train'
    assert find_family(meta).name == 'cast'
    with pytest.raises(ValueError, match='unknown dump model'):
        find_family({'model': 'someone else\'s net'})


def test_window_tables_are_resized_through_the_policy_table():
    """The authors' 16-frame 224 px CAST checkpoint into a model of 8 frames
    at 112 px: every B-CA window table is found through the window-policy
    table (its expert and axis) and resized to that expert's grid; a policy
    registered by a user gets the same treatment with no converter rule."""
    from cast_mmaction.checkpoints.cast_official import adapt_to_model
    from cast_mmaction.models.fusion import (WINDOW_POLICIES, WindowPolicy,
                                             position_table_layout,
                                             register_window_policy)
    from cast_mmaction.models.presets import cast_recognizer_cfg
    from cast_mmaction.utils import build_model

    def model(num_frames, img_size, windows=None):
        cfg = cast_recognizer_cfg(num_classes=10, embed_dim=32, depth=1,
                                  num_heads=2, num_frames=num_frames,
                                  img_size=img_size)
        if windows:
            cfg['backbone']['links'][0]['windows'] = windows
        return build_model(cfg)

    big, small = model(16, 224), model(8, 112)
    layout = position_table_layout(small)
    assert sorted(a for _, a in layout.values()) == ['n', 'n', 't', 't']
    state, notes = adapt_to_model(dict(big.state_dict()), small)
    for key, (_, axis) in layout.items():
        assert state[key].shape == small.state_dict()[key].shape, key
        assert any(key in n for n in notes), key
    # a time table of 8 steps -> 4: the 1-D resize
    from cast_mmaction.models.layers import (resize_1d_embed,
                                             resize_grid_embed)
    tkey = next(k for k, (_, a) in layout.items() if a == 't')
    assert torch.equal(state[tkey], resize_1d_embed(big.state_dict()[tkey], 4))
    # a patch table 14x14 -> 7x7 goes through the 2-D grid resize, not 1-D
    nkey = next(k for k, (_, a) in layout.items() if a == 'n')
    assert torch.equal(state[nkey], resize_grid_embed(
        big.state_dict()[nkey], (14, 14), (7, 7)))

    name = 'test_time_pair'
    if name not in WINDOW_POLICIES:  # the 'time' grouping, tables renamed
        register_window_policy(WindowPolicy(
            name, group_by='n', tables=(('_pair', 't'), )))
    windows = dict(clip=name, vmae='space')
    big, small = model(16, 224, windows), model(8, 224, windows)
    state, notes = adapt_to_model(dict(big.state_dict()), small)
    pair = [k for k in position_table_layout(small) if k.endswith('_pair')]
    assert len(pair) == 2
    for key in pair:
        assert state[key].shape == small.state_dict()[key].shape
        assert any(key in n for n in notes)
