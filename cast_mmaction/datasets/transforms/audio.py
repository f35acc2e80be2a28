"""Audio input for the audio-visual models (CAVA, CA2ST).

Pipeline pieces (registered in MMAction2's ``TRANSFORMS``):

``LoadAudioFbank``
    reads the audio of a sample -- decoded straight from the video file with
    PyAV (the first audio stream), or from a separate wav / flac / mp3 / npy
    file -- resampled to ``sample_rate`` and down-mixed to mono; cuts one
    window of exactly ``target_length`` fbank frames per sampled video clip
    (centred on the clip by default, so audio and video show the same
    moment); computes the Kaldi-compatible log-mel filterbank of the AST
    recipe (:func:`kaldi_fbank`); zero-pads short audio at the end; and
    normalises ``(x - mean) / (2 std)`` with the AudioSet statistics.
    A video without an audio track gives silence (the fbank of a zero
    waveform) and a logged count; a corrupt or unreadable audio stream raises
    :class:`AudioDecodeError` naming the file.
``SpecAugment``
    time and frequency masking (training).
``PackAudioVisualInputs``
    ``PackActionInputs`` for ``{'video', 'audio', 'times'}`` inputs; the
    spectrogram and the timestamps of each clip are repeated for every crop
    of that clip so that every video view has its audio.

Time encodings (CAVA / CA2ST revision) need ``times`` =
``[audio_start, audio_end, t_0 .. t_{F-1}]`` in seconds per view: the audio
window in the source and the timestamps of the sampled frames
(``frame_inds / avg_fps``), which these transforms provide.
"""
import math
import os.path as osp

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmaction.datasets.transforms import PackActionInputs
from mmaction.registry import TRANSFORMS

# AudioSet log-mel statistics used by AST and the CA2ST recipes
AST_MEAN, AST_STD = -4.2677393, 4.5689974
# float32 machine epsilon: the floor of Kaldi's log mel energies
_LOG_FLOOR = float(torch.finfo(torch.float32).eps)
AUDIO_EXTS = ('.wav', '.flac', '.mp3', '.ogg', '.m4a', '.aac', '.opus')


class AudioDecodeError(RuntimeError):
    """An audio stream that cannot be read (names the file)."""


# ---------------------------------------------------------------------------
# Kaldi-compatible log-mel filterbank (pure torch)
# ---------------------------------------------------------------------------
def _mel(f):
    return 1127.0 * torch.log1p(f / 700.0)


