"""Opening a checkpoint never runs code (docs/security.md).

Every way the package opens a file is fed a malicious pickle (its
``__reduce__`` creates a marker file when unpickled): each refuses it with a
message naming what the file asked for and how to proceed, and the marker
does not exist afterwards. Every kind of real file still loads: our training
checkpoints (resume state, trainable-only), MMEngine's, the authors' layouts,
OpenAI TorchScript archives, open_clip / VideoMAE / AST state dicts, score
files, ``.safetensors``.
"""
import argparse
import copyreg
import io
import itertools
import os
import os.path as osp
import pathlib
import pickle
import shlex
import types
import zipfile
from collections import OrderedDict
from typing import Tuple

import numpy as np
import pytest
import torch
import torch.nn as nn

from cast_mmaction import safe_load
from cast_mmaction.safe_load import UntrustedCheckpointError, load_checkpoint
from conftest import ROOT, TINY_CONFIG_HEAD, shared_fixture
from _tools import load_tool

_COUNTER = itertools.count()


def _unique(prefix):
    return f'{prefix}_{os.getpid()}_{next(_COUNTER)}'


# ----------------------------------------------------------------------------
# malicious payloads
# ----------------------------------------------------------------------------
class ShellPayload:
    """Runs a shell command when unpickled (the issue's example)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {shlex.quote(self.marker)}', ))


class OpenPayload:
    """Creates the marker through a builtin when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


PAYLOADS = {'os.system': ShellPayload, 'builtins.open': OpenPayload}


def evil_checkpoint(path, payload=ShellPayload, layout='official'):
    """A checkpoint of a real layout with a payload beside the weights."""
    marker = str(path) + '.MARKER'
    weights = {'w': torch.ones(2)}
    if layout == 'official':  # the file
        obj = {'module': weights, 'args': payload(marker)}
    else:  # an MMEngine checkpoint
        obj = {'state_dict': weights, 'meta': {'note': payload(marker)}}
    torch.save(obj, path)
    assert not osp.exists(marker)
    return str(path), marker


def _refused(excinfo_or_text, marker, what='system'):
    text = str(getattr(excinfo_or_text, 'value', excinfo_or_text))
    assert 'refused to open' in text, text
    assert what in text, text  # names the offending type
    assert '--trust-checkpoint' in text and 'trust_checkpoint' in text
    assert 'pickle' in text  # says why
    assert not osp.exists(marker), 'the payload ran'




@pytest.fixture(scope='module')
def tools():
    names = ('train', 'test', 'infer', 'extract_features', 'attention_maps',
             'convert_checkpoint', 'to_safetensors')
    return {n: load_tool(n) for n in names}


# ----------------------------------------------------------------------------
# the loaders
# ----------------------------------------------------------------------------
def _mmengine_load(path):
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(path, map_location='cpu')


def _read_state_dict(path):
    from cast_mmaction.checkpoints.common import read_state_dict
    return read_state_dict(path, 'test file')


def _load_scores(path):
    from cast_mmaction.evaluation.epic_metric import load_scores
    return load_scores(path)


LOADERS = {'load_checkpoint': load_checkpoint, 'mmengine': _mmengine_load,
           'read_state_dict': _read_state_dict,
           'load_scores': _load_scores}


@pytest.mark.parametrize('payload', sorted(PAYLOADS))
@pytest.mark.parametrize('loader', sorted(LOADERS))
def test_loaders_refuse_a_malicious_pickle(tmp_path, loader, payload):
    path, marker = evil_checkpoint(tmp_path / 'evil.pt', PAYLOADS[payload])
    with pytest.raises(UntrustedCheckpointError) as err:
        LOADERS[loader](path)
    _refused(err, marker, payload.split('.')[1])


