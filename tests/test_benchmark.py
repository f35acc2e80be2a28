"""tools/benchmark.py runs on a config with no data and no weights."""
import json
import os
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


def test_audio_visual_verb_noun_model_is_timed_and_counted(tmp_path):
    """A model with audio and segment times among its inputs (CA2ST with
    time encodings) and a verb + noun head (EPIC-KITCHENS) goes through the
    timing and FLOP phases: random inputs of every modality its backbone
    reads, one [verb, noun] label a clip; the count equals the meta-device
    count of the same config, with no product left uncounted."""
    from cast_mmaction.models.presets_av import ca2st_recognizer_cfg
    model = ca2st_recognizer_cfg(
        composition=True, verb_classes=5, noun_classes=7, revision=True,
        embed_dim=64, depth=2, num_heads=4, num_frames=8, img_size=32,
        input_tdim=64, input_fdim=32)
    cfg = tmp_path / 'ca2st_tiny.py'
    cfg.write_text('model = ' + repr(model) + '\n' + OPTIM)
    out = tmp_path / 'av.json'
    r = _run(str(cfg), '--steps', '1', '--warmup', '1', '--batch-size', '2',
             '--phases', 'train,infer,flops', '--json', str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['train_step_s'] > 0 and res['infer_s_per_clip'] > 0
    assert res['flops_uncounted_ops'] == []
    meta = benchmark.meta_flops(
        benchmark._load_cfg(benchmark.parse_args([str(cfg)])), 1,
        train=False)
    assert set(meta['input_shapes']) == {'video', 'audio', 'times'}
    assert res['gflops_per_clip'] == pytest.approx(meta['gflops_forward'],
                                                   rel=1e-9)


def test_speedups_on_a_backbone_without_them_is_a_named_error(tmp_path):
    cfg = tmp_path / 'msca.py'
    cfg.write_text("model = dict(type='Recognizer3D', backbone=dict("
                   "type='MSCAViT', img_size=32, embed_dim=64, depth=1, "
                   "num_heads=4), cls_head=dict(type='FrameClsHead', "
                   "num_classes=3, in_channels=64))\n" + OPTIM)
    # the same config without --speedups runs
    assert _run(str(cfg), '--phases', 'flops').returncode == 0
    r = _run(str(cfg), '--speedups', 'cpu', '--phases', 'flops')
    assert r.returncode != 0
    assert '--speedups: backbone MSCAViT has no CPU speed-ups' in (
        r.stderr + r.stdout)


def test_config_without_optimizer_is_a_clear_error(tmp_path):
    cfg = tmp_path / 'noopt.py'
    cfg.write_text('model = ' + repr(cast_recognizer_cfg(
        num_classes=5, embed_dim=64, depth=1, num_heads=4, num_frames=8,
        img_size=32)) + '\n')
    r = _run(str(cfg), '--steps', '1', '--warmup', '0', '--phases', 'train')
    assert r.returncode != 0
    assert 'optim_wrapper.optimizer' in r.stderr + r.stdout


def test_missing_config_and_unusable_device_are_named_errors(tmp_path):
    """A config that does not exist and a --device torch cannot use here
    stop in the parent with one line naming them (each phase's child
    died with a FileNotFoundError / 'Found no NVIDIA driver' traceback,
    followed by 'benchmark phase train failed')."""
    missing = str(tmp_path / 'missing.py')
    cfg = f'{ROOT}/configs/cast_demo.py'
    for argv, match in (([missing], f'config {missing}: no such file'),
                        ([cfg, '--device', 'cuda:99'],
                         '--device cuda:99: torch sees'),
                        ([cfg, '--device', 'gpu'], '--device gpu: not a')):
        with pytest.raises(SystemExit) as e:
            benchmark.main(argv)
        assert isinstance(e.value.code, str) and match in e.value.code


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


def test_flops_count_the_onednn_matmuls_and_the_training_step(tmp_path):
    """GFLOPs per clip include the matmuls that run on oneDNN on CPU, in
    the custom autograd Functions of the CPU speed-ups (``_Linear``,
    ``_FrozenMLP``) and the frozen MLP's product accumulated into the
    residual stream (an in-place ``addmm_``, which torch's counter has no
    formula for): the tool's figure equals a count of the same model on the
    plain F.linear path, and so do the forward and the training step of
    each speed-up path; the training step counts forward + backward
    (1.5-3x the forward of its batch: input gradients of the matmuls,
    weight gradients of the trainable ones only)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from cast_mmaction.models.speedups import register_flop_formulas
    from cast_mmaction.utils import build_model
    cfg = _tiny_cfg(tmp_path)
    out = tmp_path / 'flops.json'
    r = _run(str(cfg), '--phases', 'flops', '--batch-size', '2', '--json',
             str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    got = res['gflops_per_clip']
    x = torch.randn(1, 3, 8, 32, 32)
    register_flop_formulas()
    paths = {'plain': None,  # the speed-ups that run oneDNN matmuls:
             'onednn': dict(onednn_linear=True, frozen_mlp=True),
             # fc2's product accumulated into the residual (addmm_)
             'residual': dict(frozen_mlp=True)}
    counts, ops = {}, {}
    for name, speedups in paths.items():
        cfg = cast_recognizer_cfg(num_classes=5, embed_dim=64, depth=2,
                                  num_heads=4, num_frames=8, img_size=32)
        cfg['backbone']['speedups'] = speedups
        model = build_model(cfg).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model.cls_head(model.backbone(x))
        forward = fc.get_total_flops() / 1e9
        ops[name] = {str(k) for k in fc.get_flop_counts()['Global']}
        model.train()
        with FlopCounterMode(display=False) as fc:
            model.cls_head(model.backbone(x)).sum().backward()
        counts[name] = (forward, fc.get_total_flops() / 1e9)
    assert 'aten.addmm_' in ops['residual']  # the path this test guards
    assert got == pytest.approx(counts['plain'][0], rel=1e-6)
    assert res['flops_uncounted_ops'] == []
    for name in ('onednn', 'residual'):
        assert counts[name] == pytest.approx(counts['plain'], rel=1e-6), name
    # training step of batch 2: forward (2 clips) + backward
    assert 2 * 1.5 * got < res["train_gflops_per_step"] < 2 * 3.05 * got


def test_flops_name_the_products_they_could_not_count():
    """A product operator that runs without a FLOP formula counts nothing:
    the tool names it (``flops_uncounted_ops`` and a warning) instead of
    reporting a low % of peak without a word. The speed-ups' paths have
    formulas for all of theirs (the frozen MLP's in-place ``addmm_`` among
    them, which torch's counter lacks)."""
    import contextlib
    import torch
    from torch.utils import flop_counter
    from torch.utils.flop_counter import FlopCounterMode
    from cast_mmaction.models.speedups import register_flop_formulas
    from cast_mmaction.utils import build_model
    a, b, c = torch.randn(4, 8, 16), torch.randn(4, 16, 8), torch.randn(8, 8)
    seen = benchmark._ops_seen()
    with seen, FlopCounterMode(display=False) as fc:
        torch.addbmm(c, a, b)  # no formula in torch's counter
        torch.mv(c, c[0])  # nor this
        torch.mm(c, c)
    assert fc.get_total_flops() == 2 * 8 ** 3  # the mm only
    assert benchmark.uncounted_products(seen.packets) == ['aten.addbmm',
                                                          'aten.mv']
    # the CAST path with the frozen MLP accumulated into the residual
    register_flop_formulas()
    cfg = cast_recognizer_cfg(num_classes=5, embed_dim=64, depth=2,
                              num_heads=4, num_frames=8, img_size=32)
    cfg['backbone']['speedups'] = dict(frozen_mlp=True)
    model = build_model(cfg)
    x, labels = torch.randn(2, 3, 8, 32, 32), torch.tensor([0, 1])

    def train_fwd(x, labels):
        return torch.nn.functional.cross_entropy(
            model.cls_head(model.backbone(x)), labels)

    def infer_fwd(x):
        return model.cls_head(model.backbone(x))

    out = benchmark.count_flops(model, train_fwd, infer_fwd, x, labels,
                                contextlib.nullcontext)
    assert out['flops_uncounted_ops'] == []
    seen = benchmark._ops_seen()
    with seen, torch.no_grad():
        infer_fwd(x)
    assert torch.ops.aten.addmm_ in seen.packets
    # without its formula the same run would be named
    registry = {k: v for k, v in flop_counter.flop_registry.items()
                if k not in (torch.ops.aten.addmm_,
                             torch.ops.aten.addmm_.default)}
    assert benchmark.uncounted_products(seen.packets, registry) == [
        'aten.addmm_']


def test_peak_and_percent_of_peak(tmp_path):
    """The benchmark measures the matmul peak in the same run and reports
    achieved GFLOP/s and % of that peak; the JSON names the CPU and its
    ISA."""
    cfg = _tiny_cfg(tmp_path)
    out = tmp_path / 'peak.json'
    r = _run(str(cfg), '--steps', '1', '--warmup', '1', '--phases',
             'train,infer,flops,peak', '--json', str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['peak_gflops'] > 0 and res['peak_dtype'] == 'float32'
    (detail, ) = res['peak_detail']
    assert max(detail.values()) == res['peak_gflops']
    assert any(k.startswith('F.linear ') for k in detail)
    assert res['train_gflops_per_s'] == pytest.approx(
        res['train_gflops_per_step'] / res['train_step_s'])
    assert res['infer_gflops_per_s'] == pytest.approx(
        res['gflops_per_clip'] / res['infer_s_per_clip'])
    for key in ('train', 'infer'):
        assert res[f'{key}_pct_of_peak'] == pytest.approx(
            100 * res[f'{key}_gflops_per_s'] / res['peak_gflops'])
    m = res['machine']
    assert m['cpu'] and isinstance(m.get('cpu_isa'), list)
    if 'avx2' in open('/proc/cpuinfo').read():
        assert 'avx2' in m['cpu_isa']
    assert 'train_pct_of_peak' in r.stdout
    # which speed-ups ran, as decided for this device and dtype
    assert res['speedups_running'] == []  # the tiny config names none
    assert res['onednn_linear_chosen'] is False


def test_peak_is_timed_by_the_chosen_clock():
    """--clock cpu times the peak (and the steps) with the process CPU time:
    a fake clock that advances 0.5 s per reading gives every path exactly
    2*n*k*m / 0.5 s."""
    import torch.nn as nn
    ticks = iter(range(10**6))

    def fake_clock():
        return 0.5 * next(ticks)

    model = nn.Sequential(nn.Linear(16, 48))
    res = benchmark.matmul_peak(model, benchmark_device(), None, 2, (32, 32),
                                1, reps=2, clock=fake_clock)
    n, k, m = 1024, 16, 48
    assert res['peak_gflops'] == pytest.approx(2 * n * k * m / 0.5 / 1e9)
    args = benchmark.parse_args(['cfg.py', '--clock', 'cpu'])
    assert benchmark.get_clock(args) is benchmark.time.process_time
    assert benchmark.get_clock(benchmark.parse_args(['cfg.py'])) is (
        benchmark.time.perf_counter)


def benchmark_device():
    import torch
    return torch.device('cpu')


def test_cpu_clock_on_cuda_is_a_clear_error(tmp_path):
    r = _run(str(_tiny_cfg(tmp_path)), '--device', 'cuda', '--clock', 'cpu')
    assert r.returncode != 0
    assert '--clock cpu' in r.stderr + r.stdout


def test_efficiency_uses_one_peak_for_both_sides():
    res = dict(train_gflops_per_step=10.0, train_step_s=2.0,
               train_fwd_bwd_s=1.0, gflops_per_clip=3.0,
               infer_s_per_clip=1.5, peak_gflops=99.0)
    benchmark.add_efficiency(res, peak=20.0)
    assert res['train_gflops_per_s'] == 5.0
    assert res['train_pct_of_peak'] == 25.0
    assert res['train_fwd_bwd_pct_of_peak'] == 50.0
    assert res['infer_pct_of_peak'] == 10.0


def test_authors_side_in_bf16_is_a_clear_error(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    r = _run(str(cfg), '--reference-repo', str(tmp_path), '--side-by-side',
             '--reference-amp', 'bf16')
    assert r.returncode != 0
    assert 'no bf16 path' in r.stderr + r.stdout


@pytest.mark.parametrize('config', ['configs/cava_demo.py',
                                    'configs/cast_ek100.py'])
def test_authors_side_refuses_a_config_of_another_model(config):
    """Their side builds their CAST whatever the config says: a CAVA config
    or verb + noun heads stop before any phase instead of being timed
    against it."""
    with pytest.raises(SystemExit, match="the authors' side is their CAST"):
        benchmark.main([os.path.join(ROOT, config), '--reference-repo', '/x',
                        '--side-by-side'])


def test_speedups_option_and_the_compare_rows(tmp_path):
    """--speedups builds the model with them (none / a preset / a JSON
    dict); --compare-speedups has the reference row and one per speed-up,
    each a valid value; the child argv carries --speedups, not the
    compare flag."""
    cfg = _tiny_cfg(tmp_path)
    for text, enabled in (('none', []), ('cpu', None),
                          ('{"checkpoint": "fusion"}', ['checkpoint'])):
        args = benchmark.parse_args([str(cfg), '--speedups', text])
        ours = benchmark.build_ours(args, benchmark._load_cfg(args))
        sp = ours['model'].backbone.speedups
        if enabled is not None:
            assert sp.enabled == enabled, text
        else:
            assert 'frozen_mlp' in sp.enabled and sp.requested == 'cpu'
    from cast_mmaction.models.speedups import KEYS
    labels = [label for label, _ in benchmark.SPEEDUP_ROWS]
    assert labels[0] == 'reference' and len(labels) == len(KEYS) + 2
    # each a valid value; on a CPU without AVX-512F the rows of the C++
    # attention kernel and bias pass are left out, with their reason
    avx512 = dict(cpu_vendor='GenuineIntel', cpu_isa=['avx2', 'avx512f'])
    assert benchmark.runnable_speedup_rows(avx512) == benchmark.SPEEDUP_ROWS
    rows = benchmark.runnable_speedup_rows(dict(avx512, cpu_isa=['avx2']))
    assert [label for label, _ in rows] == [
        label for label in labels if label not in ('cpu_attention',
                                                   'cpu_mlp')]
    argv = [str(cfg), '--compare-speedups', '--runs', '2', '--speedups',
            'cpu', '--phases', 'train']
    child = benchmark._strip(argv, '--compare-speedups',
                             with_value=('--json', '--runs', '--speedups'))
    assert child == [str(cfg), '--phases', 'train']


def test_speedups_that_are_not_json_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        benchmark.parse_speedups('{checkpoint: fusion}')
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert 'error: argument --speedups' in err
    assert 'none, cpu' in err and '\'{"checkpoint": "fusion"}\'' in err


def test_cost_curve_counts_flops_on_the_meta_device(tmp_path):
    """--cost-curve: one row per (frames, size, batch) with the FLOPs of
    the full-size model counted on the meta device, a markdown table and a
    plot; FLOPs are linear in the batch and more than linear in frames."""
    cfg = _tiny_cfg(tmp_path)
    out, md, png = (tmp_path / n for n in ('c.json', 'c.md', 'c.png'))
    res = benchmark.main([str(cfg), '--cost-curve', '--frames', '8,16',
                          '--sizes', '32', '--batches', '1,2',
                          '--curve-phases', 'none', '--json', str(out),
                          '--markdown', str(md), '--plot', str(png)])
    rows = json.loads(out.read_text())['rows']
    assert [(r['frames'], r['img_size'], r['batch']) for r in rows] == [
        (8, 32, 1), (8, 32, 2), (16, 32, 1), (16, 32, 2)]
    for r in rows:
        assert r['input_shapes']['video'] == [r['batch'], 3, r['frames'],
                                              32, 32]
        # backward: input gradients through the frozen experts, weight
        # gradients of the trainable parts only
        assert r['train_gflops_per_step'] > r['gflops_forward'] > 0
        assert 'train_step_s' not in r  # --curve-phases none: no timing
    by = {(r['frames'], r['batch']): r for r in rows}
    for key in ('gflops_forward', 'train_gflops_per_step'):
        for f in (8, 16):  # batch 2 is exactly twice batch 1
            assert by[f, 2][key] == pytest.approx(2 * by[f, 1][key],
                                                  rel=1e-12)
        # twice the frames: twice the tokens, and attention over time
        # windows grows with their square
        assert by[16, 1][key] > 2 * by[8, 1][key]
    # the meta-device forward is the count of the flops phase on real
    # tensors; in the training step the matmuls and convolutions are too
    # (attention differs: on the meta device it runs as its matmuls, on
    # the CPU as the fused kernel, whose backward torch counts with the
    # recompute of the scores)
    import contextlib
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    args = benchmark.parse_args([str(cfg), '--batch-size', '2'])
    built = benchmark.build_ours(args, benchmark._load_cfg(args))
    x, labels = torch.randn(2, 3, 8, 32, 32), torch.tensor([0, 1])
    real = benchmark.count_flops(
        built['model'], built['train_forward'], built['infer_forward'], x,
        labels, contextlib.nullcontext)
    assert real['gflops_per_clip'] == pytest.approx(rows[0]['gflops_forward'],
                                                    rel=1e-12)
    with FlopCounterMode(display=False) as fc:
        built['train_forward'](x, labels).backward()
    ops = {str(k): v for k, v in fc.get_flop_counts()['Global'].items()}
    meta = benchmark.meta_flops(benchmark._load_cfg(args), 2, ops=True)
    for op in ('aten.convolution', 'aten.addmm', 'aten.mm'):
        assert meta['train_by_op'][op] == ops[op], op
    table = md.read_text().splitlines()
    assert table[0].startswith('| frames | size | batch | forward GFLOPs')
    assert len([line for line in table if line.startswith('| 1')]) == 2
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # the breakdown names the attention of the experts and of the links
    classes = res['breakdown']['16x32']['forward_by_class']
    assert {'Linear', 'WindowCrossAttention'} <= set(classes)


def test_cost_curve_rejects_a_backbone_without_frames(tmp_path):
    cfg = tmp_path / 'msca.py'
    cfg.write_text("model = dict(type='Recognizer3D', backbone=dict("
                   "type='MSCAViT', img_size=32))\n")
    with pytest.raises(SystemExit, match='num_frames'):
        benchmark.main([str(cfg), '--cost-curve', '--curve-phases', 'none'])


def test_cost_curve_child_arguments():
    """Each measured setting's child: the config's --cfg-options plus the
    timing-only ones plus the setting for ours; only the setting (and the
    checkout) for the authors'; none of the curve's own options."""
    argv = ['cfg.py', '--cost-curve', '--frames', '8,16', '--sizes', '224',
            '--batches', '1,2', '--cfg-options', 'a=1', '--threads', '1',
            '--timing-cfg-options', 'b=2', 'c=3', '--clock', 'cpu',
            '--reference-repo', '/x', '--json', 'o.json', '--plot', 'p.png']
    args = benchmark.parse_args(argv)
    assert args.timing_cfg_options == {'b': 2, 'c': 3}
    assert benchmark.curve_settings(args) == [(8, 224, 1), (8, 224, 2),
                                              (16, 224, 1), (16, 224, 2)]
    setting = ['model.backbone.num_frames=16', 'model.backbone.img_size=224']
    ours = benchmark._curve_child_argv(argv, args, 16, 224, 2)
    assert ours == ['cfg.py', '--threads', '1', '--clock', 'cpu',
                    '--batch-size', '2', '--cfg-options', 'a=1', 'b=2',
                    'c=3', *setting]
    theirs = benchmark._curve_child_argv(argv, args, 16, 224, 2,
                                         reference=True)
    assert theirs == ['cfg.py', '--threads', '1', '--clock', 'cpu',
                      '--reference-repo', '/x', '--batch-size', '2',
                      '--cfg-options', *setting]
    with pytest.raises(SystemExit, match='--frames'):
        benchmark.curve_settings(benchmark.parse_args(
            ['cfg.py', '--frames', '8,x']))


def test_profile_phase_and_paired_peak(tmp_path):
    """--phases profile: self time by operator category for a training step
    and an inference, the categories and the untraced rest adding up to the
    profiled wall time; --paired-peak: one matmul-peak sample per timed step
    and each step's % of its own sample; CPU time next to the wall time."""
    cfg = _tiny_cfg(tmp_path)
    out = tmp_path / 'prof.json'
    r = _run(str(cfg), '--steps', '2', '--warmup', '1', '--paired-peak',
             '--phases', 'train,infer,flops,profile', '--json', str(out),
             '--speedups', '{"onednn_linear": true}')
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for phase in ('train', 'infer'):
        cats = res[f'profile_{phase}_s']
        wall = res[f'profile_{phase}_wall_s']
        assert cats['matmul'] > 0 and cats['attention'] > 0, cats
        assert set(cats) <= {c for c, _ in benchmark.PROFILE_CATEGORIES} | {
            'other', 'untraced'}
        # operators run inside the call: their self times fit in its wall
        assert sum(cats.values()) == pytest.approx(wall, rel=0.1), cats
        assert len(res[f'{phase}_paired_peak_all']) == 2
        assert 0 < res[f'{phase}_pct_of_paired_peak'] < 100
    assert cats.get('optimizer', 0) == 0  # inference
    assert res['profile_train_s']['optimizer'] > 0
    assert res['train_step_cpu_s'] > 0 and res['infer_cpu_s_per_clip'] > 0
    assert 'profile, train' in r.stdout and 'attention' in r.stdout
    # the categories of a few operator names
    assert benchmark.op_category('mkldnn::_linear_pointwise') == 'matmul'
    assert benchmark.op_category(
        'aten::_scaled_dot_product_flash_attention_for_cpu') == 'attention'
    assert benchmark.op_category('cast_mmaction::onednn_sdpa') == 'attention'
    assert benchmark.op_category('cast_mmaction::cpu_sdpa') == 'attention'
    assert benchmark.op_category(
        'cast_mmaction::cpu_sdpa_backward_packed') == 'attention'
    assert benchmark.op_category(
        'GeneratedBackwardFor_cast_mmaction_cpu_sdpa_default') == 'attention'
    assert benchmark.op_category('aten::native_layer_norm') == 'norms'
    assert benchmark.op_category('aten::copy_') == 'copies'
    assert benchmark.op_category('aten::gelu') == 'elementwise'


def test_side_by_side_table_on_cuda_leaves_out_cpu_time(capsys):
    # on CUDA a step's process CPU time counts torch.cuda.synchronize's
    # spin-wait, so those rows would read as host work; memory is the GPU's
    ours = dict(train_step_s=1.0, train_step_cpu_s=1.0, train_peak_mem_gb=2.0)
    theirs = dict(train_step_s=2.0, train_step_cpu_s=3.0,
                  train_peak_mem_gb=8.0)
    benchmark._print_side_by_side(ours, theirs)
    cpu_table = capsys.readouterr().out
    assert 'training step CPU time' in cpu_table
    assert 'training peak RSS' in cpu_table
    benchmark._print_side_by_side(ours, theirs, cuda=True)
    gpu_table = capsys.readouterr().out
    assert 'CPU time' not in gpu_table
    assert 'training peak GPU mem (GB)' in gpu_table
    assert 'RSS' not in gpu_table
    assert 'training step (s)' in gpu_table and '0.500' in gpu_table


def test_cuda_graph_needs_cuda_and_an_eager_model(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    r = _run(str(cfg), '--cuda-graph')
    assert r.returncode != 0
    assert '--cuda-graph captures CUDA graphs: it needs --device cuda' in (
        r.stderr + r.stdout)
    args = benchmark.parse_args([str(cfg), '--cuda-graph', '--device',
                                 'cuda', '--compile'])
    with pytest.raises(SystemExit, match='drop --compile and --with-cp'):
        benchmark.main([str(cfg), '--cuda-graph', '--device', 'cuda',
                        '--compile'])
    assert args.cuda_graph


def test_cuda_graph_loss_is_the_recognizers_loss(tmp_path):
    """The loss --cuda-graph captures (cross-entropy on the head's logits,
    labels on the device) is the recognizer's loss, label smoothing
    included, and its gradients are the same."""
    import torch
    cfg = _tiny_cfg(tmp_path)
    args = benchmark.parse_args([str(cfg)])
    built = benchmark.build_ours(args, benchmark._load_cfg(args))
    model = built['model'].eval()  # no drop path: both calls see one model
    model.cls_head.label_smooth_eps = 0.1
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the head starts at zero: logits all equal
        for p in model.cls_head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(2, 3, built['frames'], *built['size'], generator=gen)
    labels = torch.tensor([1, 4])
    losses, grads = [], []
    for fwd in (built['train_forward'], built['graph_train_forward']):
        model.zero_grad(set_to_none=True)
        loss = fwd(x, labels)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()
                      if p.grad is not None])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    model.cls_head.label_smooth_eps = 0.0
    plain = built['graph_train_forward'](x, labels)
    assert not torch.allclose(plain, losses[1])  # the smoothing counted
