"""A short training of each PEFT baseline recipe (configs/st_adapter_ssv2.py,
configs/aim_ssv2.py) shrunk to a tiny model on the synthetic videos, with
MMEngine's Runner and the recipe's optimizer, hooks and dataset wrapper:
the loss stays finite, the frozen CLIP tower is unchanged, the adapters
(and AIM's temporal embedding) move. Then the test loop dumps predictions
and the ensemble and balance tools read what it wrote."""
import importlib.util
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

TINY = """
_base_ = [{base!r}]
data = {data!r}
model = dict(
    backbone=dict(num_frames=4, img_size=32,
                  expert=dict(embed_dim=32, depth=2, num_heads=2,
                              pretrained=None){extra}),
    cls_head=dict(num_classes=4, in_channels=32, dropout_ratio=0.0),
    data_preprocessor=dict(mean=[127.5] * 3, std=[60.0] * 3))
pipe = [
    dict(type='VideoInit', backend='pyav'),
    dict(type='SegmentSample', num_segments=4),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')]
pipe_test = [
    dict(type='VideoInit', backend='pyav'),
    dict(type='SegmentSample', num_segments=4, test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')]
loader = dict(batch_size=4, num_workers=0, persistent_workers=False)
train_dataloader = dict(
    loader, dataset=dict(ann_file=data + '/train_list.txt',
                         data_prefix=dict(video=data), pipeline=pipe))
test_dataloader = dict(
    loader, dataset=dict(ann_file=data + '/val_list.txt',
                         data_prefix=dict(video=data), pipeline=pipe_test))
val_dataloader = None
val_cfg = None
val_evaluator = None
train_cfg = dict(max_epochs=1, val_interval=1)
optim_wrapper = dict(type='GuardedOptimWrapper', optimizer=dict(lr=1e-2))
param_scheduler = [dict(type='ConstantLR', factor=1.0)]
auto_scale_lr = dict(enable=False)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1,
                                     save_best=None),
                     logger=dict(interval=1))
randomness = dict(seed=0)
"""


class _Snapshot(Hook):
    """Keeps the parameters as training starts and every loss."""

    def __init__(self):
        self.before, self.losses = None, []

    def before_train(self, runner):
        self.before = {k: v.detach().clone()
                       for k, v in runner.model.named_parameters()}

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append(float(outputs['loss'].detach()))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('peft_data'))
    write_synthetic_video_dataset(root, num_train_per_class=2,
                                  num_val_per_class=1, num_frames=8,
                                  size=32)
    return root


def _train(tmp_path, data, recipe, extra):
    from mmengine.runner import Runner
    from cast_mmaction.utils import ensure_scope
    ensure_scope()
    torch.set_num_threads(1)
    path = tmp_path / f'tiny_{recipe}'
    path.write_text(TINY.format(base=osp.join(ROOT, 'configs', recipe),
                                data=data, extra=extra))
    cfg = Config.fromfile(str(path))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    snap = _Snapshot()
    runner.register_hook(snap, priority='LOWEST')
    runner.train()
    return runner, snap


def _changed(snap, model, prefix):
    now = dict(model.named_parameters())
    names = [n for n in snap.before if n.startswith(prefix)]
    assert names, prefix
    return {n: not torch.equal(snap.before[n], now[n]) for n in names}