def test_legacy_format_malicious_pickle_refused(tmp_path):
    """torch < 1.6 files are a plain pickle stream, not a zip."""
    marker = str(tmp_path / 'MARKER')
    path = tmp_path / 'old.pth'
    torch.save({'model': {'w': torch.ones(2)}, 'x': ShellPayload(marker)},
               path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    with pytest.raises(UntrustedCheckpointError) as err:
        load_checkpoint(path)
    _refused(err, marker)


def test_score_pickle_refused_and_real_ones_load(tmp_path):
    from cast_mmaction.evaluation.epic_metric import load_scores, save_scores
    marker = str(tmp_path / 'MARKER')
    evil = tmp_path / 'scores.pkl'
    with open(evil, 'wb') as f:
        pickle.dump({'narration_id': ['P01_01_0'],
                     'verb_output': ShellPayload(marker)}, f)
    with pytest.raises(UntrustedCheckpointError) as err:
        load_scores(str(evil))
    _refused(err, marker)
    # the official dict and list formats, NumPy and tensors, pickle and .pt
    verb, noun = np.random.rand(3, 97), np.random.rand(3, 300)
    ids = ['P01_01_0', 'P01_01_1', 'P02_03_7']
    for name in ('s.pkl', 's.pt'):
        path = save_scores(str(tmp_path / name), ids, verb, noun)
        got = load_scores(path)
        assert got[0] == ids
        np.testing.assert_allclose(got[1], verb.astype(np.float32))
        np.testing.assert_allclose(got[2], noun.astype(np.float32))
    listed = tmp_path / 'list.pkl'
    with open(listed, 'wb') as f:
        pickle.dump([dict(narration_id=i, verb_output=torch.tensor(v),
                          noun_output=n) for i, v, n in zip(ids, verb, noun)],
                    f, protocol=pickle.HIGHEST_PROTOCOL)
    got = load_scores(str(listed))
    assert got[0] == ids
    np.testing.assert_allclose(got[1], verb)


def test_allow_list_is_scoped_to_our_loads(tmp_path):
    path = tmp_path / 'np.pth'
    rng = np.random.RandomState(4).get_state()
    torch.save({'state_dict': {'w': torch.ones(1)}, 'rng': rng,
                'n': np.float64(0.5), 'i': np.int64(7)}, path)
    got = load_checkpoint(path)
    assert type(got['n']) is np.float64 and got['n'] == 0.5
    assert type(got['i']) is np.int64 and got['i'] == 7
    _same(got['rng'], rng)
    # none of our entries stays registered for the rest of the process
    registered = torch.serialization.get_safe_globals()
    assert not [g for g in safe_load.allowed_globals() if g in registered]
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def _save_with_state(obj, cls, state, path):
    """torch.save ``obj`` with every ``cls`` instance pickled as
    ``cls.__new__(cls)`` + BUILD(``state``) (a hand-made file)."""

    class Pickler(pickle.Pickler):
        def reducer_override(self, o):
            if type(o) is cls:
                return (copyreg.__newobj__, (cls, ), state)
            return NotImplemented

    torch.save(obj, path, pickle_module=types.SimpleNamespace(
        __name__='pickle', Pickler=Pickler))


def test_history_buffer_state_is_checked(tmp_path):
    """MMEngine's HistoryBuffer merges pickled statistics methods into a
    dict all buffers share (and calls them later): only HistoryBuffer's own
    are accepted."""
    from mmengine.logging.history_buffer import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(1.0)
    good = tmp_path / 'hub.pth'
    torch.save({'message_hub': {'log_scalars': {'loss': buf}}}, good)
    got = load_checkpoint(good)['message_hub']['log_scalars']['loss']
    assert type(got) is HistoryBuffer and got.mean() == 1.0
    for bad_method in (np.dtype, torch.Tensor):  # allowed globals
        state = dict(vars(buf), statistics_methods={'mean': bad_method})
        bad = tmp_path / 'hub_bad.pth'
        _save_with_state({'b': buf}, HistoryBuffer, state, bad)
        with pytest.raises(UntrustedCheckpointError, match='HistoryBuffer'):
            load_checkpoint(bad)
    assert HistoryBuffer._statistics_methods['mean'] is \
        vars(HistoryBuffer)['mean']


# ----------------------------------------------------------------------------
# expert weights (config ``pretrained``)
# ----------------------------------------------------------------------------
def _experts():
    from cast_mmaction.models.backbones.msca_vit import MSCAViT
    from cast_mmaction.models.experts import CLIPViTExpert, VideoMAEExpert
    from cast_mmaction.models.experts.ast import ASTExpert
    return {
        'clip': lambda p: CLIPViTExpert(embed_dim=32, depth=1, num_heads=2,
                                        patch_size=16, img_size=32,
                                        num_frames=4, pretrained=p),
        'vmae': lambda p: VideoMAEExpert(embed_dim=32, depth=1, num_heads=2,
                                         patch_size=16, tubelet_size=2,
                                         img_size=32, num_frames=4,
                                         pretrained=p),
        'ast': lambda p: ASTExpert(embed_dim=8, depth=1, num_heads=2,
                                   input_tdim=46, pretrained=p),
        'msca': lambda p: MSCAViT(embed_dim=32, depth=1, num_heads=2,
                                  img_size=32, patch_size=16, pretrained=p),
    }


@pytest.mark.parametrize('kind', ['clip', 'vmae', 'ast', 'msca'])
def test_expert_pretrained_refuses_a_malicious_pickle(tmp_path, kind):
    path, marker = evil_checkpoint(tmp_path / f'{kind}.pth')
    module = _experts()[kind](path)
    with pytest.raises(UntrustedCheckpointError) as err:
        module.init_weights()
    _refused(err, marker)


def test_expert_trust_checkpoint_config_field(tmp_path):
    """A file with an object outside the allow-list loads only when its
    config dict says trust_checkpoint=True; the field is removed before the
    model is built."""
    from mmengine.config import Config
    src = _experts()['clip'](None)
    path = str(tmp_path / 'clip_with_path.pth')
    torch.save({'state_dict': src.state_dict(),
                'source': pathlib.PurePosixPath('/data/clip')}, path)
    with pytest.raises(UntrustedCheckpointError, match='PurePosixPath'):
        _experts()['clip'](path).init_weights()
    cfg = Config(dict(model=dict(backbone=dict(experts=dict(clip=dict(
        type='CLIPViTExpert', pretrained=path, trust_checkpoint=True))))))
    try:
        assert safe_load.trust_config(cfg) == [path]
        assert 'trust_checkpoint' not in cfg.model.backbone.experts.clip
        dst = _experts()['clip'](path)
        dst.init_weights()
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), k
    finally:
        safe_load._TRUSTED.discard(safe_load._key(path))
    bad = Config(dict(model=dict(backbone=dict(trust_checkpoint=True))))
    with pytest.raises(ValueError, match='names no file'):
        safe_load.trust_config(bad)


