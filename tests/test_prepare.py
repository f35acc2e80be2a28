"""Dataset preparation tools on small fake releases (official file formats,
empty or tiny real video files)."""
import csv
import json
import os.path as osp
import shutil

import numpy as np
import pytest

from conftest import ROOT
from _tools import load_tool




def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')


def lines(path):
    return path.read_text().splitlines()


# ----------------------------------------------------------------------------
# SSv2
# ----------------------------------------------------------------------------
def write_ssv2(ann):
    ann.mkdir(parents=True, exist_ok=True)
    pre = 'something-something-v2-'
    (ann / f'{pre}labels.json').write_text(json.dumps({
        'Holding something next to something': '1',
        'Approaching something with your camera': '0',
        'Putting something on a surface': '2'}))

    def entry(i, template):
        return dict(id=str(i), label='x', template=template,
                    placeholders=['a'])

    (ann / f'{pre}train.json').write_text(json.dumps([
        entry(11, 'Holding [something] next to [something]'),
        entry(12, 'Putting [something] on a surface'),
        entry(13, 'Approaching [something] with your camera'),
        entry(14, 'Putting [something] on a surface')]))
    (ann / f'{pre}validation.json').write_text(json.dumps([
        entry(21, 'Approaching [something] with your camera'),
        entry(22, 'Holding [something] next to [something]')]))
    (ann / f'{pre}test.json').write_text(json.dumps([{'id': '31'},
                                                     {'id': '32'}]))


