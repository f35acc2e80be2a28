"""Audio-visual CAVA / CA2ST: the fbank, audio from video files, fusion
windows, time encodings, checkpoints, the reference dumps, datasets and an
end-to-end train + test through the MMEngine Runner."""
import copy
import math
import os
import os.path as osp
import wave

import numpy as np
import pytest
import torch

from cast_mmaction.datasets.synthetic_av import (render_frames,
                                                 write_av_video,
                                                 write_synthetic_av_dataset)
from cast_mmaction.datasets.transforms.audio import (AST_MEAN, AST_STD,
                                                     AudioDecodeError,
                                                     LoadAudioFbank,
                                                     PackAudioVisualInputs,
                                                     SpecAugment, kaldi_fbank,
                                                     read_audio)
from cast_mmaction.models.presets_av import (ca2st_backbone_cfg,
                                             ca2st_recognizer_cfg,
                                             cava_backbone_cfg,
                                             cava_recognizer_cfg)
from cast_mmaction.utils import build_model
from _metric_check import dump_evaluator, top1_of_dump
from conftest import FIXTURES, ROOT, shared_fixture

EPS32 = float(np.finfo(np.float32).eps)
SILENCE = (math.log(EPS32) - AST_MEAN) / (2 * AST_STD)


# ---------------------------------------------------------------------------
# Kaldi fbank
# ---------------------------------------------------------------------------
def numpy_fbank(x, sr, n_mels=128, low=20.0):
    """Independent reference: Kaldi fbank frame by frame in numpy."""
    x = np.asarray(x, np.float64)
    win, shift = int(sr * 0.025), int(sr * 0.010)
    nfft = 1
    while nfft < win:
        nfft *= 2

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    mlo, mhi = mel(low), mel(sr / 2)
    step = (mhi - mlo) / (n_mels + 1)
    banks = np.zeros((n_mels, nfft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = (mlo + m * step, mlo + (m + 1) * step,
                               mlo + (m + 2) * step)
        for k in range(nfft // 2):  # the Nyquist bin keeps weight 0
            mk = mel(k * sr / nfft)
            if left < mk < right:
                banks[m, k] = ((mk - left) / (centre - left) if mk <= centre
                               else (right - mk) / (right - centre))
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / (win - 1))
    n = 1 + (len(x) - win) // shift
    out = np.empty((n, n_mels))
    for i in range(n):
        fr = x[i * shift:i * shift + win].copy()
        fr -= fr.mean()
        fr = np.concatenate([[fr[0] - 0.97 * fr[0]], fr[1:] - 0.97 * fr[:-1]])
        power = np.abs(np.fft.rfft(fr * hann, nfft))**2
        out[i] = np.log(np.maximum(banks @ power, EPS32))
    return out


@pytest.mark.parametrize('sr', [16000, 44100])
def test_fbank_matches_numpy_reference(sr):
    rng = np.random.default_rng(sr)
    t = np.arange(int(0.3 * sr)) / sr
    x = 0.3 * rng.standard_normal(t.size) + 0.5 * np.sin(2 * np.pi * 700 * t)
    ours = kaldi_fbank(torch.tensor(x, dtype=torch.float32), sr).numpy()
    ref = numpy_fbank(x.astype(np.float32), sr)
    assert ours.shape == ref.shape == (1 + (t.size - int(sr * .025)) //
                                       int(sr * .01), 128)
    assert np.abs(ours - ref).max() < 2e-3


def test_fbank_matches_torchaudio():
    kaldi = pytest.importorskip('torchaudio.compliance.kaldi')
    x = torch.randn(1, 8000) * 0.3
    ref = kaldi.fbank(x, htk_compat=True, sample_frequency=16000,
                      use_energy=False, window_type='hanning',
                      num_mel_bins=128, dither=0.0, frame_shift=10)
    assert torch.allclose(kaldi_fbank(x[0], 16000), ref, atol=1e-3)


def test_fbank_known_values():
    sr = 16000
    assert torch.allclose(kaldi_fbank(torch.zeros(sr), sr),
                          torch.full((98, 128), math.log(EPS32)))
    t = torch.arange(sr) / sr
    fb = kaldi_fbank(torch.sin(2 * math.pi * 1000 * t), sr)
    # 1 kHz sits in the band whose centre mel is nearest mel(1000)
    mel = lambda f: 1127 * math.log(1 + f / 700)  # noqa: E731
    step = (mel(8000) - mel(20)) / 129
    expect = round((mel(1000) - mel(20)) / step) - 1
    assert int(fb[50].argmax()) == expect
    assert kaldi_fbank(torch.zeros(399), sr).shape == (0, 128)


# ---------------------------------------------------------------------------
# media written by the tests
# ---------------------------------------------------------------------------
SR, FPS, SECONDS = 16000, 8, 4


def _tone_after_two_seconds(sr=SR):
    t = np.arange(SECONDS * sr) / sr
    return (0.5 * np.sin(2 * np.pi * 1000 * t) * (t >= 2.0)).astype(
        np.float32)


@pytest.fixture(scope='module')
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp('av_media')
    rng = np.random.default_rng(0)
    frames = render_frames(rng, 'red', SECONDS * FPS, 32)
    files = dict(tone=str(d / 'tone.mp4'), mute=str(d / 'mute.mp4'),
                 bad=str(d / 'bad.mp4'), cut=str(d / 'cut.mp4'),
                 wav8k=str(d / 'tone8k.wav'), npy=str(d / 'tone8k.npy'),
                 fbank=str(d / 'fbank.npy'))
    write_av_video(files['tone'], frames, FPS, _tone_after_two_seconds(), SR)
    write_av_video(files['mute'], frames, FPS, None)
    with open(files['bad'], 'wb') as f:
        f.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with open(files['tone'], 'rb') as f:
        data = f.read()
    with open(files['cut'], 'wb') as f:
        f.write(data[:len(data) // 3])
    tone8k = _tone_after_two_seconds(8000)
    with wave.open(files['wav8k'], 'wb') as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((tone8k * 32767).astype('<i2').tobytes())
    np.save(files['npy'], tone8k)
    np.save(files['fbank'], np.random.default_rng(1).normal(
        size=(300, 128)).astype(np.float32))
    return files


def _tone_band():
    mel = lambda f: 1127 * math.log(1 + f / 700)  # noqa: E731
    return round((mel(1000) - mel(20)) / ((mel(8000) - mel(20)) / 129)) - 1


def _results(path, frame_starts, clip_len=4, interval=2):
    inds = np.concatenate([s + interval * np.arange(clip_len)
                           for s in frame_starts])
    return dict(filename=path, avg_fps=FPS, total_frames=SECONDS * FPS,
                frame_inds=inds, num_clips=len(frame_starts),
                clip_len=clip_len)


def test_read_audio_from_mp4_and_seek(media):
    whole, off = read_audio(media['tone'], SR)
    assert off == 0.0 and abs(whole.size / SR - SECONDS) < 0.1
    assert np.abs(whole[:int(1.8 * SR)]).max() < 0.1  # silent first 2 s
    assert np.abs(whole[int(2.2 * SR):int(3.8 * SR)]).max() > 0.4
    part, off = read_audio(media['tone'], SR, 2.5, 3.0)
    assert off == pytest.approx(2.5, abs=1 / SR)
    assert part.size == pytest.approx(0.5 * SR, abs=2)
    i = int(round(off * SR))
    assert np.abs(whole[i:i + part.size] - part).max() < 1e-6
    low, _ = read_audio(media['tone'], 8000)  # resampled by the decoder
    assert abs(low.size - whole.size / 2) < 100


def test_audio_window_follows_the_sampled_clip(media):
    # clip 0 covers frames 0..6 (silence), clip 1 frames 22..28 (tone)
    t = LoadAudioFbank(target_length=100)
    out = t(_results(media['tone'], [0, 22]))
    audio, times = out['audio'], out['audio_times']
    assert audio.shape == (2, 100, 128) and audio.dtype == np.float32
    band = _tone_band()
    assert audio[1, :, band].mean() > audio[0, :, band].mean() + 1.0
    # windows are centred on the clips (1.015 s long), clamped to the file
    centre = (np.array([0, 22]) + np.array([6, 28])) / 2 / FPS
    assert times[1, 0] == pytest.approx(centre[1] - 1.015 / 2, abs=1e-3)
    assert times[0, 0] == 0.0  # clamped at the start of the file
    assert times[1, 1] - times[1, 0] == pytest.approx(1.0, abs=1e-4)
    assert out['frame_times'].shape == (2, 4)
    assert out['frame_times'][1, 0] == pytest.approx(22 / FPS)
    assert not out['audio_missing']
    # without avg_fps (PyAVInit) the frame rate is read from the video
    res = _results(media['tone'], [0, 22])
    del res['avg_fps']
    again = LoadAudioFbank(target_length=100)(res)
    assert np.allclose(again['audio_times'], times)
    # 'start' alignment ignores the clip: both windows at 0 s -> silence
    same = LoadAudioFbank(target_length=100, align='start')(
        _results(media['tone'], [0, 22]))['audio']
    assert np.allclose(same[0], same[1])


def test_short_audio_is_zero_padded_and_normalised(media):
    out = LoadAudioFbank(target_length=500)(_results(media['tone'], [0]))
    fb = out['audio'][0]
    n = 1 + (SECONDS * SR - 400) // 160  # frames of the whole 4 s file
    assert np.allclose(fb[n + 2:], (0.0 - AST_MEAN) / (2 * AST_STD))
    assert not np.allclose(fb[:n - 2], (0.0 - AST_MEAN) / (2 * AST_STD))
    raw = LoadAudioFbank(target_length=500, normalize=False)(
        _results(media['tone'], [0]))['audio'][0]
    assert np.allclose(fb, (raw - AST_MEAN) / (2 * AST_STD), atol=1e-5)


def test_separate_wav_and_npy_sources(media):
    band = _tone_band()
    for path, kw in ((media['wav8k'], {}),
                     (media['npy'], dict(npy_sample_rate=8000))):
        res = dict(audio_path=path)
        out = LoadAudioFbank(target_length=100, align='start', **kw)(res)
        assert out['audio'].shape == (1, 100, 128)  # resampled to 16 kHz
        late = LoadAudioFbank(target_length=100, **kw)(
            dict(audio_path=path, audio_range=(2.5, 3.6)))
        assert late['audio'][0, :, band].mean() > out['audio'][0, :,
                                                                band].mean()
    with pytest.raises(ValueError, match='npy_sample_rate'):
        LoadAudioFbank()(dict(audio_path=media['npy']))
    pre = LoadAudioFbank(target_length=100, align='start',
                         normalize=False)(dict(audio_path=media['fbank']))
    assert np.allclose(pre['audio'][0], np.load(media['fbank'])[:100])


def test_video_without_audio_gives_silence_and_a_count(media):
    before = LoadAudioFbank.missing_count
    out = LoadAudioFbank(target_length=64)(_results(media['mute'], [0, 8]))
    assert out['audio_missing']
    assert out['audio'].shape == (2, 64, 128)
    assert np.allclose(out['audio'], SILENCE)
    assert LoadAudioFbank.missing_count == before + 1
    with pytest.raises(AudioDecodeError, match='mute.mp4 has no audio'):
        LoadAudioFbank(missing='error')(_results(media['mute'], [0]))


@pytest.mark.parametrize('name', ['bad', 'cut'])
def test_corrupt_audio_names_the_file(media, name):
    with pytest.raises(AudioDecodeError) as e:
        LoadAudioFbank(target_length=64)(_results(media[name], [0]))
    assert media[name] in str(e.value)


def test_spec_augment_masks():
    np.random.seed(0)
    audio = np.ones((2, 100, 128), np.float32)
    out = SpecAugment(time_mask=30, freq_mask=20, num_time_masks=1,
                      num_freq_masks=1)(dict(audio=audio))['audio']
    assert np.all(audio == 1)  # input untouched
    for clip in out:
        rows = np.where((clip == 0).all(1))[0]
        cols = np.where((clip == 0).all(0))[0]
        assert rows.size < 30 and cols.size < 20
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)


def test_pack_repeats_audio_for_every_crop():
    clips, crops, t = 2, 3, 4
    res = dict(imgs=np.zeros((clips * crops, 3, t, 8, 8), np.float32),
               audio=np.arange(clips, dtype=np.float32)[:, None, None] *
               np.ones((clips, 10, 128), np.float32),
               audio_times=np.array([[0, 1], [5, 6]], np.float32),
               frame_times=np.array([[0, 1, 2, 3], [5, 6, 7, 8]],
                                    np.float32),
               label=1, verb_label=3, noun_label=7)
    packed = PackAudioVisualInputs()(res)
    x = packed['inputs']
    assert x['audio'].shape == (6, 1, 10, 128)
    assert x['times'].shape == (6, 2 + t)
    # FormatShape orders views crop-major: view v shows clip v % clips
    assert [int(a[0, 0, 0]) for a in x['audio']] == [0, 1, 0, 1, 0, 1]
    assert torch.equal(x['times'][3], torch.tensor([5., 6, 5, 6, 7, 8]))
    ds = packed['data_samples']
    assert int(ds.gt_label) == 1 and int(ds.gt_verb) == 3
    assert int(ds.gt_noun) == 7


# ---------------------------------------------------------------------------
# joint mixup of video, audio and labels
# ---------------------------------------------------------------------------
def _batch(n=4, classes=5):
    from mmaction.structures import ActionDataSample
    samples = []
    for i in range(n):
        ds = ActionDataSample()
        ds.set_gt_label(i % classes)
        samples.append(ds)
    inputs = dict(video=[torch.rand(1, 3, 4, 8, 8) * 255 for _ in range(n)],
                  audio=[torch.randn(1, 1, 20, 16) for _ in range(n)],
                  times=[torch.rand(1, 6) for _ in range(n)])
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('mode', ['mixup', 'cutmix'])
def test_mixup_mixes_both_modalities_and_labels_alike(mode):
    from mmaction.registry import MODELS
    torch.manual_seed(0)
    blend = dict(type='AudioVisualMixup', num_classes=5, prob=1.0,
                 mixup_alpha=0.8 if mode == 'mixup' else 0.0,
                 cutmix_alpha=1.0 if mode == 'cutmix' else 0.0)
    pre = MODELS.build(dict(type='AudioVisualDataPreprocessor',
                            video=dict(mean=[0, 0, 0], std=[1, 1, 1]),
                            blending=blend))
    data = _batch()
    video = torch.stack(data['inputs']['video']).clone()
    audio = torch.stack(data['inputs']['audio']).clone()
    out = pre(copy.deepcopy(data), training=True)
    last = pre.blending.last
    lam, perm = last['lam'], last['perm']
    assert last['mode'] == mode and torch.equal(perm, torch.arange(3, -1, -1))
    v, a = out['inputs']['video'], out['inputs']['audio']
    if mode == 'mixup':
        assert torch.allclose(v, lam * video + (1 - lam) * video[perm])
        assert torch.allclose(a, lam * audio + (1 - lam) * audio[perm])
    else:  # lam = the fraction of each video frame left unpasted
        kept = (v == video).all(2).all(1).all(1).float().mean((-2, -1))
        assert torch.allclose(kept, torch.full_like(kept, lam), atol=1e-6)
        assert ((a == audio[perm]) & (a != audio)).any()
    labels = torch.stack([ds.gt_label for ds in out['data_samples']])
    for i in range(4):
        expect = torch.zeros(5)
        expect[i % 5] += lam
        expect[int(perm[i]) % 5] += 1 - lam
        assert torch.allclose(labels[i], expect, atol=1e-6)
    assert torch.equal(out['inputs']['times'],
                       torch.stack(data['inputs']['times']))
    # evaluation: no blending
    plain = pre(copy.deepcopy(data), training=False)
    assert torch.allclose(plain['inputs']['video'], video)


def test_mixup_of_verb_noun_labels():
    from mmaction.registry import MODELS
    blend = MODELS.build(dict(type='AudioVisualMixup', num_verbs=3,
                              num_nouns=4, cutmix_alpha=0.0))
    data = _batch(2)
    for i, ds in enumerate(data['data_samples']):
        ds.set_field(torch.tensor(i), 'gt_verb')
        ds.set_field(torch.tensor(i + 2), 'gt_noun')
    _, _, samples = blend(torch.zeros(2, 1, 3, 4, 8, 8),
                          torch.zeros(2, 1, 1, 5, 5), data['data_samples'])
    lam = blend.last['lam']
    assert torch.allclose(samples[0].gt_verb, torch.tensor([lam, 1 - lam, 0]))
    assert torch.allclose(samples[1].gt_noun,
                          torch.tensor([0, 0, 1 - lam, lam]))
    with pytest.raises(ValueError, match='num_verbs'):
        MODELS.build(dict(type='AudioVisualMixup', num_verbs=3))


# ---------------------------------------------------------------------------
# fusion: window policies, links, time encodings
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('window', ['time', 'space', 'global'])
def test_window_policies_which_tokens_see_which(window):
    """Perturb one key token (t0, n0): the queries whose output changes are
    the ones whose window contains it."""
    from cast_mmaction.models.fusion import WindowCrossAttention
    torch.manual_seed(0)
    att = WindowCrossAttention(16, 2, window, (3, 4), (3, 4)).eval()
    q, kv = torch.randn(1, 3, 4, 16), torch.randn(1, 3, 4, 16)
    base = att(q, kv)
    t0, n0 = 1, 2
    kv2 = kv.clone()
    kv2[0, t0, n0] += 3.0
    seen = ((att(q, kv2) - base).abs().amax(-1) > 1e-6)[0]  # (Tq, Nq)
    expect = torch.zeros(3, 4, dtype=torch.bool)
    if window == 'time':
        expect[:, n0] = True  # every time step at the same position
    elif window == 'space':
        expect[t0, :] = True  # every position of the same time step
    else:
        expect[:] = True
    assert torch.equal(seen, expect)


def _tiny_cava(**kw):
    cfg = dict(embed_dim=32, depth=2, num_heads=2, num_frames=4,
               img_size=32, input_tdim=60)
    cfg.update(kw)
    return build_model(cava_backbone_cfg(**cfg))


def _randomise_ups(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.up.' in name or 'adapters' in name:
                p.normal_(0, 0.2)


def test_global_link_every_patch_sees_every_patch_prefix_tokens_do_not():
    bb = _tiny_cava().eval()
    link, ex = bb.links['clip_audio']['0'], bb.experts
    _randomise_ups(bb)
    torch.manual_seed(2)
    audio_n = ex['audio'].grid_n
    tok = dict(clip=torch.randn(2 * 2, 1 + 4, 32),
               audio=torch.randn(2, 2 + audio_n, 32))
    base = link(tok, ex, 2)
    for idx, clip_changes in ((0, False), (1, False), (2 + 5, True)):
        pert = {k: v.clone() for k, v in tok.items()}
        pert['audio'][1, idx] += 3.0  # cls, dist, one patch of sample 1
        diff = (link(pert, ex, 2)['clip'] - base['clip']).abs().amax(-1)
        diff = diff.reshape(2, 2, 5)  # (B, T, 1 + N)
        assert not diff[0].any(), 'other samples never change'
        assert not (diff[1, :, 0] > 1e-6).any(), 'CLIP class token attends'
        assert bool((diff[1, :, 1:] > 1e-6).all()) == clip_changes
    pert = {k: v.clone() for k, v in tok.items()}
    pert['clip'][3, 0] += 3.0  # a CLIP class token is no key either
    assert torch.allclose(link(pert, ex, 2)['audio'], base['audio'])


def test_ca2st_links_layers_order_and_shared_projections():
    small = dict(embed_dim=32, depth=3, num_heads=2, num_frames=4,
                 img_size=32, input_tdim=60, audio_link_layers=[1, 2])
    plain = build_model(ca2st_backbone_cfg(**small))
    assert plain._links_at == [['clip_vmae'],
                               ['clip_vmae', 'clip_audio', 'vmae_audio'],
                               ['clip_vmae', 'clip_audio', 'vmae_audio']]
    shared = build_model(ca2st_backbone_cfg(revision=True, **small))
    L = shared.links
    assert L['clip_audio']['1'].down['clip'] is L['clip_vmae']['1'].down[
        'clip']
    assert L['vmae_audio']['2'].up['vmae'] is L['clip_vmae']['2'].up['vmae']
    assert L['vmae_audio']['1'].down['audio'] is L['clip_audio']['1'].down[
        'audio']
    assert L['clip_audio']['1'].norm['clip'] is not L['clip_vmae']['1'].norm[
        'clip']
    assert L['clip_vmae']['0'].down['clip'] is not L['clip_vmae']['1'].down[
        'clip']
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    lin = 32 * 16 + 16 + 16 * 32 + 32  # one down + one up
    # per audio layer 3 experts' (down, up) pairs are reused; the audio
    # links lose their position tables and the time MLPs are new
    tables = sum(p.numel() for k, p in plain.named_parameters()
                 if 'audio.' in k and k.split('.')[-1] in (
                     'q_pos', 'kv_pos', 'q_pos_t', 'kv_pos_t'))
    mlps = n(shared.time_mlps)
    assert n(plain) - n(shared) == 2 * 3 * lin + tables - mlps


def test_time_encodings_enter_only_the_audio_links():
    torch.manual_seed(0)
    model = build_model(ca2st_recognizer_cfg(
        num_classes=3, embed_dim=32, depth=2, num_heads=2, num_frames=4,
        img_size=32, input_tdim=60, audio_link_layers=[1],
        revision=True)).eval()
    _randomise_ups(model)
    x = dict(video=torch.randn(1, 3, 4, 32, 32),
             audio=torch.randn(1, 1, 60, 128),
             times=torch.tensor([[0.0, 0.6, 0.1, 0.2, 0.3, 0.4]]))
    later = dict(x, times=x['times'] + 0.5)
    with torch.no_grad():
        a, b = model.backbone(x), model.backbone(later)
        assert not torch.allclose(a[1], b[1])  # VideoMAE pools all tokens
        for name in ('clip_audio', 'vmae_audio'):  # cut the audio links
            for m in model.backbone.links[name]['1'].up.values():
                m.weight.zero_()
                m.bias.zero_()
        a, b = model.backbone(x), model.backbone(later)
    assert all(torch.allclose(u, v) for u, v in zip(a, b))
    with pytest.raises(KeyError, match='"times" input'):
        model.backbone(dict(video=x['video'], audio=x['audio']))


def test_ast_time_token_order():
    from cast_mmaction.models.experts.ast import ASTExpert
    e = ASTExpert(embed_dim=8, depth=1, num_heads=2, input_tdim=46)
    assert (e.f_dim, e.t_dim) == (12, 4)
    enc = torch.arange(4.)[None, :, None]  # column c -> value c
    authors = e.time_grid(enc)[0, 0, :, 0]
    grid = ASTExpert(embed_dim=8, depth=1, num_heads=2, input_tdim=46,
                     time_token_order='grid').time_grid(enc)[0, 0, :, 0]
    j = torch.arange(48.)
    assert torch.equal(authors, torch.div(j, 12, rounding_mode='floor'))
    assert torch.equal(grid, j % 4)  # tokens are frequency-major
    seg = e.time_segments(torch.tensor([[1.0, 5.0]]), 2)
    # 4 columns, 2 segments of 2 s: columns 0-2 -> [1, 3], column 3 -> [3, 5]
    assert torch.allclose(seg[0], torch.tensor([[1., 3], [1, 3], [1, 3],
                                                [3, 5]]))


def test_expert_shape_errors_name_the_field():
    bb = _tiny_cava()
    with pytest.raises(ValueError, match='input_tdim'):
        bb.experts['audio'].embed(torch.randn(1, 1, 61, 128))
    with pytest.raises(KeyError, match="'audio' input"):
        bb(dict(video=torch.randn(1, 3, 4, 32, 32)))


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------
def _fake_ast_checkpoint(path, dim=32, grid=(12, 101), channels=1):
    from cast_mmaction.models.experts.ast import ASTExpert
    e = ASTExpert(embed_dim=dim, depth=1, num_heads=2,
                  input_tdim=(grid[1] - 1) * 10 + 16)
    sd = {f'module.v.{k}': v for k, v in e.state_dict().items()}
    if channels == 3:
        sd['module.v.patch_embed.proj.weight'] = torch.randn(dim, 3, 16, 16)
        sd['module.v.pos_embed'] = torch.randn(1, 2 + 196, dim)
    sd['module.mlp_head.1.weight'] = torch.randn(527, dim)
    torch.save(sd, path)
    return sd


def test_ast_checkpoint_position_grid_is_cropped_or_resized(tmp_path):
    from cast_mmaction.checkpoints.ast import load_ast_expert
    from cast_mmaction.models.experts.ast import ASTExpert
    path = str(tmp_path / 'audioset_10_10.pth')
    sd = _fake_ast_checkpoint(path)
    pos = sd['module.v.pos_embed']
    grid = pos[0, 2:].reshape(12, 101, 32)
    short = ASTExpert(embed_dim=32, depth=1, num_heads=2, input_tdim=100)
    load_ast_expert(short, path)
    assert short.t_dim == 9  # centre crop: columns 46..54 of 101
    got = short.pos_embed[0, 2:].reshape(12, 9, 32)
    assert torch.equal(got, grid[:, 50 - 4:50 - 4 + 9])
    assert torch.equal(short.pos_embed[0, :2], pos[0, :2])
    assert torch.equal(short.blocks[0].attn.qkv.weight,
                       sd['module.v.blocks.0.attn.qkv.weight'])
    long = ASTExpert(embed_dim=32, depth=1, num_heads=2, input_tdim=1206)
    load_ast_expert(long, path)  # 120 columns: resized
    assert long.pos_embed.shape == (1, 2 + 12 * 120, 32)
    deit = str(tmp_path / 'deit.pth')
    d = _fake_ast_checkpoint(deit, channels=3)
    load_ast_expert(short, deit)  # RGB filters summed, 14x14 grid adapted
    assert torch.allclose(short.patch_embed.proj.weight,
                          d['module.v.patch_embed.proj.weight'].sum(1, True))


def test_ast_loader_names_wrong_files(tmp_path):
    from cast_mmaction.checkpoints.ast import load_ast_expert
    from cast_mmaction.models.experts.ast import ASTExpert
    e = ASTExpert(embed_dim=32, depth=1, num_heads=2, input_tdim=100)
    clip = str(tmp_path / 'clip.pt')
    torch.save({'visual.conv1.weight': torch.zeros(32, 3, 16, 16)}, clip)
    with pytest.raises(ValueError, match='CLIP checkpoint'):
        load_ast_expert(e, clip)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_ast_expert(e, str(tmp_path / 'nope.pth'))
    wide = str(tmp_path / 'wide.pth')
    _fake_ast_checkpoint(wide, dim=64)
    with pytest.raises(ValueError, match='embed_dim=64'):
        load_ast_expert(e, wide)


def test_av_converter_refuses_other_checkpoints():
    from cast_mmaction.checkpoints import convert_official_av, detect_kind
    from cast_mmaction.safe_load import load_checkpoint as load_file
    cast = load_file(osp.join(FIXTURES, 'cast_single',
                              'official_checkpoint.pth'))
    with pytest.raises(ValueError, match='not an official CAVA / CA2ST'):
        convert_official_av(cast)
    assert detect_kind(cast['module']) == 'cast'


def test_tied_projections_must_agree():
    from cast_mmaction.checkpoints import load_official_av
    from cast_mmaction.safe_load import load_checkpoint as load_file
    from cast_mmaction.parity import av_sizes_from_meta
    import json
    d = shared_fixture('ca2st_single_rev')
    meta = json.load(open(osp.join(d, 'meta.json')))
    state = load_file(osp.join(d, 'official_checkpoint.pth'))
    model = build_model(ca2st_recognizer_cfg(
        num_classes=10, **av_sizes_from_meta(meta)))
    sd = dict(state['module'])
    from cast_mmaction.checkpoints import detect_kind
    assert detect_kind(sd) == 'ca2st'
    load_official_av(model, dict(module=sd))  # tied in the file: fine
    key = 'blocks.1.s_audio_b_cast.cross_l_down.weight'
    sd[key] = sd[key] + 1.0  # break the tie
    with pytest.raises(ValueError, match='share_projections=False'):
        load_official_av(model, dict(module=sd))


# ---------------------------------------------------------------------------
# the authors' reference dumps
# ---------------------------------------------------------------------------
# every dump is checked once: through the shipped config that describes its
# architecture where there is one (sizes taken from meta.json, structure
# from the config), else through the preset of tools/check_parity.py
AV_DUMPS = [('cava_single', 'cava_vggsound'), ('cava_single_rev', None),
            ('ca2st_single', 'ca2st_vggsound'),
            ('ca2st_single_rev', 'ca2st_vggsound_rev'),
            ('ca2st_composition', 'ca2st_ek100')]


@pytest.mark.parametrize('name,config', AV_DUMPS)
def test_av_dumps_match(name, config):
    from mmengine.config import Config

    from cast_mmaction.parity import check_dump
    d = shared_fixture(name)
    model_cfg = None
    if config:
        cfg = Config.fromfile(osp.join(ROOT, 'configs', config + '.py'))
        model_cfg = cfg.model.to_dict()
    rows = check_dump(d, model_cfg=model_cfg)
    names = {r[0] for r in rows}
    assert {'spatial_feature', 'audio_feature'} <= names
    if name.endswith('_rev'):
        assert {'audio_time_mlp_out', 'video_time_mlp_out'} <= names
    for out, diff, tol, ok in rows:
        assert ok, f'{name}/{out}: max|diff| {diff:.3e} > {tol:.3e}'


def test_a_config_of_another_architecture_is_refused():
    from mmengine.config import Config

    from cast_mmaction.parity import check_dump
    d = shared_fixture('ca2st_single_rev')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'ca2st_vggsound.py'))
    with pytest.raises(ValueError, match='missing .*q_pos'):
        check_dump(d, model_cfg=cfg.model.to_dict())


def test_the_time_token_quirk_is_reproduced():
    """The dump's audio time encodings follow the authors' token order: our
    default reproduces it ~10x more closely than the 'grid' order (both are
    inside the tolerance: the encodings act weakly on these tiny models)."""
    import json

    from cast_mmaction.parity import check_dump
    from cast_mmaction.parity import av_sizes_from_meta
    d = shared_fixture('cava_single_rev')
    meta = json.load(open(osp.join(d, 'meta.json')))
    diffs = {}
    for order in ('authors', 'grid'):
        cfg = cava_recognizer_cfg(num_classes=10, **av_sizes_from_meta(meta))
        cfg['backbone']['experts']['audio']['time_token_order'] = order
        diffs[order] = {r[0]: r[1] for r in check_dump(d, model_cfg=cfg)}
    assert diffs['grid']['audio_time_mlp_out'] == pytest.approx(
        diffs['authors']['audio_time_mlp_out'])  # the MLP is the same
    for out in ('spatial_feature', 'cls_score'):
        assert diffs['authors'][out] * 5 < diffs['grid'][out], diffs


# ---------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------
def test_vggsound_csv_and_list(tmp_path):
    from mmaction.registry import DATASETS
    csv = tmp_path / 'vggsound.csv'
    csv.write_text('abc,30,dog barking,train\nxyz,0,cat purring,test\n'
                   'def,12,bird song,train\n')
    ds = DATASETS.build(dict(type='VGGSoundDataset', ann_file=str(csv),
                             pipeline=[], num_classes=3, check_files=False,
                             data_prefix=dict(video='v', audio='a')))
    items = [ds.get_data_info(i) for i in range(len(ds))]
    assert [(osp.basename(i['filename']), i['label']) for i in items] == [
        ('abc_000030.mp4', 2), ('def_000012.mp4', 0)]  # sorted names
    assert items[0]['audio_path'] == osp.join('a', 'abc_000030.wav')
    # a byte-order mark (a spreadsheet's export) and a header line, as
    # tools/data/prepare_vggsound.py reads them: the same samples (the mark
    # was read into the first id, the header refused as a split 'split')
    csv.write_text('\ufeffyoutube_id,start_seconds,label,split\n' +
                   csv.read_text(), encoding='utf-8')
    again = DATASETS.build(dict(type='VGGSoundDataset', ann_file=str(csv),
                                pipeline=[], num_classes=3, check_files=False,
                                data_prefix=dict(video='v', audio='a')))
    assert [again.get_data_info(i) for i in range(len(again))] == items
    with pytest.raises(ValueError, match='3 classes found but num_classes'):
        DATASETS.build(dict(type='VGGSoundDataset', ann_file=str(csv),
                            pipeline=[], check_files=False))
    # a split that is neither train nor test: the row would be in no split
    csv.write_text('abc,30,dog barking,train\nxyz,0,cat purring,tset\n')
    with pytest.raises(ValueError, match=r"vggsound.csv, line 2: split "
                       r"'tset' is neither 'train' nor 'test'"):
        DATASETS.build(dict(type='VGGSoundDataset', ann_file=str(csv),
                            pipeline=[], check_files=False))
    # ... unless it is the split asked for (a CSV of one's own)
    csv.write_text('abc,30,dog barking,train\nxyz,0,cat purring,val\n')
    val = DATASETS.build(dict(type='VGGSoundDataset', ann_file=str(csv),
                              pipeline=[], check_files=False, split='val',
                              num_classes=2))
    assert len(val) == 1
    lst = tmp_path / 'list.txt'
    lst.write_text('a b/clip 1.mp4 2\nc.mp4 400\n')
    with pytest.raises(ValueError, match='line 2: label 400 is outside'):
        DATASETS.build(dict(type='KineticsSoundsDataset', ann_file=str(lst),
                            pipeline=[], check_files=False))
    lst.write_text('a b/clip 1.mp4 2\nc.mp4 100\n')
    ucf = DATASETS.build(dict(type='UCF101AudioDataset', ann_file=str(lst),
                              pipeline=[], check_files=False))
    assert ucf.get_data_info(0)['filename'] == 'a b/clip 1.mp4'
    with pytest.raises(FileNotFoundError, match='2 of 2 files'):
        DATASETS.build(dict(type='UCF101AudioDataset', ann_file=str(lst),
                            pipeline=[]))


def test_epic_sounds_csv(tmp_path):
    from mmaction.registry import DATASETS
    head = ('annotation_id,participant_id,video_id,start_timestamp,'
            'stop_timestamp,start_sample,stop_sample,description,class,'
            'class_id\n')
    csv = tmp_path / 'EPIC_Sounds_train.csv'
    csv.write_text(head + 'P01_01_0,P01,P01_01,00:00:01.500,00:00:03.250,'
                   '36000,78000,click,click,7\n')
    ds = DATASETS.build(dict(type='EpicSoundsDataset', ann_file=str(csv),
                             pipeline=[], check_files=False,
                             data_prefix=dict(video='ek')))
    item = ds.get_data_info(0)
    assert item['filename'] == osp.join('ek', 'P01', 'videos', 'P01_01.MP4')
    assert item['audio_range'] == (1.5, 3.25) and item['label'] == 7
    assert (item['start_sec'], item['stop_sec']) == (1.5, 3.25)
    csv.write_text(head + 'P01_01_0,P01,P01_01,00:00:01.500,1:99,0,0,x,x,7\n')
    with pytest.raises(ValueError, match='line 2: invalid timestamp'):
        DATASETS.build(dict(type='EpicSoundsDataset', ann_file=str(csv),
                            pipeline=[], check_files=False))
    # errors name the physical line, also after a blank line (DictReader
    # skips it: counting rows named line 3 here)
    csv.write_text(head + 'P01_01_0,P01,P01_01,00:00:01.500,00:00:03.250,'
                   '36000,78000,click,click,7\n\n'
                   'P01_01_1,P01,P01_01,00:00:04.000,00:00:05.000,'
                   '96000,120000,click,click,44\n')
    with pytest.raises(ValueError, match=r'EPIC_Sounds_train.csv, line 4: '
                       r'class_id 44 is outside 0..43'):
        DATASETS.build(dict(type='EpicSoundsDataset', ann_file=str(csv),
                            pipeline=[], check_files=False))
    # a row with a field too many (an unquoted comma) or too few
    good = ('P01_01_0,P01,P01_01,00:00:01.500,00:00:03.250,36000,78000,'
            'click,click,7\n')
    for row, fields in (('P01_01_1,P01,P01_01,00:00:04.000,00:00:05.000,'
                         '96000,120000,a click, then a tap,click,7\n', 11),
                        ('P01_01_1,P01,P01_01,00:00:04.000,00:00:05.000\n',
                         5)):
        csv.write_text(head + good + row)
        with pytest.raises(ValueError, match=rf'line 3: {fields} fields, the '
                           rf'header has 10'):
            DATASETS.build(dict(type='EpicSoundsDataset', ann_file=str(csv),
                                pipeline=[], check_files=False))
    csv.write_text('annotation_id,video_id\nx,P01_01\n')
    with pytest.raises(ValueError, match='missing columns'):
        DATASETS.build(dict(type='EpicSoundsDataset', ann_file=str(csv),
                            pipeline=[], check_files=False))


# ---------------------------------------------------------------------------
# end to end: train + test a tiny CAVA and a tiny CA2ST on CPU
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def av_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('av_data'))
    info = write_synthetic_av_dataset(root, num_train=4, num_val=2,
                                      num_frames=16, fps=8, size=32)
    # one video without a sound track in the test split: silence, no crash
    frames = render_frames(np.random.default_rng(5), 'blue', 16, 32)
    write_av_video(osp.join(root, 'val', 'mute.mp4'), frames, 8, None)
    with open(info['val_ann'], 'a') as f:
        f.write('val/mute.mp4 3\n')
    return info


def _demo_cfg(config, info, work_dir):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config + '.py'))
    bb = cfg.model.backbone
    for e in bb.experts.values():
        e.update(embed_dim=32, num_heads=2)
        if 'input_tdim' in e:
            e['input_tdim'] = 60
    cfg.model.cls_head.in_channels = 32
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset.data_prefix = dict(video=info['video_root'])
        loader.dataset.ann_file = info['train_ann' if split == 'train' else
                                       'val_ann']
        for t in loader.dataset.pipeline:
            if t['type'] == 'LoadAudioFbank':
                t['target_length'] = 60
            if t['type'] == 'SpecAugment':
                t.update(time_mask=10, freq_mask=8)
    cfg.train_cfg.update(max_epochs=1, val_begin=1)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0)]
    cfg.default_hooks.checkpoint.update(interval=1)
    cfg.default_hooks.logger.update(interval=1)
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    return cfg


