"""tools/benchmark.py runs on a config with no data and no weights."""
import json
import subprocess
import sys
import textwrap

import pytest

from cast_mmaction.models.presets import cast_recognizer_cfg
from conftest import ROOT

sys.path.insert(0, ROOT)
from tools import benchmark  # noqa: E402

OPTIM = ("optim_wrapper = dict(type='OptimWrapper', accumulative_counts=2, "
         "optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, "
         "fused=True), constructor='CASTLayerDecayOptimWrapperConstructor', "
         "paramwise_cfg=dict(layer_decay_rate=0.75))\n")


def _tiny_cfg(tmp_path):
    cfg = tmp_path / 'tiny.py'
    cfg.write_text('model = ' + repr(cast_recognizer_cfg(
        num_classes=5, embed_dim=64, depth=2, num_heads=4, num_frames=8,
        img_size=32)) + '\n' + OPTIM)
    return cfg


def _run(*args):
    return subprocess.run([sys.executable, 'tools/benchmark.py', *args],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_benchmark_tool_reports_every_figure(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    out = tmp_path / 'bench.json'
    r = _run(str(cfg), '--steps', '2', '--warmup', '1', '--batch-size', '2',
             '--phases', 'train,infer,flops,ckpt', '--json', str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for key in ('train_step_s', 'train_peak_mem_gb', 'infer_s_per_clip',
                'clips_per_s', 'infer_peak_mem_gb', 'gflops_per_clip',
                'train_fwd_bwd_s'):
        assert res[key] > 0, key
    assert len(res['train_step_all_s']) == 2
    lo, hi = res['train_step_s_range']
    assert lo <= res['train_step_s'] <= hi
    assert 0 < res['trainable_params'] < res['total_params']
    # the optimizer is the config's (fused AdamW, layer-decay groups)
    assert res['optimizer'].startswith('AdamW(fused;'), res['optimizer']
    assert int(res['optimizer'].split(';')[1].split()[0]) > 1
    assert res['machine']['torch']
    # trainable-only checkpoint: the trainable share of the full one
    share = res['trainable_params'] / res['total_params']
    assert res['ckpt_trainable_only_mb'] == pytest.approx(
        share * res['ckpt_full_mb'], rel=0.15, abs=0.05)
    assert 'train_step_s' in r.stdout


def test_config_without_optimizer_is_a_clear_error(tmp_path):
    cfg = tmp_path / 'noopt.py'
    cfg.write_text('model = ' + repr(cast_recognizer_cfg(
        num_classes=5, embed_dim=64, depth=1, num_heads=4, num_frames=8,
        img_size=32)) + '\n')
    r = _run(str(cfg), '--steps', '1', '--warmup', '0', '--phases', 'train')
    assert r.returncode != 0
    assert 'optim_wrapper.optimizer' in r.stderr + r.stdout


def test_side_by_side_interleaves_and_reports_ratios(tmp_path):
    """The side-by-side plumbing, with a stand-in for the authors' module
    (a checkout of their repository is not part of the test suite)."""
    fake = tmp_path / 'fake_cast'
    (fake / 'models').mkdir(parents=True)
    (fake / 'models' / '__init__.py').write_text('')
    (fake / 'models' / 'bidir_modeling_crossattn.py').write_text(
        textwrap.dedent('''
        import torch.nn as nn

        class Tiny(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.frozen = nn.Conv3d(3, 8, 4, 4)
                self.cross = nn.Linear(8, 8)
                self.head = nn.Linear(8, num_classes)

            def forward(self, x):
                y = self.frozen(x).flatten(2).mean(-1)
                return self.head(self.cross(y))

        def bidir_vit_base_patch16_224(num_classes, all_frames, img_size,
                                       drop_path_rate):
            return Tiny(num_classes)
        '''))
    cfg = _tiny_cfg(tmp_path)
    out = tmp_path / 'sbs.json'
    r = _run(str(cfg), '--steps', '2', '--warmup', '0', '--phases', 'train',
             '--reference-repo', str(fake), '--side-by-side', '--runs', '1',
             '--json', str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    ours, theirs = res['ours'], res['theirs']
    assert ours['model'] == 'ours' and theirs['model'] == 'authors'
    assert ours['optimizer'].startswith('AdamW(fused')
    # the authors' side: their freezing and torch AdamW at its defaults
    assert theirs['optimizer'] == 'AdamW(for-loop; 1 groups)'
    assert theirs['trainable_params'] == 8 * 8 + 8 + 8 * 5 + 5
    assert ours['total_params'] != theirs['total_params']
    assert 'training step (s)' in r.stdout and 'ratio' in r.stdout


def test_child_arguments_per_side():
    argv = ['cfg.py', '--side-by-side', '--runs', '3', '--with-cp',
            '--amp', 'bf16', '--reference-repo', '/x', '--json', 'o.json',
            '--cfg-options', 'a=1', '--reference-amp', 'none']
    args = benchmark.parse_args(argv)
    ours = benchmark._side_argv(argv, 'ours', args)
    theirs = benchmark._side_argv(argv, 'theirs', args)
    assert ours == ['cfg.py', '--with-cp', '--amp', 'bf16', '--cfg-options',
                    'a=1']
    assert theirs == ['cfg.py', '--reference-repo', '/x', '--amp', 'none']


def test_flops_count_the_onednn_matmuls(tmp_path):
    """GFLOPs per clip include the matmuls that run on oneDNN on CPU (the
    flop counter has no formula for that op): the tool's figure equals a
    count of the same model on the plain F.linear path, and is larger than
    the count of everything but the matmuls."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from cast_mmaction.models.layers import use_onednn_linear
    from cast_mmaction.utils import build_model
    cfg = _tiny_cfg(tmp_path)
    out = tmp_path / 'flops.json'
    r = _run(str(cfg), '--phases', 'flops', '--json', str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(out.read_text())['gflops_per_clip']
    model = build_model(cast_recognizer_cfg(
        num_classes=5, embed_dim=64, depth=2, num_heads=4, num_frames=8,
        img_size=32)).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    counts = {}
    for onednn in (False, True):
        previous = use_onednn_linear(onednn)
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                model.cls_head(model.backbone(x))
        finally:
            use_onednn_linear(previous)
        counts[onednn] = fc.get_total_flops() / 1e9
    assert got == pytest.approx(counts[False], rel=1e-6)
    if torch.ops.mkldnn._linear_pointwise is not None:
        assert counts[True] < 0.5 * got  # what the counter sees on oneDNN


def test_authors_side_in_bf16_is_a_clear_error(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    r = _run(str(cfg), '--reference-repo', str(tmp_path), '--side-by-side',
             '--reference-amp', 'bf16')
    assert r.returncode != 0
    assert 'no bf16 path' in r.stderr + r.stdout