def test_trust_fields_work_without_this_packages_tools(tmp_path):
    """Under MMAction2's own tools or a plain Runner.from_cfg (no
    trust_config): an expert dict's trust_checkpoint is applied by the
    backbone that builds it (it reached the expert's constructor: TypeError),
    the MSCA backbone takes its own, and the top-level field is applied by
    StartupCheckHook before the run loads (it did nothing while the
    refusal's hint recommended it)."""
    import types
    from mmaction.registry import MODELS
    from cast_mmaction.engine.hooks import StartupCheckHook
    src = _experts()['clip'](None)
    path = str(tmp_path / 'clip_with_path.pth')
    torch.save({'state_dict': src.state_dict(),
                'source': pathlib.PurePosixPath('/data/clip')}, path)
    expert = dict(type='CLIPViTExpert', embed_dim=32, depth=1, num_heads=2,
                  patch_size=16, pretrained=path)
    try:
        for spec in (dict(type='CASTBackbone', num_frames=2, img_size=32,
                          experts=dict(clip=dict(expert,
                                                 trust_checkpoint=True)),
                          links=[]),
                     dict(type='STAdapterViT', num_frames=2, img_size=32,
                          expert=dict(expert, trust_checkpoint=True),
                          adapter_width=8)):
            safe_load._TRUSTED.discard(safe_load._key(path))
            model = MODELS.build(spec)
            model.init_weights()
            assert safe_load.is_trusted(path), spec['type']
        safe_load._TRUSTED.discard(safe_load._key(path))
        with pytest.raises(ValueError, match='names no file'):
            MODELS.build(dict(type='MSCAViT', embed_dim=32, depth=1,
                              num_heads=2, img_size=32,
                              trust_checkpoint=True))
        # the top-level field, applied before Runner.load_or_resume
        ckpt = str(tmp_path / 'run.pth')
        (tmp_path / 'work').mkdir()
        runner = types.SimpleNamespace(
            cfg=dict(trust_checkpoint=True, load_from=ckpt), _load_from=ckpt,
            _resume=False, work_dir=str(tmp_path / 'work'),
            model=torch.nn.Linear(2, 2))
        StartupCheckHook._trust_from_config(runner)
        assert safe_load.is_trusted(ckpt)
        assert not safe_load.is_trusted(str(tmp_path / 'work' / 'x.pth'))
        runner._resume = True
        StartupCheckHook._trust_from_config(runner)
        assert safe_load.is_trusted(str(tmp_path / 'work' / 'x.pth'))
    finally:
        for p in (path, str(tmp_path / 'run.pth'), str(tmp_path / 'work')):
            safe_load._TRUSTED.discard(safe_load._key(p))


# ----------------------------------------------------------------------------
# TorchScript archives (the OpenAI CLIP release)
# ----------------------------------------------------------------------------
class _Stateful(nn.Module):
    """A module whose TorchScript __setstate__ runs on torch.jit.load."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return x * self.w

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        self.w = state[0]
        self.training = state[1]
        print('PAYLOAD')


def malicious_archive(path):
    """What an attacker ships: TorchScript whose __setstate__ (run by
    torch.jit.load) creates a file through torch.from_file."""
    marker = str(path) + '.MARKER'
    plain = str(path) + '.plain'
    torch.jit.script(_Stateful()).save(plain)
    payload = (f'    _0 = torch.from_file("{marker}", True, 4, dtype=0)\n'
               f'    _1 = torch.fill_(_0, 65)\n    print(_0)\n').encode()
    injected = 0
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(path, 'w') as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith('.debug_pkl'):
                continue
            if b'print("PAYLOAD")' in data and item.filename.endswith('.py'):
                data = data.replace(b'    print("PAYLOAD")\n', payload)
                injected += 1
            zout.writestr(item, data)
    assert injected == 1
    return str(path), marker


def test_malicious_torchscript_archive(tmp_path):
    from cast_mmaction.checkpoints.clip import load_clip_expert
    path, marker = malicious_archive(tmp_path / 'ViT-B-16.pt')
    # control: torch.jit.load runs the archive's code
    torch.jit.load(path)
    assert osp.exists(marker)
    os.remove(marker)
    with pytest.raises(UntrustedCheckpointError) as err:
        load_clip_expert(_experts()['clip'](None), path)
    _refused(err, marker, '__getstate__')


class _OpenAIStyle(nn.Module):
    """Shaped like OpenAI's release: an image tower under ``visual`` and
    text-side parameters, traced to TorchScript."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual
        self.token_embedding = nn.Embedding(10, 32)
        self.logit_scale = nn.Parameter(torch.ones([]))

    def forward(self, x):
        return self.visual.conv1(x).mean() * self.logit_scale