@pytest.mark.parametrize('config,revision', [('cava_demo', False),
                                             ('ca2st_demo', True)])
def test_train_and_test_end_to_end(av_data, tmp_path, config, revision):
    from mmengine.runner import Runner
    cfg = _demo_cfg(config, av_data, str(tmp_path / 'work'))
    if revision:  # time encodings + shared projections through the Runner
        bb = cfg.model.backbone
        for link in bb.links:
            if 'audio' in link['experts']:
                link.update(pos_embed=False, time_encoding=True)
        bb.time_encoding = dict(split=True)
        bb.share_projections = True
    dump = tmp_path / 'preds.pkl'
    cfg.test_evaluator = dump_evaluator(cfg.test_evaluator, dump)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    assert type(model).__name__ == 'AudioVisualRecognizer'
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner.train()
    changed = [k for k, v in model.state_dict().items()
               if 'links' in k and not torch.equal(v, before[k])]
    assert changed, 'the B-CA links did not train'
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_1.pth'))
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert np.isfinite(loss)
    metrics = runner.test()
    assert set(metrics) >= {'acc/top1', 'acc/top5'}
    top1, count = top1_of_dump(dump)
    with open(av_data['val_ann']) as f:
        assert count == len(f.read().split('\n')) - 1  # one per test clip
    assert metrics['acc/top1'] == pytest.approx(top1)


