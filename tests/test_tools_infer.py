"""tools/infer.py, tools/analysis_tools/extract_features.py, cast_mmaction.inference and the
label maps, on tiny models and tiny mp4 videos written here."""
import csv
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch

from cast_mmaction.safe_load import load_checkpoint

from conftest import ROOT
from _tools import load_tool

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
NUM_VIEWS = 6  # 2 clips x 3 crops




def write_config(path, label_map=None, epic=False):
    """A tiny CAST config (width 32, 2 layers, 8 frames of 32 px) with the
    recipe-style test pipeline of 2 clips x 3 crops."""
    if epic:
        head = ("dict(type='CASTVerbNounHead', num_verbs=5, num_nouns=7, "
                "in_channels=32, verb_stream=1, noun_stream=0, "
                "average_clips='prob')")
        pipeline = """[
    dict(type='EpicVideoInit', backend='decord'),
    dict(type='EpicSampleFrames', num_segments=8, num_clips=2, test_mode=True),
    dict(type='EpicDecode'),
    dict(type='Resize', scale=(-1, 32)),
    dict(type='ThreeCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackEpicInputs')]"""
        dataset = "'EpicKitchens100Dataset'"
    else:
        head = ("dict(type='CASTHead', num_classes=4, in_channels=32, "
                "num_streams=2, average_clips='prob')")
        pipeline = """[
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=8, frame_interval=1, num_clips=2,
         test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 32)),
    dict(type='ThreeCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')]"""
        dataset = "'VideoDataset'"
    text = f"""
custom_imports = dict(imports=['cast_mmaction'], allow_failed_imports=False)
default_scope = 'mmaction'
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='CASTBackbone', num_frames=8, img_size=32,
        experts=dict(
            clip=dict(type='CLIPViTExpert', embed_dim=32, depth=2, num_heads=2,
                      patch_size=8, frame_start=1, frame_step=2),
            vmae=dict(type='VideoMAEExpert', embed_dim=32, depth=2,
                      num_heads=2, patch_size=8, tubelet_size=2)),
        links=[dict(experts=('clip', 'vmae'),
                    windows=dict(clip='time', vmae='space'))]),
    cls_head={head},
    data_preprocessor=dict(type='ActionDataPreprocessor', mean={MEAN},
                           std={STD}, format_shape='NCTHW'))
test_pipeline = {pipeline}
test_dataloader = dict(batch_size=1, dataset=dict(
    type={dataset}, ann_file='unused.txt', pipeline=test_pipeline))
label_map = {label_map!r}
"""
    with open(path, 'w') as f:
        f.write(text)
    return path


def make_checkpoint(cfg_path, out, seed=0):
    """A freshly built model with every parameter perturbed (so the
    zero-initialised adapters and links act), saved in MMEngine format."""
    from cast_mmaction.inference import init_model
    model = init_model(cfg_path, device='cpu')
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, out)
    return model


@pytest.fixture(scope='module')
def media(tmp_path_factory):
    from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
    root = tmp_path_factory.mktemp('infer')
    info = write_synthetic_video_dataset(
        str(root / 'data'), num_train_per_class=1, num_val_per_class=1,
        num_frames=12, size=64)
    bad = root / 'data' / 'val' / 'zz_broken.mp4'
    bad.write_bytes(b'this is not a video')
    cfg = write_config(str(root / 'tiny.py'), label_map=info['label_map'])
    ckpt = str(root / 'tiny.pth')
    model = make_checkpoint(cfg, ckpt)
    model.eval()
    videos = sorted(str(p) for p in (root / 'data' / 'val').glob('0*.mp4'))
    return dict(root=root, info=info, cfg=cfg, ckpt=ckpt, model=model,
                videos=videos, bad=str(bad))


def reference_views(cfg_path, video):
    """Pipeline output of one video with plain MMEngine Compose."""
    from mmengine.config import Config
    from mmengine.dataset import Compose
    cfg = Config.fromfile(cfg_path)
    pipe = Compose(cfg.test_dataloader.dataset.pipeline)
    return pipe(dict(filename=video, start_index=0, modality='RGB'))