def kaldi_mel_banks(num_bins, padded_window, sample_rate, low_freq=20.0,
                    high_freq=0.0, dtype=torch.float64):
    """Triangular mel filters of Kaldi (no VTLN): (num_bins, padded/2 + 1),
    the last (Nyquist) column zero. ``high_freq <= 0`` is relative to
    Nyquist."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0:
        high_freq += nyquist
    if not 0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f'fbank: need 0 <= low_freq ({low_freq}) < '
                         f'high_freq ({high_freq}) <= Nyquist ({nyquist})')
    num_fft = padded_window // 2
    lo, hi = _mel(torch.tensor(low_freq, dtype=dtype)), _mel(
        torch.tensor(high_freq, dtype=dtype))
    delta = (hi - lo) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=dtype)[:, None]
    left, center, right = lo + b * delta, lo + (b + 1) * delta, \
        lo + (b + 2) * delta
    mel = _mel(sample_rate / padded_window *
               torch.arange(num_fft, dtype=dtype))[None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([banks, banks.new_zeros(num_bins, 1)], dim=1)


def kaldi_fbank(waveform, sample_rate, num_mel_bins=128, frame_length=25.0,
                frame_shift=10.0, preemphasis=0.97, low_freq=20.0,
                high_freq=0.0, remove_dc_offset=True):
    """Log-mel filterbank as ``torchaudio.compliance.kaldi.fbank`` computes it
    with ``htk_compat=True, use_energy=False, window_type='hanning',
    dither=0`` (the AST recipe): frames of ``frame_length`` ms every
    ``frame_shift`` ms (edges snipped), DC removal, pre-emphasis, symmetric
    Hann window, power spectrum of the zero-padded (power of two) frame,
    Kaldi mel banks from ``low_freq`` to Nyquist, natural log with a floor of
    float32 epsilon.

    ``waveform``: 1-D (or (1, N)) samples in [-1, 1]. Returns (frames,
    num_mel_bins) float32; zero frames for audio shorter than one window.
    """
    x = torch.as_tensor(waveform)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f'fbank: expected a mono waveform (N,), got '
                         f'{tuple(x.shape)}')
    x = x.to(torch.float64)
    win = int(sample_rate * frame_length * 0.001)
    shift = int(sample_rate * frame_shift * 0.001)
    if win < 2 or shift < 1:
        raise ValueError(f'fbank: sample_rate {sample_rate} is too low for '
                         f'{frame_length} ms frames')
    if x.numel() < win:
        return torch.zeros(0, num_mel_bins)
    padded = 1 << (win - 1).bit_length()
    frames = x.unfold(0, win, shift)  # (n, win)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis:
        prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = frames - preemphasis * prev
    frames = frames * torch.hann_window(win, periodic=False,
                                        dtype=torch.float64)
    frames = torch.nn.functional.pad(frames, (0, padded - win))
    power = torch.fft.rfft(frames).abs().pow(2)
    banks = kaldi_mel_banks(num_mel_bins, padded, sample_rate, low_freq,
                            high_freq)
    mel = power @ banks.t()
    return torch.clamp(mel, min=_LOG_FLOOR).log().to(torch.float32)


def fbank_frames(num_samples, sample_rate, frame_length=25.0,
                 frame_shift=10.0):
    """Frames :func:`kaldi_fbank` gives for ``num_samples``."""
    win = int(sample_rate * frame_length * 0.001)
    shift = int(sample_rate * frame_shift * 0.001)
    return 0 if num_samples < win else 1 + (num_samples - win) // shift


# ---------------------------------------------------------------------------
# reading audio
# ---------------------------------------------------------------------------
def _resample(wave, src, dst):
    if src == dst:
        return wave
    from scipy.signal import resample_poly
    g = math.gcd(int(src), int(dst))
    return resample_poly(wave, int(dst) // g, int(src) // g).astype(
        np.float32)


def _av_error_types():
    import av
    return tuple(t for t in (getattr(av, 'FFmpegError', None),
                             getattr(getattr(av, 'error', None),
                                     'FFmpegError', None)) if t)


def read_audio(path, sample_rate=16000, start=0.0, end=None):
    """Decode the first audio stream of any media file PyAV reads (video
    containers, wav, flac, mp3, ...), resampled to ``sample_rate`` mono
    float32, for seconds ``[start, end)`` (``end=None``: to the end).

    Returns ``(waveform, offset)`` -- ``offset`` the time in seconds of the
    first returned sample, normally ``start`` -- or ``None`` when the file
    has no audio stream. Raises :class:`AudioDecodeError` naming the file
    when it cannot be opened or the stream cannot be decoded.
    """
    import av
    errors = _av_error_types() + (OSError, ValueError, EOFError)
    if not osp.isfile(path):
        raise FileNotFoundError(f'audio source {path} not found')
    start = max(0.0, float(start or 0.0))
    try:
        container = av.open(path)
    except errors as e:
        raise AudioDecodeError(f'{path}: cannot open the file to read its '
                               f'audio ({type(e).__name__}: {e})') from e
    try:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format='flt', layout='mono',
                                      rate=sample_rate)
        if start > 1.0 and stream.time_base is not None:
            container.seek(int(max(0.0, start - 1.0) / stream.time_base),
                           stream=stream)
        chunks, first = [], None
        for frame in container.decode(stream):
            t = frame.time
            if first is None:
                first = t if t is not None else 0.0
            if end is not None and t is not None and t >= end:
                break
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except errors as e:
        raise AudioDecodeError(f'{path}: the audio stream cannot be decoded '
                               f'({type(e).__name__}: {e})') from e
    finally:
        container.close()
    wave = (np.concatenate(chunks).astype(np.float32) if chunks else
            np.zeros(0, np.float32))
    first = first or 0.0
    lo = max(0, int(round((start - first) * sample_rate)))
    hi = None if end is None else max(lo, int(round(
        (end - first) * sample_rate)))
    return wave[lo:hi], first + lo / sample_rate


def _video_fps(path):
    """Average frame rate of the first video stream (None if unknown)."""
    if not path or not osp.isfile(path):
        return None
    import av
    try:
        with av.open(path) as c:
            if c.streams.video and c.streams.video[0].average_rate:
                return float(c.streams.video[0].average_rate)
    except _av_error_types() + (OSError, ValueError):
        return None
    return None


# ---------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------
@TRANSFORMS.register_module()
class LoadAudioFbank(BaseTransform):
    """Audio of the sampled clip(s) as normalised log-mel spectrograms.

    The source is ``results['audio_path']`` when a dataset sets it, else
    ``audio_prefix/<video file stem><audio_suffix>`` when ``audio_prefix``
    is given, else the video file ``results['filename']`` itself (its first
    audio stream). ``.npy`` files hold either a 1-D waveform at
    ``npy_sample_rate`` or a 2-D (frames, mel bins) log-mel fbank
    (unnormalised, 10 ms frames).

    The audio may come from a range of the source: ``results['audio_range']``
    (seconds; EPIC-SOUNDS), else ``segment_frames / avg_fps`` (EPIC-KITCHENS
    segments), else the whole file. Per video clip one window of
    ``target_length`` frames (``(target_length - 1) * shift + window``
    samples) is cut inside that range:

    ``align='clip'``
        centred on the clip's sampled frames (default);
    ``'center'`` / ``'start'`` / ``'random'``
        centred in the range / at its start / uniformly random (the authors'
        training crop).

    Audio shorter than the window is zero-padded at the end (in the log-mel
    domain, before normalisation, as AST and the authors do).

    Args:
        sample_rate (int): resample to this rate (AST: 16000); ``None``
            keeps the source rate.
        num_mel_bins (int): mel bins (128).
        target_length (int): fbank frames per clip (VGGSound 1024,
            EPIC-SOUNDS 400).
        frame_length, frame_shift (float): ms (25, 10).
        align (str): see above.
        mean, std (float): normalisation ``(x - mean) / (2 * std)``; set
            ``normalize=False`` to keep raw log-mel values.
        audio_prefix, audio_suffix (str): separate audio files.
        npy_sample_rate (int): sample rate of 1-D ``.npy`` waveforms.
        missing (str): ``'silence'`` (default) or ``'error'`` for sources
            without an audio stream.

    Added keys: ``audio`` (num_clips, target_length, num_mel_bins) float32,
    ``audio_times`` (num_clips, 2) seconds, ``frame_times`` (num_clips,
    clip_len) seconds when frames were sampled, ``audio_missing`` (bool).
    """

    missing_count = 0  # sources without audio seen by this process

    def __init__(self, sample_rate=16000, num_mel_bins=128,
                 target_length=1024, frame_length=25.0, frame_shift=10.0,
                 align='clip', mean=AST_MEAN, std=AST_STD, normalize=True,
                 audio_prefix=None, audio_suffix='.wav',
                 npy_sample_rate=None, missing='silence'):
        if align not in ('clip', 'center', 'start', 'random'):
            raise ValueError(f'LoadAudioFbank.align must be clip, center, '
                             f'start or random, got {align!r}')
        if missing not in ('silence', 'error'):
            raise ValueError(f'LoadAudioFbank.missing must be silence or '
                             f'error, got {missing!r}')
        if target_length < 1 or num_mel_bins < 1:
            raise ValueError('LoadAudioFbank: target_length and num_mel_bins '
                             'must be >= 1')
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.target_length = target_length
        self.frame_length, self.frame_shift = frame_length, frame_shift
        self.align = align
        self.mean, self.std, self.normalize = mean, std, normalize
        self.audio_prefix, self.audio_suffix = audio_prefix, audio_suffix
        self.npy_sample_rate = npy_sample_rate
        self.missing = missing

    # -- where the audio comes from ---------------------------------------
    def _source(self, results):
        if results.get('audio_path'):
            return results['audio_path']
        video = results.get('filename')
        if self.audio_prefix is not None:
            if video is None:
                raise KeyError('LoadAudioFbank: audio_prefix needs the '
                               'sample\'s "filename" to name its audio file')
            stem = osp.splitext(osp.basename(video))[0]
            return osp.join(self.audio_prefix, stem + self.audio_suffix)
        if video is None:
            raise KeyError('LoadAudioFbank: the sample has neither '
                           '"audio_path" nor "filename"')
        return video

    @staticmethod
    def _range(results):
        if results.get('audio_range') is not None:
            lo, hi = results['audio_range']
            return float(lo), float(hi)
        fps = results.get('avg_fps')
        if results.get('segment_frames') is not None and fps:
            first, last = results['segment_frames']
            return first / fps, (last + 1) / fps
        if results.get('total_frames') and fps:
            return 0.0, results['total_frames'] / fps
        return 0.0, None

    def _frame_times(self, results):
        inds, fps = results.get('frame_inds'), results.get('avg_fps')
        if inds is None:
            return None
        if not fps:  # e.g. PyAVInit does not record the frame rate
            fps = _video_fps(results.get('filename'))
            if not fps:
                return None
            results['avg_fps'] = fps
        inds = np.asarray(inds, dtype=np.float64).reshape(-1)
        clips = int(results.get('num_clips', 1) or 1)
        if inds.size % clips:
            raise ValueError(f'LoadAudioFbank: {inds.size} frame indices do '
                             f'not split into num_clips={clips}')
        return inds.reshape(clips, -1) / float(fps)

    def _window_seconds(self, sr):
        shift = int(sr * self.frame_shift * 0.001)
        win = int(sr * self.frame_length * 0.001)
        return ((self.target_length - 1) * shift + win) / sr

    def _starts(self, lo, hi, length, frame_times, clips):
        last = lo if hi is None else max(lo, hi - length)
        if self.align == 'clip' and frame_times is not None:
            centre = (frame_times[:, 0] + frame_times[:, -1]) / 2.0
            starts = centre - length / 2.0
        elif self.align == 'random':
            starts = lo + np.random.rand(clips) * (last - lo)
        elif self.align == 'start':
            starts = np.full(clips, lo)
        else:  # centre of the range (or 'clip' without sampled frames)
            mid = lo if hi is None else (lo + hi) / 2.0
            starts = np.full(clips, mid - length / 2.0)
        return np.clip(starts, lo, last)

    # -- reading ----------------------------------------------------------
    def _read(self, path, start, end):
        """(waveform, offset, sr) or None without an audio stream, or
        ('fbank', array) for a precomputed fbank."""
        if path.endswith('.npy'):
            try:
                arr = np.load(path)
            except (OSError, ValueError) as e:
                raise AudioDecodeError(f'{path}: cannot read the .npy audio '
                                       f'({e})') from e
            if arr.ndim == 2:
                if arr.shape[1] != self.num_mel_bins:
                    raise AudioDecodeError(
                        f'{path}: a 2-D .npy must be a (frames, '
                        f'{self.num_mel_bins}) fbank, got {arr.shape}')
                return 'fbank', arr.astype(np.float32)
            if arr.ndim != 1:
                raise AudioDecodeError(f'{path}: .npy audio must be a 1-D '
                                       f'waveform or a 2-D fbank, got '
                                       f'{arr.shape}')
            if not self.npy_sample_rate:
                raise ValueError(f'{path}: set LoadAudioFbank.'
                                 f'npy_sample_rate for 1-D .npy waveforms')
            sr = self.sample_rate or self.npy_sample_rate
            wave = _resample(arr.astype(np.float32), self.npy_sample_rate, sr)
            lo = int(round(start * sr))
            hi = None if end is None else int(round(end * sr))
            return wave[lo:hi], lo / sr, sr
        sr = self.sample_rate or self._native_rate(path)
        got = read_audio(path, sr, start, end)
        if got is None:
            return None
        return got[0], got[1], sr

    @staticmethod
    def _native_rate(path):
        import av
        try:
            with av.open(path) as c:
                if c.streams.audio:
                    return c.streams.audio[0].rate
        except _av_error_types() + (OSError, ) as e:
            raise AudioDecodeError(f'{path}: cannot open the file to read '
                                   f'its audio ({e})') from e
        return 16000

    # -- fbank ------------------------------------------------------------
    def _fit(self, fb):
        """Crop / zero-pad (log domain) to target_length, normalise."""
        t = fb.shape[0]
        if t > self.target_length:
            fb = fb[:self.target_length]
        elif t < self.target_length:
            fb = np.concatenate(
                [fb, np.zeros((self.target_length - t, fb.shape[1]),
                              np.float32)], 0)
        if self.normalize:
            fb = (fb - self.mean) / (2.0 * self.std)
        return fb.astype(np.float32)

    def _silence(self):
        fb = np.full((self.target_length, self.num_mel_bins),
                     math.log(_LOG_FLOOR), np.float32)
        return self._fit(fb)

    def transform(self, results):
        path = self._source(results)
        lo, hi = self._range(results)
        frame_times = self._frame_times(results)
        clips = 1 if frame_times is None else frame_times.shape[0]
        sr = self.sample_rate or 16000
        length = self._window_seconds(sr)
        shift_s = self.frame_shift * 0.001
        got, read = None, False
        if hi is None:  # unknown duration: read everything once
            got, read = self._read(path, lo, None), True
            if got is not None:
                hi = (got[1].shape[0] * shift_s if isinstance(got[0], str) else
                      got[1] + len(got[0]) / got[2])
        starts = self._starts(lo, hi, length, frame_times, clips)
        if not read:
            got = self._read(path, float(starts.min()),
                             min(float(starts.max()) + length, hi))
        missing = got is None
        out = []
        if missing:
            if self.missing == 'error':
                raise AudioDecodeError(f'{path} has no audio stream')
            LoadAudioFbank.missing_count += 1
            n = LoadAudioFbank.missing_count
            if n <= 10 or n % 100 == 0:
                print_log(f'LoadAudioFbank: {path} has no audio stream; '
                          f'using silence ({n} such source(s) so far)',
                          logger='current', level=30)
            out = [self._silence() for _ in range(clips)]
        elif isinstance(got[0], str):  # a precomputed fbank of the whole file
            fb = got[1]
            for s in starts:
                i = int(round(s / shift_s))
                out.append(self._fit(fb[i:i + self.target_length]))
        else:
            wave, offset, sr = got
            need = int(round(length * sr))
            for s in starts:
                i = max(0, int(round((s - offset) * sr)))
                seg = wave[i:i + need]
                if hi is not None:
                    seg = seg[:max(0, int(round((hi - s) * sr)))]
                seg = torch.from_numpy(np.ascontiguousarray(seg))
                seg = seg - seg.mean() if seg.numel() else seg
                fb = kaldi_fbank(seg, sr, self.num_mel_bins,
                                 self.frame_length, self.frame_shift).numpy()
                out.append(self._fit(fb))
        results['audio'] = np.stack(out, 0)
        results['audio_times'] = np.stack(
            [starts, starts + self.target_length * shift_s], 1).astype(
                np.float32)
        if frame_times is not None:
            results['frame_times'] = frame_times.astype(np.float32)
        results['audio_missing'] = missing
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(sample_rate={self.sample_rate}, '
                f'num_mel_bins={self.num_mel_bins}, target_length='
                f'{self.target_length}, align={self.align!r})')


@TRANSFORMS.register_module()
class SpecAugment(BaseTransform):
    """SpecAugment time and frequency masking of ``results['audio']``
    ((clips, T, F)), each clip independently. Mask widths are uniform in
    ``[0, time_mask)`` frames / ``[0, freq_mask)`` bins, filled with
    ``value`` (the authors' recipe: two masks each, 70 frames / 20 bins,
    value 0 on the normalised spectrogram)."""

    def __init__(self, time_mask=70, freq_mask=20, num_time_masks=2,
                 num_freq_masks=2, value=0.0):
        self.time_mask, self.freq_mask = time_mask, freq_mask
        self.num_time_masks, self.num_freq_masks = num_time_masks, \
            num_freq_masks
        self.value = value

    def _mask(self, x, axis, width, count):
        size = x.shape[axis]
        for _ in range(count):
            w = min(int(np.random.uniform(0, width)), size)
            s = np.random.randint(0, size - w + 1)
            if axis == 0:
                x[s:s + w] = self.value
            else:
                x[:, s:s + w] = self.value

    def transform(self, results):
        audio = np.array(results['audio'], dtype=np.float32, copy=True)
        for clip in audio:
            self._mask(clip, 0, self.time_mask, self.num_time_masks)
            self._mask(clip, 1, self.freq_mask, self.num_freq_masks)
        results['audio'] = audio
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(time_mask={self.time_mask}, '
                f'freq_mask={self.freq_mask})')


@TRANSFORMS.register_module()
class PackAudioVisualInputs(PackActionInputs):
    """Pack ``imgs`` (after ``FormatShape('NCTHW')``), ``audio`` and the
    timestamps into ``inputs = dict(video, audio, times)``.

    ``video`` (V, C, T, H, W) with V = crops x clips (crop-major, as
    ``FormatShape`` orders them); ``audio`` (V, 1, T', F) and ``times``
    (V, 2 + T) repeat the per-clip values for every crop. ``times`` is
    ``[audio_start, audio_end, t_0 .. t_{T-1}]``; without sampled frames the
    frame timestamps are zeros. Labels: ``label`` -> ``gt_label``;
    ``verb_label`` / ``noun_label`` -> ``gt_verb`` / ``gt_noun``.
    """

    def __init__(self, meta_keys=('img_shape', 'video_id', 'narration_id',
                                  'annotation_id', 'audio_missing'),
                 **kwargs):
        super().__init__(meta_keys=meta_keys, **kwargs)

    @staticmethod
    def _tile(x, views, what):
        clips = x.shape[0]
        if views % clips:
            raise ValueError(f'PackAudioVisualInputs: {views} video views '
                             f'are not a multiple of the {clips} {what} '
                             f'clips')
        return np.tile(x, (views // clips, ) + (1, ) * (x.ndim - 1))

    def transform(self, results):
        if 'audio' not in results:
            raise KeyError('PackAudioVisualInputs: no "audio" in the sample; '
                           'put LoadAudioFbank in the pipeline')
        packed = super().transform(results)
        video = packed['inputs']
        audio = np.asarray(results['audio'], np.float32)
        if video.ndim != 5:
            raise ValueError(f'PackAudioVisualInputs: video must be (views, '
                             f'C, T, H, W) (use FormatShape("NCTHW")), got '
                             f'{tuple(video.shape)}')
        views, clip_len = video.shape[0], video.shape[2]
        audio = self._tile(audio, views, 'audio')[:, None]
        ftimes = results.get('frame_times')
        if ftimes is None:
            ftimes = np.zeros((audio.shape[0], clip_len), np.float32)
        ftimes = np.asarray(ftimes, np.float32)
        if ftimes.shape[-1] != clip_len:
            raise ValueError(f'PackAudioVisualInputs: {ftimes.shape[-1]} '
                             f'frame timestamps per clip for clips of '
                             f'{clip_len} frames')
        times = np.concatenate(
            [np.asarray(results['audio_times'], np.float32), ftimes], 1)
        times = self._tile(times, views, 'timestamp')
        packed['inputs'] = dict(video=video,
                                audio=torch.from_numpy(audio),
                                times=torch.from_numpy(times))
        sample = packed['data_samples']
        for key, field in (('verb_label', 'gt_verb'),
                           ('noun_label', 'gt_noun')):
            if results.get(key) is not None:
                sample.set_field(torch.tensor(int(results[key])), field)
        return packed
