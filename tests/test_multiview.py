"""Multi-view testing (K400: 5 clips x 3 crops, SSv2: 2 x 3) goes through
the model as one batch: MMAction2's ``Recognizer3D.test_step`` reshapes a
sample's (views, C, T, H, W) into the batch, the backbone runs once on all
views of all samples, and the head averages the views' softmax scores
(``average_clips='prob'``). Checked on a tiny CAST model: one backbone call
of batch ``samples x views``, scores equal to running the views one by one
(the authors' test loop) and averaging, and ``max_testing_views`` chunks
the views with the same scores."""
import copy

import pytest
import torch

from cast_mmaction.models.presets import cast_recognizer_cfg
from cast_mmaction.utils import build_model

TINY = dict(embed_dim=32, depth=1, num_heads=2, num_frames=4, img_size=32,
            patch_size=16)


def _model():
    torch.manual_seed(0)
    model = build_model(cast_recognizer_cfg(num_classes=5, **TINY)).eval()
    with torch.no_grad():  # the head starts at zero: give it weights
        for p in model.cls_head.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    return model


def _batch(samples, views):
    from mmaction.structures import ActionDataSample
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(views, 3, 4, 32, 32, generator=g)
              for _ in range(samples)]
    data_samples = [ActionDataSample().set_gt_label(i % 5)
                    for i in range(samples)]
    return dict(inputs=inputs, data_samples=data_samples)


def _spy(model):
    sizes = []
    model.backbone.register_forward_hook(
        lambda mod, args, out: sizes.append(args[0].shape[0]))
    return sizes


@pytest.mark.parametrize('samples,views', [(1, 15), (2, 6)])
def test_views_go_through_the_model_as_one_batch(samples, views):
    model = _model()
    data = _batch(samples, views)
    sizes = _spy(model)
    with torch.no_grad():
        out = model.test_step(copy.deepcopy(data))
    assert sizes == [samples * views]
    batched = torch.stack([o.pred_score for o in out])
    # the authors' pattern: each view through the model alone, then the
    # mean of the views' softmax scores
    sizes.clear()
    per_view = []
    with torch.no_grad():
        for x, ds in zip(data['inputs'], data['data_samples']):
            scores = [model.test_step(dict(
                inputs=[x[v:v + 1]], data_samples=[copy.deepcopy(ds)]))[0]
                .pred_score for v in range(views)]
            per_view.append(torch.stack(scores).mean(0))
    assert sizes == [1] * (samples * views)
    per_view = torch.stack(per_view)
    torch.testing.assert_close(batched, per_view, rtol=1e-5, atol=1e-6)
    assert batched.sum(-1).allclose(torch.ones(samples))
    # the views differ: averaging them is not a no-op
    assert not torch.allclose(scores[0], scores[1])


def test_max_testing_views_chunks_with_the_same_scores():
    model = _model()
    data = _batch(1, 15)
    with torch.no_grad():
        whole = model.test_step(copy.deepcopy(data))[0].pred_score
    model.test_cfg = dict(max_testing_views=4)
    sizes = _spy(model)
    with torch.no_grad():
        chunked = model.test_step(copy.deepcopy(data))[0].pred_score
    assert sizes == [4, 4, 4, 3]
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-6)


def test_bench_multiview_runs_and_agrees(tmp_path):
    import importlib.util
    import json
    from _tools import tool_path
    spec = importlib.util.spec_from_file_location(
        '_bench_multiview', tool_path('bench_multiview'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'mv.json'
    tool.main(['--embed-dim', '32', '--depth', '1', '--heads', '2',
               '--frames', '4', '--img-size', '32', '--num-classes', '5',
               '--videos', '1', '--warmup', '0', '--json', str(out)])
    rows = json.loads(out.read_text())['results']
    assert [(r['protocol'], r['views']) for r in rows] == [('k400', 15),
                                                           ('ssv2', 6)]
    for r in rows:
        assert r['max_score_diff'] < 1e-5
        for name in ('batched', 'one_by_one'):
            assert r[name]['cpu_s_per_video'] > 0
            assert r[name]['views_per_s_cpu'] == \
                pytest.approx(r['views'] / r[name]['cpu_s_per_video'])
            assert r[name]['views_per_s_wall'] == \
                pytest.approx(r['views'] / r[name]['wall_s_per_video'])
            assert 'peak_gpu_mib' not in r[name]  # a CPU run


def test_bench_multiview_runs_under_autocast_and_names_a_missing_gpu(
        tmp_path):
    import importlib.util
    import json
    from _tools import tool_path
    spec = importlib.util.spec_from_file_location(
        '_bench_multiview', tool_path('bench_multiview'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tiny = ['--embed-dim', '32', '--depth', '1', '--heads', '2', '--frames',
            '4', '--img-size', '32', '--num-classes', '5', '--videos', '1',
            '--warmup', '0', '--protocols', 'ssv2']
    out = tmp_path / 'mv.json'
    tool.main(tiny + ['--amp', 'bf16', '--json', str(out)])
    res = json.loads(out.read_text())
    assert res['args']['amp'] == 'bf16'
    (row,) = res['results']
    # both patterns under the same bf16 autocast: the same scores up to
    # bf16's rounding of the different batch shapes
    assert 0 <= row['max_score_diff'] < 2e-2
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match='no CUDA device'):
            tool.main(tiny + ['--device', 'cuda'])