def reference_forward(model, video, cfg_path):
    """Normalise the views by hand, run backbone and head, softmax per view
    and average: the multi-view test of the recipe, without the tools."""
    packed = reference_views(cfg_path, video)
    x = packed['inputs'].float()
    assert x.shape[0] == NUM_VIEWS
    mean = torch.tensor(MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        feats = model.backbone((x - mean) / std)
        scores = model.cls_head(feats)
    return feats, scores


# ----------------------------------------------------------------------------
# tools/infer.py
# ----------------------------------------------------------------------------
def test_infer_folder_json_names_scores_and_bad_video(media, capsys):
    infer = load_tool('infer')
    out = media['root'] / 'res.json'
    rc = infer.main([str(media['root'] / 'data' / 'val'), '--config',
                     media['cfg'], '--checkpoint', media['ckpt'], '--topk',
                     '3', '--out', str(out), '--num-workers', '0',
                     '--device', 'cpu'])
    err = capsys.readouterr().err
    assert rc == 0
    res = json.loads(out.read_text())
    # the broken file is reported and skipped, the others are recognised
    assert [f['video'] for f in res['failed']] == [media['bad']]
    assert 'DecordInit' in res['failed'][0]['error']
    assert 'skipped' in err and media['bad'] in err
    assert [r['video'] for r in res['results']] == media['videos']
    classes = media['info']['classes']
    for r in res['results']:
        preds = r['predictions']['label']
        assert len(preds) == 3
        scores = [p['score'] for p in preds]
        assert scores == sorted(scores, reverse=True)
        assert all(p['name'] == classes[p['index']] for p in preds)
        # probabilities = softmax per view averaged over the 6 views
        _, logits = reference_forward(media['model'], r['video'],
                                      media['cfg'])
        prob = logits.softmax(-1).mean(0)
        top = prob.topk(3)
        assert [p['index'] for p in preds] == top.indices.tolist()
        np.testing.assert_allclose(scores, top.values.numpy(), atol=1e-5)
    # a perturbed model is not uniform: the runs carry information
    assert max(r['predictions']['label'][0]['score']
               for r in res['results']) > 0.3


def test_infer_onnxruntime_backend_matches_pytorch(media, tmp_path, capsys):
    """An exported file (tools/deployment/export_onnx.py) through
    tools/infer.py --backend onnxruntime: the same views, normalisation and
    view averaging as the PyTorch model, so the same probabilities."""
    pytest.importorskip('onnxruntime')
    export = importlib.util.spec_from_file_location(
        'tool_export_onnx', osp.join(ROOT, 'tools', 'deployment',
                                     'export_onnx.py'))
    tool = importlib.util.module_from_spec(export)
    export.loader.exec_module(tool)
    onnx_path = str(tmp_path / 'tiny.onnx')
    assert tool.main([media['cfg'], media['ckpt'], '--out', onnx_path]) == 0
    infer = load_tool('infer')
    out = tmp_path / 'ort.json'
    rc = infer.main([media['videos'][0], '--config', media['cfg'],
                     '--checkpoint', onnx_path, '--backend', 'onnxruntime',
                     '--topk', '4', '--out', str(out)])
    assert rc == 0
    assert 'onnxruntime' in capsys.readouterr().err
    preds = json.loads(out.read_text())['results'][0]['predictions']['label']
    _, logits = reference_forward(media['model'], media['videos'][0],
                                  media['cfg'])
    prob = logits.softmax(-1).mean(0)  # softmax per view, 6 views averaged
    top = prob.topk(4)
    assert [p['index'] for p in preds] == top.indices.tolist()
    np.testing.assert_allclose([p['score'] for p in preds],
                               top.values.numpy(), atol=1e-5)
    # a PyTorch checkpoint given to the onnxruntime backend: a clear error
    rc = infer.main([media['videos'][0], '--config', media['cfg'],
                     '--checkpoint', media['ckpt'], '--backend',
                     'onnxruntime'])
    assert rc == 2
    assert 'onnxruntime cannot load' in capsys.readouterr().err


def test_mmaction2_inferencer_runs_our_config(media):
    """MMAction2's own inferencer (mmaction.apis.inferencers) runs a config
    and checkpoint of the plugin; it tests one view (one clip, centre crop),
    so it gives the probabilities of that view."""
    from mmengine.config import Config
    from mmengine.dataset import Compose
    from mmaction.apis.inferencers import MMAction2Inferencer
    from cast_mmaction.inference import single_view
    inferencer = MMAction2Inferencer(rec=media['cfg'],
                                     rec_weights=media['ckpt'], device='cpu')
    video = media['videos'][1]
    res = inferencer(video, return_vis=False)
    scores = np.asarray(res['predictions'][0]['rec_scores'][0])
    cfg = Config.fromfile(media['cfg'])
    pipe = Compose(single_view(cfg.test_dataloader.dataset.pipeline))
    x = pipe(dict(filename=video, start_index=0, modality='RGB'))['inputs']
    assert x.shape[0] == 1  # one view
    mean = torch.tensor(MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        model = media['model']
        logits = model.cls_head(model.backbone((x.float() - mean) / std))
    prob = logits.softmax(-1)[0].numpy()
    np.testing.assert_allclose(scores, prob, atol=1e-5)
    assert res['predictions'][0]['rec_labels'][0] == [int(prob.argmax())]


def test_infer_list_file_csv_with_workers(media, capsys):
    infer = load_tool('infer')
    lst = media['root'] / 'some.txt'
    rel = [osp.relpath(v, media['root']) for v in media['videos'][:2]]
    lst.write_text(f'{rel[0]} 0\n\n# comment\n{rel[1]} 3\n'
                   f'{osp.relpath(media["bad"], media["root"])} 1\n')
    out = media['root'] / 'res.csv'
    rc = infer.main([str(lst), '--config', media['cfg'], '--checkpoint',
                     media['ckpt'], '--topk', '2', '--out', str(out),
                     '--num-workers', '1', '--batch-size', '2', '--quiet'])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    good = [r for r in rows if not r['error']]
    bad = [r for r in rows if r['error']]
    assert [r['video'] for r in good] == [media['videos'][0]] * 2 + \
        [media['videos'][1]] * 2
    assert [int(r['rank']) for r in good] == [1, 2, 1, 2]
    assert all(r['name'] == media['info']['classes'][int(r['index'])]
               for r in good)
    assert len(bad) == 1 and bad[0]['video'] == media['bad']
    err = capsys.readouterr().err
    assert '2 of 3 video(s) recognised' in err
    # agreement with the list's labels (0 and 3) is reported
    hits1 = sum(int(r['index']) == lab for r, lab in
                zip(good[::2], (0, 3)))
    hits2 = sum(int(r['index']) == lab for r, lab in
                zip(good, (0, 0, 3, 3)))
    assert f'top1 {50 * hits1:.1f}%, top2 {50 * hits2:.1f}%' in err


def test_infer_list_paths_with_spaces_missing_files_and_partial_labels(
        media, tmp_path, capsys):
    """The label is the integer at the end of the line (a path may hold
    spaces); a listed file that does not exist is reported as not found;
    labels on some lines only are refused, naming the first unlabelled
    line."""
    import shutil
    from cast_mmaction import inference as inf
    shutil.copy(media['videos'][0], tmp_path / 'my clip.mp4')
    lst = tmp_path / 'spaces.txt'
    lst.write_text('my clip.mp4 0\ngone clip.mp4 1\n')
    items = inf.read_video_list(str(lst))
    assert [(i['video'], i['label']) for i in items] == [
        (str(tmp_path / 'my clip.mp4'), 0),
        (str(tmp_path / 'gone clip.mp4'), 1)]
    assert [i['label'] for i in inf.read_video_list(
        str(_write(tmp_path / 'ek.csv', 'P01 a.mp4,3,7\n')))] == [[3, 7]]
    infer = load_tool('infer')
    out = tmp_path / 'res.json'
    rc = infer.main([str(lst), '--config', media['cfg'], '--checkpoint',
                     media['ckpt'], '--num-workers', '0', '--quiet',
                     '--out', str(out)])
    err = capsys.readouterr().err
    assert rc == 0
    res = json.loads(out.read_text())
    assert [r['video'] for r in res['results']] == [items[0]['video']]
    assert res['failed'] == [dict(video=items[1]['video'],
                                  error='file not found')]
    assert f'skipped {items[1]["video"]}: file not found' in err
    assert '1 skipped (1 not found)' in err
    partial = _write(tmp_path / 'partial.txt',
                     '# header\nmy clip.mp4 0\n\nmy clip.mp4\n')
    rc = infer.main([str(partial), '--config', media['cfg'],
                     '--checkpoint', media['ckpt']])
    err = capsys.readouterr().err
    assert rc == 2
    assert f'error: list file {partial}, line 4: no label' in err
    assert 'line 2' in err


def _write(path, text):
    path.write_text(text)
    return path


def test_infer_single_video_label_map_override_and_mismatch(media, tmp_path,
                                                            capsys):
    infer = load_tool('infer')
    names = tmp_path / 'names.txt'
    names.write_text('alpha\nbeta\ngamma\ndelta\n')
    rc = infer.main([media['videos'][0], '--config', media['cfg'],
                     '--checkpoint', media['ckpt'], '--label-map',
                     str(names), '--topk', '4', '--num-workers', '0'])
    out = capsys.readouterr().out
    assert rc == 0
    assert all(n in out for n in ('alpha', 'beta', 'gamma', 'delta'))
    three = tmp_path / 'three.txt'
    three.write_text('a\nb\nc\n')
    rc = infer.main([media['videos'][0], '--config', media['cfg'],
                     '--checkpoint', media['ckpt'], '--label-map',
                     str(three), '--num-workers', '0'])
    err = capsys.readouterr().err
    assert rc == 2
    assert '3 class names' in err and '4 classes' in err
    assert f'the label map ({three})' in err
    # the same file as the config's label_map: an error too (it warned and
    # went on with indices, as for a missing file); a missing one warns
    rc = infer.main([media['videos'][0], '--config', media['cfg'],
                     '--checkpoint', media['ckpt'], '--num-workers', '0',
                     '--cfg-options', f'label_map={three}'])
    err = capsys.readouterr().err
    assert rc == 2 and '3 class names' in err and '4 classes' in err
    with pytest.warns(UserWarning, match='showing indices.*not found'):
        rc = infer.main([media['videos'][0], '--config', media['cfg'],
                         '--checkpoint', media['ckpt'], '--num-workers', '0',
                         '--cfg-options', f'label_map={tmp_path / "no.txt"}'])
    assert rc == 0


def test_infer_rejects_checkpoint_of_another_model(media, tmp_path, capsys):
    infer = load_tool('infer')
    sd = load_checkpoint(media['ckpt'])['state_dict']
    partial = {k: v for k, v in sd.items() if not k.startswith('cls_head')}
    torch.save({'state_dict': partial, 'meta': {}}, tmp_path / 'p.pth')
    rc = infer.main([media['videos'][0], '--config', media['cfg'],
                     '--checkpoint', str(tmp_path / 'p.pth'),
                     '--num-workers', '0'])
    err = capsys.readouterr().err
    assert rc == 2 and 'missing keys' in err and 'cls_head' in err
    torch.save({'module': sd}, tmp_path / 'ds.pth')
    rc = infer.main([media['videos'][0], '--config', media['cfg'],
                     '--checkpoint', str(tmp_path / 'ds.pth'),
                     '--num-workers', '0'])
    assert rc == 2 and 'convert_checkpoint.py' in capsys.readouterr().err


def test_infer_and_features_refuse_a_file_that_is_no_checkpoint(
        media, tmp_path, capsys):
    """A text file, or an ONNX file without --backend onnxruntime: the
    tools' one-line error (an ONNX file gets the --backend hint)."""
    (tmp_path / 'bad.pth').write_text('hello\n')
    (tmp_path / 'model.onnx').write_bytes(b'\x08\x07\x12\x07pytorch')
    for tool, extra in (('infer', []),
                        ('extract_features',
                         ['--out-dir', str(tmp_path / 'f')])):
        main = load_tool(tool).main
        for name in ('bad.pth', 'model.onnx'):
            rc = main([media['videos'][0], '--config', media['cfg'],
                       '--checkpoint', str(tmp_path / name),
                       '--num-workers', '0'] + extra)
            err = capsys.readouterr().err
            assert rc == 2, (tool, name)
            assert f'error: checkpoint {tmp_path / name}: not a PyTorch ' \
                'checkpoint' in err
            assert ('--backend onnxruntime' in err) == (name == 'model.onnx')


def test_infer_nothing_decodable_exits_1(media, capsys):
    infer = load_tool('infer')
    rc = infer.main([media['bad'], '--config', media['cfg'], '--checkpoint',
                     media['ckpt'], '--num-workers', '0'])
    assert rc == 1
    assert '0 of 1 video(s)' in capsys.readouterr().err


def write_epic_classes(path, names):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['id', 'key', 'instances', 'category'])
        for i, n in enumerate(names):
            w.writerow([i, n, f"['{n}']", 'misc'])


def test_infer_epic_verb_noun_action(media, tmp_path, capsys):
    verbs = ['take', 'put', 'wash', 'open', 'close']
    nouns = ['cup', 'plate', 'tap', 'door', 'knife', 'pan', 'lid']
    write_epic_classes(tmp_path / 'EPIC_100_verb_classes.csv', verbs)
    write_epic_classes(tmp_path / 'EPIC_100_noun_classes.csv', nouns)
    cfg = write_config(str(tmp_path / 'ek.py'), epic=True, label_map=dict(
        verb=str(tmp_path / 'EPIC_100_verb_classes.csv'),
        noun=str(tmp_path / 'EPIC_100_noun_classes.csv')))
    ckpt = str(tmp_path / 'ek.pth')
    model = make_checkpoint(cfg, ckpt, seed=1)
    model.eval()
    infer = load_tool('infer')
    out = tmp_path / 'ek.json'
    rc = infer.main([media['videos'][0], '--config', cfg, '--checkpoint',
                     ckpt, '--topk', '3', '--out', str(out),
                     '--num-workers', '0'])
    printed = capsys.readouterr().out
    assert rc == 0
    preds = json.loads(out.read_text())['results'][0]['predictions']
    assert set(preds) == {'verb', 'noun', 'action'}
    assert all(p['name'] == verbs[p['index']] for p in preds['verb'])
    assert all(p['name'] == nouns[p['index']] for p in preds['noun'])
    # the whole video is the segment; views averaged by the head
    packed = reference_views(cfg, media['videos'][0])
    x = packed['inputs'].float()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        v, n = model.cls_head(model.backbone((x - mean) / std))
    pv, pn = v.softmax(-1).mean(0), n.softmax(-1).mean(0)
    assert preds['verb'][0]['index'] == int(pv.argmax())
    assert preds['noun'][0]['index'] == int(pn.argmax())
    np.testing.assert_allclose(preds['verb'][0]['score'], pv.max(),
                               atol=1e-5)
    # action = best (verb, noun) pair by p(verb) p(noun)
    joint = pv[:, None] * pn[None, :]
    best = divmod(int(joint.argmax()), len(nouns))
    act = preds['action'][0]
    assert (act['verb'], act['noun']) == best
    assert act['name'] == f'{verbs[best[0]]} {nouns[best[1]]}'
    np.testing.assert_allclose(act['score'], joint.max(), atol=1e-6)
    assert 'action' in printed and act['name'] in printed
    # a list "path verb noun" reports verb / noun / action agreement
    lst = tmp_path / 'ek_list.txt'
    lst.write_text(f'{media["videos"][0]} {best[0]} {(best[1] + 1) % 7}\n')
    rc = infer.main([str(lst), '--config', cfg, '--checkpoint', ckpt,
                     '--num-workers', '0', '--quiet'])
    assert rc == 0
    assert 'verb 100.0%, noun 0.0%, action 0.0%' in capsys.readouterr().err


def write_av_clip(path, num_frames=16, size=64, fps=8, tone=440.0,
                  seed=0):
    """An mp4 with an H.264/MPEG-4 video track and an AAC sound track (a
    tone), written with PyAV."""
    import av
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
    with av.open(str(path), 'w') as c:
        vs = c.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = size, size, 'yuv420p'
        aud = c.add_stream('aac', rate=16000)
        aud.layout = 'mono'
        for i in range(num_frames):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            fr = av.VideoFrame.from_ndarray(img, format='rgb24')
            for p in vs.encode(fr.reformat(format='yuv420p')):
                c.mux(p)
        t = np.arange(int(16000 * num_frames / fps)) / 16000
        wave = (0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32)
        af = av.AudioFrame.from_ndarray(wave[None], format='flt',
                                        layout='mono')
        af.sample_rate = 16000
        for p in list(aud.encode(af)) + list(aud.encode(None)):
            c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    return str(path)


AV_CONFIG = """
custom_imports = dict(imports=['cast_mmaction'], allow_failed_imports=False)
default_scope = 'mmaction'
model = dict(
    type='AudioVisualRecognizer',
    backbone=dict(
        type='CASTBackbone', num_frames=8, img_size=32,
        experts=dict(
            clip=dict(type='CLIPViTExpert', embed_dim=32, depth=1, num_heads=2,
                      patch_size=16, frame_start=1, frame_step=2),
            audio=dict(type='ASTExpert', embed_dim=32, depth=1, num_heads=2,
                       input_fdim=128, input_tdim=100, fstride=10,
                       tstride=10)),
        links=[dict(experts=('clip', 'audio'),
                    windows=dict(clip='global', audio='global'))]),
    cls_head=dict(type='CASTHead', num_classes=3, in_channels=32,
                  num_streams=2, average_clips='prob'),
    data_preprocessor=dict(type='AudioVisualDataPreprocessor',
                           video=dict(mean=%r, std=%r)))
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=8, frame_interval=1, num_clips=2,
         test_mode=True),
    dict(type='DecordDecode'),
    dict(type='LoadAudioFbank', sample_rate=16000, num_mel_bins=128,
         target_length=100, align='clip'),
    dict(type='Resize', scale=(-1, 32)),
    dict(type='ThreeCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs')]
test_dataloader = dict(batch_size=1, dataset=dict(
    type='AudioVisualDataset', ann_file='unused.txt',
    pipeline=test_pipeline))
label_map = %r
"""


def test_infer_and_features_audio_visual(media, tmp_path):
    from mmaction.registry import TRANSFORMS
    if TRANSFORMS.get('LoadAudioFbank') is None:
        pytest.skip('the audio transforms are not part of this checkout')
    names = tmp_path / 'vggsound.csv'
    names.write_text('a1,0,dog barking,train\na2,0,rain,train\n'
                     'a3,0,church bell,test\n')
    cfg = tmp_path / 'av.py'
    cfg.write_text(AV_CONFIG % (MEAN, STD, str(names)))
    ckpt = str(tmp_path / 'av.pth')
    make_checkpoint(str(cfg), ckpt, seed=4)
    videos = tmp_path / 'videos'
    write_av_clip(videos / 'a.mp4', tone=300.0, seed=1)
    write_av_clip(videos / 'b.mp4', tone=1500.0, seed=2)
    (videos / 'c.mp4').write_bytes(b'broken')
    infer = load_tool('infer')
    out = tmp_path / 'av.json'
    rc = infer.main([str(videos), '--config', str(cfg), '--checkpoint', ckpt,
                     '--topk', '3', '--out', str(out), '--num-workers', '0'])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [osp.basename(r['video']) for r in res['results']] == ['a.mp4',
                                                                  'b.mp4']
    assert [osp.basename(f['video']) for f in res['failed']] == ['c.mp4']
    classes = ['church bell', 'dog barking', 'rain']  # sorted VGGSound labels
    for r in res['results']:
        preds = r['predictions']['label']
        assert sorted(p['name'] for p in preds) == classes
        assert sum(p['score'] for p in preds) == pytest.approx(1, abs=1e-5)
    ext = load_tool('extract_features')
    rc = ext.main([str(videos), '--config', str(cfg), '--checkpoint', ckpt,
                   '--out-dir', str(tmp_path / 'f'), '--num-workers', '0'])
    assert rc == 0
    index = json.loads((tmp_path / 'f' / 'index.json').read_text())
    assert index['streams']['audio']['expert'] == 'ASTExpert'
    audio = np.load(tmp_path / 'f' / 'audio.npy')
    spatial = np.load(tmp_path / 'f' / 'spatial.npy')
    assert audio.shape == (2, 32) and spatial.shape == (2, 32)
    # different sounds give different audio features
    assert np.abs(audio[0] - audio[1]).max() > 1e-3


def test_infer_and_features_frame_vit(media, tmp_path):
    """The frame-wise ViT family (MSCA): logits averaged over views by the
    head (average_clips='score'), per-frame features averaged."""
    from mmengine.config import Config
    from cast_mmaction.models.backbones.msca_vit import \
        frame_vit_recognizer_cfg
    model = frame_vit_recognizer_cfg(num_classes=4, embed_dim=32, depth=2,
                                     num_heads=4, mlp_ratio=2.0,
                                     patch_size=16, img_size=32, shift_div=4)
    base = Config.fromfile(media['cfg'])
    cfg = Config(dict(custom_imports=base.custom_imports,
                      default_scope='mmaction', model=model,
                      test_dataloader=base.test_dataloader.to_dict(),
                      label_map=media['info']['label_map']))
    path = str(tmp_path / 'msca.py')
    cfg.dump(path)
    ckpt = str(tmp_path / 'msca.pth')
    net = make_checkpoint(path, ckpt, seed=5)
    net.eval()
    infer = load_tool('infer')
    out = tmp_path / 'm.json'
    rc = infer.main([media['videos'][0], '--config', path, '--checkpoint',
                     ckpt, '--topk', '4', '--out', str(out),
                     '--num-workers', '0'])
    assert rc == 0
    preds = json.loads(out.read_text())['results'][0]['predictions']['label']
    packed = reference_views(path, media['videos'][0])
    x = (packed['inputs'].float() - 127.5) / 127.5  # the config's mean/std
    with torch.no_grad():
        frames = net.backbone(x)  # (views, T, D)
        logits = net.cls_head(frames)  # (views, C)
    prob = logits.mean(0).softmax(-1)  # logits averaged, then softmax
    np.testing.assert_allclose([p['score'] for p in preds],
                               prob.sort(descending=True).values.numpy(),
                               atol=1e-5)
    ext = load_tool('extract_features')
    rc = ext.main([media['videos'][0], '--config', path, '--checkpoint',
                   ckpt, '--out-dir', str(tmp_path / 'f'),
                   '--num-workers', '0'])
    assert rc == 0
    streams = json.loads((tmp_path / 'f' / 'index.json').read_text())[
        'streams']
    assert streams['backbone']['expert'] == 'MSCAViT'
    feat = np.load(tmp_path / 'f' / 'backbone.npy')
    np.testing.assert_allclose(feat[0], frames.mean((0, 1)), atol=1e-5)


# ----------------------------------------------------------------------------
# tools/analysis_tools/extract_features.py
# ----------------------------------------------------------------------------
def test_extract_features_npy_matches_backbone(media, capsys):
    ext = load_tool('extract_features')
    out = media['root'] / 'feats'
    rc = ext.main([str(media['root'] / 'data' / 'val'), '--config',
                   media['cfg'], '--checkpoint', media['ckpt'], '--out-dir',
                   str(out), '--num-workers', '0', '--batch-size', '2'])
    assert rc == 0
    index = json.loads((out / 'index.json').read_text())
    assert index['videos'] == media['videos']
    assert [f['video'] for f in index['failed']] == [media['bad']]
    assert set(index['streams']) == {'spatial', 'temporal'}
    assert index['streams']['spatial']['expert'] == 'CLIPViTExpert'
    rows = list(csv.DictReader((out / 'index.csv').open()))
    assert [r['video'] for r in rows] == media['videos']
    spatial = np.load(out / 'spatial.npy')
    temporal = np.load(out / 'temporal.npy')
    n = len(media['videos'])
    assert spatial.shape == (n, 32) and temporal.shape == (n, 32)
    assert spatial.dtype == np.float32
    for i in (0, n - 1):
        feats, _ = reference_forward(media['model'], media['videos'][i],
                                     media['cfg'])
        np.testing.assert_allclose(spatial[i], feats[0].mean(0), atol=1e-5)
        np.testing.assert_allclose(temporal[i], feats[1].mean(0), atol=1e-5)
    assert not np.allclose(spatial[0], spatial[1])
    assert 'skipped' in capsys.readouterr().err


def test_extract_features_pt_keep_views_with_labels(media, tmp_path):
    ext = load_tool('extract_features')
    lst = tmp_path / 'l.txt'
    lst.write_text(''.join(f'{v} {k}\n' for k, v in
                           enumerate(media['videos'][:3])))
    out = tmp_path / 'pt'
    rc = ext.main([str(lst), '--config', media['cfg'], '--checkpoint',
                   media['ckpt'], '--out-dir', str(out), '--format', 'pt',
                   '--keep-views', '--num-workers', '0'])
    assert rc == 0
    data = load_checkpoint(out / 'features.pt')
    assert data['labels'] == [0, 1, 2]
    assert data['videos'] == media['videos'][:3]
    assert data['features']['spatial'].shape == (3, NUM_VIEWS, 32)
    feats, _ = reference_forward(media['model'], media['videos'][2],
                                 media['cfg'])
    torch.testing.assert_close(data['features']['temporal'][2], feats[1],
                               atol=1e-5, rtol=1e-4)
    assert not (out / 'spatial.npy').exists()


# ----------------------------------------------------------------------------
# inference helpers
# ----------------------------------------------------------------------------
def test_single_view_pipeline_and_inputs(media, tmp_path):
    from cast_mmaction import inference as inf
    cfg = inf.load_config(media['cfg'])
    pipe = inf.build_test_pipeline(cfg, one_view=True)
    packed = inf.run_pipeline(pipe, inf.make_sample(media['videos'][0]))
    assert tuple(packed['inputs'].shape) == (1, 3, 8, 32, 32)
    with pytest.raises(inf.PipelineError, match='DecordInit'):
        inf.run_pipeline(pipe, inf.make_sample(media['bad']))
    sub = tmp_path / 'a' / 'b'
    sub.mkdir(parents=True)
    (sub / 'x.MP4').write_bytes(b'')
    (sub / 'notes.txt').write_text('')
    assert [i['video'] for i in inf.collect_inputs(str(tmp_path))] == \
        [str(sub / 'x.MP4')]
    (tmp_path / 'empty').mkdir()
    with pytest.raises(inf.InferenceError, match='no video files'):
        inf.collect_inputs(str(tmp_path / 'empty'))
    with pytest.raises(inf.InferenceError, match='does not exist'):
        inf.collect_inputs(str(tmp_path / 'nope.mp4'))


# ----------------------------------------------------------------------------
# label maps
# ----------------------------------------------------------------------------
def test_label_maps_formats(tmp_path):
    from cast_mmaction.datasets.label_maps import load_label_map
    ssv2 = tmp_path / 'something-something-v2-labels.json'
    ssv2.write_text(json.dumps({'Pushing something': '1',
                                'Approaching something': '0',
                                'Tearing something': '2'}))
    assert load_label_map(ssv2) == ['Approaching something',
                                    'Pushing something', 'Tearing something']
    write_epic_classes(tmp_path / 'verbs.csv', ['take', 'put', 'open'])
    assert load_label_map(tmp_path / 'verbs.csv') == ['take', 'put', 'open']
    vgg = tmp_path / 'vggsound.csv'
    vgg.write_text('-abc,30,dog barking,train\nxyz,0,"cattle, bovinae '
                   'cowbell",test\nq1,10,dog barking,test\n')
    assert load_label_map(vgg) == ['cattle, bovinae cowbell', 'dog barking']
    # the same rows, the quoted label with a comma first (the format was
    # told from the first line split on commas: 5 fields, 'unknown CSV')
    vgg.write_text('xyz,0,"cattle, bovinae cowbell",test\n-abc,30,dog '
                   'barking,train\n')
    assert load_label_map(vgg) == ['cattle, bovinae cowbell', 'dog barking']
    idx = tmp_path / 'classes.csv'
    idx.write_text('index,mid,display_name\n1,/m/b,bird\n0,/m/a,airplane\n')
    assert load_label_map(idx) == ['airplane', 'bird']
    txt = tmp_path / 'label_map_k400.txt'
    txt.write_text('abseiling\nair drumming\n\n')
    assert load_label_map(txt) == ['abseiling', 'air drumming']
    sounds = tmp_path / 'EPIC_Sounds_train.csv'
    sounds.write_text('annotation_id,participant_id,video_id,start_timestamp,'
                      'stop_timestamp,start_sample,stop_sample,description,'
                      'class,class_id\n'
                      'P01_01_0,P01,P01_01,00:00:01.0,00:00:02.0,1,2,x,'
                      'water,1\n'
                      'P01_01_1,P01,P01_01,00:00:03.0,00:00:04.0,3,4,y,'
                      'scrape,0\n'
                      'P01_01_2,P01,P01_01,00:00:05.0,00:00:06.0,5,6,z,'
                      'water,1\n')
    assert load_label_map(sounds) == ['scrape', 'water']
    numbered = tmp_path / 'numbered.txt'
    numbered.write_text('1 walk\n0 run\n')
    assert load_label_map(numbered) == ['run', 'walk']
    ucf = tmp_path / 'classInd.txt'
    ucf.write_text('1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n')
    assert load_label_map(ucf) == ['ApplyEyeMakeup', 'ApplyLipstick',
                                   'Archery']


@pytest.mark.parametrize('name,text,match', [
    ('gap.json', '{"a": "0", "b": "2"}', 'missing'),
    ('gap.txt', '0 red\n2 blue\n3 green\n', 'index 1 is missing'),
    ('gap1.txt', '1 red\n2 blue\n4 green\n', 'index 3 is missing'),
    ('rep.txt', '0 red\n1 blue\n1 green\n', 'line 3: index 1 repeats'),
    ('dup.txt', 'a\nb\na\n', 'appears twice'),
    ('blank.txt', 'a\n\nb\n', 'blank line'),
    ('bad.csv', 'x,y\n1,2\n', 'unknown CSV'),
    ('vgg.csv', 'a,1,dog,train\nb,2,cat\n', '4 fields'),
])
def test_label_map_errors_name_the_file(tmp_path, name, text, match):
    from cast_mmaction.datasets.label_maps import (LabelMapError,
                                                   load_label_map)
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LabelMapError, match=match) as e:
        load_label_map(path)
    assert name in str(e.value)