class _Scripted(nn.Module):
    """Parameters, buffers, a fp16 strided parameter and a tensor attribute
    that is neither (not part of the state dict)."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2)
        self.bn = nn.BatchNorm1d(8)
        self.seq = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.LayerNorm(8))
        self.register_buffer('mask', torch.randn(3, 3))
        self.plain = torch.ones(2)
        self.hw = nn.Parameter(torch.randn(4, 2).half()[:, 0])

    def forward(self, x):
        return self.seq(self.bn(x)) + self.plain.sum() + self.hw.float().sum()


def _archives(tmp_path):
    torch.manual_seed(0)
    clip = _experts()['clip'](None)
    traced = torch.jit.trace(_OpenAIStyle(clip), torch.randn(1, 3, 32, 32))
    out = {'openai_traced': str(tmp_path / 'traced.pt'),
           'scripted': str(tmp_path / 'scripted.pt')}
    traced.save(out['openai_traced'])
    torch.jit.script(_Scripted()).save(out['scripted'])
    open_clip = pytest.importorskip('open_clip')
    model = open_clip.CLIP(
        embed_dim=32, vision_cfg=dict(layers=1, width=32, head_width=16,
                                      patch_size=16, image_size=32),
        text_cfg=dict(context_length=8, vocab_size=50, width=32, heads=2,
                      layers=1), quick_gelu=True).eval()
    out['open_clip_scripted'] = str(tmp_path / 'oc.pt')
    torch.jit.script(model).save(out['open_clip_scripted'])
    return out, clip


def test_torchscript_archives_read_without_running_code(tmp_path):
    archives, clip = _archives(tmp_path)
    for name, path in archives.items():
        assert safe_load.is_torchscript_archive(path)
        ours = safe_load.read_torchscript_state(path)
        ref = torch.jit.load(path).state_dict()
        assert list(ours) == list(ref), name
        for k, v in ref.items():
            assert ours[k].dtype == v.dtype and torch.equal(ours[k], v), k
    # the CLIP expert loads the OpenAI-style archive
    from cast_mmaction.checkpoints.clip import load_clip_expert
    dst = _experts()['clip'](None)
    missing, unexpected = load_clip_expert(dst, archives['openai_traced'])
    assert missing == [] and unexpected == []
    for k, v in clip.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


# ----------------------------------------------------------------------------
# foreign state dicts: the authors', VideoMAE, AST, open_clip
# ----------------------------------------------------------------------------
def _same(a, b, path=''):
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _same(a[k], b[k], f'{path}/{k}')
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f'{path}[{i}]')
    elif torch.is_tensor(a):
        assert torch.equal(a, b) and a.dtype == b.dtype, path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    elif hasattr(a, '__dict__') and not isinstance(a, type):
        assert type(a) is type(b), path
        _same(vars(a), vars(b), path)
    else:
        assert type(a) is type(b) and a == b, (path, a, b)


def _sorted(state):
    """safetensors stores tensors by name order."""
    return dict(sorted(state.items()))


def _authors_layouts(state):
    """How the authors' training scripts (VideoMAE lineage) save: without
    DeepSpeed, and DeepSpeed's model-states file."""
    params = [nn.Parameter(torch.randn(3)) for _ in range(2)]
    opt = torch.optim.AdamW(params)
    for p in params:
        p.grad = torch.ones(3)
    opt.step()  # exp_avg, exp_avg_sq, step per parameter
    args = argparse.Namespace(model='vit_base_patch16_224', batch_size=6,
                              lr=1e-3, layer_decay=0.75, update_freq=1,
                              data_set='SSV2', nb_classes=174,
                              output_dir='/ckpt/ssv2', seed=0, opt_betas=None,
                              enable_deepspeed=False)
    plain = {'model': state, 'optimizer': opt.state_dict(), 'epoch': 29,
             'scaler': {'scale': 65536.0, 'growth_factor': 2.0,
                        'backoff_factor': 0.5, 'growth_interval': 2000,
                        '_growth_tracker': 12},
             'args': args, 'max_accuracy': np.float64(71.2)}
    deepspeed = {
        'module': state, 'buffer_names': [], 'optimizer': {
            'dynamic_loss_scale': True, 'cur_scale': 128.0, 'cur_iter': 10,
            'last_overflow_iter': 3, 'scale_factor': 2.0,
            'scale_window': 128,
            'optimizer_state_dict': opt.state_dict(),
            'fp32_groups_flat': [torch.randn(4)], 'clip_grad': 0.0},
        'param_shapes': [OrderedDict(w=torch.Size([2, 3]))],
        'frozen_param_shapes': None,
        'shared_params': None, 'frozen_param_fragments': None,
        'lr_scheduler': None, 'data_sampler': None, 'random_ltd': None,
        'sparse_tensor_module_names': set(), 'skipped_steps': 0,
        'global_steps': 3000, 'global_samples': 384000, 'dp_world_size': 8,
        'mp_world_size': 1, 'ds_config': None, 'ds_version': '0.9.5',
        'epoch': 29, 'model_ema': None}
    return {'plain': plain, 'deepspeed': deepspeed}