def test_epic_sounds_pipeline_on_an_untrimmed_video(media, tmp_path):
    """EPIC-SOUNDS rows through the config's pipeline: frames and audio both
    come from the annotated span of the long video."""
    from mmengine.config import Config

    from mmaction.registry import DATASETS
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'cava_epic_sounds.py'))
    csv = tmp_path / 'EPIC_Sounds_validation.csv'
    csv.write_text(
        'annotation_id,participant_id,video_id,start_timestamp,'
        'stop_timestamp,start_sample,stop_sample,description,class,'
        'class_id\n'
        'P01_01_0,P01,tone,00:00:00.250,00:00:01.000,0,0,quiet,x,3\n'
        'P01_01_1,P01,tone,00:00:02.500,00:00:03.500,0,0,beep,x,5\n')
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.update(ann_file=str(csv), video_path_tmpl='{video_id}.mp4',
                  data_prefix=dict(video=osp.dirname(media['tone'])))
    for t in ds_cfg.pipeline:
        if t['type'] == 'LoadAudioFbank':
            t['target_length'] = 50
        if t['type'] == 'EpicSampleFrames':
            t['num_segments'] = 4
        if t['type'] == 'Resize':
            t['scale'] = (-1, 32)
        if t['type'] == 'ThreeCrop':
            t['crop_size'] = 32
    ds = DATASETS.build(ds_cfg)
    quiet, beep = ds[0], ds[1]
    x = beep['inputs']
    assert x['video'].shape == (2 * 3, 3, 4, 32, 32)  # 2 clips x 3 crops
    assert x['audio'].shape == (6, 1, 50, 128)
    times = x['times']
    assert torch.all(times[:, 2:] >= 2.5 - 1 / FPS)  # frames in the span
    assert torch.all(times[:, 2:] <= 3.5)
    assert torch.all(times[:, 0] >= 2.5) and torch.all(times[:, 1] <= 3.5)
    band = _tone_band()
    assert x['audio'][:, 0, :, band].mean() > quiet['inputs']['audio'][
        :, 0, :, band].mean() + 1.0
    assert int(beep['data_samples'].gt_label) == 5
    assert beep['data_samples'].metainfo['annotation_id'] == 'P01_01_1'


