"""FSDP2 (FSDP2Strategy, MMEngine FlexibleRunner) on CPUs with gloo: the
same training as one process, sharded memory, sharded checkpoints.

Launches (the user-facing tools, a tiny CAST, 8 clips, total batch 4 = 2
updates per epoch, 3 epochs):

* ``single``: ``tools/train.py`` with MMEngine's Runner, 1 process x batch 4;
* ``fsdp2``: ``tools/dist_train.sh`` 2 processes x batch 1 x
  ``accumulative_counts=2``, sharded checkpoints every epoch;
* ``resume2``: 2 processes, ``--resume fsdp2/epoch_1.pth`` (same world);
* ``resume1``: ``tools/train.py`` (1 process x batch 2 x 2) resumes
  ``fsdp2/epoch_1.pth`` (2 -> 1); writes world-1 checkpoints;
* ``resume12``: 2 processes resume ``resume1/epoch_2.pth`` (1 -> 2).

Every run clips gradients (max_norm below the gradient norms, so clipping
acts: on DTensors in the sharded runs) and makes the loss of its last
iteration NaN on its last rank only: GuardedOptimWrapper must skip that
update on every rank (else the ranks' collectives would hang).
"""
import json
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
from cast_mmaction.models.presets import cast_recognizer_cfg
from conftest import ROOT

MAX_NORM = 0.2

PROBE = '''
import json
import os

import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import MessageHub

from mmaction.registry import HOOKS


def _full(p):
    p = p.detach()
    return p.full_tensor() if hasattr(p, 'full_tensor') else p


@HOOKS.register_module(force=True)  # another test's probe may hold the name
class TraceHook(Hook):
    """Per-iteration loss and logged gradient norm of this rank; the final
    parameters (gathered: a collective in sharded runs), and the bytes of
    this rank's local shards of the trainable parameters and the optimizer
    state. The last iteration's loss is NaN on the last rank."""

    def before_train(self, runner):
        self.losses, self.norms = [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        rank, world = get_dist_info()
        if runner.iter != runner.max_iters - 1 or rank != world - 1:
            return
        ow = runner.optim_wrapper
        original = ow.update_params

        def poisoned(loss, *args, **kwargs):
            ow.update_params = original
            return original(loss * float('nan'), *args, **kwargs)

        ow.update_params = poisoned

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append(float(outputs['loss']))
        # the norm of each update (the last one is skipped: NaN loss)
        counts = getattr(runner.optim_wrapper, '_accumulative_counts', 1)
        if (runner.iter + 1) % counts or runner.iter == runner.max_iters - 1:
            return
        hub = MessageHub.get_current_instance()
        self.norms.append(float(hub.get_scalar('train/grad_norm').current()))

    def after_train(self, runner):
        from cast_mmaction.engine.fsdp2 import local_shard_bytes
        rank, world = get_dist_info()
        model = getattr(runner.model, 'module', runner.model)
        full = {n: _full(p).clone() for n, p in model.named_parameters()}
        shard = local_shard_bytes(model, runner.optim_wrapper.optimizer)
        skips = getattr(runner.optim_wrapper, 'nonfinite_skips', None)
        with open(os.path.join(runner.work_dir, f'trace{rank}.json'),
                  'w') as f:
            json.dump(dict(losses=self.losses, norms=self.norms, world=world,
                           iter=runner.iter, shard=shard, skips=skips,
                           strategy=type(getattr(runner, 'strategy', None)
                                         ).__name__), f)
        torch.save(full, os.path.join(runner.work_dir, f'final{rank}.pt'))
'''


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('fsdp')
    data = write_synthetic_video_dataset(str(root / 'data'),
                                         num_train_per_class=2,
                                         num_val_per_class=1, num_frames=4,
                                         size=32)
    (root / 'fsdp_probe.py').write_text(PROBE)
    model = cast_recognizer_cfg(num_classes=4, embed_dim=32, depth=1,
                                num_heads=2, num_frames=4, img_size=32)
    pipeline = [
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=4, frame_interval=1, num_clips=1,
             test_mode=True),
        dict(type='DecordDecode'),
        dict(type='Resize', scale=(32, 32), keep_ratio=False),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs'),
    ]
    plain = root / 'tiny.py'
    plain.write_text(textwrap.dedent(f'''
        _base_ = [{osp.join(ROOT, 'configs', '_base_',
                            'default_runtime.py')!r}]
        custom_imports = dict(imports=['cast_mmaction', 'fsdp_probe'],
                              allow_failed_imports=False)
        model = {model!r}
        train_dataloader = dict(
            batch_size=4, num_workers=0, persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='VideoDataset', ann_file={data['train_ann']!r},
                         data_prefix=dict(video={data['root']!r}),
                         pipeline={pipeline!r}))
        test_dataloader = dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='VideoDataset', ann_file={data['val_ann']!r},
                         data_prefix=dict(video={data['root']!r}),
                         pipeline={pipeline!r}, test_mode=True))
        test_evaluator = dict(type='AccMetric')
        test_cfg = dict(type='TestLoop')
        train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=3)
        val_cfg = val_dataloader = val_evaluator = None
        optim_wrapper = dict(
            type='GuardedOptimWrapper', clip_grad=dict(max_norm={MAX_NORM}),
            optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05,
                           fused=True),
            constructor='CASTLayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.75))
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=1, max_keep_ckpts=3,
                                             save_best=None))
        custom_hooks = [dict(type='TraceHook')]
        randomness = dict(seed=0, diff_rank_seed=True)
        env_cfg = dict(dist_cfg=dict(backend='gloo'))
        '''))
    sharded = root / 'tiny_fsdp.py'
    sharded.write_text(textwrap.dedent(f'''
        _base_ = ['./tiny.py',
                  {osp.join(ROOT, 'configs', '_base_', 'strategies',
                            'fsdp.py')!r}]
        optim_wrapper = dict(accumulative_counts=2)
        '''))
    return root, plain, sharded


