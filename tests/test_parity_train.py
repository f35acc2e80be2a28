"""Training-path parity with the authors' code (issue 13, part 1): the
training dumps pass tools/check_parity.py, and a perturbed gradient, lr
multiplier, weight decay, schedule value or trainable set fails it."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from cast_mmaction.parity.train import check_train_dump, is_train_dump
from conftest import ROOT, shared_fixture

TRAIN_DUMPS = ['cast_train_single', 'cast_train_composition']
pytestmark = pytest.mark.filterwarnings('ignore:Detected call of')


def _rows(d, **kw):
    return {r[0]: r for r in check_train_dump(d, **kw)}


def _failed(rows):
    return sorted(n for n, r in rows.items() if not r[3])


@pytest.mark.parametrize('speedups', ['none', 'cpu'])
@pytest.mark.parametrize('name', TRAIN_DUMPS)
def test_training_dump_matches(name, speedups):
    """The reference model and the CPU speed-ups ('cpu' preset) both take
    the authors' training step."""
    d = shared_fixture(name)
    assert is_train_dump(d)
    rows = _rows(d, speedups=speedups)
    assert not _failed(rows), _failed(rows)
    heads = [n.split(' ')[0] for n in rows if not n.startswith(' ')]
    assert heads == ['trainable', 'loss', 'grad', 'lr_scale', 'weight_decay',
                     'lr_schedule']
    # the reference backward has no custom autograd node; with the
    # speed-ups it runs through them (the frozen MLPs at least)
    nodes = next(r for n, r in rows.items() if 'backward nodes' in n)
    if speedups == 'none':
        assert nodes[1] == 0
    else:
        assert nodes[1] > 0 and '_FrozenMLP x0' not in nodes[0]


def _perturbed_copy(src, dst):
    shutil.copytree(src, dst)
    exp = torch.load(dst / 'expected.pt', weights_only=False)
    grads = exp['grad']
    # a gradient off by 1e-3 relative (10x the tolerance)
    g_name = next(n for n in grads if n.endswith('cross_s_up.weight'))
    g = grads[g_name]
    noise = torch.randn(g.shape, generator=torch.Generator().manual_seed(0))
    grads[g_name] = g + 1e-3 * g.norm() * noise / noise.norm()
    # a layer's lr multiplier and a weight decay
    s_name = next(n for n in exp['lr_scale'] if n.startswith('blocks.0.')
                  and n.endswith('weight'))
    exp['lr_scale'][s_name] *= 0.75
    w_name = next(n for n in exp['weight_decay']
                  if exp['weight_decay'][n] == 0.0)
    exp['weight_decay'][w_name] = 0.05
    # one iteration of the schedule off by 1e-5 x base lr (10x tolerance)
    exp['lr_schedule'] = exp['lr_schedule'].clone()
    exp['lr_schedule'][123] += 1e-5 * exp['lr_schedule'].max()
    # a tensor they do not train
    t_name = next(n for n in grads if n.startswith('vmae_fc_norm'))
    del grads[t_name]
    torch.save(exp, dst / 'expected.pt')
    return g_name, s_name, w_name, t_name


def test_perturbed_training_dump_fails(tmp_path):
    src = shared_fixture('cast_train_single')
    g_name, s_name, w_name, t_name = _perturbed_copy(src, tmp_path / 'bad')
    rows = _rows(str(tmp_path / 'bad'))
    failed = _failed(rows)
    assert f'  grad {g_name}' in failed
    assert any(n.startswith('grad (') for n in failed)
    assert f'  trainable, not theirs: {t_name}' in failed
    assert 'trainable set' in failed
    assert any(n.startswith(f'  lr_scale {s_name}') for n in failed)
    assert any(n.startswith(f'  weight_decay {w_name}') for n in failed)
    assert any(n.startswith('lr_schedule') for n in failed)
    assert rows['loss'][3]  # the loss is untouched and still passes
    # nothing else fails: one perturbation, one failure each
    assert len(failed) == 9, failed


