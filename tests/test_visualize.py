"""tools/analysis_tools/plot_log.py on real MMEngine logs and tools/analysis_tools/attention_maps.py on a
tiny CAST: recomputed attention reproduces the modules, maps have the
published windows, PNGs are written."""
import os
import os.path as osp

import numpy as np
import pytest
import torch

from conftest import ROOT
from _tools import load_tool




def read_png(path):
    import matplotlib.image as mpimg
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    return img


# ----------------------------------------------------------------------------
# plot_log
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def mmengine_log(tmp_path_factory):
    """A real 3-epoch MMEngine run of a toy model: scalars.json + .log."""
    import torch.nn as nn
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, inputs, labels, mode='tensor'):
            out = self.fc(inputs)
            if mode == 'loss':
                return dict(loss=nn.functional.cross_entropy(out, labels))
            return [(o.argmax().item(), y.item())
                    for o, y in zip(out, labels)]

    class ToyAcc(BaseMetric):
        default_prefix = 'acc'

        def process(self, data_batch, outputs):
            self.results.extend(outputs)

        def compute_metrics(self, results):
            return dict(top1=sum(a == b for a, b in results) / len(results))

    g = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(2, generator=g) + 2 * (i % 2),
                 labels=torch.tensor(i % 2)) for i in range(40)]
    loader = dict(dataset=data, batch_size=4,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    work = tmp_path_factory.mktemp('log') / 'run'
    runner = Runner(
        model=Toy(), work_dir=str(work), train_dataloader=loader,
        val_dataloader=loader, val_evaluator=[ToyAcc()],
        train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=1),
        val_cfg=dict(), optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.1)),
        param_scheduler=[dict(type='MultiStepLR', milestones=[1, 2],
                              gamma=0.5, by_epoch=True)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=5),
                           checkpoint=dict(type='CheckpointHook',
                                           interval=100)),
        log_processor=dict(by_epoch=True), default_scope='mmaction',
        # a name of its own: by default the run is named after the second
        # it starts, and a runner built in the same second by an earlier
        # test (one process) owns that MMLogger, whose log file is elsewhere
        experiment_name=f'plot_log_{os.getpid()}_{id(loader)}')
    runner.train()
    return work


def test_plot_log_reads_both_formats(mmengine_log):
    pl = load_tool('plot_log')
    path = pl.find_log(str(mmengine_log))
    assert path.endswith('scalars.json')
    train, val = pl.read_scalars_json(path)
    ttrain, tval = pl.read_text_log(str(next(mmengine_log.glob('*/*.log'))))
    # 10 iterations per epoch, logged every 5: 6 records, 3 validations
    assert [r['x'] for r in train] == [5, 10, 15, 20, 25, 30]
    assert [r['x'] for r in ttrain] == [5, 10, 15, 20, 25, 30]
    assert [r['x'] for r in tval] == [10, 20, 30]  # end of each epoch
    assert len(val) == 3
    # the lr halves each epoch; both sources agree
    assert [r['lr'] for r in ttrain] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert [r['lr'] for r in train] == pytest.approx(
        [r['lr'] for r in ttrain])
    assert [r['loss'] for r in train] == pytest.approx(
        [r['loss'] for r in ttrain], abs=1e-4)
    assert [r['acc/top1'] for r in val] == pytest.approx(
        [r['acc/top1'] for r in tval], abs=1e-4)


def test_plot_log_writes_pngs(mmengine_log, tmp_path, capsys):
    pl = load_tool('plot_log')
    out = tmp_path / 'plots'
    text = next(mmengine_log.glob('*/*.log'))
    rc = pl.main([str(mmengine_log), str(text), '--labels', 'json', 'text',
                  '--out-dir', str(out), '--keys', 'data_time', '--smooth',
                  '2'])
    assert rc == 0
    for name in ('loss.png', 'lr.png', 'accuracy.png', 'data_time.png'):
        read_png(out / name)
    printed = capsys.readouterr().out
    assert 'accuracy.png: 2 curve(s)' in printed  # one per run
    # default output folder: plots/ of the run
    rc = pl.main([str(mmengine_log)])
    assert rc == 0
    assert list(mmengine_log.glob('*/plots/loss.png'))