def _run(setup, name, nproc, cfg, *options):
    root = setup[0]
    work = root / name
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS='1',
               PYTHON=sys.executable, MASTER_PORT=str(_free_port()))
    if nproc > 1:
        cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(cfg),
               str(nproc)]
    else:
        cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), str(cfg)]
    cmd += ['--work-dir', str(work), *options]
    r = subprocess.run(cmd, cwd=str(root), env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    out = []
    for rank in range(nproc):
        with open(work / f'trace{rank}.json') as f:
            trace = json.load(f)
        trace['params'] = torch.load(work / f'final{rank}.pt')
        out.append(trace)
    return out, work


def _batch(per_rank):
    return ['--cfg-options', f'train_dataloader.batch_size={per_rank}']


@pytest.fixture(scope='module')
def runs(setup):
    root, plain, sharded = setup
    out = {}
    (out['single'], ), _ = _run(setup, 'single', 1, plain)
    out['fsdp2'], w2 = _run(setup, 'fsdp2', 2, sharded, *_batch(1))
    out['resume2'], _ = _run(setup, 'resume2', 2, sharded, '--resume',
                             str(w2 / 'epoch_1.pth'), *_batch(1))
    out['resume1'], w1 = _run(setup, 'resume1', 1, sharded, '--resume',
                              str(w2 / 'epoch_1.pth'), *_batch(2))
    out['resume12'], _ = _run(setup, 'resume12', 2, sharded, '--resume',
                              str(w1 / 'epoch_2.pth'), *_batch(1))
    out['dirs'] = dict(fsdp2=w2, resume1=w1)
    return out


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _worst(p, q):
    """Worst over the parameters of max|p - q| / max|q|."""
    assert p.keys() == q.keys()
    return max(_rel(p[k].double(), q[k].double()) for k in p)


def test_fsdp2_two_processes_equal_one_process(runs):
    single, (r0, r1) = runs['single'], runs['fsdp2']
    assert r0['strategy'] == 'FSDP2Strategy' and r0['world'] == 2
    # 3 epochs x 2 updates; the sharded run accumulates 2 micro-batches
    assert len(single['losses']) == 6 and len(r0['losses']) == 12
    for t, b in enumerate(single['losses']):
        a = sum(r0['losses'][2 * t:2 * t + 2] + r1['losses'][2 * t:2 * t + 2])
        assert abs(a / 4 - b) <= 1e-5 * abs(b), f'update {t}: {a / 4} vs {b}'
    # clipping acted (every norm above max_norm) and saw the same global
    # norm over the DTensor gradients as over the whole ones
    assert len(single['norms']) == 5 and min(single['norms']) > MAX_NORM
    for a, b in zip(r0['norms'], single['norms']):
        assert abs(a - b) <= 1e-5 * b
    # the NaN loss of rank 1 only skipped the last update on both ranks
    assert single['skips'] == r0['skips'] == r1['skips'] == 1
    assert abs(single['losses'][-1] - single['losses'][0]) > 1e-3
    # both ranks gather the same weights: the single-process ones
    assert all(torch.equal(r0['params'][k], r1['params'][k])
               for k in r0['params'])
    worst = _worst(r0['params'], single['params'])
    loss = max(abs(sum(r0['losses'][2 * t:2 * t + 2] +
                       r1['losses'][2 * t:2 * t + 2]) / 4 - b) / abs(b)
               for t, b in enumerate(single['losses']))
    # shown with pytest -s (docs/distributed.md)
    print(f'\nFSDP2 2 ranks vs 1 process: worst relative difference of the '
          f'losses {loss:.2e}, of the weights {worst:.2e}')
    assert worst <= 1e-4


def test_resume_is_bit_exact_on_the_same_world_size(runs):
    full, resumed = runs['fsdp2'][0]['params'], runs['resume2'][0]['params']
    assert runs['resume2'][0]['iter'] == 12
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


@pytest.mark.parametrize('run', ['resume1', 'resume12'])
def test_resume_on_another_world_size(runs, run):
    """2 -> 1 and 1 -> 2: DCP reshards weights and AdamW states; the end
    is the single-process training within fp32 reduction tolerance."""
    trace = runs[run][0]
    assert trace['world'] == (1 if run == 'resume1' else 2)
    worst = _worst(trace['params'], runs['single']['params'])
    print(f'\n{run}: worst relative difference of the weights {worst:.2e}')
    assert worst <= 1e-4


def test_local_shards_halve_with_two_ranks(runs):
    one = runs['resume1'][0]['shard']  # 1 rank holds everything
    two = [r['shard'] for r in runs['fsdp2']]
    print(f'\nlocal shard bytes: 1 rank {one}; 2 ranks {two}')
    assert one['params'] > 0 and one['optimizer_state'] > 0
    assert sum(s['params'] for s in two) == one['params']
    for s in two:
        assert 0.45 <= s['params'] / one['params'] <= 0.55, (s, one)
        # exp_avg / exp_avg_sq sharded; the 8-byte 'step' counters whole
        assert 0.45 <= s['optimizer_state'] / one['optimizer_state'] <= 0.55


# ------------------------------------------------------ checkpoints ----
def test_sharded_checkpoint_layout(runs):
    from cast_mmaction.engine import sharded_checkpoint as sc
    w2 = runs['dirs']['fsdp2']
    folder = w2 / 'epoch_3.pth'
    info = sc.verify(folder)
    assert info['world_size'] == 2
    assert set(info['files']) == {'__0_0.distcp', '__1_0.distcp',
                                  '.metadata', sc.EXTRAS}
    assert sorted(os.listdir(folder)) == sorted(list(info['files']) +
                                                [sc.MARKER])
    # the temporary folders were renamed: nothing hidden is left
    assert not [n for n in os.listdir(w2) if n.startswith('.')]
    assert (w2 / 'last_checkpoint').read_text().strip() == str(folder)
    shapes = sc.shape_state_dict(folder)
    params = runs['fsdp2'][0]['params']
    assert {k: tuple(v.shape) for k, v in shapes.items()
            if k in params} == {k: tuple(v.shape) for k, v in params.items()}
    extras = sc.load_extras(folder)
    assert extras['meta']['epoch'] == 3 and extras['world_size'] == 2
    assert {'message_hub', 'param_groups', 'trainable', 'frozen'} <= set(
        extras)
    assert all(set(g) >= {'lr', 'params'} for g in extras['param_groups'])


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_torn_checkpoint_is_refused_and_resume_falls_back(runs, tmp_path):
    from cast_mmaction.engine import sharded_checkpoint as sc
    from cast_mmaction.engine.checkpoint_files import resolve_last_checkpoint
    work = _copy(runs['dirs']['fsdp2'], tmp_path / 'work')
    last = work / 'epoch_3.pth'
    (work / 'last_checkpoint').write_text(str(last))
    os.remove(last / '__1_0.distcp')
    with pytest.raises(sc.IncompleteCheckpointError,
                       match=r"rank 1's shard __1_0\.distcp is missing"):
        sc.verify(last)
    with open(work / 'epoch_2.pth' / '__0_0.distcp', 'r+b') as f:
        f.truncate(100)
    with pytest.raises(sc.IncompleteCheckpointError,
                       match=r"rank 0's shard __0_0\.distcp has 100 bytes"):
        sc.verify(work / 'epoch_2.pth')
    os.remove(work / 'epoch_1.pth' / '.metadata')
    with pytest.raises(sc.IncompleteCheckpointError,
                       match=r'the DCP metadata file \.metadata is missing'):
        sc.verify(work / 'epoch_1.pth')
    # an interrupted save: a hidden partial folder, and a folder without
    # the completion marker
    os.mkdir(work / '.epoch_4.pth.partial-1-x')
    good = _copy(runs['dirs']['resume1'] / 'epoch_3.pth',
                 work / 'epoch_0.pth')
    os.remove(good / sc.MARKER)
    with pytest.raises(sc.IncompleteCheckpointError,
                       match=r'no cast_checkpoint\.json'):
        sc.verify(good)
    # nothing complete is left: --resume starts afresh
    assert resolve_last_checkpoint(str(work)) is None
    assert not (work / '.epoch_4.pth.partial-1-x').exists()
    # with a complete one back, --resume (auto) picks it, not a newer file
    # consolidated from a folder (no optimizer state to resume)
    _copy(runs['dirs']['resume1'] / 'epoch_3.pth', work / 'epoch_5.pth')
    (work / 'last_checkpoint').write_text(str(last))
    (work / 'epoch_5_full.pth').write_bytes(b'consolidated')
    assert resolve_last_checkpoint(str(work)) == str(work / 'epoch_5.pth')
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_5.pth')


def test_flexible_runner_prepares_the_resume_before_loading():
    """compat: FlexibleRunner loads before the before_run hooks; the
    patched load_or_resume asks the hooks to prepare first."""
    from mmengine.runner import FlexibleRunner
    calls = []

    class Hook:
        def prepare_resume(self, runner):
            calls.append(runner)

    class Runner:
        _has_loaded, _resume, _load_from = False, False, None
        hooks = [Hook()]

    assert getattr(FlexibleRunner.load_or_resume, '_cast_prepare', False)
    runner = Runner()
    assert FlexibleRunner.load_or_resume(runner) is None
    assert calls == [runner]



def test_flexible_runner_patch_is_gated_on_the_version(monkeypatch):
    from cast_mmaction import compat
    monkeypatch.setattr(compat, '_version', lambda dist: '0.11.0')
    assert compat._patch_flexible_runner_resume() is False


def test_dcp_metadata_is_read_without_running_code(runs, tmp_path):
    from cast_mmaction.safe_load import (UntrustedCheckpointError,
                                         read_dcp_metadata)
    md = read_dcp_metadata(str(runs['dirs']['fsdp2'] / 'epoch_3.pth'))
    assert any(k.startswith('optimizer.') for k in md.state_dict_metadata)

    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned > ' + str(tmp_path / 'x'), ))

    (tmp_path / '.metadata').write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UntrustedCheckpointError, match='posix.system|'
                       'os.system|not allowed'):
        read_dcp_metadata(str(tmp_path))
    assert not (tmp_path / 'x').exists()