def test_backbone_loads_pretrained_ast(tmp_path):
    path = str(tmp_path / 'ast.pth')
    sd = _fake_ast_checkpoint(path, dim=32)
    bb = _tiny_cava(embed_dim=32, input_tdim=100)
    bb.experts['audio'].pretrained = path
    bb.init_weights()  # what the Runner calls
    grid = sd['module.v.pos_embed'][0, 2:].reshape(12, 101, 32)
    got = bb.experts['audio'].pos_embed[0, 2:].reshape(12, 9, 32)
    assert torch.equal(got, grid[:, 46:55])
    assert not bb.experts['audio'].pos_embed.requires_grad  # frozen expert
    assert bb.experts['audio'].norm.weight.requires_grad  # pooled norm trains


def test_ek100_pipeline_with_audio(media, tmp_path):
    """ca2st_ek100: EPIC-KITCHENS-100 segments with the audio of the segment
    and the verb / noun labels packed for the verb/noun head."""
    from mmengine.config import Config

    from mmaction.registry import DATASETS
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'ca2st_ek100.py'))
    csv = tmp_path / 'EPIC_100_validation.csv'
    csv.write_text(
        'narration_id,participant_id,video_id,narration_timestamp,'
        'start_timestamp,stop_timestamp,start_frame,stop_frame,narration,'
        'verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n'
        'P01_01_7,P01,tone,00:00:02.000,00:00:02.500,00:00:03.500,20,28,'
        'beep tap,beep,4,tap,9,[tap],[9]\n')
    ds_cfg = cfg.val_dataloader.dataset
    ds_cfg.update(ann_file=str(csv), video_path_tmpl='{video_id}.mp4',
                  data_prefix=dict(video=osp.dirname(media['tone'])))
    for t in ds_cfg.pipeline:
        if t['type'] == 'LoadAudioFbank':
            t['target_length'] = 50
        if t['type'] == 'EpicSampleFrames':
            t['num_segments'] = 4
        if t['type'] == 'Resize':
            t['scale'] = (-1, 32)
        if t['type'] == 'CenterCrop':
            t['crop_size'] = 32
    item = DATASETS.build(ds_cfg)[0]
    x, ds = item['inputs'], item['data_samples']
    assert x['video'].shape == (1, 3, 4, 32, 32)
    assert x['audio'].shape == (1, 1, 50, 128)
    assert float(x['times'][0, 0]) >= 2.5 - 1e-6  # inside the segment
    assert float(x['times'][0, 1]) <= 3.5 + 1 / FPS
    assert (int(ds.gt_verb), int(ds.gt_noun)) == (4, 9)
    assert ds.metainfo['narration_id'] == 'P01_01_7'


