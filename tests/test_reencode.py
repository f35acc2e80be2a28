"""Preparing videos (``cast_mmaction/datasets/reencode.py`` and
``tools/data/prepare_k400.py --resize-short --keyint``) on tiny bar-coded
videos: the samplers draw the same frame indices from the prepared file as
from the source, every decoded frame of the prepared file is the
re-encoded version of the same source frame (its bar code, and its pixels
close to decoding the source then resizing), key frames every ``keyint``
frames, the output is the same bytes from run to run, and bad files are
named without stopping the others."""
import csv
import importlib.util

import numpy as np
import pytest

from _tools import tool_path

# 168 x 64 -> short side 48 gives 126 x 48: the bar code's stripes scale by
# exactly 3/4, so frame_index reads the resized frames too
SRC = dict(num_frames=90, width=168, height=64, fps=30, gop=250)


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    import av
    if 'libx264' not in av.codecs_available:
        pytest.skip('this PyAV build has no libx264 encoder')
    from cast_mmaction.datasets.indexed_video import write_indexed_video
    path = str(tmp_path_factory.mktemp('reencode') / 'src.mp4')
    write_indexed_video(path, texture=True, crf=23, **SRC)
    return path


@pytest.fixture(scope='module')
def prepared(source):
    from cast_mmaction.datasets.reencode import reencode_video
    dst = source.replace('src.mp4', 'prepared/src.mp4')
    info = reencode_video(source, dst, short_side=48, keyint=8)
    return dst, info


def _clip(path, seed, sampler):
    from mmaction.registry import TRANSFORMS
    res = TRANSFORMS.build(dict(type='VideoInit', backend='pyav'))(
        dict(filename=path, start_index=0, modality='RGB'))
    np.random.seed(seed)
    res = TRANSFORMS.build(sampler)(res)
    return TRANSFORMS.build(dict(type='VideoDecode'))(res)


@pytest.mark.parametrize('sampler', [
    # the K400 recipe's training and test sampling (5 windows)
    dict(type='DenseSpanSample', clip_len=16, frame_interval=4),
    dict(type='DenseSpanSample', clip_len=16, frame_interval=4, num_clips=5,
         test_mode=True),
    # the SSv2 recipe's
    dict(type='SegmentSample', num_segments=16),
])
def test_prepared_file_gives_the_same_frames(source, prepared, sampler):
    import cv2
    from cast_mmaction.datasets.indexed_video import frame_index
    dst, info = prepared
    assert (info['frames'], info['width'], info['height']) == (90, 126, 48)
    for seed in (0, 1):
        a = _clip(source, seed, sampler)
        b = _clip(dst, seed, sampler)
        assert (a['total_frames'], a['avg_fps']) == \
            (b['total_frames'], b['avg_fps'])
        np.testing.assert_array_equal(a['frame_inds'], b['frame_inds'])
        want = [int(i) for i in b['frame_inds']]
        assert [frame_index(im) for im in b['imgs']] == want
        assert b['imgs'][0].shape == (48, 126, 3)
        # the pixels: the source frame resized (cv2 bilinear, as Resize)
        ref = np.stack([cv2.resize(im, (126, 48),
                                   interpolation=cv2.INTER_LINEAR)
                        for im in a['imgs']]).astype(np.int16)
        diff = np.abs(np.stack(b['imgs']).astype(np.int16) - ref)
        assert diff.mean() < 8, diff.mean()
        mse = float((diff.astype(np.float64) ** 2).mean())
        assert 10 * np.log10(255 ** 2 / mse) > 25


def _nonref_packets(path):
    from cast_mmaction.datasets.transforms.decoding import PyAVVideoReader
    r = PyAVVideoReader(path, num_threads=1)
    try:
        return sum(1 for p in r._container.demux(r._stream)
                   if p.size and not p.is_keyframe and r._nonref(bytes(p)))
    finally:
        r.close()


