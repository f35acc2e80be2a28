"""Reliability from the user's side (issue 6): bad media, annotations,
impossible configs, foreign checkpoints, non-finite losses, atomic
checkpoint files. Interrupted runs (kill -9 / --resume) are in
tests/test_reliability_resume.py. Every case is listed in
docs/reliability.md with the message a user sees.

Media are tiny real files written here: synthetic mp4 videos (32 px), and
broken ones: missing, empty (0 bytes), truncated (first third of a good
file), random bytes named .mp4; wav files via the wave module.
"""
import copy
import os
import os.path as osp
import re
import wave

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from cast_mmaction.datasets.annotation_checks import (AnnotationError,
                                                      check_list_file)
from cast_mmaction.datasets.robust import (BadSampleError, RobustDataset,
                                           ReproducibleSampler)
from cast_mmaction.engine.checkpoint_check import (CheckpointMismatchError,
                                                   check_checkpoint)
from cast_mmaction.engine.guarded_optim_wrapper import (
    GuardedAmpOptimWrapper, GuardedOptimWrapper)
from cast_mmaction.engine.hooks import TooManyBadSamplesError
from cast_mmaction.safe_load import load_checkpoint
from mmaction.registry import DATASETS

from _reliability_driver import NaNForTestHook, synthetic_lists
from conftest import ROOT, TINY_CONFIG_HEAD
from _tools import load_tool as _load_tool
BAD = ('missing', 'empty', 'truncated', 'truncated_tail', 'random')

TINY = TINY_CONFIG_HEAD.replace('{drop_path}', '0.1') + """
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file=data + '/train_list.txt',
                 data_prefix=dict(video=data), pipeline=pipe_train))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file=data + '/val_list.txt',
                 data_prefix=dict(video=data), pipeline=pipe_test))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_begin=2)
param_scheduler = [dict(type='ConstantLR', factor=1.0)]
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=1),
                     logger=dict(interval=1))
"""

_COUNT = [0]


def _unique(prefix):
    _COUNT[0] += 1
    return f'{prefix}_{os.getpid()}_{_COUNT[0]}'


def _faststart_mp4(path, num_frames=16, size=32):
    """An mp4 with its index (moov) before the frames, as streaming sites
    write them: cut short, it still opens but its frames are missing."""
    import av

    from cast_mmaction.datasets.synthetic import render_clip
    frames = render_clip(np.random.default_rng(0), 0, 0, num_frames, size)
    with av.open(path, 'w', options={'movflags': 'faststart'}) as c:
        stream = c.add_stream('mpeg4', rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = 'yuv420p'
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format='rgb24')
            frame.pts = i
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)


