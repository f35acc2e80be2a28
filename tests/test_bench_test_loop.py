"""tools/benchmark/bench_test_loop.py: our test pipeline against the authors'
test loader, per test video. The authors' code is not here (no network), so
a stand-in repository with their dataset's interface (a view per item,
items ordered view-major, ``dataset_samples``) checks the plumbing: every
view of a video is timed as that video's, the NumPy-1 import their
kinetics.py makes is provided, and a missing module is named."""
import importlib.util
import json
import sys

import pytest

from _tools import tool_path

STAND_IN = '''
import numpy as np
import torch
from numpy.lib.function_base import disp  # as the authors' kinetics.py
CALLS = []


class VideoClsDataset:
    def __init__(self, anno_path, data_path, mode, clip_len, test_num_segment,
                 test_num_crop, **kwargs):
        assert mode == 'test' and kwargs['args'] is None
        self.dataset_samples = [l.split()[0] for l in open(anno_path)]
        self.views = test_num_segment * test_num_crop
        self.clip_len = clip_len
        self.data_path = data_path

    def __len__(self):
        return self.views * len(self.dataset_samples)

    def __getitem__(self, index):
        CALLS.append(index)
        n = len(self.dataset_samples)
        return (torch.zeros(3, self.clip_len, 8, 8), 0,
                self.dataset_samples[index % n], index // n // 3,
                index // n % 3)
'''


@pytest.fixture(autouse=True)
def _restore_numpy_modules():
    """The tool's NumPy-1 module stays in no other test's way."""
    before = sys.modules.get('numpy.lib.function_base')
    yield
    if before is None:
        sys.modules.pop('numpy.lib.function_base', None)
    else:
        sys.modules['numpy.lib.function_base'] = before


MODEL_STAND_IN = '''
import torch


class _Tiny(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.head = torch.nn.Linear(3, num_classes)

    def forward(self, x):  # (B, C, T, H, W) -> (B, classes)
        return self.head(x.mean((2, 3, 4)))


def bidir_vit_base_patch16_224(num_classes, all_frames, img_size,
                               drop_path_rate):
    return _Tiny(num_classes)
'''

SSV2_STAND_IN = STAND_IN.replace('class VideoClsDataset', 'class SSVideoClsDataset')


def _tool():
    spec = importlib.util.spec_from_file_location(
        '_bench_test_loop', tool_path('bench_test_loop'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    repo = tmp_path / 'CAST'
    (repo / 'dataset').mkdir(parents=True)
    (repo / 'dataset' / 'kinetics.py').write_text(STAND_IN)
    monkeypatch.setattr(sys, 'path', list(sys.path))
    for name in [m for m in sys.modules if m == 'dataset'
                 or m.startswith('dataset.')]:
        monkeypatch.delitem(sys.modules, name)
    return repo


def test_every_view_of_a_video_counts_as_that_video(tmp_path, stand_in):
    tool = _tool()
    ann = tmp_path / 'list.txt'
    ann.write_text('a.mp4 0\nb.mp4 1\nc.mp4 0\n')
    (tmp_path / 'videos').mkdir()
    ds = tool.authors_dataset(str(stand_in), 'k400', str(ann),
                              str(tmp_path / 'videos'))
    # K400 reads DATA_PATH/val/NAME: val points at the videos' folder
    import os
    assert os.path.realpath(os.path.join(ds.data_path, 'val')) == \
        os.path.realpath(tmp_path / 'videos')
    calls = sys.modules['dataset.kinetics'].CALLS
    views, per_video, shapes = tool.time_authors(ds, videos=2, warmup=1)
    assert views == 15 and len(per_video) == 2
    assert shapes == [(3, 16, 8, 8)]
    # warm-up video a, then b and c: each one's 15 views, view-major items
    for vid, chunk in enumerate([calls[0:15], calls[15:30], calls[30:45]]):
        assert sorted(chunk) == [v * 3 + vid for v in range(15)]
    assert all(c >= 0 and w >= 0 for c, w in per_video)


def test_missing_authors_module_or_dependency_is_named(tmp_path, stand_in):
    tool = _tool()
    ann = tmp_path / 'list.txt'
    ann.write_text('a.mp4 0\n')
    with pytest.raises(SystemExit, match='no dataset.ssv2 there'):
        tool.authors_dataset(str(stand_in), 'ssv2', str(ann), str(tmp_path))
    (stand_in / 'dataset' / 'kinetics.py').write_text(
        'import not_installed_module_xyz\n')
    with pytest.raises(SystemExit, match="needs 'not_installed_module_xyz'"):
        tool.authors_dataset(str(stand_in), 'k400', str(ann), str(tmp_path))


def test_numpy1_disp_prints_like_numpy1(capsys):
    tool = _tool()
    tool._numpy1_function_base()
    from numpy.lib.function_base import disp
    disp('hello')
    disp('x', linefeed=False)
    assert capsys.readouterr().out == 'hello\nx'


def test_whole_loop_runs_both_loops_over_the_same_videos(tmp_path, stand_in):
    (stand_in / 'dataset' / 'ssv2.py').write_text(SSV2_STAND_IN)
    (stand_in / 'models').mkdir()
    (stand_in / 'models' / 'bidir_modeling_crossattn.py').write_text(
        MODEL_STAND_IN)
    from cast_mmaction.models.presets import cast_recognizer_cfg
    tiny = tmp_path / 'tiny.py'
    tiny.write_text('model = ' + repr(cast_recognizer_cfg(
        num_classes=174, embed_dim=32, depth=1, num_heads=2, num_frames=16,
        img_size=224)) + '\n')
    tool = _tool()
    out = tool.main(['--reference-repo', str(stand_in), '--kinds', 'ssv2',
                     '--videos', '5', '--warmup', '0', '--loop',
                     '--model-config', str(tiny), '--authors-batch-size', '4',
                     '--workdir', str(tmp_path / 'videos'),
                     '--json', str(tmp_path / 'r.json')])
    (row,) = out['results']
    loop = row['loop']
    assert loop['model_config'] == str(tiny) and loop['device'] == 'cpu'
    # ours: a prediction per video; theirs: one per distinct video, merged
    # from its 6 views (5 videos: a fifth file was written for the loop)
    assert len(loop['ours']['predictions']) == 5
    assert len(loop['authors']['predictions']) == 5
    assert all(0 <= p < 174 for p in loop['ours']['predictions'])
    for side in ('ours', 'authors'):
        assert loop[side]['wall_s_per_video'] > 0
        assert loop[side]['videos_per_s_wall'] == pytest.approx(
            1 / loop[side]['wall_s_per_video'])
    calls = sys.modules['dataset.ssv2'].CALLS
    # the loader part: 5 videos x 6 views; the loop: a warm-up item, then
    # every item of the 5-video list in their sequential order
    assert calls[-30:] == list(range(30))
    assert json.loads((tmp_path / 'r.json').read_text())['results'][0][
        'loop']['authors_batch_size'] == 4