def test_real_foreign_layouts_load(tmp_path):
    from cast_mmaction.checkpoints.common import read_state_dict
    g = torch.Generator().manual_seed(0)

    def sd(*names):
        return OrderedDict((n, torch.randn(3, 4, generator=g)) for n in names)

    files = {
        # VideoMAE pretraining release: {'model': {'encoder.*', ...}}
        'videomae.pth': {'model': sd('encoder.patch_embed.proj.weight',
                                     'decoder.head.weight')},
        # AST release: a DataParallel state dict (module.v.*)
        'ast.pth': sd('module.v.cls_token', 'module.mlp_head.1.weight'),
        # open_clip release (open_clip_pytorch_model.bin)
        'open_clip.bin': sd('visual.conv1.weight', 'logit_scale'),
        # MMAction2 model-zoo style: meta with plain values
        'zoo.pth': {'state_dict': sd('backbone.w'), 'meta': {
            'mmengine_version': '0.7.0', 'config': 'model = dict()',
            'dataset_meta': {'classes': ['a', 'b']}, 'epoch': 30}},
    }
    files.update({f'authors_{k}.pth': v for k, v in
                  _authors_layouts(sd('a.weight', 'b.bias')).items()})
    # torch < 1.6 wrote a plain pickle stream, not a zip
    files['legacy_format.pth'] = dict(files['authors_plain.pth'])
    for name, obj in files.items():
        path = tmp_path / name
        zipped = not name.startswith('legacy')
        torch.save(obj, path, _use_new_zipfile_serialization=zipped)
        assert zipfile.is_zipfile(path) == zipped
        got = load_checkpoint(path)
        _same(got, torch.load(path, weights_only=False), name)
        state = read_state_dict(str(path), name)
        assert state and all(torch.is_tensor(v) for v in state.values())


def test_authors_reference_checkpoints_load():
    from cast_mmaction.checkpoints.common import read_state_dict
    root = os.path.dirname(shared_fixture('cast_single'))
    found = sorted(n for n in os.listdir(root) if osp.isfile(
        osp.join(root, n, 'official_checkpoint.pth')))
    assert len(found) >= 10
    for name in found:
        path = osp.join(root, name, 'official_checkpoint.pth')
        ref = torch.load(path, weights_only=False)
        _same(load_checkpoint(path), ref, name)
        assert read_state_dict(path, name)
        for extra in ('input.pt', 'expected.pt'):  # reference dumps
            _same(load_checkpoint(osp.join(root, name, extra)),
                  torch.load(osp.join(root, name, extra),
                             weights_only=False), name + extra)


# ----------------------------------------------------------------------------
# tools/convert/convert_checkpoint.py and tools/convert/to_safetensors.py
# ----------------------------------------------------------------------------
def test_convert_checkpoint_refuses_malicious_file(tmp_path, tools):
    path, marker = evil_checkpoint(tmp_path / 'evil.pt')
    dst = tmp_path / 'out.pth'
    with pytest.raises(SystemExit) as err:
        tools['convert_checkpoint'].main(
            [path, str(dst), '--config',
             osp.join(ROOT, 'configs', 'cast_ssv2.py')])
    _refused(str(err.value.code), marker)
    assert not dst.exists()


