"""A small synthetic video dataset whose classes need appearance AND motion.

Every clip shows one object crossing a noisy, textured background. The class
is the pair (appearance, motion):

=====  ==================  ==========================
label  appearance          motion
=====  ==================  ==========================
0      red square          moves to the right
1      red square          moves to the left
2      blue disc           moves to the right
3      blue disc           moves to the left
=====  ==================  ==========================

A model that sees only appearance (one frame, or frames in shuffled order)
or only motion (a colour-blind model) can reach at most 50% top-1; chance
is 25%. Positions, sizes, speeds, vertical drift, object colour jitter,
background colour, texture and noise are random, so no single pixel gives
the label away. A horizontal flip swaps the motion classes, so training
pipelines for this data must not flip (as for Something-Something-V2).

The files are real encoded mp4 videos (MPEG-4 part 2, written with PyAV) that MMAction2's ``DecordInit`` / ``PyAVInit``
read, plus MMAction2 ``VideoDataset`` list files (``relative/path.mp4
label``) and a label map (one class name per line, line ``i`` = label
``i``). Everything is a deterministic function of the arguments and
``seed``.

Usage::

    from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
    info = write_synthetic_video_dataset('demo_data')
    # info['train_ann'], info['val_ann'], info['num_classes'], ...

or ``python tools/data/make_synthetic_data.py demo_data``.
"""
import json
import os
import os.path as osp

import numpy as np

APPEARANCES = ('red_square', 'blue_disc')
MOTIONS = ('moving_right', 'moving_left')
CLASSES = tuple(f'{a}_{m}' for a in APPEARANCES for m in MOTIONS)
# Base RGB colours of the two objects (jittered per video).
_OBJECT_RGB = {'red_square': (220, 40, 40), 'blue_disc': (40, 80, 230)}
_META = 'synthetic_meta.json'
_FORMAT_VERSION = 1


def class_name(appearance, motion):
    return f'{APPEARANCES[appearance]}_{MOTIONS[motion]}'


def _background(rng, size):
    """A smooth random texture around a random greyish colour (H, W, 3)."""
    base = rng.uniform(70, 170) + rng.uniform(-20, 20, size=3)
    coarse = rng.normal(0, 18, size=(4, 4, 3))
    # bilinear upsampling of a 4x4 grid -> smooth texture
    grid = np.linspace(0, 3, size)
    i0 = np.floor(grid).astype(int).clip(0, 2)
    f = (grid - i0)[:, None]
    rows = coarse[i0] * (1 - f[..., None]) + coarse[i0 + 1] * f[..., None]
    f = (grid - i0)[None, :, None]
    tex = rows[:, i0] * (1 - f) + rows[:, i0 + 1] * f
    return np.clip(base + tex, 0, 255)


def render_clip(rng, appearance, motion, num_frames=16, size=64):
    """Frames (T, H, W, 3) uint8 RGB of one clip of class
    ``(appearance, motion)``; all randomness from ``rng``."""
    h = w = size
    bg = _background(rng, size)
    obj = rng.integers(int(0.16 * size), int(0.28 * size) + 1)  # side / diam
    colour = np.array(_OBJECT_RGB[APPEARANCES[appearance]], float)
    colour = np.clip(colour + rng.uniform(-25, 25, size=3), 0, 255)
    # horizontal travel: 60%..100% of the free width over the clip
    free = w - obj
    travel = rng.uniform(0.6, 1.0) * free
    x0 = rng.uniform(0, free - travel)
    xs = x0 + np.linspace(0, travel, num_frames)
    if MOTIONS[motion] == 'moving_left':
        xs = xs[::-1]
    y0 = rng.uniform(0, h - obj)
    drift = rng.uniform(-0.15, 0.15) * (h - obj)
    ys = np.clip(y0 + np.linspace(0, drift, num_frames), 0, h - obj)
    yy, xx = np.mgrid[0:h, 0:w]
    noise_std = rng.uniform(3, 10)
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        if APPEARANCES[appearance] == 'red_square':
            mask = ((xx >= xs[t]) & (xx < xs[t] + obj) & (yy >= ys[t]) &
                    (yy < ys[t] + obj))
        else:
            r = obj / 2
            mask = ((xx + 0.5 - xs[t] - r)**2 +
                    (yy + 0.5 - ys[t] - r)**2) <= r * r
        img = bg.copy()
        img[mask] = colour
        img += rng.normal(0, noise_std, size=img.shape)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def write_mp4(path, frames, fps=8):
    """Encode RGB frames (T, H, W, 3) uint8 as an mp4 file with PyAV."""
    import av
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f'write_mp4 needs uint8 frames (T, H, W, 3), got '
                         f'{frames.dtype} {frames.shape}')
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f'frame size {h}x{w} must be even (yuv420p)')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with av.open(path, mode='w') as container:
        # MPEG-4 part 2 (what OpenCV's 'mp4v' writes): every FFmpeg build
        # has it and it is reproducible; libx264 gave run-to-run different
        # bytes on these tiny frames now and then
        stream = container.add_stream('mpeg4', rate=int(fps))
        stream.width, stream.height = w, h
        stream.pix_fmt = 'yuv420p'
        stream.bit_rate = 4_000_000  # the quantiser's best quality
        stream.thread_count = 1
        for i, img in enumerate(frames):
            # the encoder's input format, converted explicitly
            frame = av.VideoFrame.from_ndarray(
                img, format='rgb24').reformat(format='yuv420p')
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _params(num_train_per_class, num_val_per_class, num_frames, size, fps,
            seed):
    return dict(format_version=_FORMAT_VERSION,
                num_train_per_class=int(num_train_per_class),
                num_val_per_class=int(num_val_per_class),
                num_frames=int(num_frames), size=int(size), fps=int(fps),
                seed=int(seed), classes=list(CLASSES))