def test_prepare_ssv2_lists_and_missing(tmp_path, capsys):
    tool = load_tool('prepare_ssv2')
    ann, vids, out = tmp_path / 'ann', tmp_path / 'videos', tmp_path / 'out'
    write_ssv2(ann)
    for i in (11, 12, 14, 21, 22, 31):  # 13 and 32 are missing
        touch(vids / f'{i}.webm')
    rc = tool.main(['--ann-dir', str(ann), '--video-dir', str(vids),
                    '--out-dir', str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert lines(out / 'sthv2_train_list_videos.txt') == [
        '11.webm 1', '12.webm 2', '14.webm 2']
    assert lines(out / 'sthv2_val_list_videos.txt') == ['21.webm 0',
                                                        '22.webm 1']
    assert lines(out / 'sthv2_test_list_videos.txt') == ['31.webm']
    assert lines(out / 'sthv2_train_missing.txt') == ['13']
    assert lines(out / 'sthv2_test_missing.txt') == ['32']
    assert '1 of 4 missing' in printed
    # without --video-dir everything is listed with the release's extension
    rc = tool.main(['--ann-dir', str(ann), '--out-dir', str(out),
                    '--video-ext', 'mp4'])
    assert rc == 0
    assert lines(out / 'sthv2_train_list_videos.txt')[2] == '13.mp4 0'
    assert not (out / 'sthv2_train_missing.txt').exists()
    # the lists are read by MMAction2's VideoDataset
    from mmaction.datasets import VideoDataset
    ds = VideoDataset(str(out / 'sthv2_val_list_videos.txt'), pipeline=[],
                      data_prefix=dict(video=str(vids)))
    assert [ds.get_data_info(i)['label'] for i in range(len(ds))] == [0, 1]


def test_prepare_ssv2_errors(tmp_path, capsys):
    tool = load_tool('prepare_ssv2')
    ann = tmp_path / 'ann'
    write_ssv2(ann)
    train = ann / 'something-something-v2-train.json'
    train.write_text(json.dumps([dict(id='1', template='Juggling [things]')]))
    assert tool.main(['--ann-dir', str(ann), '--out-dir',
                      str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert 'train.json' in err and 'Juggling things' in err
    (ann / 'something-something-v2-labels.json').unlink()
    assert tool.main(['--ann-dir', str(ann), '--out-dir',
                      str(tmp_path / 'o')]) == 2
    assert 'labels.json not found' in capsys.readouterr().err


# ----------------------------------------------------------------------------
# Kinetics
# ----------------------------------------------------------------------------
def write_k400_csv(path, rows, labelled=True):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow((['label'] if labelled else []) +
                   ['youtube_id', 'time_start', 'time_end', 'split'] +
                   (['is_cc'] if labelled else []))
        for r in rows:
            w.writerow(r)


def test_prepare_k400(tmp_path, capsys):
    tool = load_tool('prepare_k400')
    write_k400_csv(tmp_path / 'train.csv', [
        ('zumba', 'aaa', 10, 20, 'train', 0),
        ('abseiling', 'bbb', 0, 10, 'train', 0),
        ('petting animal (not cat)', 'ccc', 5, 15, 'train', 0),
        ('zumba', 'ddd', 1, 11, 'train', 0)])
    write_k400_csv(tmp_path / 'validate.csv', [
        ('abseiling', 'eee', 3, 13, 'val', 0)])
    tr, va = tmp_path / 'videos_train', tmp_path / 'videos_val'
    touch(tr / 'zumba' / 'aaa_000010_000020.mp4')  # per-class folder
    touch(tr / 'bbb_000000_000010.mkv')             # flat, other ext
    touch(tr / 'ccc.mp4')                           # id only
    touch(va / 'eee_3_13.mp4')                      # unpadded
    out = tmp_path / 'out'
    rc = tool.main(['--csv', f'train={tmp_path / "train.csv"}',
                    f'val={tmp_path / "validate.csv"}', '--videos',
                    f'train={tr}', f'val={va}', '--out-dir', str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert lines(out / 'label_map_k400.txt') == [
        'abseiling', 'petting animal (not cat)', 'zumba']
    assert lines(out / 'kinetics400_train_list_videos.txt') == [
        'zumba/aaa_000010_000020.mp4 2', 'bbb_000000_000010.mkv 0',
        'ccc.mp4 1']
    assert lines(out / 'kinetics400_val_list_videos.txt') == [
        'eee_3_13.mp4 0']
    assert lines(out / 'kinetics400_train_missing.txt') == [
        'ddd_000001_000011']
    assert '3 of 4 videos' in printed and '1 not found' in printed
    # the label map is a plain text label map for tools/infer.py
    from cast_mmaction.datasets.label_maps import load_label_map
    assert load_label_map(out / 'label_map_k400.txt')[2] == 'zumba'
    # a given class order is kept; an unknown class is named
    lm = tmp_path / 'order.txt'
    lm.write_text('zumba\nabseiling\npetting animal (not cat)\n')
    rc = tool.main(['--csv', f'train={tmp_path / "train.csv"}', '--videos',
                    f'train={tr}', '--out-dir', str(out), '--label-map',
                    str(lm)])
    assert rc == 0
    assert lines(out / 'kinetics400_train_list_videos.txt')[0].endswith(' 0')
    lm.write_text('zumba\nabseiling\n')
    rc = tool.main(['--csv', f'train={tmp_path / "train.csv"}', '--videos',
                    f'train={tr}', '--out-dir', str(out), '--label-map',
                    str(lm)])
    err = capsys.readouterr().err
    assert rc == 2 and 'petting animal (not cat)' in err and 'line 4' in err


def test_prepare_k400_lists_each_video_once_and_reports_duplicates(
        tmp_path, capsys):
    """A repeated CSV row (and a row naming the same video with another
    label) is left out and reported with both lines; the list names each
    video once, so the dataset's list check accepts it."""
    from cast_mmaction.datasets.annotation_checks import check_list_file
    tool = load_tool('prepare_k400')
    csv_path = tmp_path / 'train.csv'
    write_k400_csv(csv_path, [
        ('zumba', 'aaa', 10, 20, 'train', 0),
        ('abseiling', 'bbb', 0, 10, 'train', 0),
        ('zumba', 'aaa', 10, 20, 'train', 0),
        ('abseiling', 'aaa', 10, 20, 'train', 0),
        ('zumba', 'ggg', 1, 2, 'train', 0),
        ('zumba', 'ggg', 1, 2, 'train', 0)])
    tr = tmp_path / 'videos'
    touch(tr / 'aaa_000010_000020.mp4')
    touch(tr / 'bbb_000000_000010.mp4')
    out = tmp_path / 'out'
    rc = tool.main(['--csv', f'train={csv_path}', '--videos', f'train={tr}',
                    '--out-dir', str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    listed = out / 'kinetics400_train_list_videos.txt'
    assert lines(listed) == ['aaa_000010_000020.mp4 1',
                             'bbb_000000_000010.mp4 0']
    assert check_list_file(str(listed), str(tr)) == 2
    assert lines(out / 'kinetics400_train_missing.txt') == [
        'ggg_000001_000002']
    reports = [f'{csv_path}, line 4 repeats line 2',
               f'{csv_path}, line 5 names the video of line 2 '
               f"(aaa_000010_000020.mp4) again with another label "
               f"('abseiling'; line 2's 'zumba' is kept)",
               f'{csv_path}, line 7 repeats line 6']
    assert lines(out / 'kinetics400_train_duplicates.txt') == reports
    assert '3 duplicate row(s) left out' in printed
    assert all(r in printed for r in reports)


def test_prepare_k400_input_errors(tmp_path, capsys):
    tool = load_tool('prepare_k400')
    bad = tmp_path / 'bad.csv'
    bad.write_text('label,youtube_id,split\nx,y,train\n')
    (tmp_path / 'v').mkdir()
    rc = tool.main(['--csv', f'train={bad}', '--videos',
                    f'train={tmp_path / "v"}', '--out-dir', str(tmp_path)])
    assert rc == 2 and 'time_start' in capsys.readouterr().err
    rc = tool.main(['--csv', f'train={bad}', '--videos', 'val=x',
                    '--out-dir', str(tmp_path)])
    assert rc == 2 and '--videos train=DIR' in capsys.readouterr().err
    write_k400_csv(tmp_path / 'ok.csv', [('a', 'zzz', 0, 10, 'train', 0)])
    rc = tool.main(['--csv', f'train={tmp_path / "ok.csv"}', '--videos',
                    f'train={tmp_path / "v"}', '--out-dir', str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and 'zzz_000000_000010.mp4' in err


# ----------------------------------------------------------------------------
# EPIC-KITCHENS-100
# ----------------------------------------------------------------------------
EK_HEADER = ['narration_id', 'participant_id', 'video_id',
             'narration_timestamp', 'start_timestamp', 'stop_timestamp',
             'start_frame', 'stop_frame', 'narration', 'verb', 'verb_class',
             'noun', 'noun_class', 'all_nouns', 'all_noun_classes']


def ek_row(vid, k, start_s, stop_s, verb, noun, fps=8):
    ts = lambda s: f'00:00:{s:05.2f}'  # noqa: E731
    return [f'{vid}_{k}', vid.split('_')[0], vid, ts(start_s), ts(start_s),
            ts(stop_s), int(round(start_s * fps)), int(round(stop_s * fps)),
            'take cup', 'take', verb, 'cup', noun, "['cup']", f'[{noun}]']


def write_ek100(ann, with_test=True):
    ann.mkdir(parents=True, exist_ok=True)
    for name, n, word in (('verb', 97, 'v'), ('noun', 300, 'n')):
        with open(ann / f'EPIC_100_{name}_classes.csv', 'w',
                  newline='') as f:
            w = csv.writer(f)
            w.writerow(['id', 'key', 'instances', 'category'])
            for i in range(n):
                w.writerow([i, f'{word}{i}', f"['{word}{i}']", 'c'])
    for split, rows in (
            ('train', [ek_row('P01_01', 0, 0.0, 0.5, 1, 2),
                       ek_row('P01_01', 1, 0.5, 1.0, 3, 4),
                       ek_row('P02_01', 0, 0.0, 0.5, 5, 6)]),
            ('validation', [ek_row('P02_01', 1, 0.2, 0.8, 0, 0),
                            ek_row('P01_01', 2, 0.1, 0.9, 96, 299)])):
        with open(ann / f'EPIC_100_{split}.csv', 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(EK_HEADER)
            w.writerows(rows)


def write_tiny_video(path, size=64, frames=10):
    from cast_mmaction.datasets.synthetic import write_mp4
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_mp4(str(path), rng.integers(0, 255, (frames, size, 2 * size, 3),
                                      dtype=np.uint8))


def test_prepare_ek100_filters_missing_videos(tmp_path, capsys):
    tool = load_tool('prepare_ek100')
    ann, vids, out = tmp_path / 'ann', tmp_path / 'videos', tmp_path / 'out'
    write_ek100(ann)
    touch(vids / 'P01' / 'videos' / 'P01_01.MP4')  # P02_01 is missing
    rc = tool.main(['--ann-dir', str(ann), '--video-root', str(vids),
                    '--out-dir', str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert lines(out / 'missing_videos.txt') == [
        'P02_01 P02/videos/P02_01.MP4']
    train = list(csv.reader((out / 'EPIC_100_train_available.csv').open()))
    assert train[0] == EK_HEADER
    assert [r[0] for r in train[1:]] == ['P01_01_0', 'P01_01_1']
    val = list(csv.reader((out / 'EPIC_100_validation_available.csv').open()))
    assert [r[0] for r in val[1:]] == ['P01_01_2']
    # rows are copied unchanged
    assert val[1] == [str(x) for x in ek_row('P01_01', 2, 0.1, 0.9, 96, 299)]
    assert '2 of 3 segments (1 dropped' in printed
    assert "label_map = dict(verb=" in printed
    # the filtered CSV is read by the dataset's own reader
    from cast_mmaction.datasets.epic_kitchens import read_epic_csv
    items = read_epic_csv(str(out / 'EPIC_100_validation_available.csv'))
    assert (items[0]['verb_label'], items[0]['noun_label']) == (96, 299)
    # with every video present, the official CSVs are used as they are
    touch(vids / 'P02' / 'videos' / 'P02_01.MP4')
    rc = tool.main(['--ann-dir', str(ann), '--video-root', str(vids),
                    '--out-dir', str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and 'all videos present' in printed
    assert not (out / 'missing_videos.txt').exists()
    assert f"ek100_train_csv = '{ann / 'EPIC_100_train.csv'}'" in printed


def test_prepare_ek100_validates(tmp_path, capsys):
    tool = load_tool('prepare_ek100')
    ann, vids = tmp_path / 'ann', tmp_path / 'videos'
    write_ek100(ann)
    vids.mkdir()
    rc = tool.main(['--ann-dir', str(ann), '--video-root', str(vids),
                    '--out-dir', str(tmp_path / 'o')])
    assert rc == 2 and 'no video found' in capsys.readouterr().err
    with open(ann / 'EPIC_100_train.csv', 'a', newline='') as f:
        row = ek_row('P01_01', 9, 0.0, 0.5, 1, 2)
        row[10] = '97'  # verb_class out of range
        csv.writer(f).writerow(row)
    rc = tool.main(['--ann-dir', str(ann), '--video-root', str(vids),
                    '--out-dir', str(tmp_path / 'o')])
    err = capsys.readouterr().err
    assert rc == 2 and 'EPIC_100_train.csv, line 5' in err and \
        'verb_class' in err
    (ann / 'EPIC_100_noun_classes.csv').write_text('id,key\n0,cup\n')
    rc = tool.main(['--ann-dir', str(ann), '--video-root', str(vids),
                    '--out-dir', str(tmp_path / 'o')])
    assert rc == 2 and '1 noun classes' in capsys.readouterr().err


def test_prepare_ek100_reencode_needs_ffmpeg(tmp_path, capsys, monkeypatch):
    tool = load_tool('prepare_ek100')
    ann, vids = tmp_path / 'ann', tmp_path / 'videos'
    write_ek100(ann)
    touch(vids / 'P01' / 'videos' / 'P01_01.MP4')
    monkeypatch.setenv('PATH', str(tmp_path / 'no-bin'))
    rc = tool.main(['--ann-dir', str(ann), '--video-root', str(vids),
                    '--out-dir', str(tmp_path / 'o'), '--reencode',
                    str(tmp_path / 'small')])
    err = capsys.readouterr().err
    assert rc == 2 and 'needs ffmpeg' in err and 'not on PATH' in err


@pytest.mark.skipif(shutil.which('ffmpeg') is None,
                    reason='ffmpeg is not installed')
def test_prepare_ek100_reencode(tmp_path, capsys):
    import av
    tool = load_tool('prepare_ek100')
    ann, vids = tmp_path / 'ann', tmp_path / 'videos'
    write_ek100(ann)
    for v in ('P01_01', 'P02_01'):
        write_tiny_video(vids / v.split('_')[0] / 'videos' / f'{v}.MP4')
    small = tmp_path / 'small'
    rc = tool.main(['--ann-dir', str(ann), '--video-root', str(vids),
                    '--out-dir', str(tmp_path / 'o'), '--reencode',
                    str(small), '--short-side', '32', '--jobs', '2'])
    printed = capsys.readouterr().out
    assert rc == 0
    out = small / 'P01' / 'videos' / 'P01_01.MP4'
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert (s.height, s.width) == (32, 64)  # 64x128 -> short side 32
        assert sum(1 for _ in c.decode(s)) == 10
    assert f"ek100_video_root = '{small}'" in printed
    assert not list(small.rglob('*.part*'))
    # an existing copy is kept (resumable)
    mtime = out.stat().st_mtime_ns
    assert tool.main(['--ann-dir', str(ann), '--video-root', str(vids),
                      '--out-dir', str(tmp_path / 'o'), '--reencode',
                      str(small), '--short-side', '32']) == 0
    assert out.stat().st_mtime_ns == mtime


# ----------------------------------------------------------------------------
# VGGSound
# ----------------------------------------------------------------------------
def test_prepare_vggsound(tmp_path, capsys):
    tool = load_tool('prepare_vggsound')
    table = tmp_path / 'vggsound.csv'
    table.write_text('---g-f_I2yQ,1,people marching,test\n'
                     'aaa,30,dog barking,train\n'
                     'bbb,0,"cattle, bovinae cowbell",train\n'
                     'ccc,10,dog barking,train\n'
                     'ddd,5,people marching,test\n')
    vids = tmp_path / 'videos'
    touch(vids / '---g-f_I2yQ_000001.mp4')
    touch(vids / 'train' / 'aaa_30000_40000.mp4')
    touch(vids / 'bbb_0.mp4')
    out = tmp_path / 'out'
    rc = tool.main(['--csv', str(table), '--videos', str(vids), '--out-dir',
                    str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert lines(out / 'vggsound_classes.txt') == [
        'cattle, bovinae cowbell', 'dog barking', 'people marching']
    assert lines(out / 'vggsound_train_list_videos.txt') == [
        'train/aaa_30000_40000.mp4 1', 'bbb_0.mp4 0']
    assert lines(out / 'vggsound_test_list_videos.txt') == [
        '---g-f_I2yQ_000001.mp4 2']
    assert lines(out / 'vggsound_train_missing.txt') == ['ccc_000010']
    assert '2 of 3 clips' in printed
    # the class list is the order VGGSoundDataset and the label maps use
    from cast_mmaction.datasets.label_maps import load_label_map
    assert load_label_map(table) == lines(out / 'vggsound_classes.txt')


def test_prepare_vggsound_check_audio(tmp_path, capsys):
    tool = load_tool('prepare_vggsound')
    table = tmp_path / 'vggsound.csv'
    table.write_text('aaa,0,dog barking,train\nbbb,0,cat purring,train\n'
                     'ccc,0,cat purring,train\n')
    vids = tmp_path / 'videos'
    write_tiny_video(vids / 'aaa_000000.mp4')  # video only: no sound
    (vids / 'bbb_000000.mp4').write_bytes(b'garbage')
    # ccc: video with a sound track
    from test_tools_infer import write_av_clip
    write_av_clip(vids / 'ccc_000000.mp4', num_frames=4, size=32)
    # eee: sound only, in a video container
    import av
    with av.open(str(vids / 'eee_000000.mp4'), 'w') as c:
        aud = c.add_stream('aac', rate=16000)
        aud.layout = 'mono'
        wave = np.zeros((1, 16000), np.float32)
        af = av.AudioFrame.from_ndarray(wave, format='flt', layout='mono')
        af.sample_rate = 16000
        for p in list(aud.encode(af)) + list(aud.encode(None)):
            c.mux(p)
    with open(table, 'a') as f:
        f.write('eee,0,dog barking,train\n')
    rc = tool.main(['--csv', str(table), '--videos', str(vids), '--out-dir',
                    str(tmp_path / 'o'), '--check-audio'])
    assert rc == 0
    assert lines(tmp_path / 'o' / 'vggsound_train_list_videos.txt') == [
        'ccc_000000.mp4 0']
    bad = lines(tmp_path / 'o' / 'vggsound_train_bad.txt')
    assert bad[0].startswith('aaa_000000.mp4 no audio stream')
    assert bad[1].startswith('bbb_000000.mp4 cannot be decoded')
    assert bad[2] == 'eee_000000.mp4 no video stream'


def test_prepare_vggsound_lists_each_clip_once_and_no_audio_files(
        tmp_path, capsys):
    """A repeated row, and two segments whose only file is the <id>
    fallback, are listed once and reported with both lines (the list named
    the file twice, once per label, which the dataset refuses); an audio
    file of a clip's stem is not taken for its video."""
    from cast_mmaction.datasets.annotation_checks import check_list_file
    tool = load_tool('prepare_vggsound')
    table = tmp_path / 'vggsound.csv'
    table.write_text('aaa,10,dog barking,train\n'
                     'aaa,10,dog barking,train\n'
                     'ccc,0,cat purring,train\n'
                     'ccc,30,dog barking,train\n'
                     'ddd,0,cat purring,train\n')
    vids = tmp_path / 'videos'
    touch(vids / 'aaa_000010.mp4')
    touch(vids / 'ccc.mp4')
    touch(vids / 'audio' / 'ddd_000000.wav')  # audio only: not a clip
    out = tmp_path / 'out'
    rc = tool.main(['--csv', str(table), '--videos', str(vids), '--out-dir',
                    str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    listed = out / 'vggsound_train_list_videos.txt'
    assert lines(listed) == ['aaa_000010.mp4 1', 'ccc.mp4 0']
    assert check_list_file(str(listed), str(vids), layout='label_last') == 2
    reports = [f'{table}, line 2 repeats line 1',
               f'{table}, line 4 names the clip of line 3 (ccc.mp4) again '
               f"with another label ('dog barking'; line 3's 'cat purring' "
               f'is kept)']
    assert lines(out / 'vggsound_train_duplicates.txt') == reports
    assert all(r in printed for r in reports)
    assert lines(out / 'vggsound_train_missing.txt') == ['ddd_000000']


def test_prepare_vggsound_errors(tmp_path, capsys):
    tool = load_tool('prepare_vggsound')
    table = tmp_path / 'vggsound.csv'
    table.write_text('aaa,0,dog,train\nbbb,x,dog,train\n')
    (tmp_path / 'v').mkdir()
    rc = tool.main(['--csv', str(table), '--videos', str(tmp_path / 'v'),
                    '--out-dir', str(tmp_path / 'o')])
    assert rc == 2 and 'line 2' in capsys.readouterr().err
    table.write_text('aaa,0,dog,validation\n')
    rc = tool.main(['--csv', str(table), '--videos', str(tmp_path / 'v'),
                    '--out-dir', str(tmp_path / 'o')])
    assert rc == 2 and "split 'validation'" in capsys.readouterr().err
    table.write_text('aaa,0,dog,train\n')
    rc = tool.main(['--csv', str(table), '--videos', str(tmp_path / 'v'),
                    '--out-dir', str(tmp_path / 'o')])
    assert rc == 2 and 'aaa_000000.mp4' in capsys.readouterr().err