def test_av_meta_switches_the_shipped_dumps_do_not_vary():
    """Found with dumps of the authors' code at other settings (docs/
    audio_visual.md): audio_num_heads is the audio links' alone (the AST
    expert's self-attention kept num_heads there: silently other numbers);
    use_stpos and time_encoding are two switches; CLIP's MLP stays 4 x wide
    and qkv_bias reaches VideoMAE and AST; bcast_method 'add_param' is the
    sequential B-CA."""
    import json

    from cast_mmaction.parity import av_sizes_from_meta
    from cast_mmaction.parity.av import _authors_experts
    bb = ca2st_backbone_cfg(embed_dim=48, depth=2, num_heads=2,
                            audio_num_heads=4)
    assert bb['experts']['audio']['num_heads'] == 2
    assert {link['num_heads'] for link in bb['links']
            if 'audio' in link['experts']} == {4}
    d = shared_fixture('ca2st_single')
    meta = json.load(open(osp.join(d, 'meta.json')))
    a = meta['constructor_args_all']
    for stpos, te in ((True, True), (False, False)):
        m = dict(meta, constructor_args_all=dict(
            a, use_stpos=stpos, time_encoding=te, mlp_ratio=2,
            qkv_bias=False, bcast_method='add_param'))
        kw = av_sizes_from_meta(m)
        assert kw['audio_pos_embed'] is stpos and kw['revision'] is te
        cfg = _authors_experts(ca2st_recognizer_cfg(**kw), m)
        links = [link for link in cfg['backbone']['links']
                 if 'audio' in link['experts']]
        assert {(link['pos_embed'], link['time_encoding'])
                for link in links} == {(stpos, te)}
        experts = cfg['backbone']['experts']
        assert experts['clip']['mlp_ratio'] == 4.0
        assert experts['vmae']['mlp_ratio'] == 2.0
        assert experts['vmae']['qkv_bias'] is False
        assert experts['audio']['qkv_bias'] is False