def test_label_map_specs(tmp_path):
    from cast_mmaction.datasets.label_maps import (LabelMapError,
                                                   find_mmaction_label_map,
                                                   load_label_map,
                                                   load_label_maps,
                                                   parse_label_map_arg)
    assert parse_label_map_arg(['a.txt']) == 'a.txt'
    assert parse_label_map_arg(['verb=v.csv', 'noun=n.csv']) == {
        'verb': 'v.csv', 'noun': 'n.csv'}
    with pytest.raises(LabelMapError):
        parse_label_map_arg(['a.txt', 'b.txt'])
    (tmp_path / 'n.txt').write_text('x\ny\n')
    assert load_label_maps(str(tmp_path / 'n.txt')) == {'label': ['x', 'y']}
    assert load_label_maps(None) == {}
    # MMAction2's own label maps: used when the installation ships them,
    # otherwise a clear message (the 1.2.0 wheel ships none)
    found = find_mmaction_label_map('label_map_k400.txt')
    if found is None:
        with pytest.raises(LabelMapError, match='ships no'):
            load_label_map('mmaction:label_map_k400.txt')
    else:
        assert len(load_label_map('mmaction:label_map_k400.txt')) == 400


def test_video_model_tools_share_their_arguments():
    """tools/infer.py and tools/analysis_tools/extract_features.py take the
    input, model and loading options from one place (cast_mmaction.cli)."""
    argv = ['clips.txt', '--config', 'c.py', '--checkpoint', 'k.pth',
            '--data-root', 'videos', '--device', 'cpu', '--batch-size', '3',
            '--num-workers', '0', '--one-view', '--trust-checkpoint',
            '--cfg-options', 'model.cls_head.num_classes=7']
    shared = ('input', 'config', 'checkpoint', 'data_root', 'device',
              'batch_size', 'num_workers', 'one_view', 'trust_checkpoint',
              'cfg_options')
    a = vars(load_tool('infer').parse_args(argv))
    b = vars(load_tool('extract_features').parse_args(argv + ['--out-dir',
                                                              'feats']))
    assert {k: a[k] for k in shared} == {k: b[k] for k in shared}
    assert a['batch_size'] == 3 and a['one_view'] and a['trust_checkpoint']
    assert a['cfg_options'] == {'model.cls_head.num_classes': 7}
    with pytest.raises(SystemExit):  # --checkpoint is required by both
        load_tool('extract_features').parse_args(['x.mp4', '--config', 'c',
                                                  '--out-dir', 'o'])