def _write_bad_media(root, good):
    """Under root/bad: missing, empty (0 bytes), truncated (the first third
    of an mp4 whose index is at its end), truncated_tail (60 % of an mp4
    whose index is at its start) and random (4 KB of random bytes) .mp4."""
    os.makedirs(osp.join(root, 'bad'), exist_ok=True)
    with open(good, 'rb') as f:
        data = f.read()
    open(osp.join(root, 'bad', 'empty.mp4'), 'wb').close()
    with open(osp.join(root, 'bad', 'truncated.mp4'), 'wb') as f:
        f.write(data[:len(data) // 3])
    tail = osp.join(root, 'bad', 'truncated_tail.mp4')
    _faststart_mp4(tail)
    with open(tail, 'rb') as f:
        fast = f.read()
    assert fast.find(b'moov') < fast.find(b'mdat')  # index first
    with open(tail, 'wb') as f:
        f.write(fast[:int(len(fast) * 0.6)])
    with open(osp.join(root, 'bad', 'random.mp4'), 'wb') as f:
        f.write(np.random.default_rng(0).bytes(4096))
    return [f'bad/{name}.mp4' for name in BAD]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp('reliability'))
    data = osp.join(tmp, 'data')
    info, train, val = synthetic_lists(data, num_train_per_class=2)
    bad = _write_bad_media(data, osp.join(data, train[0].split()[0]))
    lists = dict(  # 7 good + 5 bad = 12: 3 full batches of 4 per epoch
        train_bad=train[:7] + [f'{p} {k % 4}' for k, p in enumerate(bad)],
        val_bad=val + [f'{p} {k % 4}' for k, p in enumerate(bad)],
    )
    for name, lines in lists.items():
        with open(osp.join(data, name + '.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    cfg = osp.join(tmp, 'tiny.py')
    with open(cfg, 'w') as f:
        f.write(TINY.format(base=osp.join(ROOT, 'configs', 'cast_demo.py'),
                            data=data))
    return dict(tmp=tmp, data=data, cfg=cfg, train=train, val=val, bad=bad)




@pytest.fixture(scope='module')
def tools():
    return dict(train=_load_tool('train'), test=_load_tool('test'))


def _cfg(setup, work, **merge):
    """The tiny config as it is (the reliability wiring is in it: nothing
    is added here), with ``merge`` (``--cfg-options`` keys) applied."""
    cfg = Config.fromfile(setup['cfg'])
    cfg.merge_from_dict(merge)
    cfg.work_dir = work
    cfg.experiment_name = _unique('exp')
    return cfg


def _log_text(runner):
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


# ---------------------------------------------------------------------------
# 1. bad media
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('workers', [0, 2])
def test_training_skips_bad_videos_and_counts_them(setup, workers):
    """7 good + 5 bad videos (missing, empty, truncated at either end,
    random bytes): training runs its 2 epochs x 3 iterations to the end,
    every bad path is logged once, each epoch's log line counts 5 skipped
    samples (also with 2 DataLoader workers, where the loading happens in
    other processes)."""
    work = osp.join(setup['tmp'], _unique('bad_train'))
    cfg = _cfg(setup, work, **{
        'default_hooks.bad_samples.max_bad_fraction': 0.5,
        'train_dataloader.dataset.ann_file':
        osp.join(setup['data'], 'train_bad.txt'),
        'train_dataloader.num_workers': workers,
        'train_dataloader.persistent_workers': workers > 0,
    })
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 6 and runner.epoch == 2
    log = _log_text(runner)
    for rel in setup['bad']:
        path = osp.join(setup['data'], rel)
        hits = re.findall(r'bad sample skipped and replaced by another: ' +
                          re.escape(path) + r' \((\w+)', log)
        assert len(hits) == 1, (path, hits)  # logged once over 2 epochs
    assert 'FileNotFoundError' in log  # the missing one, with its error
    for epoch in (1, 2):
        assert (f'Epoch(train) [{epoch}] bad samples: 5 skipped and replaced'
                f' this epoch; 5 distinct bad of 12') in log
        last_line = [ln for ln in log.splitlines()
                     if f'Epoch(train) [{epoch}][3/3]' in ln][0]
        assert 'bad_samples: 5' in last_line
    assert osp.isfile(osp.join(work, 'epoch_2.pth'))


def test_too_many_bad_videos_stop_with_the_first_offenders(setup):
    work = osp.join(setup['tmp'], _unique('too_many'))
    cfg = _cfg(setup, work, **{
        'default_hooks.bad_samples.max_bad_fraction': 0.2,
        'train_dataloader.dataset.ann_file':
        osp.join(setup['data'], 'train_bad.txt')})
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TooManyBadSamplesError) as err:
        runner.train()
    msg = str(err.value)
    found = int(re.match(r'(\d+) of 12 training samples', msg).group(1))
    assert found >= 3  # > 0.2 x 12, found batch by batch
    assert 'max_bad_fraction=0.2 (default_hooks.bad_samples.' \
        'max_bad_fraction)' in msg
    listed = [p for p in setup['bad'] if osp.join(setup['data'], p) in msg]
    assert len(listed) == found
    assert runner.iter < 3  # stopped in the first epoch


def test_bad_fraction_counts_a_repeated_dataset_once(setup):
    """max_bad_fraction bounds the distinct bad files of the distinct
    samples: a RepeatDataset(times=5) of 4 videos is 4 samples, not 20 (it
    was 20, so 1 bad video of 4 passed a limit of 20 %, and the error
    named '1 of 20 training samples')."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import init_default_scope

    from cast_mmaction.engine.hooks import BadSampleHook
    from cast_mmaction.engine.hooks.bad_sample_hook import \
        num_distinct_samples
    from mmaction.structures import ActionDataSample
    ann = osp.join(setup['data'], 'val_list.txt')
    init_default_scope('mmaction')  # MMEngine's wrappers build inside it
    robust = dict(type='RobustDataset', dataset_type='VideoDataset',
                  ann_file=ann, pipeline=[],
                  data_prefix=dict(video=setup['data']))
    repeated = DATASETS.build(dict(type='RepeatDataset', times=5,
                                   dataset=robust))
    assert len(repeated) == 20
    assert num_distinct_samples(repeated) == 4
    assert num_distinct_samples(DATASETS.build(dict(
        type='ConcatDataset', datasets=[robust, dict(
            type='RepeatDataset', times=5, dataset=robust)]))) == 8
    robust = repeated.dataset
    name = _unique('bad_fraction')
    runner = SimpleNamespace(
        train_dataloader=SimpleNamespace(dataset=repeated), epoch=0,
        message_hub=MessageHub.get_instance(name),
        logger=MMLogger.get_instance(name))
    sample = ActionDataSample()
    sample.set_metainfo(dict(bad_samples=[(1, robust.describe(1), 'err')]))
    hook = BadSampleHook(max_bad_fraction=0.2)
    with pytest.raises(TooManyBadSamplesError,
                       match=r'^1 of 4 training samples \(25.00%\)'):
        hook.after_train_iter(runner, 0,
                              data_batch=dict(data_samples=[sample]))


def test_bad_samples_of_concatenated_lists_at_one_index_are_two():
    """In a ConcatDataset each part's RobustDataset numbers its own samples:
    two bad files at index 1 of two parts are two bad samples (keyed by the
    index alone, the second was neither logged nor counted); a sample bad
    again is not counted twice; a list saved by an earlier version (keyed
    by the index) resumes without counting its entries again."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub, MMLogger

    from cast_mmaction.engine.hooks import BadSampleHook
    from mmaction.structures import ActionDataSample
    name = _unique('bad_concat')
    runner = SimpleNamespace(
        train_dataloader=SimpleNamespace(dataset=list(range(1000))), epoch=0,
        message_hub=MessageHub.get_instance(name),
        logger=MMLogger.get_instance(name))

    def batch(*failures):
        samples = []
        for f in failures:
            sample = ActionDataSample()
            sample.set_metainfo(dict(bad_samples=[f]))
            samples.append(sample)
        return dict(data_samples=samples)

    hook = BadSampleHook(max_bad_fraction=0.5)
    hook.after_train_iter(runner, 0, data_batch=batch(
        (1, 'a/x.mp4', 'err'), (1, 'b/y.mp4', 'err')))
    hook.after_train_iter(runner, 1, data_batch=batch((1, 'b/y.mp4', 'err')))
    assert sorted(hook.bad) == [('a/x.mp4', 1), ('b/y.mp4', 1)]
    assert hook.epoch_skips == 3
    runner.message_hub.update_info('bad_samples', {1: ('a/x.mp4', 'err')})
    resumed = BadSampleHook(max_bad_fraction=0.5)
    resumed.before_train(runner)
    resumed.after_train_iter(runner, 0, data_batch=batch(
        (1, 'a/x.mp4', 'err')))
    assert list(resumed.bad) == [('a/x.mp4', 1)]


def _video_dataset(setup, lines_name, test_mode):
    pipe = copy.deepcopy(Config.fromfile(setup['cfg']).pipe_test)
    return DATASETS.build(dict(
        type='VideoDataset', ann_file=osp.join(setup['data'],
                                               lines_name + '.txt'),
        data_prefix=dict(video=setup['data']), pipeline=pipe,
        test_mode=test_mode))


@pytest.mark.parametrize('kind', BAD)
def test_testing_a_bad_video_raises_an_error_naming_it(setup, kind):
    ds = RobustDataset(_video_dataset(setup, 'val_bad', True))
    assert ds.bad_sample == 'raise'  # the default for test data
    idx = len(setup['val']) + BAD.index(kind)
    assert ds.describe(idx).endswith(f'bad/{kind}.mp4')
    with pytest.raises(BadSampleError) as err:
        ds[idx]
    path = osp.join(setup['data'], 'bad', kind + '.mp4')
    assert str(err.value).startswith(f'{path} (sample {idx}) cannot be '
                                     f'loaded: ')
    assert '--bad-samples flag' in str(err.value)


def test_replacement_is_deterministic_and_reported(setup):
    ds = RobustDataset(_video_dataset(setup, 'train_bad', False))
    bad_idx = 7  # the missing video
    a, b = ds[(bad_idx, 3, 7)], ds[(bad_idx, 3, 7)]
    assert torch.equal(a['inputs'], b['inputs'])
    fails = a['data_samples'].metainfo['bad_samples']
    assert fails[0][0] == bad_idx and fails[0][1].endswith('missing.mp4')
    # a good sample's random frame offsets depend on (seed, epoch, index)
    # only, not on what was loaded before
    x1 = ds[(0, 1, 7)]['inputs']
    ds[(1, 1, 7)]
    assert torch.equal(ds[(0, 1, 7)]['inputs'], x1)


def test_a_pipeline_that_fails_on_everything_stops(setup):
    """Nothing loads (here: a list of bad videos only): the replacement gives
    up after max_retries with the first distinct errors, instead of looping
    or training on nothing."""
    ann = osp.join(setup['tmp'], 'all_bad.txt')
    with open(ann, 'w') as f:
        f.write('\n'.join(f'{p} 0' for p in setup['bad']) + '\n')
    ds = RobustDataset(DATASETS.build(dict(
        type='VideoDataset', ann_file=ann,
        data_prefix=dict(video=setup['data']),
        pipeline=copy.deepcopy(Config.fromfile(setup['cfg']).pipe_train))),
        max_retries=6)
    with pytest.raises(BadSampleError) as err:
        ds[(0, 0, 0)]
    msg = str(err.value)
    assert msg.startswith('7 attempts in a row to load sample 0 or a '
                          'replacement failed (')
    assert 'the data or the pipeline is broken. The first errors:\n  ' + \
        osp.join(setup['data'], 'bad/missing.mp4') + ': FileNotFoundError' \
        in msg


def test_tools_test_raises_or_flags_bad_videos(setup, tools):
    """tools/test.py: by default a bad test video stops the test naming it;
    with --bad-samples flag every sample is evaluated, the bad ones count
    as wrong (top-1 = good-only correct / 9) and are reported."""
    work = osp.join(setup['tmp'], _unique('test_tool'))
    ckpt = osp.join(work, 'model.pth')
    cfg = _cfg(setup, work)
    runner = Runner.from_cfg(cfg)
    os.makedirs(work, exist_ok=True)
    torch.save(dict(state_dict=runner.model.state_dict()), ckpt)
    bad_list = osp.join(setup['data'], 'val_bad.txt')
    common = [setup['cfg'], ckpt, '--work-dir', work]
    with pytest.raises(BadSampleError) as err:
        tools['test'].main(common + ['--cfg-options',
                                     f'test_dataloader.dataset.ann_file='
                                     f'{bad_list}',
                                     f'experiment_name={_unique("t")}'])
    assert osp.join(setup['data'], 'bad/missing.mp4') in str(err.value)
    good = tools['test'].main(common + ['--cfg-options',
                                        f'experiment_name={_unique("t")}'])
    flagged = tools['test'].main(common + [
        '--bad-samples', 'flag', '--cfg-options',
        f'test_dataloader.dataset.ann_file={bad_list}',
        f'experiment_name={_unique("t")}'])
    assert good['acc/bad_samples'] == 0
    assert flagged['acc/bad_samples'] == 5
    correct = round(good['acc/top1'] * 4)  # of the 4 good videos
    assert flagged['acc/top1'] == correct / 9


def _write_wav(path, seconds=1.0, rate=16000, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype('<i2')
    with wave.open(path, 'wb') as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


@pytest.fixture(scope='module')
def av_setup(tmp_path_factory):
    from cast_mmaction.datasets.synthetic_av import write_synthetic_av_dataset
    root = str(tmp_path_factory.mktemp('av'))
    info = write_synthetic_av_dataset(root, num_train=5, num_val=1,
                                      num_frames=8, size=32)
    audio = osp.join(root, 'audio')
    os.makedirs(audio)
    with open(info['train_ann']) as f:
        rels = [ln.split()[0] for ln in f if ln.strip()]
    stems = [osp.splitext(osp.basename(r))[0] for r in rels]
    _write_wav(osp.join(audio, stems[0] + '.wav'))
    _write_wav(osp.join(audio, stems[1] + '.wav'))
    with open(osp.join(audio, stems[2] + '.wav'), 'wb') as f:
        f.write(b'RIFF' + np.random.default_rng(1).bytes(3000))  # corrupt
    open(osp.join(audio, stems[3] + '.wav'), 'wb').close()  # empty
    # stems[4] has no .wav at all (missing)
    return dict(info=info, audio=audio, stems=stems)


def _av_dataset(av_setup, test_mode):
    pipe = [
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=4, frame_interval=1, num_clips=1,
             test_mode=test_mode),
        dict(type='DecordDecode'),
        dict(type='LoadAudioFbank', sample_rate=16000, num_mel_bins=32,
             target_length=48),
        dict(type='Resize', scale=(32, 32), keep_ratio=False),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackAudioVisualInputs')]
    return DATASETS.build(dict(
        type='AudioVisualDataset', ann_file=av_setup['info']['train_ann'],
        data_prefix=dict(video=av_setup['info']['video_root'],
                         audio=av_setup['audio']),
        num_classes=4, pipeline=pipe, test_mode=test_mode,
        check_files=False))  # True refuses missing files at start-up


@pytest.mark.parametrize('k', [2, 3, 4],
                         ids=['corrupt_wav', 'empty_wav', 'missing_wav'])
def test_bad_audio_is_replaced_in_training_and_named_in_testing(av_setup, k):
    wav = osp.join(av_setup['audio'], av_setup['stems'][k] + '.wav')
    train = RobustDataset(_av_dataset(av_setup, False))
    out = train[(k, 0, 0)]
    fails = out['data_samples'].metainfo['bad_samples']
    assert fails[0][0] == k and wav in fails[0][1]
    assert out['inputs']['audio'].shape[-2:] == (48, 32)  # a good sample
    good = train[(0, 0, 0)]
    assert 'bad_samples' not in good['data_samples'].metainfo
    test = RobustDataset(_av_dataset(av_setup, True))
    with pytest.raises(BadSampleError, match=re.escape(wav)):
        test[k]


def test_missing_audio_files_are_refused_at_startup_by_default(av_setup):
    """The audio-visual datasets check their files when built
    (check_files=True, their default): a missing .wav stops before training,
    listing it, instead of being skipped every epoch."""
    wav = osp.join(av_setup['audio'], av_setup['stems'][4] + '.wav')
    with pytest.raises(FileNotFoundError, match=r'1 of 5 files named by .*'
                       r'are missing, e.g. \[' + re.escape(repr(wav))):
        RobustDataset(dict(
            type='AudioVisualDataset',
            ann_file=av_setup['info']['train_ann'], pipeline=[],
            data_prefix=dict(video=av_setup['info']['video_root'],
                             audio=av_setup['audio']), num_classes=4))


# ---------------------------------------------------------------------------
# 2. annotations
# ---------------------------------------------------------------------------
GOOD_LINES = ['a/x0.mp4 0', 'a/x1.mp4 1', 'a/x2.mp4 2']


@pytest.mark.parametrize('line,message', [
    ('a/x3.mp4 4', 'line 3: label 4 is outside 0..3 (num_classes=4)'),
    ('a/x3.mp4 -1', 'line 3: label -1 is outside 0..3'),
    ('a/x3.mp4\t2', 'line 3: no label found: the line is not split by the '
     "delimiter ' ' (a tab or comma instead?)"),
    ('a/x3.mp4 2 1', 'line 3: expected "path label", got 3 fields'),
    ('a/x3.mp4 two', "line 3: label 'two' is not an integer"),
    ('my clips/x3.mp4 2', 'line 3: expected "path label", got 3 fields'),
    ('# a comment', 'line 3: expected "path label", got 3 fields'),
    ('a/x3.mp4  2', "line 3: repeated delimiter ' '"),
    ('', 'line 3: blank line'),
    ('a/x3.mp4', 'line 3: no label ("path label" expected)'),
    ('a/x0.mp4 3', "line 3: 'a/x0.mp4' repeats line 1 (a duplicate sample)"),
    ('a/../a/x1.mp4 3', "line 3: 'a/../a/x1.mp4' repeats line 2"),
    ('../elsewhere/x.mp4 1', "line 3: path '../elsewhere/x.mp4' is outside "
     'the data root'),
    ('/etc/x.mp4 1', "line 3: path '/etc/x.mp4' is outside the data root"),
])
def test_bad_list_lines_name_file_and_line(tmp_path, line, message):
    """Each bad line is named by the check and by the dataset as configs
    build it (RobustDataset around VideoDataset): the check reads the file
    before MMAction2's parser, which met 3 fields, a word label, two spaces
    or a path with a space with a bare ValueError ('too many values to
    unpack', int()); also with the config's own lazy_init=True, at
    full_init."""
    ann = tmp_path / 'list.txt'
    lines = GOOD_LINES[:2] + [line] + GOOD_LINES[2:]
    ann.write_text('\n'.join(lines) + '\n')
    with pytest.raises(AnnotationError) as err:
        check_list_file(str(ann), root=str(tmp_path / 'videos'),
                        num_classes=4)
    assert str(err.value).startswith(f'{ann}, line ')
    assert message in str(err.value)
    cfg = dict(type='RobustDataset', dataset_type='VideoDataset',
               ann_file=str(ann), data_prefix=dict(video=str(tmp_path /
                                                             'videos')),
               pipeline=[], num_classes=4)
    # the dataset names the config field of the class count
    message = message.replace('(num_classes=4)',
                              '(model.cls_head.num_classes=4)')
    with pytest.raises(AnnotationError) as err:
        DATASETS.build(cfg)
    assert str(err.value).startswith(f'{ann}, line ') and \
        message in str(err.value)
    lazy = DATASETS.build(dict(cfg, lazy_init=True))
    with pytest.raises(AnnotationError, match=re.escape(message)):
        lazy.full_init()


def test_good_lists_pass(tmp_path):
    ann = tmp_path / 'list.txt'
    ann.write_text('\n'.join(GOOD_LINES) + '\n')
    root = str(tmp_path / 'videos')
    assert check_list_file(str(ann), root=root, num_classes=4) == 3
    # built through the registry: parsed at once (RobustDataset builds the
    # wrapped dataset lazily only to check the file first)
    ds = DATASETS.build(dict(type='RobustDataset', dataset_type='VideoDataset',
                             ann_file=str(ann), data_prefix=dict(video=root),
                             pipeline=[], num_classes=4))
    assert ds.dataset._fully_initialized and len(ds) == 3
    assert [ds.get_data_info(i)['label'] for i in range(3)] == [0, 1, 2]
    # absolute paths inside the root and unlabelled test lists are fine
    ann.write_text(f'{root}/a/x.mp4\n{root}/b/y.mp4\n')
    assert check_list_file(str(ann), root=root, test_mode=True) == 2
    with pytest.raises(AnnotationError, match='line 2: some lines have a '
                       'label and some do not'):
        ann.write_text('a.mp4\nb.mp4 1\n')
        check_list_file(str(ann), root=root, test_mode=True)


def test_bad_annotation_stops_tools_train_before_training(setup, tools):
    ann = osp.join(setup['tmp'], 'train_label9.txt')
    lines = list(setup['train'])
    lines[5] = lines[5].split()[0] + ' 9'
    with open(ann, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    work = osp.join(setup['tmp'], _unique('ann'))
    with pytest.raises(AnnotationError) as err:
        tools['train'].main([setup['cfg'], '--work-dir', work,
                             '--cfg-options',
                             f'train_dataloader.dataset.ann_file={ann}',
                             f'experiment_name={_unique("a")}'])
    assert str(err.value) == (
        f'{ann}, line 6: label 9 is outside 0..3 '
        f'(model.cls_head.num_classes=4)')
    assert not [n for n in os.listdir(work) if n.endswith('.pth')]


@pytest.mark.parametrize('wrapper', ['RepeatDataset', 'ConcatDataset'])
def test_bad_label_inside_an_mmengine_wrapper_stops_before_training(
        setup, wrapper):
    """A RobustDataset inside MMEngine's RepeatDataset / ConcatDataset (a
    common way to lengthen an epoch or join lists) gets the label check
    against the head's num_classes too; it used to be skipped, and label 9
    of 4 classes crashed in the loss ('Class values must be smaller than
    num_classes') after start-up."""
    ann = osp.join(setup['tmp'], 'train_label9_wrapped.txt')
    lines = list(setup['train'])
    lines[5] = lines[5].split()[0] + ' 9'
    with open(ann, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    cfg = _cfg(setup, osp.join(setup['tmp'], _unique('wrapped')))
    robust = dict(type='RobustDataset', dataset_type='VideoDataset',
                  ann_file=ann, data_prefix=dict(video=setup['data']),
                  pipeline=cfg.pipe_train)
    cfg.train_dataloader.dataset = (
        dict(type='RepeatDataset', times=2, dataset=robust)
        if wrapper == 'RepeatDataset' else
        dict(type='ConcatDataset', datasets=[
            dict(robust, ann_file=setup['data'] + '/train_list.txt'),
            robust]))
    runner = Runner.from_cfg(cfg)
    with pytest.raises(AnnotationError) as err:
        runner.train()
    assert str(err.value) == (
        f'{ann}, line 6: label 9 is outside 0..3 '
        f'(model.cls_head.num_classes=4)')
    assert runner.iter == 0


EK_HEADER = ('narration_id,participant_id,video_id,narration_timestamp,'
             'start_timestamp,stop_timestamp,start_frame,stop_frame,'
             'narration,verb,verb_class,noun,noun_class,all_nouns,'
             'all_noun_classes')


def _ek_row(nid, verb=1, noun=2, video='P01_01'):
    return (f'{nid},P01,{video},00:00:01.00,00:00:01.00,00:00:02.00,60,120,'
            f'open door,open,{verb},door,{noun},[door],[{noun}]')


@pytest.mark.parametrize('row,message', [
    (_ek_row('P01_01_2', verb=97), 'line 3: verb_class 97 is outside '
     '[0, 96]'),
    (_ek_row('P01_01_2', noun='x'), "line 3: noun_class must be an integer"),
    ('P01_01_2,P01,P01_01,1', 'line 3: expected 15 fields as in the header'),
    (_ek_row('P01_01_0'), "line 3: narration_id 'P01_01_0' repeats line 2"),
    (_ek_row('P01_01_2', video='../../../x/P01_01'), 'line 3: filename '),
])
def test_ek100_annotation_errors(tmp_path, row, message):
    ann = tmp_path / 'ek.csv'
    ann.write_text('\n'.join([EK_HEADER, _ek_row('P01_01_0'), row]) + '\n')
    with pytest.raises(Exception) as err:
        RobustDataset(dict(
            type='EpicKitchens100Dataset', ann_file=str(ann), pipeline=[],
            data_prefix=dict(video=str(tmp_path / 'videos')),
            check_files=False))
    assert str(err.value).startswith(f'{ann}, line 3: ')
    assert message in str(err.value)
    if 'filename' in message:
        assert 'is outside the data root' in str(err.value)


def test_audio_visual_annotation_errors(tmp_path):
    videos = str(tmp_path / 'v')
    ann = tmp_path / 'av.txt'

    def build(text, **kw):
        ann.write_text(text)
        return RobustDataset(dict(
            type='AudioVisualDataset', ann_file=str(ann), pipeline=[],
            data_prefix=dict(video=videos), num_classes=4,
            check_files=False, **kw))

    build('a b.mp4 1\nc.mp4 2\n')  # a path with a space is fine here
    with pytest.raises(ValueError, match=r'av.txt, line 2: label 7 is '
                       r'outside 0..3'):
        build('a.mp4 1\nc.mp4 7\n')
    with pytest.raises(AnnotationError, match=r"av.txt, line 3: 'a.mp4' "
                       r'repeats line 1'):
        build('a.mp4 1\nc.mp4 2\na.mp4 3\n')
    with pytest.raises(AnnotationError, match=r"av.txt, line 2: path "
                       r"'../x.mp4' is outside the data root"):
        build('a.mp4 1\n../x.mp4 2\n')
    # EPIC-SOUNDS: a repeated annotation_id
    csv_ann = tmp_path / 'es.csv'
    csv_ann.write_text(
        'annotation_id,participant_id,video_id,start_timestamp,'
        'stop_timestamp,start_sample,stop_sample,description,class,'
        'class_id\n'
        'P01_01_0,P01,P01_01,00:00:01.00,00:00:02.00,1,2,d,c,3\n'
        'P01_01_1,P01,P01_01,00:00:03.00,00:00:04.00,1,2,d,c,4\n'
        'P01_01_0,P01,P01_01,00:00:05.00,00:00:06.00,1,2,d,c,5\n')
    with pytest.raises(AnnotationError, match=r"es.csv, line 4: "
                       r"annotation_id 'P01_01_0' repeats line 2"):
        RobustDataset(dict(type='EpicSoundsDataset', ann_file=str(csv_ann),
                           pipeline=[], data_prefix=dict(video=videos),
                           check_files=False))


# ---------------------------------------------------------------------------
# 3. configs and checkpoints
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('options,exc,message', [
    (['model.backbone.num_frames=7'], ValueError,
     'backbone.experts.vmae: num_frames=7 is not divisible by the VideoMAE '
     'tubelet_size=2; change num_frames (e.g. to 8)'),
    (['model.backbone.img_size=40'], ValueError,
     'backbone.experts.clip: img_size (CLIP expert)=40 is not divisible by '
     'patch_size=16'),
    (['model.backbone.experts.vmae.embed_dim=48'], ValueError,
     "model.cls_head.in_channels=32 does not match the experts' widths "
     "{'clip': 32, 'vmae': 48} (model.backbone.experts.vmae.embed_dim=48)"),
    (['model.backbone.experts.vmae.patch_size=8'], ValueError,
     'a time-window link needs the same number of patches per frame on '
     "both sides, got 4 and 16: make the experts' img_size / patch_size "
     'give the same grid'),
    (['model.backbone.experts.vmae.depth=2'], ValueError,
     "experts run in lock-step and need the same depth; got {'clip': 1, "
     "'vmae': 2} (backbone.experts.*.depth)"),
    (['model.data_preprocessor.blending.type=MixupBlending',
      'model.data_preprocessor.blending.num_classes=5'], ValueError,
     'model.data_preprocessor.blending.num_classes=5 but model.cls_head.'
     'num_classes=4: set them to the same number of classes; MixupBlending '
     'turns the labels into vectors of its num_classes'),
])
def test_impossible_shapes_fail_at_startup(setup, tools, options, exc,
                                           message):
    work = osp.join(setup['tmp'], _unique('shape'))
    with pytest.raises(exc) as err:
        tools['train'].main([setup['cfg'], '--work-dir', work,
                             '--cfg-options'] + options +
                            [f'experiment_name={_unique("s")}'])
    assert message in str(err.value)
    assert not osp.exists(osp.join(work, 'epoch_2.pth'))


@pytest.fixture(scope='module')
def checkpoints(setup):
    """A checkpoint of the tiny config, one of a wider model, one of the
    verb/noun (EK100) head, an official-style dump, and expert files of
    the wrong kind."""
    from cast_mmaction.models.presets import cast_recognizer_cfg
    from cast_mmaction.utils import build_model
    tmp = setup['tmp']
    cfg = Config.fromfile(setup['cfg'])
    own = build_model(cfg.model).state_dict()
    out = dict(own=osp.join(tmp, 'own.pth'),
               wide=osp.join(tmp, 'wide.pth'),
               verbnoun=osp.join(tmp, 'verbnoun.pth'),
               official=osp.join(tmp, 'official.pth'))
    torch.save(dict(state_dict=own), out['own'])
    wide = build_model(cast_recognizer_cfg(
        num_classes=4, embed_dim=48, depth=1, num_heads=2, num_frames=4,
        img_size=32)).state_dict()
    torch.save(dict(meta=dict(epoch=3), state_dict=wide), out['wide'])
    verbnoun = build_model(cast_recognizer_cfg(
        composition=True, embed_dim=32, depth=1, num_heads=2, num_frames=4,
        img_size=32)).state_dict()
    torch.save(dict(state_dict=verbnoun), out['verbnoun'])
    torch.save(dict(module=own), out['official'])
    # expert weight files: a VideoMAE-layout file and a CLIP-layout file
    vmae = {'encoder.' + k[len('backbone.experts.vmae.'):]: v
            for k, v in own.items() if k.startswith('backbone.experts.vmae.')}
    clip = {'visual.' + k[len('backbone.experts.clip.'):]: v
            for k, v in own.items() if k.startswith('backbone.experts.clip.')}
    out['vmae_file'] = osp.join(tmp, 'vmae_pretrain.pth')
    out['clip_file'] = osp.join(tmp, 'clip_visual.pth')
    torch.save(dict(model=vmae), out['vmae_file'])
    torch.save(clip, out['clip_file'])
    return out


@pytest.mark.parametrize('which,message', [
    ('wide', ' weight(s) have another shape ('),
    ('verbnoun', 'model weight(s) are missing from it (e.g. cls_head.'),
    ('official', "holds no state dict of tensors (top-level keys ['module'])"
     "; it is not a checkpoint of this code base. It looks like an official"
     " (authors') checkpoint: convert it first with "
     'tools/convert/convert_checkpoint.py.'),
])
def test_tools_test_refuses_a_checkpoint_of_another_architecture(
        setup, tools, checkpoints, which, message):
    work = osp.join(setup['tmp'], _unique('ckpt'))
    # the tool's one-line exit (SystemExit with the message), no traceback
    with pytest.raises(SystemExit) as err:
        tools['test'].main([setup['cfg'], checkpoints[which], '--work-dir',
                            work, '--cfg-options',
                            f'experiment_name={_unique("c")}'])
    msg = str(err.value.code)
    assert msg.startswith(f"CheckpointMismatchError: the checkpoint to test "
                          f"{checkpoints[which]!r}")
    assert message in msg
    if which == 'wide':
        assert 'model.backbone.experts.clip, model.backbone.experts.vmae' \
            in msg
        assert ': checkpoint (48,' in msg and 'vs model (32,' in msg


def test_checkpoint_check_accepts_the_right_checkpoint(setup, checkpoints):
    from cast_mmaction.utils import build_model
    model = build_model(Config.fromfile(setup['cfg']).model)
    ckpt = load_checkpoint(checkpoints['own'])
    assert check_checkpoint(model, ckpt) == len(model.state_dict())
    # fine-tuning (load_from while training): another head is allowed,
    # another backbone is not
    head = {k: v for k, v in ckpt['state_dict'].items()}
    head['cls_head.fc_cls.weight'] = torch.zeros(7, 32)
    assert check_checkpoint(model, dict(state_dict=head), strict=False) > 0
    with pytest.raises(CheckpointMismatchError, match='load_from'):
        check_checkpoint(model, dict(state_dict=head), 'load_from x.pth')


def test_load_from_of_another_architecture_fails_before_training(
        setup, tools, checkpoints):
    work = osp.join(setup['tmp'], _unique('load_from'))
    with pytest.raises(SystemExit) as err:
        tools['train'].main([setup['cfg'], '--work-dir', work,
                             '--cfg-options',
                             f'load_from={checkpoints["wide"]}',
                             f'experiment_name={_unique("l")}'])
    assert str(err.value.code).startswith(
        f"CheckpointMismatchError: load_from {checkpoints['wide']!r} does "
        f"not fit the model")


@pytest.mark.parametrize('expert,file,message', [
    ('clip', 'vmae_file', 'is not a CLIP image tower in a known layout '
     '(OpenAI / open_clip: conv1, transformer.resblocks; transformers; '
     'timm) (found '),
    ('vmae', 'clip_file', 'is not a VideoMAE video model (no 5-D '
     'patch_embed.proj.weight) (found '),
])
def test_expert_weights_of_the_wrong_kind(setup, tools, checkpoints, expert,
                                          file, message):
    work = osp.join(setup['tmp'], _unique('expert'))
    with pytest.raises(ValueError) as err:
        tools['train'].main([
            setup['cfg'], '--work-dir', work, '--cfg-options',
            f'model.backbone.experts.{expert}.pretrained={checkpoints[file]}',
            f'experiment_name={_unique("e")}'])
    msg = str(err.value)
    assert message in msg and checkpoints[file] in msg
    assert f'model.backbone.experts.{expert}.pretrained' in msg
    other = 'VideoMAE' if expert == 'clip' else 'CLIP'
    assert f'It looks like a {other} checkpoint' in msg


# ---------------------------------------------------------------------------
# 5. non-finite losses
# ---------------------------------------------------------------------------
def _tiny_wrapper(accumulative_counts=1, amp=False, **guard):
    """A linear model and the registered guarded wrapper a config names
    (``optim_wrapper=dict(type='GuardedOptimWrapper', nonfinite=...)``)."""
    from mmaction.registry import OPTIM_WRAPPERS
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    if amp:
        import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_mod
        saved = amp_mod.is_cuda_available
        amp_mod.is_cuda_available = lambda: True  # AMP on a CPU-only host
        try:
            ow = OPTIM_WRAPPERS.build(dict(
                type='GuardedAmpOptimWrapper', optimizer=opt,
                loss_scale='dynamic', **guard))
        finally:
            amp_mod.is_cuda_available = saved
        ow.loss_scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    else:
        ow = OPTIM_WRAPPERS.build(dict(
            type='GuardedOptimWrapper', optimizer=opt,
            accumulative_counts=accumulative_counts, **guard))
    return model, ow


def _loss(model, nan=False):
    loss = model(torch.ones(4, 3)).pow(2).mean()
    return loss * float('nan') if nan else loss


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_nonfinite_loss_skips_the_update():
    model, ow = _tiny_wrapper()
    assert type(ow) is GuardedOptimWrapper and ow.nonfinite == 'skip'
    ow.update_params(_loss(model))
    before = _params(model)
    steps = ow.optimizer.state[next(model.parameters())]['step'].clone()
    ow.update_params(_loss(model, nan=True))
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    assert torch.equal(ow.optimizer.state[next(model.parameters())]['step'],
                       steps)
    assert all(p.grad is None or not p.grad.abs().sum() for p in
               model.parameters())
    ow.update_params(_loss(model))  # training goes on
    assert not torch.equal(before[0], _params(model)[0])
    assert ow.nonfinite_skips == 1


def test_nonfinite_loss_in_an_accumulation_window_drops_the_window():
    model, ow = _tiny_wrapper(accumulative_counts=2)
    ow.initialize_count_status(model, 0, 8)
    before = _params(model)
    ow.update_params(_loss(model, nan=True))  # 1st of the window
    ow.update_params(_loss(model))  # 2nd: the window's step is skipped
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    ow.update_params(_loss(model))
    ow.update_params(_loss(model))  # a clean window updates
    assert not torch.equal(before[0], _params(model)[0])


def test_nonfinite_gradient_with_finite_loss_is_skipped():
    model, ow = _tiny_wrapper()
    before = _params(model)
    hook = model.weight.register_hook(lambda g: g * float('inf'))
    ow.update_params(_loss(model))
    hook.remove()
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    assert ow.nonfinite_skips == 1


def test_nonfinite_policy_stop_and_too_many_in_a_row():
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 4)
    hub.update_info('epoch', 1)
    model, ow = _tiny_wrapper(nonfinite='stop')
    before = _params(model)
    with pytest.raises(FloatingPointError) as err:
        ow.update_params(_loss(model, nan=True))
    assert str(err.value).startswith('non-finite loss (nan) at iteration 5 '
                                     '(epoch 2): training stopped before '
                                     'the update')
    assert "optim_wrapper.nonfinite='skip'" in str(err.value)
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    model, ow = _tiny_wrapper(max_nonfinite_in_a_row=2)
    ow.update_params(_loss(model, nan=True))
    ow.update_params(_loss(model, nan=True))
    with pytest.raises(FloatingPointError, match='3 steps in a row'):
        ow.update_params(_loss(model, nan=True))
    with pytest.raises(ValueError, match="optim_wrapper.nonfinite must be "
                       "'skip' or 'stop', got 'ignore'"):
        _tiny_wrapper(nonfinite='ignore')


def test_nonfinite_loss_with_amp_backs_off_the_loss_scale():
    model, ow = _tiny_wrapper(amp=True)
    assert type(ow) is GuardedAmpOptimWrapper
    ow.update_params(_loss(model))
    before, scale = _params(model), ow.loss_scaler.get_scale()
    ow.update_params(_loss(model, nan=True))
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    assert ow.loss_scaler.get_scale() == scale * 0.5
    ow.update_params(_loss(model))
    assert not torch.equal(before[0], _params(model)[0])


@pytest.mark.parametrize('policy', ['skip', 'stop'])
def test_nan_loss_during_training(setup, policy):
    work = osp.join(setup['tmp'], _unique('nan'))
    cfg = _cfg(setup, work, **{'optim_wrapper.nonfinite': policy})
    cfg.custom_hooks = list(cfg.custom_hooks) + [
        dict(type='NaNForTestHook', at_iter=2)]
    runner = Runner.from_cfg(cfg)
    hook = [h for h in runner.hooks if isinstance(h, NaNForTestHook)]
    if policy == 'stop':
        with pytest.raises(FloatingPointError, match=r'non-finite loss \(nan'
                           r'\) at iteration 3 \(epoch 2\): training stopped'):
            runner.train()
        return
    runner.train()
    assert runner.iter == 4
    before, after = hook[0].before, hook[0].after
    assert all(torch.equal(before[k], after[k]) for k in before)
    final = runner.model.state_dict()
    assert all(torch.isfinite(v).all() for v in final.values()
               if v.is_floating_point())
    assert any(not torch.equal(before[k], final[k]) for k in before)
    log = _log_text(runner)
    assert 'non-finite loss (nan) at iteration 3 (epoch 2): update skipped ' \
           '(1 skipped so far)' in log
    assert 'nonfinite_skips: 1' in log


# ---------------------------------------------------------------------------
# 4. checkpoint files (the kill -9 runs are in test_reliability_resume.py)
# ---------------------------------------------------------------------------
def test_checkpoint_writes_are_atomic_and_resume_finds_a_complete_one(
        tmp_path):
    """AtomicCheckpointHook's file backend and last_checkpoint repair: a
    write killed half-way leaves the old file; an empty / stale /
    missing last_checkpoint is made to name the newest complete
    checkpoint, which MMEngine's own find_latest_checkpoint (what --resume
    uses) then returns."""
    from mmengine.fileio import get_file_backend
    from mmengine.runner import find_latest_checkpoint

    from cast_mmaction.engine import checkpoint_files as cf
    backend = get_file_backend(str(tmp_path),
                               backend_args=dict(backend=cf.ATOMIC_BACKEND))
    assert isinstance(backend, cf.AtomicLocalBackend)
    target = tmp_path / 'epoch_1.pth'
    backend.put(b'old', str(target))

    def die(f):
        raise KeyboardInterrupt  # stands for a kill after a partial write

    saved, cf.fsync_file = cf.fsync_file, die
    try:
        with pytest.raises(KeyboardInterrupt):
            backend.put(b'new' * 1000, str(target))
    finally:
        cf.fsync_file = saved
    assert target.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['epoch_1.pth']
    # an empty last_checkpoint (a kill while mmengine rewrote it) or one
    # naming a deleted file: --resume takes the newest complete checkpoint
    record = tmp_path / 'last_checkpoint'
    record.write_text('')
    assert find_latest_checkpoint(str(tmp_path)) == ''  # MMEngine alone
    backend.put(b'x', str(tmp_path / 'iter_9.pth'))
    (tmp_path / '.iter_10.pth.partial-123-abc').write_bytes(b'half')
    os.utime(tmp_path / 'epoch_1.pth', (1, 1))
    newest = str(tmp_path / 'iter_9.pth')
    assert cf.resolve_last_checkpoint(str(tmp_path)) == newest
    assert find_latest_checkpoint(str(tmp_path)) == newest
    assert not (tmp_path / '.iter_10.pth.partial-123-abc').exists()
    record.write_text(str(tmp_path / 'gone.pth'))
    assert cf.resolve_last_checkpoint(str(tmp_path)) == newest
    record.unlink()
    assert cf.resolve_last_checkpoint(str(tmp_path)) == newest
    record.write_text(str(tmp_path / 'epoch_1.pth'))  # a valid record stays
    assert cf.resolve_last_checkpoint(str(tmp_path)) == str(target)
    # nothing to resume from: a stale record is removed (a fresh start)
    for name in ('epoch_1.pth', 'iter_9.pth'):
        (tmp_path / name).unlink()
    assert cf.resolve_last_checkpoint(str(tmp_path)) is None
    assert find_latest_checkpoint(str(tmp_path)) is None


def test_reproducible_sampler_skips_and_keys(setup):
    ds = RobustDataset(_video_dataset(setup, 'train_bad', False))
    sampler = ReproducibleSampler(ds, shuffle=True, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert all(k[1:] == (2, 3) for k in full) and len(full) == 12
    assert sorted(k[0] for k in full) == list(range(12))
    sampler.skip(8, epoch=2)
    assert list(sampler) == full[8:] and len(sampler) == 4
    sampler.set_epoch(3)  # the skip is for one epoch only
    assert len(sampler) == 12 and [k[0] for k in sampler] != [
        k[0] for k in full]


def test_wiring_is_in_the_config(setup):
    """The tiny config (cast_demo.py underneath) carries every reliability
    piece itself; nothing is added by a tool (tests/test_reliability_tools.py
    runs MMAction2's own tools on it)."""
    cfg = Config.fromfile(setup['cfg'])
    train = cfg.train_dataloader
    assert train.dataset.type == 'RobustDataset'
    assert train.dataset.dataset_type == 'VideoDataset'
    assert train.dataset.bad_sample == 'replace'
    assert 'num_classes' not in train.dataset  # the head's is the bound
    assert train.dataset.ann_file.endswith('train_list.txt')  # usual paths
    assert train.sampler.type == 'ReproducibleSampler'
    assert cfg.val_dataloader.dataset.bad_sample == 'flag'
    assert cfg.test_dataloader.dataset.bad_sample == 'raise'
    assert cfg.val_evaluator.type == 'BadSampleAwareMetric'
    assert cfg.val_evaluator.metric_type == 'AccMetric'
    assert cfg.optim_wrapper.type == 'GuardedOptimWrapper'
    hooks = cfg.default_hooks
    assert hooks.checkpoint.type == 'AtomicCheckpointHook'
    assert (hooks.bad_samples.type, hooks.bad_samples.max_bad_fraction) == (
        'BadSampleHook', 0.01)
    assert hooks.resume_state.type == 'ResumeStateHook'
    assert hooks.startup_check.type == 'StartupCheckHook'
    assert 'reliability' not in cfg
    # a recipe's own custom_hooks list does not drop them
    runner = Runner.from_cfg(_cfg(setup, osp.join(setup['tmp'], _unique(
        'wiring')), custom_hooks=[dict(type='ParameterCountHook')]))
    names = [type(h).__name__ for h in runner.hooks]
    for name in ('BadSampleHook', 'ResumeStateHook', 'StartupCheckHook',
                 'AtomicCheckpointHook', 'ParameterCountHook'):
        assert names.count(name) == 1, (name, names)
    # the built pieces
    from cast_mmaction.evaluation.bad_sample_metric import \
        BadSampleAwareMetric
    ds = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    assert isinstance(ds, RobustDataset) and ds.bad_sample == 'replace'
    assert type(ds.dataset).__name__ == 'VideoDataset'
    from mmaction.registry import METRICS
    metric = METRICS.build(cfg.val_evaluator)
    assert isinstance(metric, BadSampleAwareMetric)
    assert type(metric.metric).__name__ == 'AccMetric'
    assert metric.prefix == 'acc'


def test_wrappers_refuse_misplaced_fields(setup):
    pipe = Config.fromfile(setup['cfg']).pipe_test
    ann = osp.join(setup['data'], 'val_list.txt')
    with pytest.raises(TypeError, match=r"RobustDataset got \['ann_file', "
                       r"'pipeline'\] but no dataset_type"):
        RobustDataset(ann_file=ann, pipeline=pipe)
    with pytest.raises(ValueError, match='not both'):
        RobustDataset(dataset=dict(type='VideoDataset'),
                      dataset_type='VideoDataset', ann_file=ann)
    nested = RobustDataset(dataset=dict(
        type='VideoDataset', ann_file=ann, pipeline=pipe,
        data_prefix=dict(video=setup['data'])))
    flat = RobustDataset(dataset_type='VideoDataset', ann_file=ann,
                         pipeline=pipe, data_prefix=dict(video=setup['data']))
    assert len(nested) == len(flat) == len(setup['val'])
    assert nested.describe(0) == flat.describe(0)
    from cast_mmaction.evaluation.bad_sample_metric import \
        BadSampleAwareMetric
    with pytest.raises(TypeError, match=r"got \['scores_file'\] but no "
                       r'metric_type'):
        BadSampleAwareMetric(scores_file='x.pkl')
    wrapped = BadSampleAwareMetric(metric_type='EpicKitchensMetric',
                                   scores_file='x.pkl')
    assert wrapped.metric.scores_file == 'x.pkl'


def test_startup_check_refuses_legacy_settings_and_class_mismatch(setup):
    """A config that still sets reliability = dict(...) (read by the former
    tools only) fails naming the fields that replaced each key; a training
    set whose label bound is not the head's num_classes fails too."""
    work = osp.join(setup['tmp'], _unique('legacy'))
    cfg = _cfg(setup, work)
    cfg.reliability = dict(max_bad_fraction=0.05, nonfinite='stop')
    with pytest.raises(ValueError) as err:
        Runner.from_cfg(cfg).train()
    msg = str(err.value)
    assert 'reliability = dict(...), which is no longer read' in msg
    assert 'max_bad_fraction -> default_hooks.bad_samples.' \
        'max_bad_fraction' in msg
    assert "nonfinite -> optim_wrapper.nonfinite ('skip' / 'stop'" in msg
    cfg = _cfg(setup, osp.join(setup['tmp'], _unique('classes')), **{
        'train_dataloader.dataset.num_classes': 5})
    with pytest.raises(ValueError, match=r'train_dataloader.dataset.'
                       r'num_classes=5 .* but model.cls_head.num_classes=4'):
        Runner.from_cfg(cfg).train()


def test_startup_check_compares_blending_and_head_num_classes(
        setup, monkeypatch):
    """MMAction2's Mixup / CutMix (and AudioVisualMixup with num_classes)
    one-hot the labels into vectors of their own num_classes; one unlike
    the head's failed only in the first iteration (one_hot, or a size
    error in the loss). The start-up check now refuses it before training,
    naming both fields; a RandomBatchAugment's augment other than the first
    (whose num_classes MMAction2 ignores) too."""
    from types import SimpleNamespace
    import mmengine.logging
    from cast_mmaction.engine.hooks.startup_check_hook import check_blending
    from cast_mmaction.utils import build_model

    def model(blending, head=None, av=False):
        pre = (dict(type='AudioVisualDataPreprocessor', blending=blending)
               if av else dict(type='ActionDataPreprocessor',
                               format_shape='NCTHW', blending=blending))
        head = head or build_model(dict(type='CASTHead', num_classes=4,
                                        in_channels=8))
        return SimpleNamespace(data_preprocessor=build_model(pre),
                               cls_head=head)

    mix = dict(type='MixupBlending', num_classes=4, alpha=0.8)
    cut = dict(type='CutmixBlending', num_classes=4, alpha=1.0)
    check_blending(model(mix))
    check_blending(model(dict(type='RandomBatchAugment', augments=[mix, cut],
                              probs=[0.5, 0.0])))
    check_blending(model(dict(type='AudioVisualMixup', num_classes=4),
                         av=True))
    with pytest.raises(ValueError) as err:
        check_blending(model(dict(mix, num_classes=3)))
    assert str(err.value) == (
        'model.data_preprocessor.blending.num_classes=3 but model.cls_head.'
        'num_classes=4: set them to the same number of classes; MixupBlending '
        'turns the labels into vectors of its num_classes, which the head\'s '
        'loss reads against its num_classes scores.')
    with pytest.raises(ValueError, match=r'^model.data_preprocessor.blending'
                       r'.augments\[0\].num_classes=5 but model.cls_head.'
                       r'num_classes=4: .*RandomBatchAugment turns the '
                       r'labels into vectors of model.data_preprocessor.'
                       r'blending.augments\[0\].num_classes'):
        check_blending(model(dict(type='RandomBatchAugment',
                                  augments=[dict(mix, num_classes=5), cut])))
    with pytest.raises(ValueError, match=r'^model.data_preprocessor.blending'
                       r'.augments\[1\].num_classes=174 but model.cls_head.'
                       r'num_classes=4: .*RandomBatchAugment one-hots the '
                       r'labels by augments\[0\].num_classes and would '
                       r'ignore this one silently'):
        check_blending(model(dict(type='RandomBatchAugment', augments=[
            mix, dict(cut, num_classes=174)], probs=[0.5, 0.5])))
    with pytest.raises(ValueError, match=r'^model.data_preprocessor.blending'
                       r'.num_classes=5 but model.cls_head.num_classes=4: '
                       r'.*AudioVisualMixup turns'):
        check_blending(model(dict(type='AudioVisualMixup', num_classes=5),
                             av=True))
    # a head without counts is reported, not skipped silently
    bare = model(mix, head=torch.nn.Identity())
    logged = []
    monkeypatch.setattr(mmengine.logging, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    check_blending(bare)
    monkeypatch.undo()
    assert logged == [
        'start-up check: model.cls_head (Identity) has no integer '
        'num_classes or num_verbs / num_nouns; the label counts of '
        'model.data_preprocessor.blending (MixupBlending) are not checked '
        'against it']
    # through the Runner: stopped before the first iteration
    cfg = _cfg(setup, osp.join(setup['tmp'], _unique('blend')), **{
        'model.data_preprocessor.blending': dict(
            type='RandomBatchAugment', augments=[mix, dict(cut,
                                                           num_classes=5)],
            probs=[0.5, 0.5])})
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r'^model.data_preprocessor.blending'
                       r'.augments\[1\].num_classes=5 but model.cls_head.'
                       r'num_classes=4: '):
        runner.train()
    assert runner.iter == 0


def test_compat_patches_run_only_on_the_affected_versions(monkeypatch):
    """compat.py holds defect fixes only, each gated on the releases that
    have the defect: on a newer mmaction2 / mmengine (here: pretended) they
    do nothing; the checkpoint features are hooks now, not patches."""
    from cast_mmaction import compat
    assert compat._release('1.2.0rc1') == (1, 2, 0)
    assert compat._release('0.10.7+cu121') == (0, 10, 7)
    assert compat._affected('mmaction2') and compat._affected('mmengine')
    newer = {'mmaction2': '1.3.0', 'mmengine': '0.11.0'}
    monkeypatch.setattr(compat, '_version', lambda dist: newer[dist])
    assert not compat._affected('mmaction2')
    assert not compat._affected('mmengine')
    for patch in (compat._patch_missing_drn, compat._check_pkg_resources,
                  compat._defer_vindlu_import,
                  compat._defer_transformers_adafactor,
                  compat._patch_color_jitter_hue,
                  compat._patch_cpu_distributed,
                  compat._patch_low_precision_head_loss):
        assert patch() is False, patch.__name__
    # mmengine's own checkpoint writing is left alone
    from mmengine.fileio.backends import LocalBackend
    from mmengine.hooks import CheckpointHook
    assert LocalBackend.put.__module__.startswith('mmengine.')
    assert CheckpointHook._save_checkpoint_with_step.__module__.startswith(
        'mmengine.')
    assert not hasattr(compat, '_patch_atomic_checkpoints')