def test_perturbed_loss_fails(tmp_path):
    src = shared_fixture('cast_train_composition')
    bad = tmp_path / 'bad'
    shutil.copytree(src, bad)
    exp = torch.load(bad / 'expected.pt', weights_only=False)
    exp['loss'] = exp['loss'] * (1 + 1e-3)
    torch.save(exp, bad / 'expected.pt')
    assert _failed(_rows(str(bad))) == ['loss']


def test_mmengine_linear_warmup_schedule_fails(tmp_path):
    """The schedule the recipes had before (MMEngine LinearLR from 1e-3 +
    CosineAnnealingLR) is not the authors': the check must say so."""
    src = shared_fixture('cast_train_single')
    cfg = tmp_path / 'old_schedule.py'
    cfg.write_text(
        f"_base_ = [{os.path.join(ROOT, 'configs', 'cast_ssv2.py')!r}]\n"
        "param_scheduler = [\n"
        "    dict(type='LinearLR', start_factor=1e-3, by_epoch=True,\n"
        "         begin=0, end=5, convert_to_iter_based=True),\n"
        "    dict(type='CosineAnnealingLR', T_max=45, eta_min_ratio=1e-3,\n"
        "         by_epoch=True, begin=5, end=50,\n"
        "         convert_to_iter_based=True)]\n")
    with pytest.raises(ValueError, match='LinearWarmupCosineLR'):
        check_train_dump(src, config=str(cfg))


@pytest.mark.parametrize('accum', [1, 4])
def test_scheduler_is_the_authors_cosine_scheduler(accum):
    """LinearWarmupCosineLR, stepped per micro-batch as the Runner does,
    gives the optimizer steps the values of the authors' cosine_scheduler
    (written out here from its formula with numpy), per layer group."""
    from mmengine.optim import OptimWrapper

    from mmaction.registry import PARAM_SCHEDULERS
    base, low, epochs, per_epoch, warm = 2e-3, 2e-6, 7, 6, 2
    warmup = np.linspace(0.0, base, warm * per_epoch)
    k = np.arange(epochs * per_epoch - warm * per_epoch)
    cosine = low + 0.5 * (base - low) * (1 + np.cos(np.pi * k / len(k)))
    ref = np.concatenate([warmup, cosine])
    p = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.AdamW([dict(params=[p[0]], lr=base),
                             dict(params=[p[1]], lr=base * 0.75)], lr=base)
    ow = OptimWrapper(opt, accumulative_counts=accum)
    sched = PARAM_SCHEDULERS.build(
        dict(type='LinearWarmupCosineLR', warmup_epochs=warm,
             start_factor=0.0, eta_min_ratio=low / base, by_epoch=True,
             begin=0, end=epochs, convert_to_iter_based=True),
        default_args=dict(optimizer=ow, epoch_length=per_epoch * accum))
    got = []
    for i in range(epochs * per_epoch * accum):
        if (i + 1) % accum == 0:
            got.append([g['lr'] for g in opt.param_groups])
        sched.step()
    got = np.array(got)
    assert got[0, 0] == 0.0 and got[warm * per_epoch - 1, 0] == base
    np.testing.assert_allclose(got[:, 0], ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[:, 1], 0.75 * ref, rtol=0, atol=1e-15)


def test_scheduler_bad_arguments():
    from mmaction.registry import PARAM_SCHEDULERS
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match='exactly one of'):
        PARAM_SCHEDULERS.build(dict(type='LinearWarmupCosineLR',
                                    by_epoch=False, end=10),
                               default_args=dict(optimizer=opt))
    with pytest.raises(ValueError, match='must fit'):
        PARAM_SCHEDULERS.build(dict(type='LinearWarmupCosineLR',
                                    warmup_iters=20, by_epoch=False, end=10),
                               default_args=dict(optimizer=opt))
    with pytest.raises(ValueError, match='needs `end`'):
        PARAM_SCHEDULERS.build(dict(type='LinearWarmupCosineLR',
                                    warmup_iters=2, by_epoch=False),
                               default_args=dict(optimizer=opt))