@pytest.mark.parametrize('recipe,extra,moving', [
    ('st_adapter_ssv2.py', ', adapter_width=16',
     ('backbone.pre_attn_adapters.clip.', 'backbone.pre_mlp_adapters.clip.')),
    ('aim_ssv2.py', '',
     ('backbone.t_in_adapters.clip.', 'backbone.t_adapters.clip.',
      'backbone.s_adapters.clip.', 'backbone.mlp_adapters.clip.',
      'backbone.temporal_embedding')),
])
def test_recipe_trains_adapters_only(tmp_path, data, recipe, extra, moving,
                                     monkeypatch):
    runner, snap = _train(tmp_path, data, recipe, extra)
    model = runner.model
    assert len(snap.losses) == 2  # 8 clips, batch 4, one epoch
    assert all(torch.isfinite(torch.tensor(snap.losses)))
    tower = _changed(snap, model, 'backbone.experts.clip.')
    # the frozen tower did not move (AIM trains ln_post, as theirs)
    assert not any(v for n, v in tower.items() if 'ln_post' not in n)
    for prefix in moving:
        assert any(_changed(snap, model, prefix).values()), prefix
    assert any(_changed(snap, model, 'cls_head.').values())
    # optimizer state only for the trainable parameters
    trainable = sum(p.requires_grad for p in model.parameters())
    assert len(runner.optim_wrapper.optimizer.state) == trainable

    # the test loop dumps predictions; the tools read them
    dump = str(tmp_path / 'preds.pkl')
    runner.test_evaluator.metrics.append(_dump_metric(dump))
    metrics = runner.test()
    assert 0.0 <= metrics['acc/top1'] <= 1.0
    assert osp.isfile(dump)
    fused = _tool('ensemble').main([dump, dump])
    assert fused['fused']['acc/top1'] == pytest.approx(metrics['acc/top1'])


def _dump_metric(path):
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=path)


def _tool(name):
    from _tools import tool_path
    spec = importlib.util.spec_from_file_location(f'_tool_{name}',
                                                  tool_path(name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _metrics(tmp_path, name, **values):
    path = tmp_path / name / 'test_metrics.json'
    path.parent.mkdir()
    path.write_text(json.dumps(dict(config=name, checkpoint=name + '.pth',
                                    metrics=values)))
    return str(path.parent)


def test_balance_compares_baselines_with_cast(tmp_path, capsys):
    """The paper's comparison: CLIP-PEFT baselines tested on SSv2 and K400
    next to a model tested on all four tasks (metric keys as the recipes'
    BadSampleAwareMetric / EpicKitchensMetric write them)."""
    acc = dict(**{'acc/top5': 0.9, 'acc/mean1': 0.5, 'acc/bad_samples': 0})
    st_ssv2 = _metrics(tmp_path, 'st_ssv2', **{'acc/top1': 0.6}, **acc)
    st_k400 = _metrics(tmp_path, 'st_k400', **{'acc/top1': 0.8}, **acc)
    cast = dict(ek100=_metrics(tmp_path, 'ek', **{'ek100/verb_top1': 0.75,
                                                  'ek100/noun_top1': 0.25}),
                ssv2=_metrics(tmp_path, 'cast_ssv2', **{'acc/top1': 0.75}),
                k400=_metrics(tmp_path, 'cast_k400', **{'acc/top1': 0.5}))
    out_json = str(tmp_path / 'cmp.json')
    result = _tool('balance').main([
        '--model', 'ST-Adapter', f'ssv2={st_ssv2}', f'k400={st_k400}',
        '--model', 'CAST', *[f'{k}={v}' for k, v in cast.items()],
        '--json', out_json])
    (st, st_vals, st_h), (c, c_vals, c_h) = result['models']
    assert st == 'ST-Adapter' and st_h is None
    assert st_vals == {'EK100 verb': None, 'EK100 noun': None, 'SSv2': 0.6,
                       'K400': 0.8}
    assert c_h == pytest.approx(6 / 13)  # as the single-model balance
    printed = capsys.readouterr().out
    assert 'ST-Adapter' in printed and '60.00' in printed
    assert '46.15' in printed
    saved = json.load(open(out_json))
    assert saved['models'][1]['harmonic_mean'] == pytest.approx(6 / 13)
    with pytest.raises(SystemExit, match='not TASK=FILE'):
        _tool('balance').main(['--model', 'AIM', st_ssv2])
    with pytest.raises(SystemExit, match=r"tasks \['ucf'\]"):
        _tool('balance').main(['--model', 'AIM', f'ucf={st_ssv2}'])
    with pytest.raises(SystemExit, match='not both'):
        _tool('balance').main(['--model', 'AIM', f'ssv2={st_ssv2}',
                               '--k400', st_k400])