def test_one_time_mlp_for_both_streams_and_cava_without_links_load():
    """split_time_mlp=False (the authors' run scripts' default) keeps one
    time_mlp and no audio_time_mlp: it loads into time_mlps.shared (it was
    mapped to time_mlps.video: missing / unexpected keys); a CAVA file
    without any B-CA layer (their CA12 entry point) is still recognised."""
    import json

    from cast_mmaction.checkpoints import load_official_av
    from cast_mmaction.checkpoints.av_official import is_cava
    from cast_mmaction.parity import av_sizes_from_meta
    from cast_mmaction.safe_load import load_checkpoint
    d = shared_fixture('cava_single_rev')
    meta = json.load(open(osp.join(d, 'meta.json')))
    state = dict(load_checkpoint(osp.join(d, 'official_checkpoint.pth'))[
        'module'])
    one = {k: v for k, v in state.items()
           if not k.startswith('audio_time_mlp.')}
    kw = dict(av_sizes_from_meta(meta), split_time_mlp=False)
    model = build_model(cava_recognizer_cfg(num_classes=10, **kw))
    load_official_av(model, {'module': one})  # strict
    own = model.state_dict()
    key = next(k for k in one if k.startswith('time_mlp.'))
    mapped = [k for k in own if k.startswith('backbone.time_mlps.shared.')]
    assert mapped and any(torch.equal(own[k], one[key]) for k in mapped)
    no_links = {k: v for k, v in state.items() if '_cross.' not in k}
    assert is_cava(no_links)
