"""tools/benchmark.py runs on a config with no data and no weights."""
import json
import subprocess
import sys

from cast_mmaction.models.presets import cast_recognizer_cfg
from conftest import ROOT


def test_benchmark_tool_reports_every_figure(tmp_path):
    cfg = tmp_path / 'tiny.py'
    cfg.write_text('model = ' + repr(cast_recognizer_cfg(
        num_classes=5, embed_dim=64, depth=2, num_heads=4, num_frames=8,
        img_size=32)) + '\n')
    out = tmp_path / 'bench.json'
    r = subprocess.run([sys.executable, 'tools/benchmark.py', str(cfg),
                        '--steps', '2', '--warmup', '1', '--batch-size', '2',
                        '--phases', 'train,infer,flops', '--json', str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for key in ('train_step_s', 'train_peak_mem_gb', 'infer_s_per_clip',
                'clips_per_s', 'infer_peak_mem_gb', 'gflops_per_clip'):
        assert res[key] > 0, key
    assert len(res['train_step_all_s']) == 2
    assert 0 < res['trainable_params'] < res['total_params']
    assert 'train_step_s' in r.stdout