def test_plot_log_bad_inputs(tmp_path, capsys):
    pl = load_tool('plot_log')
    assert pl.main([str(tmp_path / 'nothing')]) == 2
    assert 'no such file' in capsys.readouterr().err
    (tmp_path / 'empty_run').mkdir()
    assert pl.main([str(tmp_path / 'empty_run')]) == 2
    assert 'no MMEngine log' in capsys.readouterr().err
    bad = tmp_path / 'scalars.json'
    bad.write_text('not json\n')
    assert pl.main([str(bad)]) == 2
    assert 'line 1' in capsys.readouterr().err


# ----------------------------------------------------------------------------
# attention maps
# ----------------------------------------------------------------------------
def tiny_backbone(seed=0):
    from cast_mmaction.models.presets import cast_backbone_cfg
    from cast_mmaction.utils import build_model
    cfg = cast_backbone_cfg(embed_dim=32, depth=2, num_heads=2, num_frames=8,
                            img_size=32, patch_size=8, tubelet_size=2)
    bb = build_model(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bb.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return bb


def test_recorded_attention_is_the_forwards():
    """``record_attention`` returns, per layer / link / receiver, softmax
    weights that, applied to the module's own values, give the module's
    output (so they are the weights the forward used); recording leaves the
    backbone's output bit for bit as it is."""
    am = load_tool('attention_maps')
    bb = tiny_backbone()
    mods = {(i, n): bb.links['clip_vmae'][str(i)].attn[n]
            for i in range(2) for n in ('clip', 'vmae')}
    seen = {}

    def hook(key):
        def fn(module, args, output):
            seen[key] = (args[0].detach(), args[1].detach(), output.detach())
        return fn

    handles = [m.register_forward_hook(hook(k)) for k, m in mods.items()]
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        plain = bb(x)
        with bb.record_attention() as rec:
            recorded = bb(x)
        again = bb(x)
    for h in handles:
        h.remove()
    for a, b, c in zip(plain, recorded, again):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert set(rec) == {(i, 'clip_vmae', n) for i, n in mods}
    assert rec.silent == []
    for (i, n), m in mods.items():
        weights = rec[i, 'clip_vmae', n]
        q, kv, output = seen[i, n]
        b, tq, nq, _ = q.shape
        _, tk, nk, _ = kv.shape
        torch.testing.assert_close(weights.sum(-1),
                                   torch.ones(weights.shape[:-1]))
        # weights @ v -> proj is the module's output
        _, kvp = m.add_positions(q, kv)
        v = m.kv(m.policy.to_seq(kvp)).chunk(2, dim=-1)[1]
        h, d = m.num_heads, v.shape[-1] // m.num_heads
        if m.window == 'time':  # T2S: CLIP (t, n) -> VideoMAE (:, n)
            assert n == 'clip' and rec.info[i, 'clip_vmae', n]['source'] \
                == 'vmae'
            assert weights.shape == (b, 2, nq, tq, tk)
            w = weights.transpose(1, 2).reshape(b * nq, 2, tq, tk)
        else:  # S2T: VideoMAE (t, n) -> CLIP (t, :)
            assert n == 'vmae'
            assert weights.shape == (b, 2, tq, nq, nk)
            w = weights.transpose(1, 2).reshape(b * tq, 2, nq, nk)
        vh = v.reshape(v.shape[0], -1, h, d).transpose(1, 2)

        def out_of(w):
            ctx = (w @ vh).transpose(1, 2).reshape(w.shape[0], -1, h * d)
            return m.policy.from_seq(m.proj(ctx), q.shape)

        with torch.no_grad():
            torch.testing.assert_close(out_of(w), output, atol=1e-5,
                                       rtol=1e-5)
            # other weights would not give that output
            other = torch.roll(w, 1, dims=-1)
            assert (out_of(other) - output).abs().max() > 1e-3
        maps = am.grid_maps(weights, m.window, (tq, nq))
        assert maps.shape == ((b, tq, nq, tk) if m.window == 'time' else
                              (b, tq, nq, nk))
        wm = weights.mean(1)
        # query (t=1, n=3) of sample 0
        expect = wm[0, 3, 1] if m.window == 'time' else wm[0, 1, 3]
        torch.testing.assert_close(maps[0, 1, 3], expect)


def test_record_attention_filters_and_names_bad_links():
    bb = tiny_backbone()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad(), bb.record_attention(layers=[1]) as rec:
        bb(x)
    assert set(rec) == {(1, 'clip_vmae', 'clip'), (1, 'clip_vmae', 'vmae')}
    with pytest.raises(ValueError, match=r"no links \['nope'\]"):
        with bb.record_attention(links=['nope']):
            pass
    # the sinks are gone after the block
    assert all(m._attention_sink is None for per in bb.links.values()
               for m in per.values())


def test_attention_windows_are_the_published_ones():
    """Changing a key outside a query's window leaves its weights alone;
    changing one inside changes them."""
    am = load_tool('attention_maps')
    bb = tiny_backbone(seed=1)
    link = bb.links['clip_vmae']['0']
    t2s, s2t = link.attn['clip'], link.attn['vmae']
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 4, 16, 16, generator=g)
    kv = torch.randn(1, 4, 16, 16, generator=g)

    def maps(m, kv):
        got = []
        m(q, kv, got)
        return am.grid_maps(got[0], m.window, (4, 16))

    with torch.no_grad():
        base_t, base_s = maps(t2s, kv), maps(s2t, kv)
        kv2 = kv.clone()
        kv2[0, 2, 5] += 3.0  # key at time 2, patch 5
        t_new, s_new = maps(t2s, kv2), maps(s2t, kv2)
    changed_t = (t_new - base_t).abs().amax(-1)[0] > 1e-6  # (Tq, Nq)
    changed_s = (s_new - base_s).abs().amax(-1)[0] > 1e-6
    # T2S: only queries at patch 5 (any time) see that key
    assert changed_t[:, 5].all() and not changed_t[:, :5].any() and \
        not changed_t[:, 6:].any()
    # S2T: only queries of time step 2 (any patch) see it
    assert changed_s[2].all() and not changed_s[[0, 1, 3]].any()