def test_key_frames_and_repeatable_bytes(source, prepared, tmp_path):
    from cast_mmaction.datasets.indexed_video import key_frames
    from cast_mmaction.datasets.reencode import reencode_video
    dst, _ = prepared
    assert key_frames(source) == [0]
    assert key_frames(dst) == list(range(0, 90, 8))
    again = str(tmp_path / 'again.mp4')
    reencode_video(source, again, short_side=48, keyint=8)
    with open(dst, 'rb') as f1, open(again, 'rb') as f2:
        assert f1.read() == f2.read()
    # no B-frame pyramid by default: more frames that nothing refers to
    # (the reader skips them when a clip does not want them)
    pyramid = str(tmp_path / 'pyramid.mp4')
    reencode_video(source, pyramid, short_side=48, keyint=8,
                   x264_params='b-pyramid=normal')
    assert _nonref_packets(dst) > _nonref_packets(pyramid)
    # CAVLC by default (x264 writes its settings into the stream); the
    # user's x264 params come after the defaults and win
    with open(dst, 'rb') as f:
        settings = f.read()
    assert b'cabac=0' in settings and b'weightb=0' in settings
    cabac = str(tmp_path / 'cabac.mp4')
    reencode_video(source, cabac, short_side=48, keyint=8,
                   x264_params='cabac=1')
    with open(cabac, 'rb') as f:
        assert b'cabac=1' in f.read()
    # the size kept, key frames only: bar codes at the source size
    kept = str(tmp_path / 'kept.mp4')
    info = reencode_video(source, kept, short_side=None, keyint=30)
    assert (info['width'], info['height']) == (168, 64)
    assert key_frames(kept) == [0, 30, 60]
    assert not list(tmp_path.glob('*.part'))


def test_prepared_size_is_even_and_matches_resize():
    from cast_mmaction.datasets.reencode import prepared_size
    assert prepared_size(640, 360, 320) == (568, 320)  # 568.9 -> 568
    assert prepared_size(1280, 720, 320) == (568, 320)
    assert prepared_size(360, 640, 320) == (320, 568)
    assert prepared_size(427, 241, None) == (426, 240)


def test_bad_files_are_named_and_do_not_stop_the_others(source, tmp_path):
    from cast_mmaction.datasets.reencode import (ReencodeError,
                                                 reencode_video,
                                                 reencode_videos)
    junk = tmp_path / 'junk.mp4'
    junk.write_bytes(b'not a video at all' * 10)
    with pytest.raises(ReencodeError, match='junk.mp4'):
        reencode_video(str(junk), str(tmp_path / 'out' / 'j.mp4'))
    with pytest.raises(ReencodeError, match='nothere.mp4: no such file'):
        reencode_video(str(tmp_path / 'nothere.mp4'),
                       str(tmp_path / 'out' / 'n.mp4'))
    blocker = tmp_path / 'blocker'
    blocker.write_text('a file where the target folder should be')
    with pytest.raises(ReencodeError, match='blocker'):
        reencode_video(source, str(blocker / 'x.mp4'), short_side=48)
    with pytest.raises(ValueError, match='keyint'):
        reencode_video(source, str(tmp_path / 'k.mp4'), keyint=0)
    pairs = [(str(junk), str(tmp_path / 'o' / 'a.mp4')),
             (source, str(tmp_path / 'o' / 'b.mp4')),
             (source, str(blocker / 'c.mp4'))]
    done, failed = reencode_videos(pairs, short_side=48, keyint=8)
    assert [d['dst'] for d in done] == [pairs[1][1]]
    assert [src for src, _ in failed] == [str(junk), source]
    assert 'junk.mp4' in failed[0][1] and 'blocker' in failed[1][1]
    assert not (tmp_path / 'o' / 'a.mp4').exists()
    # a second run keeps what is done
    done, failed = reencode_videos(pairs[1:2], short_side=48, keyint=8)
    assert done[0].get('skipped') and not failed


