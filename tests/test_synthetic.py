"""The synthetic appearance x motion dataset: real mp4 files, MMAction2 list
files, deterministic, and labels that really need appearance and motion."""
import os
import os.path as osp

import numpy as np
import pytest

from cast_mmaction.datasets.synthetic import (CLASSES, render_clip,
                                              write_synthetic_video_dataset)

SMALL = dict(num_train_per_class=2, num_val_per_class=1, num_frames=8,
             size=32, fps=8)


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('syn') / 'data'
    return write_synthetic_video_dataset(str(root), seed=3, **SMALL)


def _read_list(path):
    with open(path) as f:
        return [(ln.split()[0], int(ln.split()[1])) for ln in f if ln.strip()]


def _decode_decord(path):
    import decord
    vr = decord.VideoReader(path)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def _decode_pyav(path):
    import av
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format='rgb24')
                         for f in c.decode(video=0)])


def test_layout_and_lists(small_set):
    info = small_set
    assert info['num_classes'] == 4 and info['classes'] == list(CLASSES)
    with open(info['label_map']) as f:
        assert [ln.strip() for ln in f] == list(CLASSES)
    for ann, per_class, split in ((info['train_ann'], 2, 'train'),
                                  (info['val_ann'], 1, 'val')):
        items = _read_list(ann)
        assert len(items) == 4 * per_class
        assert sorted(lbl for _, lbl in items) == sorted(
            list(range(4)) * per_class)
        for rel, lbl in items:
            assert rel.startswith(split + '/') and rel.endswith('.mp4')
            assert not osp.isabs(rel)
            assert CLASSES[lbl] in rel
            assert osp.getsize(osp.join(info['root'], rel)) > 0


def test_decodes_with_decord_and_pyav(small_set):
    rel, _ = _read_list(small_set['train_ann'])[0]
    path = osp.join(small_set['root'], rel)
    a, b = _decode_decord(path), _decode_pyav(path)
    assert a.shape == b.shape == (8, 32, 32, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


def test_decoded_matches_rendered():
    """What the file holds is what was rendered (up to compression)."""
    import tempfile

    from cast_mmaction.datasets.synthetic import write_mp4
    frames = render_clip(np.random.default_rng(0), 0, 1, 8, 32)
    with tempfile.TemporaryDirectory() as d:
        path = osp.join(d, 'x.mp4')
        write_mp4(path, frames, fps=8)
        dec = _decode_decord(path)
    assert dec.shape == frames.shape
    assert np.abs(dec.astype(float) - frames).mean() < 12


def _object_track(frames):
    """(colour sign, x centroid per frame) of the saturated object: red
    object -> positive R - B."""
    f = frames.astype(float)
    sat = f.max(-1) - f.min(-1)
    xs, signs = [], []
    for t in range(len(f)):
        mask = sat[t] > 0.6 * sat[t].max()
        yy, xx = np.nonzero(mask)
        xs.append(xx.mean())
        signs.append(np.sign((f[t][mask][:, 0] - f[t][mask][:, 2]).mean()))
    return np.sign(np.sum(signs)), np.array(xs)


def test_labels_need_appearance_and_motion(small_set):
    """Recover appearance (colour) and motion (direction) from the decoded
    files: together they give the label; each alone splits every class
    pair, i.e. at most 50% top-1 from one of them."""
    seen = set()
    for ann in (small_set['train_ann'], small_set['val_ann']):
        for rel, label in _read_list(ann):
            frames = _decode_decord(osp.join(small_set['root'], rel))
            colour, xs = _object_track(frames)
            appearance = 0 if colour > 0 else 1  # red square, blue disc
            motion = 0 if xs[-1] > xs[0] else 1  # right, left
            assert abs(xs[-1] - xs[0]) > 3, rel  # it really moves
            assert appearance * 2 + motion == label, rel
            seen.add((appearance, motion))
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_deterministic_and_seeded(tmp_path, small_set):
    again = write_synthetic_video_dataset(str(tmp_path / 'a'), seed=3,
                                          **SMALL)
    other = write_synthetic_video_dataset(str(tmp_path / 'b'), seed=4,
                                          **SMALL)
    same = _read_list(again['train_ann'])
    assert same == _read_list(small_set['train_ann'])
    for rel, _ in same:
        with open(osp.join(again['root'], rel), 'rb') as f1, open(
                osp.join(small_set['root'], rel), 'rb') as f2:
            assert f1.read() == f2.read(), rel
    rel0 = _read_list(other['train_ann'])[0][0]
    rel1 = _read_list(small_set['train_ann'])[0][0]
    a = _decode_decord(osp.join(other['root'], rel0))
    b = _decode_decord(osp.join(small_set['root'], rel1))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_reuse_and_rewrite(tmp_path):
    root = str(tmp_path / 'r')
    info = write_synthetic_video_dataset(root, seed=0, **SMALL)
    first = osp.join(root, _read_list(info['train_ann'])[0][0])
    stamp = os.stat(first).st_mtime_ns
    write_synthetic_video_dataset(root, seed=0, **SMALL)  # reused
    assert os.stat(first).st_mtime_ns == stamp
    os.remove(first)  # incomplete -> written again
    write_synthetic_video_dataset(root, seed=0, **SMALL)
    assert osp.isfile(first)
    info2 = write_synthetic_video_dataset(
        root, seed=0, **dict(SMALL, num_train_per_class=3))
    assert len(_read_list(info2['train_ann'])) == 12


def test_mmaction_video_dataset_reads_it(small_set):
    from mmaction.registry import DATASETS
    ds = DATASETS.build(
        dict(type='VideoDataset', ann_file=small_set['train_ann'],
             data_prefix=dict(video=small_set['root']),
             pipeline=[
                 dict(type='DecordInit'),
                 dict(type='SampleFrames', clip_len=4, frame_interval=2,
                      num_clips=1),
                 dict(type='DecordDecode'),
                 dict(type='FormatShape', input_format='NCTHW'),
                 dict(type='PackActionInputs'),
             ]))
    assert len(ds) == 8
    item = ds[0]
    assert tuple(item['inputs'].shape) == (1, 3, 4, 32, 32)
    assert int(item['data_samples'].gt_label) == _read_list(
        small_set['train_ann'])[0][1]


@pytest.mark.parametrize('kwargs, field', [
    (dict(size=31), 'size'),
    (dict(num_frames=1), 'num_frames'),
    (dict(num_train_per_class=0), 'num_train_per_class'),
])
def test_bad_arguments_name_the_field(tmp_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        write_synthetic_video_dataset(str(tmp_path / 'x'),
                                      **dict(SMALL, **kwargs))