def test_attention_maps_tool(tmp_path, capsys):
    from cast_mmaction.datasets.synthetic import render_clip, write_mp4
    from test_tools_infer import make_checkpoint, write_config
    frames = render_clip(np.random.default_rng(0), 0, 0, num_frames=10,
                         size=64)
    video = str(tmp_path / 'clip.mp4')
    write_mp4(video, frames)
    names = tmp_path / 'names.txt'
    names.write_text('w\nx\ny\nz\n')
    cfg = write_config(str(tmp_path / 'tiny.py'), label_map=str(names))
    ckpt = str(tmp_path / 'tiny.pth')
    make_checkpoint(cfg, ckpt, seed=3)
    am = load_tool('attention_maps')
    out = tmp_path / 'attn'
    rc = am.main([video, '--config', cfg, '--checkpoint', ckpt, '--out-dir',
                  str(out), '--layer', '0', '--query-frame', '1',
                  '--query-patch', '1', '2'])
    printed = capsys.readouterr().out
    assert rc == 0
    read_png(out / 't2s_layer0.png')
    read_png(out / 's2t_layer0.png')
    data = np.load(out / 'attention_layer0.npz')
    # 4 CLIP frames x 16 patches -> 4 VideoMAE steps; 4 x 16 -> 16 patches
    assert data['t2s'].shape == (4, 16, 4)
    assert data['s2t'].shape == (4, 16, 16)
    np.testing.assert_allclose(data['t2s'].sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(data['s2t'].sum(-1), 1, atol=1e-5)
    assert data['frames'].shape == (8, 32, 32, 3)
    assert data['frames'].dtype == np.uint8 and data['frames'].std() > 5
    assert data['query_patch'].tolist() == [1, 2]
    assert 'prediction: label:' in printed
    assert any(n in printed for n in 'wxyz')
    # bad arguments are named
    rc = am.main([video, '--config', cfg, '--checkpoint', ckpt, '--out-dir',
                  str(out), '--layer', '5'])
    assert rc == 2 and '--layer 5' in capsys.readouterr().err
    rc = am.main([video, '--config', cfg, '--checkpoint', ckpt, '--out-dir',
                  str(out), '--query-patch', '9', '0'])
    assert rc == 2 and 'patch grid is 4 x 4' in capsys.readouterr().err
    # a device torch cannot use here (a CUDA index beyond those it sees;
    # any CUDA device on a CPU-only host): one line, no traceback
    rc = am.main([video, '--config', cfg, '--checkpoint', ckpt, '--out-dir',
                  str(out), '--device', 'cuda:99'])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith('error: --device cuda:99: torch sees')