@pytest.mark.parametrize('recipe', ['cast_ssv2.py', 'cast_k400.py',
                                    'cast_ek100.py'])
def test_recipes_use_the_authors_schedule(recipe):
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', recipe))
    (s, ) = cfg.param_scheduler
    assert s.type == 'LinearWarmupCosineLR' and s.start_factor == 0.0
    assert s.warmup_epochs == 5 and s.end == cfg.train_cfg.max_epochs
    # min lr 1e-6 x total_batch / 256 against base 1e-3 x total_batch / 256
    assert s.eta_min_ratio == pytest.approx(1e-3)
    assert s.convert_to_iter_based and s.by_epoch


def test_check_parity_tool_on_training_dumps(tmp_path):
    dumps = [shared_fixture(n) for n in TRAIN_DUMPS]
    r = subprocess.run([sys.executable, 'tools/check_parity.py', *dumps],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '2 of 2 dumps match' in r.stdout
    for row in ('trainable set', 'loss', 'grad (', 'lr_scale',
                'weight_decay', 'lr_schedule'):
        assert row in r.stdout
    bad = tmp_path / 'bad'
    shutil.copytree(dumps[0], bad)
    exp = torch.load(bad / 'expected.pt', weights_only=False)
    exp['weight_decay'] = {k: 0.0 for k in exp['weight_decay']}
    torch.save(exp, bad / 'expected.pt')
    r = subprocess.run([sys.executable, 'tools/check_parity.py', str(bad)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'FAIL' in r.stdout and '0 of 1 dumps match' in r.stdout


def test_not_a_training_dump(tmp_path):
    (tmp_path / 'meta.json').write_text(json.dumps({'train_mode': False}))
    assert not is_train_dump(str(tmp_path))
    with pytest.raises(ValueError, match='train_mode'):
        check_train_dump(str(tmp_path))


@pytest.mark.parametrize('speedups', [
    None, {'checkpoint': 'fusion_qkv', 'frozen_mlp': True}])
def test_activation_checkpointing_gives_the_same_step(tmp_path, speedups):
    """with_cp=True (recomputed layers in backward), and the fusion
    checkpoint regions of the CPU speed-ups, take the same training step:
    the dump still passes."""
    cfg = tmp_path / 'with_cp.py'
    cfg.write_text(
        f"_base_ = [{os.path.join(ROOT, 'configs', 'cast_ssv2.py')!r}]\n"
        f"model = dict(backbone=dict(with_cp=True, speedups={speedups!r}))\n")
    rows = _rows(shared_fixture('cast_train_single'), config=str(cfg))
    assert not _failed(rows), _failed(rows)


def test_the_dumps_layer_decay_and_weight_decay_are_read(tmp_path):
    """The optimizer groups are built with meta.optimizer's layer_decay and
    weight_decay (the recipe's 0.75 / 0.05 were used whatever the dump
    said, so a dump made at 0.65 / 0.1 failed): a copy whose meta names
    other values than its expected groups fails exactly there; with
    --config the config's own values are compared (the unchanged copy
    passes)."""
    src = shared_fixture('cast_train_single')
    bad = tmp_path / 'other_decay'
    shutil.copytree(src, bad)
    meta = json.load(open(bad / 'meta.json'))
    meta['optimizer'].update(layer_decay=0.9, weight_decay=0.1)
    json.dump(meta, open(bad / 'meta.json', 'w'))
    failed = _failed(_rows(str(bad)))
    assert failed and all(n.startswith(('lr_scale', '  lr_scale',
                                        'weight_decay', '  weight_decay'))
                          for n in failed), failed
    assert any('lr_scale' in n for n in failed)
    assert any('weight_decay' in n for n in failed)
    recipe = os.path.join(ROOT, 'configs', 'cast_ssv2.py')
    rows = check_train_dump(str(bad), config=recipe)
    assert all(r[3] for r in rows), [r[0] for r in rows if not r[3]]
