"""``tools/benchmark/bench_pipeline.py`` on tiny synthetic videos: one stage per
transform of the config's pipeline (in order, repeated types numbered) plus
collate, the totals add up, the rates follow from them, it runs on a
config with any pipeline, the JSON output, and the decoder comparison."""
import importlib.util
import json
import os.path as osp

import pytest

from conftest import ROOT
from _tools import tool_path

TINY = dict(frames=20, width=64, height=48, fps=10, gop=8)


def _load():
    spec = importlib.util.spec_from_file_location(
        '_bench_pipeline', tool_path('bench_pipeline'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bp = _load()


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    import av
    if 'libx264' not in av.codecs_available:
        pytest.skip('this PyAV build has no libx264 encoder')
    return str(tmp_path_factory.mktemp('bench_pipeline'))


def _check_totals(res, clips):
    stages = res['stages']
    assert res['clips'] == clips
    assert res['total_cpu_ms'] == pytest.approx(
        sum(s['cpu_ms'] for s in stages))
    assert res['total_wall_ms'] == pytest.approx(
        sum(s['wall_ms'] for s in stages))
    assert sum(s['cpu_pct'] for s in stages) == pytest.approx(100.0)
    assert sum(s['wall_pct'] for s in stages) == pytest.approx(100.0)
    assert res['clips_per_s_per_worker_cpu'] == pytest.approx(
        1e3 / res['total_cpu_ms'])
    assert all(s['cpu_ms'] >= 0 and s['wall_ms'] >= 0 for s in stages)
    assert res['total_wall_ms'] > 0


@pytest.mark.parametrize('config,names', [
    ('configs/cast_ssv2.py',
     ['VideoInit', 'SegmentSample', 'VideoDecode', 'VideoRandAugment',
      'RandomResizedCrop', 'Resize', 'FormatShape', 'PackActionInputs',
      'collate']),
    ('configs/cast_k400.py',
     ['VideoInit', 'DenseSpanSample', 'VideoDecode', 'VideoRandAugment',
      'RandomResizedCrop', 'Resize', 'Flip', 'FormatShape',
      'PackActionInputs', 'collate']),
])
def test_recipe_train_breakdown(workdir, config, names):
    res = bp.time_pipeline(osp.join(ROOT, config), 'train', clips=5,
                           warmup=1, workdir=workdir, kind=TINY,
                           batch_size=2)
    assert [s['name'] for s in res['stages']] == names
    cats = [s['category'] for s in res['stages']]
    assert cats[:3] == ['open', 'sampling', 'decode']
    assert cats[-3:] == ['format', 'pack', 'collate']
    assert 'randaugment' in cats and 'crop' in cats and 'resize' in cats
    assert res['batches'] == 3  # 2 + 2 + 1 clips
    # every decoded frame was checked against its bar code
    assert res['frames_checked'] == 6 * 16
    assert res['pinned'] == ['VideoInit']
    _check_totals(res, 5)
    by = {s['name']: s for s in res['stages']}
    assert by['VideoDecode']['cpu_ms'] > by['SegmentSample' if 'ssv2' in
                                            config else
                                            'DenseSpanSample']['cpu_ms']


ANY_PIPELINE = """
_base_ = [{base!r}]
train_pipeline = [
    dict(type='VideoInit', backend='pyav', num_threads=None),
    dict(type='SegmentSample', num_segments=4),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, 40)),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(batch_size=3, dataset=dict(pipeline=train_pipeline))
"""


def test_any_pipeline_and_json(workdir, tmp_path):
    cfg = tmp_path / 'any_pipeline.py'
    cfg.write_text(ANY_PIPELINE.format(
        base=osp.join(ROOT, 'configs', 'cast_ssv2.py')))
    res = bp.time_pipeline(str(cfg), 'train', clips=4, warmup=0,
                           workdir=workdir, kind=TINY, threads=1,
                           preprocess=True)
    assert [s['name'] for s in res['stages']] == [
        'VideoInit', 'SegmentSample', 'VideoDecode', 'Resize', 'Resize#2',
        'FormatShape', 'PackActionInputs', 'collate']
    assert [s['category'] for s in res['stages']][3:5] == ['resize',
                                                           'resize']
    assert res['batch_size'] == 3 and res['batches'] == 2
    assert res['pinned'] == ['VideoInit']  # num_threads None -> 1
    assert res['frames_checked'] == 4 * 4
    _check_totals(res, 4)
    # the model's data_preprocessor, timed apart (not a worker's cost)
    assert res['data_preprocessor']['device'] == 'cpu'
    assert res['data_preprocessor']['wall_ms_per_clip'] > 0
    # the CLI on the same config: JSON with the machine and the load
    out = tmp_path / 'out.json'
    bp.main(['--config', str(cfg), '--clips', '2', '--warmup', '0',
             '--videos', '2', '--workdir', workdir, '--json', str(out),
             '--video-kind', 'ssv2'])
    data = json.loads(out.read_text())
    (r, ) = data['results']
    assert r['video']['width'] == 426 and r['video']['frames'] == 45
    assert [s['name'] for s in r['stages']][-1] == 'collate'
    assert data['machine']['cpu'] and 'load_avg_end' in data
    assert len(r['load_avg_before']) == 3


def test_unknown_transform_is_its_own_stage():
    assert bp.category('MyTransform') == 'MyTransform'
    assert bp.category('DecordDecode') == 'decode'
    assert bp.category('VideoRandAugment') == 'randaugment'


def test_compare_decoders_small(workdir, tmp_path):
    rows = bp.compare_decoders(workdir, configs=[
        osp.join(ROOT, 'configs', 'cast_ssv2.py')], splits=('val', ),
        clips=2, rounds=1, videos=2, short_side=224)
    labels = [r['decoder'] for r in rows]
    assert labels[:3] == ['mmaction DecordInit+DecordDecode', 'decord',
                          'pyav']
    assert 'decord short_side=224' in labels
    assert all(r['cpu_ms'] > 0 and r['split'] == 'val' for r in rows)


def test_resize_diff_measures_a_real_difference(workdir):
    """The reduced-size decode has Resize's size and differs from
    decode-then-Resize a little (not bit-identical)."""
    rows = bp.resize_diff(workdir, configs=[
        osp.join(ROOT, 'configs', 'cast_ssv2.py')], clips=1, videos=2)
    assert {r['decoder'] for r in rows} >= {'decord', 'pyav'}
    for r in rows:
        assert r['shape'] == [16, 224, 398, 3]
        assert 0 < r['mean_abs_diff'] < 8


@pytest.mark.parametrize('decoder,types', [
    ('mmaction', ['DecordInit', 'DecordDecode']),
    ('decord', ['VideoInit', 'VideoDecode'])])
def test_decoder_swap(workdir, decoder, types):
    """--decoder times the same pipeline with another decoder (mmaction:
    the recipes' DecordInit + DecordDecode before issue 16)."""
    res = bp.time_pipeline(osp.join(ROOT, 'configs', 'cast_k400.py'), 'val',
                           clips=2, warmup=0, workdir=workdir, kind=TINY,
                           decoder=decoder)
    names = [s['name'] for s in res['stages']]
    assert [names[0], names[2]] == types
    assert res['decoder'] == decoder and res['frames_checked'] == 2 * 16


def test_prepared_videos_and_their_pixel_difference(workdir, monkeypatch):
    # the K400 device-augmentation pipeline on prepared copies (short side
    # 48, a key frame every 4 frames) of tiny 112 x 64 videos (the bar
    # code scales by 3/4 exactly): the frames are checked at the prepared
    # size, the record names the preparation
    tiny = dict(TINY, frames=40, width=112, height=64)
    res = bp.time_pipeline('configs/cast_k400_device_aug.py', 'train',
                           clips=2, warmup=0, workdir=workdir, kind=tiny,
                           threads=1, videos=2,
                           prepare=dict(short_side=48, keyint=4))
    prep = res['prepared']
    assert (prep['width'], prep['height']) == (84, 48)
    assert res['video']['height'] == 48
    assert prep['bytes_per_file_after'] > 0
    assert res['frames_checked'] == 2 * 16
    _check_totals(res, 2)
    # pixel difference: same frame indices, bar codes checked, a real
    # difference (re-encoding is lossy) but a close one
    monkeypatch.setitem(bp.VIDEO_KINDS, 'tiny', tiny)
    (row, ) = bp.prepare_diff(workdir, kinds=('tiny', ), clips=2, videos=2,
                              short_side=48, keyint=8)
    assert (row['source'], row['prepared']) == ('112x64', '84x48')
    assert 0 < row['mean_abs_diff'] < 10 and row['psnr_db'] > 25


def test_decode_device_needs_torchcodec():
    with pytest.raises(SystemExit, match='--decoder torchcodec'):
        bp.main(['--decode-device', 'cuda'])


def test_missing_config_and_unusable_devices_are_usage_errors(tmp_path,
                                                              capsys):
    """A --config that does not exist and a --device (with --preprocess) or
    --decode-device torch cannot use here stop when the arguments are
    parsed, naming the option (they were a FileNotFoundError traceback and,
    after the first timings, torch's 'Found no NVIDIA driver' RuntimeError
    on a CPU-only host)."""
    missing = str(tmp_path / 'missing.py')
    cases = [(['--config', missing], f'--config {missing}: no such file'),
             (['--preprocess', '--device', 'cuda:99'],
              '--device cuda:99: torch sees'),
             (['--decoder', 'torchcodec', '--decode-device', 'cuda:99'],
              '--decode-device cuda:99: torch sees'),
             (['--preprocess', '--device', 'gpu'], '--device gpu: not a '
              'device')]
    cfg = osp.join(ROOT, 'configs', 'cast_ssv2.py')
    for argv, match in cases:
        if argv[0] != '--config':
            argv = ['--config', cfg] + argv
        with pytest.raises(SystemExit) as e:
            bp.parse_args(argv)
        assert e.value.code == 2
        assert match in capsys.readouterr().err, argv
    # the CPU, and a device left unused without --preprocess, pass
    assert bp.parse_args(['--config', cfg, '--device', 'cuda:99']).config \
        == [cfg]
