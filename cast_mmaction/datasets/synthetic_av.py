"""A tiny synthetic audio-visual dataset whose classes need sight AND sound.

Every clip is a real mp4 (H.264 or MPEG-4 video plus an AAC audio track,
written with PyAV): a coloured square drifting over a noisy background, with
a tone in noise on the soundtrack. The class is the pair (colour, pitch):

=====  ===========  ===================
label  colour       tone
=====  ===========  ===================
0      red          low  (300-400 Hz)
1      red          high (1.2-1.6 kHz)
2      blue         low
3      blue         high
=====  ===========  ===================

A video-only or audio-only model can reach at most 50 % top-1 (chance 25 %).
Everything is a deterministic function of the arguments and ``seed``.
``write_synthetic_av_dataset`` also writes MMAction2 list files
(``relative/path.mp4 label``) for ``AudioVisualDataset``.
"""
import os
import os.path as osp

import numpy as np

COLOURS = ('red', 'blue')
PITCHES = ('low', 'high')
CLASSES = tuple(f'{c}_{p}' for c in COLOURS for p in PITCHES)
_RGB = {'red': (220, 40, 40), 'blue': (40, 80, 230)}


def render_frames(rng, colour, num_frames, size):
    """(T, H, W, 3) uint8 frames: a square of ``colour`` moving in a random
    direction over a noisy grey background."""
    bg = rng.uniform(80, 160) + rng.normal(0, 12, (size, size, 3))
    side = max(4, size // 4)
    x0, y0 = rng.uniform(0, size - side, 2)
    vx, vy = rng.uniform(-1.5, 1.5, 2)
    rgb = np.clip(np.array(_RGB[colour]) + rng.uniform(-20, 20, 3), 0, 255)
    frames = []
    for t in range(num_frames):
        img = bg + rng.normal(0, 6, bg.shape)
        x = int(np.clip(x0 + vx * t, 0, size - side))
        y = int(np.clip(y0 + vy * t, 0, size - side))
        img[y:y + side, x:x + side] = rgb
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def render_audio(rng, pitch, seconds, sample_rate):
    """A tone (``low`` 300-400 Hz, ``high`` 1.2-1.6 kHz) in white noise."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f = rng.uniform(300, 400) if pitch == 'low' else rng.uniform(1200, 1600)
    wave = 0.4 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return (wave + rng.normal(0, 0.03, n)).astype(np.float32)


def write_av_video(path, frames, fps=8, audio=None, sample_rate=16000):
    """Write ``frames`` (T, H, W, 3) uint8 RGB and an optional mono
    ``audio`` track (float32 in [-1, 1]) to an mp4 with PyAV."""
    import av
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
    with av.open(path, 'w') as c:
        vs = c.add_stream(codec, rate=fps)
        vs.height, vs.width = frames.shape[1:3]
        vs.pix_fmt = 'yuv420p'
        a = None
        if audio is not None:
            a = c.add_stream('aac', rate=sample_rate)
            a.layout = 'mono'
        for img in frames:
            for p in vs.encode(av.VideoFrame.from_ndarray(img,
                                                          format='rgb24')):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a is not None:
            hop = 1024
            for i in range(0, len(audio), hop):
                fr = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(audio[None, i:i + hop], np.float32),
                    format='flt', layout='mono')
                fr.sample_rate = sample_rate
                fr.pts = i
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)


def write_synthetic_av_dataset(root, num_train=16, num_val=8, num_frames=16,
                               fps=8, size=32, sample_rate=16000, seed=0):
    """Write ``root/{train,val}/*.mp4`` and ``root/{train,val}_list.txt``.
    Returns a dict with the list files, ``video_root`` and ``num_classes``."""
    rng = np.random.default_rng(seed)
    info = dict(video_root=osp.abspath(root), num_classes=len(CLASSES),
                classes=CLASSES)
    for split, count in (('train', num_train), ('val', num_val)):
        lines = []
        for i in range(count):
            label = i % len(CLASSES)
            colour, pitch = COLOURS[label // 2], PITCHES[label % 2]
            frames = render_frames(rng, colour, num_frames, size)
            audio = render_audio(rng, pitch, num_frames / fps, sample_rate)
            rel = f'{split}/{split}_{i:03d}_{CLASSES[label]}.mp4'
            write_av_video(osp.join(root, rel), frames, fps, audio,
                           sample_rate)
            lines.append(f'{rel} {label}')
        ann = osp.join(root, f'{split}_list.txt')
        with open(ann, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        info[f'{split}_ann'] = osp.abspath(ann)
    label_map = osp.join(root, 'label_map.txt')
    with open(label_map, 'w') as f:
        f.write('\n'.join(CLASSES) + '\n')
    info['label_map'] = osp.abspath(label_map)
    return info
