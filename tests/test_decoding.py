"""``VideoInit`` / ``VideoDecode`` and the three video readers
(``cast_mmaction/datasets/transforms/decoding.py``).

On H.264 files whose frames carry their index as a bar code
(``cast_mmaction.datasets.indexed_video.write_indexed_video``), SSv2-like (45 frames, a key
frame every 12) and K400-like (300 frames, a key frame every 250): the new
transforms give arrays identical to MMAction2's ``DecordInit`` +
``DecordDecode`` in the SSv2 and K400 recipes' train, val and test
pipelines, with every backend; the frames are the asked ones in any order;
threads do not change them; the reduced-size decode has the size
``Resize(scale=(-1, s))`` gives and stays close to decode-then-``Resize``.
torchcodec tests skip, naming what to install, where it cannot decode.
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from cast_mmaction.datasets.transforms import decoding
from cast_mmaction.datasets.transforms.decoding import (
    READERS, PyAVVideoReader, VideoDecode, VideoInit, scaled_size,
    torchcodec_unavailable)
from conftest import ROOT
from mmaction.registry import TRANSFORMS
from cast_mmaction.datasets import indexed_video as br  # the test media

W, H = 128, 72
KINDS = dict(ssv2=dict(frames=45, fps=12, gop=12),
             k400=dict(frames=300, fps=30, gop=250))
CONFIGS = dict(ssv2='configs/cast_ssv2.py', k400='configs/cast_k400.py')
TC_WHY = torchcodec_unavailable()
BACKENDS = [
    'decord', 'pyav',
    pytest.param('torchcodec', marks=pytest.mark.skipif(
        TC_WHY is not None, reason=str(TC_WHY)))]




@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    import av
    if 'libx264' not in av.codecs_available:
        pytest.skip('this PyAV build has no libx264 encoder')
    root = tmp_path_factory.mktemp('decoding')
    out = {}
    for kind, s in KINDS.items():
        path = str(root / f'{kind}.mp4')
        br.write_indexed_video(path, s['frames'], W, H, s['fps'], s['gop'],
                               texture=True, crf=23)
        out[kind] = path
    return out


def _pipeline(kind, split, backend=None):
    """The recipe's pipeline with ``backend`` in VideoInit; without,
    MMAction2's DecordInit / DecordDecode in place of VideoInit /
    VideoDecode (the pipelines before this change)."""
    cfg = Config.fromfile(osp.join(ROOT, CONFIGS[kind]))
    pipe = copy.deepcopy(cfg[f'{split}_pipeline'])
    types = [t['type'] for t in pipe]
    assert types[0] == 'VideoInit' and types[2] == 'VideoDecode'
    assert pipe[0]['backend'] == cfg.video_backend == 'pyav'
    for t in pipe:
        if t['type'] == 'VideoInit':
            if backend:
                t['backend'] = backend
            else:
                t.clear()
                t.update(type='DecordInit')
        elif t['type'] == 'VideoDecode' and not backend:
            t.clear()
            t.update(type='DecordDecode')
    return [TRANSFORMS.build(t) for t in pipe]


def _run(transforms, path, seed, stop_after_decode=False):
    np.random.seed(seed)
    import random
    random.seed(seed)
    torch.manual_seed(seed)
    res = dict(filename=path, label=0, start_index=0, modality='RGB')
    for t in transforms:
        res = t(res)
        if stop_after_decode and 'imgs' in res:
            break
    return res


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('kind', sorted(KINDS))
@pytest.mark.parametrize('split', ['train', 'val', 'test'])
def test_identical_to_decord_init_decode(videos, kind, split, backend):
    """The recipes' pipelines give identical arrays (frames after decoding,
    and the packed inputs) with VideoInit/VideoDecode as with MMAction2's
    DecordInit/DecordDecode, for several seeds (random sampling and
    RandAugment draw the same numbers)."""
    ref_t = _pipeline(kind, split)
    new_t = _pipeline(kind, split, backend)
    for seed in range(2):
        ref = _run(ref_t[:3], videos[kind], seed)
        new = _run(new_t[:3], videos[kind], seed)
        assert ref['total_frames'] == new['total_frames'] == \
            KINDS[kind]['frames']
        assert float(ref['avg_fps']) == pytest.approx(new['avg_fps'])
        np.testing.assert_array_equal(ref['frame_inds'], new['frame_inds'])
        assert len(ref['imgs']) == len(new['imgs'])
        np.testing.assert_array_equal(np.stack(ref['imgs']),
                                      np.stack(new['imgs']))
        assert new['original_shape'] == ref['original_shape'] == (H, W)
        want = [int(i) for i in ref['frame_inds']]
        assert [br.frame_index(im) for im in new['imgs']] == want
        if split == 'train' and seed == 1:
            continue  # RandAugment on 16 frames: once per case is enough
        full_ref = _run(ref_t, videos[kind], seed)
        full_new = _run(new_t, videos[kind], seed)
        assert torch.equal(full_ref['inputs'], full_new['inputs'])


@pytest.mark.parametrize('backend', BACKENDS)
def test_frames_in_asked_order_with_repeats_and_past_the_end(videos,
                                                             backend):
    path = videos['k400']
    reader = READERS[backend](path, num_threads=1)
    try:
        inds = [299, 3, 251, 3, 0, 120, 249, 250, 310, 64]
        frames = reader.get_frames(inds)
    finally:
        reader.close()
    assert frames.shape == (len(inds), H, W, 3)
    assert [br.frame_index(f) for f in frames] == [min(i, 299) for i in inds]
    with pytest.raises(ValueError, match='negative frame index'):
        READERS[backend](path, num_threads=1).get_frames([3, -1])


@pytest.mark.parametrize('backend', BACKENDS)
def test_threads_do_not_change_frames(videos, backend):
    inds = [5, 40, 41, 200, 260, 299]
    got = []
    for threads in (1, 2):
        r = READERS[backend](videos['k400'], num_threads=threads)
        got.append(r.get_frames(inds))
        r.close()
    np.testing.assert_array_equal(got[0], got[1])


def test_pyav_dense_train_clip_one_seek(videos):
    """K400 train: 16 frames over a 64-frame span (sorted) cost one seek;
    the 5 overlapping test windows (80 unsorted indices) decode each
    distinct frame once, with at most one seek per distinct frame."""
    from cast_mmaction.datasets.transforms.sampling import (
        dense_test_indices, dense_train_indices)
    np.random.seed(3)
    r = PyAVVideoReader(videos['k400'], num_threads=1)
    inds = dense_train_indices(300)
    r.get_frames(inds)
    assert r.seeks == 1
    r.close()
    r = PyAVVideoReader(videos['k400'], num_threads=1)
    test = dense_test_indices(300, num_clips=5)
    frames = r.get_frames(test)
    assert r.seeks <= 2  # frames 0..296: one seek, maybe one past g=250
    assert [br.frame_index(f) for f in frames] == [int(i) for i in test]
    r.close()



@pytest.mark.parametrize('short_side', [None, 160])
def test_pyav_converts_wanted_frames_through_one_scaler_context(
        videos, short_side):
    """The reader converts the wanted frames after decoding them, through
    one scaler context it keeps: the arrays are those of converting each
    frame on its own (``to_ndarray``, a new context per frame), with
    unsorted and repeated indices and at a reduced size."""
    import av
    path = videos['k400']
    inds = [40, 3, 3, 77, 41, 40, 120]
    r = PyAVVideoReader(path, num_threads=1, short_side=short_side)
    got = r.get_frames(inds)
    context = r._reformatter
    assert context is not None
    again = r.get_frames([5, 5])
    assert r._reformatter is context  # kept, not rebuilt per call
    r.HELD_FRAMES = 2  # converted two distinct frames at a time
    calls = []
    convert = r._to_rgb
    r._to_rgb = lambda out: (calls.append(1), convert(out))
    held2 = r.get_frames(inds)  # 5 distinct frames: after 2, 4, the end
    assert len(calls) == 3
    kw = dict(r._rgb)
    r.close()
    np.testing.assert_array_equal(held2, got)
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_count = 1
        ref = {}
        for i, f in enumerate(c.decode(s)):
            if i in set(inds) | {5}:
                ref[i] = f.to_ndarray(**kw)
            if i >= max(inds):
                break
    np.testing.assert_array_equal(got, np.stack([ref[i] for i in inds]))
    np.testing.assert_array_equal(again, np.stack([ref[5], ref[5]]))
    if short_side:
        assert min(got.shape[1:3]) == short_side

@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('kind', sorted(KINDS))
def test_reduced_size_decode_close_to_decode_then_resize(videos, kind,
                                                         backend):
    """short_side=S gives frames of the size Resize(scale=(-1, S)) gives,
    close to decode-then-Resize (not bit-identical: FFmpeg's scaler
    against OpenCV's)."""
    side = 48
    resize = TRANSFORMS.build(dict(type='Resize', scale=(-1, side)))
    init = VideoInit(backend=backend, short_side=side)
    res = _run([init, TRANSFORMS.build(dict(type='SegmentSample',
                                            num_segments=8,
                                            test_mode=True)),
                VideoDecode()], videos[kind], 0)
    ref = _run([VideoInit(backend=backend),
                TRANSFORMS.build(dict(type='SegmentSample', num_segments=8,
                                      test_mode=True)),
                VideoDecode(), resize], videos[kind], 0)
    small = np.stack(res['imgs']).astype(np.float64)
    big = np.stack(ref['imgs']).astype(np.float64)
    assert small.shape == big.shape == (8, side, scaled_size(W, H, side)[0],
                                        3)
    assert res['img_shape'] == ref['img_shape']
    diff = np.abs(small - big)
    assert diff.mean() < 8.0, diff.mean()
    # the frames are still the right ones
    assert np.abs(small.mean((1, 2, 3)) - big.mean((1, 2, 3))).max() < 3.0


def test_scaled_size_rounds_as_resize():
    for w, h in ((426, 240), (568, 320), (320, 568), (427, 240)):
        res = TRANSFORMS.build(dict(type='Resize', scale=(-1, 224)))(dict(
            imgs=[np.zeros((h, w, 3), np.uint8)], img_shape=(h, w),
            modality='RGB'))
        assert scaled_size(w, h, 224) == res['img_shape'][::-1]


def test_bad_arguments_are_named(videos, tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        VideoInit(backend='opencv')
    with pytest.raises(ValueError, match='short_side'):
        VideoInit(short_side=0)
    with pytest.raises(FileNotFoundError, match='nope.mp4'):
        VideoInit()(dict(filename=str(tmp_path / 'nope.mp4')))
    bad = tmp_path / 'bad.mp4'
    bad.write_bytes(b'not a video')
    with pytest.raises(RuntimeError, match='pyav cannot open video'):
        VideoInit(backend='pyav')(dict(filename=str(bad)))


def test_torchcodec_missing_names_what_to_install(monkeypatch, videos):
    monkeypatch.setattr(decoding, 'torchcodec_unavailable',
                        lambda: 'torchcodec is installed but finds no '
                        'FFmpeg; ' + decoding.TORCHCODEC_HINT)
    for make in (lambda: VideoInit(backend='torchcodec'),
                 lambda: decoding.TorchCodecVideoReader(videos['ssv2'])):
        with pytest.raises(ImportError) as e:
            make()
        assert 'pip install torchcodec' in str(e.value)
        assert 'libavcodec' in str(e.value)


def test_torchcodec_probe_names_what_to_install(monkeypatch):
    """Without an importable torchcodec the probe says what to install."""
    import sys
    monkeypatch.setitem(sys.modules, 'torchcodec._core', None)
    why = torchcodec_unavailable()
    assert why is not None and 'cannot be imported' in why
    assert 'pip install torchcodec' in why and 'FFmpeg' in why


@pytest.mark.parametrize('kind', sorted(KINDS))
def test_pyav_skips_unwanted_nonref_frames_bit_identically(videos, kind):
    """skip_nonref (the default) does not send unwanted non-reference
    frames to the decoder: fewer packets decoded, the same arrays as
    without it and as decord, for train and test sampling."""
    from cast_mmaction.datasets.transforms.sampling import (
        dense_test_indices, dense_train_indices, segment_indices)
    n = KINDS[kind]['frames']
    np.random.seed(0)
    clips = ([dense_train_indices(n) for _ in range(3)] +
             [dense_test_indices(n, num_clips=5)]) if kind == 'k400' else \
        ([segment_indices(n, 16) for _ in range(3)] +
         [segment_indices(n, 16, 2, test_mode=True)])
    skipped = 0
    for inds in clips:
        got = {}
        for skip in (True, False):
            r = PyAVVideoReader(videos[kind], num_threads=1,
                                skip_nonref=skip)
            got[skip] = r.get_frames(inds)
            if skip:
                skipped += r.skipped
            else:
                assert r.skipped == 0
            r.close()
        r = READERS['decord'](videos[kind])
        ref = r.get_frames(inds)
        np.testing.assert_array_equal(got[True], got[False])
        np.testing.assert_array_equal(got[True], ref)
        assert [br.frame_index(f) for f in got[True]] == [int(i)
                                                          for i in inds]
    assert skipped > 0  # libx264's B-frames: some are never referenced


def _write_variant(path, pix='yuv420p', codec='libx264', params=None,
                   frames=30):
    import av
    tex = br._texture(2 * W, H)
    with av.open(path, 'w') as c:
        opts = {'g': '12', 'crf': '23'}
        if params:
            opts['x264-params'] = params
        if codec != 'libx264':
            opts = {'g': '12', 'crf': '30', 'b': '0', 'deadline': 'realtime'}
        v = c.add_stream(codec, rate=25, options=opts)
        v.width, v.height, v.pix_fmt = W, H, pix
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(br.indexed_frame(i, W, H, tex),
                                           format='rgb24').reformat(
                                               format=pix)
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)


@pytest.mark.parametrize('variant', [
    dict(params='colorprim=bt709:transfer=bt709:colormatrix=bt709'),
    dict(params='fullrange=on'),
    dict(pix='yuvj420p'),
    dict(pix='yuv444p'),
    dict(codec='libvpx-vp9', ext='webm'),
], ids=['bt709', 'fullrange', 'yuvj420p', 'yuv444p', 'vp9-webm'])
def test_decoders_bit_identical_across_formats(tmp_path, variant):
    """decord, PyAV and torchcodec return the same arrays on colour-tagged,
    full-range and 4:4:4 H.264 and on VP9 webm (SSv2's original format)."""
    import av
    variant = dict(variant)
    ext = variant.pop('ext', 'mp4')
    codec = variant.get('codec', 'libx264')
    if codec not in av.codecs_available:
        pytest.skip(f'this PyAV build has no {codec} encoder')
    path = str(tmp_path / f'v.{ext}')
    _write_variant(path, **variant)
    inds = [29, 0, 5, 17, 5, 13]
    out = {}
    for b in READERS:
        if b == 'torchcodec' and TC_WHY:
            continue
        r = READERS[b](path, num_threads=1)
        out[b] = r.get_frames(inds)
        r.close()
        assert [br.frame_index(f) for f in out[b]] == inds, b
    for b in out:
        np.testing.assert_array_equal(out[b], out['decord'], err_msg=b)


@pytest.mark.parametrize('inds', [[305], [290, 310], [299], [150, 298]])
def test_pyav_skip_keeps_the_last_frame_for_past_the_end(videos, inds):
    """Indices at or past the end stand for the last decodable frame: the
    same frames with and without skip_nonref, through the end-of-stream
    flush. (libx264 ends a stream with a reference frame, so these files
    cannot show the reader's guard against skipping an unreferenced last
    frame; they check the end-of-stream path with skipping on.)"""
    got = []
    for skip in (True, False):
        r = PyAVVideoReader(videos['k400'], num_threads=1, skip_nonref=skip)
        got.append(r.get_frames(inds))
        r.close()
    np.testing.assert_array_equal(got[0], got[1])
    assert [br.frame_index(f) for f in got[0]] == [min(i, 299)
                                                   for i in inds]