def _result(root, params):
    return dict(root=root,
                train_ann=osp.join(root, 'train_list.txt'),
                val_ann=osp.join(root, 'val_list.txt'),
                num_classes=len(CLASSES),
                label_map=osp.join(root, 'label_map.txt'),
                classes=list(CLASSES),
                num_frames=params['num_frames'],
                size=params['size'])


def _complete(root, params):
    """True when ``root`` already holds this exact dataset."""
    meta = osp.join(root, _META)
    if not osp.isfile(meta):
        return False
    try:
        with open(meta) as f:
            if json.load(f) != params:
                return False
    except (OSError, ValueError):
        return False
    res = _result(root, params)
    for ann in (res['train_ann'], res['val_ann']):
        if not osp.isfile(ann):
            return False
        with open(ann) as f:
            for line in f:
                rel = line.split()[0]
                if not osp.isfile(osp.join(root, rel)):
                    return False
    return osp.isfile(res['label_map'])


def write_synthetic_video_dataset(root,
                                  num_train_per_class=40,
                                  num_val_per_class=10,
                                  num_frames=16,
                                  size=64,
                                  fps=8,
                                  seed=0,
                                  overwrite=False):
    """Write the 4-class appearance x motion dataset under ``root``.

    Layout::

        root/train/000000_red_square_moving_right.mp4 ...
        root/val/...
        root/train_list.txt   lines 'train/<file>.mp4 <label>'
        root/val_list.txt     lines 'val/<file>.mp4 <label>'
        root/label_map.txt    class names, line i = label i
        root/synthetic_meta.json   the arguments (reuse check)

    Args:
        root: output folder (created).
        num_train_per_class, num_val_per_class: clips per class and split.
        num_frames: frames per clip.
        size: frame height = width in pixels (even, >= 16).
        fps: frame rate written into the files.
        seed: everything (pixels, order) is a function of the arguments.
        overwrite: rewrite even if ``root`` already holds this dataset
            (otherwise an identical existing dataset is reused as is).

    Returns:
        dict(root, train_ann, val_ann, num_classes, label_map (path of the
        label map file), classes (list of names), num_frames, size).
    """
    if size < 16 or size % 2:
        raise ValueError(f'size={size}: use an even frame size >= 16')
    if num_frames < 2:
        raise ValueError(f'num_frames={num_frames}: motion needs >= 2 '
                         f'frames')
    for name, n in (('num_train_per_class', num_train_per_class),
                    ('num_val_per_class', num_val_per_class)):
        if n < 1:
            raise ValueError(f'{name}={n}: must be >= 1')
    root = osp.abspath(root)
    params = _params(num_train_per_class, num_val_per_class, num_frames,
                     size, fps, seed)
    if not overwrite and _complete(root, params):
        return _result(root, params)
    os.makedirs(root, exist_ok=True)
    meta_path = osp.join(root, _META)
    if osp.exists(meta_path):  # invalid until the new set is complete
        os.remove(meta_path)
    res = _result(root, params)
    # one independent stream per split, so the validation clips do not
    # change when the number of training clips does
    for split, per_class, ann, offset in (
            ('train', num_train_per_class, res['train_ann'], 0),
            ('val', num_val_per_class, res['val_ann'], 1)):
        rng = np.random.default_rng([int(seed), offset])
        labels = np.repeat(np.arange(len(CLASSES)), per_class)
        rng.shuffle(labels)
        lines = []
        for k, label in enumerate(labels):
            appearance, motion = divmod(int(label), len(MOTIONS))
            frames = render_clip(rng, appearance, motion, num_frames, size)
            rel = f'{split}/{k:06d}_{CLASSES[label]}.mp4'
            write_mp4(osp.join(root, rel), frames, fps)
            lines.append(f'{rel} {int(label)}\n')
        with open(ann, 'w') as f:
            f.writelines(lines)
    with open(res['label_map'], 'w') as f:
        f.writelines(c + '\n' for c in CLASSES)
    with open(meta_path, 'w') as f:
        json.dump(params, f, indent=1)
    return res