def test_infer_and_features_stdout_quiet_unwritable_outputs_and_extensionless(
        media, tmp_path, capsys):
    """stdout holds the results only (MMEngine's log lines, e.g. the
    checkpoint loader's and DecordInit's FileClient warnings, went there);
    --quiet removes the progress bar of both tools (infer showed it, and
    extract_features had no --quiet); an --out / --out-dir that cannot be
    written stops before any video runs (a traceback after all of them);
    a file without an extension is refused (the readers look for
    NAME.mp4)."""
    import shutil
    infer, feats = load_tool('infer'), load_tool('extract_features')
    lst = media['root'] / 'two.txt'
    lst.write_text(''.join(f'{osp.relpath(v, media["root"])} 0\n'
                           for v in media['videos'][:2]))
    base = ['--config', media['cfg'], '--checkpoint', media['ckpt'],
            '--num-workers', '0']
    assert infer.main([str(lst), *base]) == 0
    out, err = capsys.readouterr()
    assert [ln for ln in out.splitlines() if not ln.startswith('  ')] == \
        media['videos'][:2], out
    assert '2/2' in err  # the bar
    assert infer.main([str(lst), *base, '--quiet']) == 0
    out, err = capsys.readouterr()
    assert out == '' and '2/2' not in err and '2 of 2 video(s)' in err
    assert feats.main([str(lst), *base, '--out-dir', str(tmp_path / 'f'),
                       '--quiet']) == 0
    out, err = capsys.readouterr()
    assert '2/2' not in err and (tmp_path / 'f' / 'index.json').is_file()
    blocker = tmp_path / 'blocker'
    blocker.write_text('')
    for tool, flag, dst in ((infer, '--out', blocker / 'r.json'),
                            (feats, '--out-dir', blocker / 'f')):
        assert tool.main([str(lst), *base, flag, str(dst)]) == 2
        out, err = capsys.readouterr()
        assert err.startswith(f'error: {flag} {dst}: cannot create the '
                              f'folder') and 'video(s)' not in err, err
    noext = tmp_path / 'clip'
    shutil.copy(media['videos'][0], noext)
    assert infer.main([str(noext), *base]) == 2
    assert f'error: {noext} has no file extension' in capsys.readouterr().err


def test_infer_stdout_is_results_only_in_a_fresh_process(media):
    """In a fresh process (MMEngine's logger made there, on stdout): the
    checkpoint loader's 'Loads checkpoint ...' and DecordInit's FileClient
    warnings are not on stdout."""
    import subprocess
    import sys
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'infer.py'),
         media['videos'][0], '--config', media['cfg'], '--checkpoint',
         media['ckpt'], '--num-workers', '0'],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == media['videos'][0] and len(lines) == 2 and \
        lines[1].lstrip().startswith('label:'), proc.stdout