def test_consolidated_checkpoint_loads_in_the_tools(runs, setup, tmp_path,
                                                    monkeypatch):
    from mmaction.apis import init_recognizer

    from cast_mmaction import inference
    from cast_mmaction.engine.trainable_checkpoint import KEY, fingerprint
    root, plain, _ = setup
    monkeypatch.syspath_prepend(str(root))  # the config imports the probe
    folder = runs['dirs']['fsdp2'] / 'epoch_3.pth'
    out = tmp_path / 'full.pth'
    assert _tool().main([str(folder), str(out)]) == 0
    ckpt = torch.load(out, weights_only=True)
    final = runs['fsdp2'][0]['params']
    for k, v in final.items():  # frozen experts included
        assert torch.equal(ckpt['state_dict'][k], v), k
    # what tools/infer.py and MMAction2's inferencer build
    for model in (inference.init_model(str(plain), str(out), 'cpu'),
                  init_recognizer(str(plain), str(out), device='cpu')):
        sd = model.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in final.items())
    # tools/test.py
    r = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(plain),
         str(out), '--work-dir', str(tmp_path / 'test')], cwd=str(root),
        env=dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS='1'),
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert 'acc/top1' in r.stdout + r.stderr
    # trainable-only: the frozen weights of an expert with a pretrained
    # file are left out, recorded as TrainableCheckpointHook records them
    from mmengine.config import Config

    from cast_mmaction.engine import sharded_checkpoint as sc
    cfg = Config.fromfile(str(plain))
    weights = tmp_path / 'clip.pth'
    weights.write_bytes(b'stands for the published file')
    cfg.model.backbone.experts.clip.pretrained = str(weights)
    slim = sc.consolidate(folder, trainable_only=True,
                          cfg_text=cfg.pretty_text)
    prefix = 'backbone.experts.clip.'
    frozen = {k for k in sc.load_extras(folder)['frozen']
              if k.startswith(prefix)}
    assert frozen and not frozen & set(slim['state_dict'])
    assert set(slim['state_dict']) | frozen == set(ckpt['state_dict'])
    rec = slim[KEY]['clip']
    assert rec['pretrained'] == str(weights)
    assert rec['num_tensors'] == len(frozen)
    assert rec['fingerprint'] == fingerprint(
        {k[len(prefix):]: final[k] for k in frozen})
    # the run's own config names no expert file: nothing to leave out
    assert KEY not in sc.consolidate(folder, trainable_only=True)