def test_convert_authors_dump_to_safetensors_and_trust_flag(tmp_path, tools):
    fixture = shared_fixture('cast_single')
    official = torch.load(osp.join(fixture, 'official_checkpoint.pth'),
                          weights_only=True)
    # the authors' DeepSpeed dump with their args (allowed) ...
    dump = tmp_path / 'ds.pth'
    torch.save(dict(_authors_layouts(official['module'])['deepspeed'],
                    args=argparse.Namespace(output_dir='/x')), dump)
    conv = tools['convert_checkpoint']
    conv.main([str(dump), str(tmp_path / 'a.pth'), '--kind', 'cast'])
    conv.main([str(dump), str(tmp_path / 'a.safetensors'), '--kind', 'cast'])
    # a format other than the extension's: refused (the readers go by the
    # extension, so nothing would read b.out back)
    with pytest.raises(SystemExit) as err:
        conv.main([str(dump), str(tmp_path / 'b.out'), '--kind', 'cast',
                   '--format', 'safetensors'])
    assert err.value.code == 2 and not (tmp_path / 'b.out').exists()
    conv.main([str(dump), str(tmp_path / 'b.safetensors'), '--kind', 'cast',
               '--format', 'safetensors'])
    ref = load_checkpoint(tmp_path / 'a.pth')
    for name in ('a.safetensors', 'b.safetensors'):
        with open(tmp_path / name, 'rb') as f:  # no pickle inside
            assert b'\x80\x02' not in f.read(64)
        got = safe_load.load_safetensors(str(tmp_path / name))
        _same(_sorted(got['state_dict']), _sorted(ref['state_dict']), name)
        assert got['meta']['kind'] == 'cast'
    # ... and one whose args hold an object outside the allow-list
    odd = tmp_path / 'odd.pth'
    torch.save({'module': official['module'],
                'args': pathlib.PurePosixPath('/x')}, odd)
    with pytest.raises(SystemExit) as err:
        conv.main([str(odd), str(tmp_path / 'c.pth'), '--kind', 'cast'])
    assert 'PurePosixPath' in str(err.value.code)
    assert '--trust-checkpoint' in str(err.value.code)
    try:
        with pytest.warns(UserWarning, match='WITHOUT restrictions'):
            conv.main([str(odd), str(tmp_path / 'c.pth'), '--kind', 'cast',
                       '--trust-checkpoint'])
    finally:
        safe_load._TRUSTED.discard(safe_load._key(odd))
    _same(load_checkpoint(tmp_path / 'c.pth')['state_dict'],
          ref['state_dict'])


# ----------------------------------------------------------------------------
# a tiny training run: our checkpoints, resume, load_from, tools
# ----------------------------------------------------------------------------
TINY = TINY_CONFIG_HEAD.replace('{drop_path}', '0.1').replace(
    'clip=dict(embed_dim=32, depth=1, num_heads=2)',
    'clip=dict(embed_dim=32, depth=1, num_heads=2, frozen=True,\n'
    '                 pretrained={clip!r})'
).replace(
    'vmae=dict(embed_dim=32, depth=1, num_heads=2)',
    'vmae=dict(embed_dim=32, depth=1, num_heads=2, frozen=True,\n'
    '                 pretrained={vmae!r})') + """
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file=data + '/train_list.txt',
                 data_prefix=dict(video=data), pipeline=pipe_train))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file=data + '/val_list.txt',
                 data_prefix=dict(video=data), pipeline=pipe_test))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_begin=1, val_interval=1)
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False,
                        begin=0, end=2)]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3),
                     logger=dict(interval=1))
custom_hooks = [dict(type='TrainableCheckpointHook')]
randomness = dict(seed=3)
"""


@pytest.fixture(scope='module')
def run(tmp_path_factory, tools):
    """Expert files (CLIP as an OpenAI-style TorchScript archive, VideoMAE
    as .safetensors) and one epoch of tools/train.py with trainable-only
    checkpoints and the exact-resume state."""
    from mmengine.config import Config

    from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
    from cast_mmaction.utils import build_model
    root = tmp_path_factory.mktemp('security')
    data = str(root / 'data')
    write_synthetic_video_dataset(data, num_train_per_class=1,
                                  num_val_per_class=1, num_frames=8, size=32,
                                  seed=5)
    clip, vmae = str(root / 'ViT-tiny.pt'), str(root / 'vmae.safetensors')
    assert TINY.count('frozen=True') == 2
    cfg_path = str(root / 'tiny.py')
    with open(cfg_path, 'w') as f:
        f.write(TINY.format(base=osp.join(ROOT, 'configs', 'cast_demo.py'),
                            data=data, clip=clip, vmae=vmae))
    torch.manual_seed(11)
    cfg = Config.fromfile(cfg_path)
    cfg.model.backbone.experts.clip.pretrained = None
    cfg.model.backbone.experts.vmae.pretrained = None
    model = build_model(cfg.model)
    experts = model.backbone.experts
    torch.jit.trace(_OpenAIStyle(experts['clip']),
                    torch.randn(1, 3, 32, 32)).save(clip)
    safe_load.save_safetensors(experts['vmae'].state_dict(), vmae)
    work = str(root / 'work')
    tools['train'].main([cfg_path, '--work-dir', work, '--cfg-options',
                         f'experiment_name={_unique("sec")}'])
    return dict(root=root, cfg=cfg_path, work=work, data=data,
                ckpt=osp.join(work, 'epoch_1.pth'), clip=clip, vmae=vmae)


def test_our_checkpoint_loads_through_the_allow_list(run):
    ckpt = load_checkpoint(run['ckpt'])
    for key in ('meta', 'state_dict', 'message_hub', 'optimizer',
                'param_schedulers', 'rng_state', 'frozen_experts'):
        assert key in ckpt, key
    assert isinstance(ckpt['rng_state']['numpy'][1], np.ndarray)
    _same(ckpt, torch.load(run['ckpt'], weights_only=False))
    # a file MMEngine's own loader (mmengine.runner) opens the same way
    _same(_mmengine_load(run['ckpt']), ckpt)