def test_prepare_k400_reencodes_and_lists_failures(source, tmp_path,
                                                   capsys):
    import shutil
    spec = importlib.util.spec_from_file_location(
        'tool_prepare_k400', tool_path('prepare_k400'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with open(tmp_path / 'train.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['label', 'youtube_id', 'time_start', 'time_end',
                    'split'])
        w.writerow(['air drumming', 'aaa', 0, 10, 'train'])
        w.writerow(['abseiling', 'bbb', 0, 10, 'train'])
        w.writerow(['air drumming', 'ccc', 0, 10, 'train'])
    videos = tmp_path / 'videos_train'
    # a K400 class folder with a space: the list cannot hold it as it is
    (videos / 'air drumming').mkdir(parents=True)
    shutil.copy(source, videos / 'air drumming' / 'aaa_000000_000010.mkv')
    shutil.copy(source, videos / 'bbb.mp4')
    (videos / 'ccc.mp4').write_bytes(b'broken download')
    out = tmp_path / 'out'
    rc = tool.main(['--csv', f'train={tmp_path / "train.csv"}', '--videos',
                    f'train={videos}', '--out-dir', str(out)])
    assert rc == 2 and ("1 video(s) with a space in their path (e.g. 'air "
                        "drumming/aaa_000000_000010.mkv'") in \
        capsys.readouterr().err
    assert not (out / 'kinetics400_train_list_videos.txt').exists()
    rc = tool.main(['--csv', f'train={tmp_path / "train.csv"}', '--videos',
                    f'train={videos}', '--out-dir', str(out),
                    '--resize-short', '48', '--keyint', '8'])
    captured = capsys.readouterr()
    assert rc == 1
    prepared = tmp_path / 'videos_train_48p_g8'
    listed = out / 'kinetics400_train_list_videos.txt'
    assert listed.read_text().splitlines() == [
        'air_drumming/aaa_000000_000010.mp4 1', 'bbb.mp4 0']
    assert (prepared / 'air_drumming' / 'aaa_000000_000010.mp4').is_file()
    from cast_mmaction.datasets.annotation_checks import check_list_file
    assert check_list_file(str(listed), str(prepared)) == 2
    assert not (prepared / 'ccc.mp4').exists()
    failed = (out / 'kinetics400_train_failed.txt').read_text()
    assert 'ccc.mp4' in failed
    assert 'could not be prepared' in captured.err and \
        'ccc.mp4' in captured.err
    assert str(prepared) in captured.out
    with pytest.raises(SystemExit):
        tool.main(['--csv', 'x', '--videos', 'y', '--out-dir', 'z',
                   '--keyint', 'many'])
    rc = tool.main(['--csv', f'train={tmp_path / "train.csv"}', '--videos',
                    f'train={videos}', '--out-dir', str(out), '--keyint',
                    '0'])
    assert rc == 2 and '--keyint must be >= 1' in capsys.readouterr().err
    # a libx264 setting it rejects is named before any file is written
    rc = tool.main(['--csv', f'train={tmp_path / "train.csv"}', '--videos',
                    f'train={videos}', '--out-dir', str(tmp_path / 'out2'),
                    '--keyint', '8', '--x264-params', 'cabac=banana'])
    err = capsys.readouterr().err
    assert rc == 2 and '--x264-params' in err and 'cabac = banana' in err
    assert not (tmp_path / 'out2').exists()


def test_rejected_x264_settings_are_errors_not_dropped(source, tmp_path):
    # FFmpeg's libx264 wrapper only logs an option it cannot parse and
    # encodes without it; the preparation refuses it, naming it
    from cast_mmaction.datasets.reencode import (check_x264_params,
                                                 reencode_video,
                                                 reencode_videos)
    check_x264_params('cabac=1:no-deblock=1:bframes=7')  # accepted
    with pytest.raises(ValueError, match="nonsense = 1"):
        reencode_video(source, str(tmp_path / 'a.mp4'), short_side=48,
                       keyint=8, x264_params='cabac=0:nonsense=1')
    with pytest.raises(ValueError, match="weightb = maybe"):
        reencode_videos([(source, str(tmp_path / 'b.mp4'))], short_side=48,
                        keyint=8, x264_params='weightb=maybe')
    assert not list(tmp_path.iterdir())


def test_reader_opens_without_decoding_and_gives_the_same_frames(prepared):
    import av
    from cast_mmaction.datasets.transforms import decoding
    dst, _ = prepared
    fast = decoding._open_without_probe_decode(dst)
    try:  # the probe decoded nothing: the pixel format is still unknown
        assert fast.streams.video[0].codec_context.pix_fmt is None
        assert fast.streams.video[0].codec_context.width == 126
    finally:
        fast.close()
    want = [3, 17, 40, 41, 89]
    reader = decoding.PyAVVideoReader(dst, num_threads=1)
    got = reader.get_frames(want)
    reader.close()
    with av.open(dst) as c:  # the full probe, every frame decoded
        frames = [f.to_ndarray(format='rgb24') for f in c.decode(video=0)]
    np.testing.assert_array_equal(got, np.stack([frames[i] for i in want]))