def _tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'consolidate_checkpoint',
        osp.join(ROOT, 'tools', 'convert', 'consolidate_checkpoint.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_consolidation_refuses_a_torn_folder(runs, tmp_path, capsys):
    folder = _copy(runs['dirs']['fsdp2'] / 'epoch_3.pth', tmp_path / 'e.pth')
    os.remove(folder / '__1_0.distcp')
    assert _tool().main([str(folder), str(tmp_path / 'out.pth')]) == 1
    assert "rank 1's shard __1_0.distcp is missing" in capsys.readouterr().err
    assert not (tmp_path / 'out.pth').exists()


# ----------------------------------------- one process, in this process ----
@pytest.fixture
def one_rank_group():
    """A one-rank gloo group for the strategy, removed afterwards so that
    no later test sees a process group."""
    import torch.distributed as dist
    assert not dist.is_initialized()
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def _tiny_model(seed):
    from cast_mmaction.utils import build_model
    torch.manual_seed(seed)
    return build_model(cast_recognizer_cfg(num_classes=4, embed_dim=32,
                                           depth=1, num_heads=2,
                                           num_frames=4, img_size=32))


def test_strategy_shards_units_and_loads_a_full_checkpoint(
        one_rank_group, tmp_path):
    """tools/test.py / load_from with an FSDP2 config and an ordinary
    checkpoint file; the layer-decay groups hold the DTensor parameters."""
    from torch.distributed.tensor import DTensor

    from cast_mmaction.engine.fsdp2 import FSDP2Strategy
    from cast_mmaction.engine.strategies import fsdp_units
    ref = _tiny_model(1)
    full = {k: v.clone() for k, v in ref.state_dict().items()}
    torch.save(dict(state_dict=full, meta=dict()), tmp_path / 'full.pth')
    strategy = FSDP2Strategy(work_dir=str(tmp_path))
    model, ow = strategy.prepare(_tiny_model(2), optim_wrapper=dict(
        type='GuardedOptimWrapper', optimizer=dict(type='AdamW', lr=1e-3),
        constructor='CASTLayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.75)))
    assert all(isinstance(p, DTensor) for p in model.parameters())
    units = [m for m in model.modules() if isinstance(m, fsdp_units())]
    assert units and all(hasattr(m, 'reshard') for m in units)  # FSDPModule
    scales = {g.get('lr_scale') for g in ow.optimizer.param_groups}
    assert scales == {1.0, 0.75}  # the per-layer groups (depth 1 + head)
    assert all(isinstance(p, DTensor) for g in ow.optimizer.param_groups
               for p in g['params'])
    strategy.load_checkpoint(str(tmp_path / 'full.pth'))
    sd = model.state_dict()
    for k, v in full.items():
        got = sd[k].full_tensor() if isinstance(sd[k], DTensor) else sd[k]
        assert torch.equal(got, v), k


def test_gpu_options_are_refused_on_a_cpu(one_rank_group, tmp_path):
    from cast_mmaction.engine.fsdp2 import FSDP2Strategy
    for kw, field in ((dict(cpu_offload=True), 'strategy.cpu_offload'),
                      (dict(mixed_precision=dict(param_dtype='bf16')),
                       'strategy.mixed_precision')):
        strategy = FSDP2Strategy(work_dir=str(tmp_path), **kw)
        with pytest.raises(ValueError, match=f'{field} is for GPUs'):
            strategy.prepare(_tiny_model(0))


def test_fsdp_memory_tool_reports_bad_arguments_and_a_failed_rank(
        tmp_path, capsys, monkeypatch):
    """tools/benchmark/fsdp_memory.py: a config that does not exist and a
    world size below 1 are usage errors (they were a rank's traceback
    followed by the tool's own RuntimeError traceback, and max() of no
    ranks); a rank that fails ends the tool with one line and exit 1."""
    import importlib.util
    from _tools import tool_path
    spec = importlib.util.spec_from_file_location(
        '_fsdp_memory_tool', tool_path('fsdp_memory'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    missing = str(tmp_path / 'missing.py')
    cfg = osp.join(ROOT, 'configs', 'cast_ssv2_fsdp.py')
    for argv, match in (([missing], f'config {missing}: no such file'),
                        ([cfg, '--world-sizes', '2', '0'],
                         '--world-sizes 2 0: each a positive')):
        with pytest.raises(SystemExit) as e:
            tool.main(argv)
        assert e.value.code == 2 and match in capsys.readouterr().err

    def failed(config, world, options=()):
        raise RuntimeError(f'a rank failed at world size {world} (exit '
                           f'codes [1])')

    monkeypatch.setattr(tool, 'measure', failed)
    assert tool.main([cfg, '--world-sizes', '1']) == 1
    err = capsys.readouterr().err
    assert err.startswith('fsdp_memory: a rank failed at world size 1') \
        and 'Traceback' not in err


def test_fsdp2_units_run_the_frozen_mlp_added_into_the_residual(
        one_rank_group, tmp_path, monkeypatch):
    """With the CPU speed-up ``frozen_mlp`` a layer's MLP accumulates its
    output into the residual through the MLP module's call, so an FSDP2
    unit unshards its weights first: the sharded (one-rank) backbone gives
    the unsharded one's features and gradients, the accumulation ran."""
    from cast_mmaction.engine.fsdp2 import FSDP2Strategy
    from cast_mmaction.models import speedups
    from cast_mmaction.utils import build_model
    spec = dict(onednn_linear=False, onednn_attention=False, frozen_mlp=True)
    cfg = cast_recognizer_cfg(num_classes=4, embed_dim=32, depth=2,
                              num_heads=2, num_frames=4, img_size=32)
    cfg['backbone']['speedups'] = spec
    torch.manual_seed(1)
    ref = build_model(cfg)
    torch.manual_seed(1)
    model = build_model(cfg)
    model.load_state_dict(ref.state_dict())
    model, _ = FSDP2Strategy(work_dir=str(tmp_path)).prepare(
        model, optim_wrapper=dict(type='GuardedOptimWrapper',
                                  optimizer=dict(type='AdamW', lr=1e-3)))
    calls = []
    real = speedups._mm_t_into

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(speedups, '_mm_t_into', counting)
    x = torch.randn(1, 1, 3, 4, 32, 32)  # (batch, views, C, T, H, W)
    feats = {}
    for name, m in (('ref', ref), ('fsdp', model)):
        m.train()
        calls.clear()
        out = m(x, mode='tensor')  # the backbone's features
        out = [out] if torch.is_tensor(out) else list(out)
        sum(f.square().sum() for f in out).backward()
        feats[name] = [f.detach() for f in out]
        assert len(calls) == 2 * 2, name  # two streams, two MLP layers
    for a, b in zip(feats['fsdp'], feats['ref']):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    got = {n: p.grad.full_tensor() for n, p in model.named_parameters()
           if p.grad is not None}
    want = {n: p.grad for n, p in ref.named_parameters()
            if p.grad is not None}
    assert got.keys() == want.keys() and got
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6,
                                   msg=n)