def test_resume_load_from_and_test_tool(run, tools):
    # --resume continues from the trainable-only checkpoint (epoch 1 is not
    # trained, nor its checkpoint written, again)
    with open(run['ckpt'], 'rb') as f:
        first = f.read()
    tools['train'].main([run['cfg'], '--work-dir', run['work'], '--resume',
                         '--cfg-options', 'train_cfg.max_epochs=2',
                         f'experiment_name={_unique("sec")}'])
    resumed = load_checkpoint(osp.join(run['work'], 'epoch_2.pth'))
    assert resumed['meta']['epoch'] == 2 and resumed['meta']['iter'] == 2
    with open(run['ckpt'], 'rb') as f:
        assert f.read() == first
    # tools/test.py on the .pth and on its .safetensors copy
    st = str(run['root'] / 'epoch_1.safetensors')
    assert tools['to_safetensors'].main([run['ckpt'], st]) == 0
    meta = safe_load.load_safetensors(st)
    assert set(meta) == {'state_dict', 'meta', 'frozen_experts'}
    # the start-up check of --resume FILE reads the real checkpoint's
    # training state through the allow-list, mapped; the export has none
    from mmengine.config import Config
    from cast_mmaction.engine.checks import NotResumableError, check_resumable
    check_resumable(Config(dict(resume=True, load_from=run['ckpt'])))
    with pytest.raises(NotResumableError):
        check_resumable(Config(dict(resume=True, load_from=st)))
    results = {}
    for name, path in (('pth', run['ckpt']), ('safetensors', st)):
        work = str(run['root'] / f'test_{name}')
        results[name] = tools['test'].main(
            [run['cfg'], path, '--work-dir', work, '--cfg-options',
             f'experiment_name={_unique("sec")}'])
    assert results['pth'] == results['safetensors'] and results['pth']
    # load_from a .safetensors checkpoint (fine-tuning start)
    work = str(run['root'] / 'from_st')
    tools['train'].main([run['cfg'], '--work-dir', work, '--cfg-options',
                         f'load_from={st}',
                         f'experiment_name={_unique("sec")}'])
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))


@pytest.mark.parametrize('how', ['test', 'resume', 'load_from'])
def test_train_and_test_tools_refuse_malicious_checkpoints(run, tools,
                                                           tmp_path, how):
    path, marker = evil_checkpoint(tmp_path / 'evil.pth', layout='mmengine')
    work = str(tmp_path / 'work')
    name = f'experiment_name={_unique("sec")}'
    argv = {
        'test': [run['cfg'], path, '--work-dir', work, '--cfg-options', name],
        'resume': [run['cfg'], '--work-dir', work, '--resume', path,
                   '--cfg-options', name],
        'load_from': [run['cfg'], '--work-dir', work, '--cfg-options',
                      f'load_from={path}', name],
    }[how]
    tool = tools['test' if how == 'test' else 'train']
    with pytest.raises(SystemExit) as err:
        tool.main(argv)
    assert str(err.value.code).startswith('UntrustedCheckpointError')
    _refused(str(err.value.code), marker)
    assert not [n for n in os.listdir(work) if n.endswith('.pth')]


def _full_checkpoint(run, folder):
    """A full (not trainable-only) checkpoint of the tiny model."""
    from mmengine.config import Config

    from cast_mmaction.utils import build_model
    cfg = Config.fromfile(run['cfg'])
    model = build_model(cfg.model)
    ckpt = {'state_dict': model.state_dict(), 'meta': {}}
    path = str(folder / 'full.pth')
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize('tool', ['infer', 'extract_features',
                                  'attention_maps'])
def test_inference_tools(run, tools, tmp_path, capsys, tool):
    video = sorted(pathlib.Path(run['data'], 'val').glob('*.mp4'))[0]
    full = _full_checkpoint(run, tmp_path)
    st = str(tmp_path / 'full.safetensors')
    safe_load.save_safetensors(load_checkpoint(full), st)
    evil, marker = evil_checkpoint(tmp_path / 'evil.pth', layout='mmengine')
    out = str(tmp_path / 'out')
    extra = {'infer': ['--one-view', '--num-workers', '0', '--out',
                       out + '.json'],
             'extract_features': ['--one-view', '--num-workers', '0',
                                  '--out-dir', out],
             'attention_maps': ['--out-dir', out]}[tool]

    def call(ckpt, *more):
        return tools[tool].main([str(video), '--config', run['cfg'],
                                 '--checkpoint', ckpt, '--device', 'cpu',
                                 *extra, *more])

    assert call(evil) == 2
    _refused(capsys.readouterr().err, marker)
    assert call(st) in (0, None)  # a .safetensors checkpoint
    # a file with an object outside the allow-list: refused, or opened
    # with --trust-checkpoint
    odd = str(tmp_path / 'odd.pth')
    ckpt = load_checkpoint(full)
    ckpt['meta'] = {'source': pathlib.PurePosixPath('/x')}
    torch.save(ckpt, odd)
    capsys.readouterr()
    assert call(odd) == 2
    assert 'PurePosixPath' in capsys.readouterr().err
    try:
        with pytest.warns(UserWarning, match='WITHOUT restrictions'):
            assert call(odd, '--trust-checkpoint') in (0, None)
    finally:
        safe_load._TRUSTED.discard(safe_load._key(odd))


# ----------------------------------------------------------------------------
# MMEngine's loaders, URLs, trust scoping
# ----------------------------------------------------------------------------
def test_mmengine_loaders_are_ours(tmp_path):
    from mmengine.runner import checkpoint as ckpt_mod
    loader = ckpt_mod.CheckpointLoader
    assert loader._get_checkpoint_loader('/x.pth') is \
        safe_load.load_from_local
    assert loader._get_checkpoint_loader('https://x/y.pth') is \
        safe_load.load_from_url
    assert ckpt_mod.load_from_http is safe_load.load_from_url
    # a URL (file:// here) goes through the same checks
    path, marker = evil_checkpoint(tmp_path / 'evil.pth')
    with pytest.raises(UntrustedCheckpointError) as err:
        safe_load.load_from_url('file://' + path,
                                model_dir=str(tmp_path / 'cache'))
    _refused(err, marker)
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.ones(3)}}, good)
    got = safe_load.load_from_url('file://' + str(good),
                                  model_dir=str(tmp_path / 'cache'))
    assert torch.equal(got['state_dict']['w'], torch.ones(3))


def test_trust_is_per_file_and_scoped(tmp_path):
    path, marker = evil_checkpoint(tmp_path / 'evil.pth', OpenPayload)
    other = tmp_path / 'other.pth'
    with safe_load.trusted(str(other)):  # trusting another file
        with pytest.raises(UntrustedCheckpointError):
            load_checkpoint(path)
    assert not osp.exists(marker)
    with safe_load.trusted(str(tmp_path)):  # a folder: files under it
        with pytest.warns(UserWarning, match='WITHOUT restrictions'):
            load_checkpoint(path)
    assert osp.exists(marker)  # trusted: unpickled without restrictions
    os.remove(marker)
    assert not safe_load.is_trusted(path)  # the scope ended
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(path)
    assert not osp.exists(marker)


def test_safetensors_round_trip_and_corrupt_files(tmp_path):
    a = torch.randn(4, 4)
    ckpt = {'state_dict': {'a': a, 'a_view': a[1], 'b': torch.arange(3)},
            'meta': {'epoch': 3, 'note': 'x'}, 'optimizer': {'s': a},
            'frozen_experts': {'clip': {'pretrained': 'c.pt'}}}
    path = str(tmp_path / 'c.safetensors')
    assert safe_load.save_safetensors(ckpt, path) == ['optimizer']
    got = load_checkpoint(path)
    _same(got['state_dict'], _sorted({k: v.contiguous() for k, v in
                                      ckpt['state_dict'].items()}))
    assert got['meta'] == ckpt['meta']
    assert got['frozen_experts'] == ckpt['frozen_experts']
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a PyTorch checkpoint'):
        load_checkpoint(tmp_path / 'junk.pt')
    buf = io.BytesIO()
    torch.save({'w': torch.ones(2)}, buf)
    (tmp_path / 'cut.pt').write_bytes(buf.getvalue()[:200])
    with pytest.raises(ValueError, match='truncated'):
        load_checkpoint(tmp_path / 'cut.pt')


def test_ek100_submission_refuses_a_malicious_score_file(tmp_path, capsys):
    """tools/analysis_tools/ek100_submission.py --scores opens the file through the safe
    loader: refused with the offending type named, unless trusted."""
    import pickle
    marker = str(tmp_path / 'MARKER')
    scores = tmp_path / 'scores.pkl'
    with open(scores, 'wb') as f:
        pickle.dump({'narration_id': ['P01_101_0'],
                     'verb_output': np.zeros((1, 97), np.float32),
                     'noun_output': np.zeros((1, 300), np.float32),
                     'x': ShellPayload(marker)}, f)
    csv = tmp_path / 'test_timestamps.csv'
    csv.write_text('narration_id,participant_id,video_id,narration_timestamp,'
                   'start_timestamp,stop_timestamp,start_frame,stop_frame\n'
                   'P01_101_0,P01,P01_101,00:00:01.00,00:00:01.00,'
                   '00:00:02.00,50,100\n')
    tool = load_tool('ek100_submission')
    argv = ['--scores', str(scores), '--test-csv', str(csv), '--out',
            str(tmp_path / 'sub.json'), '--sls-pt', '0', '--sls-tl', '0',
            '--sls-td', '0']
    assert tool.main(argv) == 2
    _refused(capsys.readouterr().err, marker)
    assert not (tmp_path / 'sub.json').exists()
