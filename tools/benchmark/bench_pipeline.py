#!/usr/bin/env python
"""Where a training clip's time goes in a config's data pipeline, and which
video decoder is fastest for each case.

    python tools/benchmark/bench_pipeline.py                                # SSv2 + K400 train pipelines
    python tools/benchmark/bench_pipeline.py --config configs/cast_ssv2_device_aug.py --clips 48
    python tools/benchmark/bench_pipeline.py --split val --json out.json
    python tools/benchmark/bench_pipeline.py --compare-decoders             # decord / PyAV / torchcodec
    python tools/benchmark/bench_pipeline.py --resize-diff --split val      # short-side decode vs Resize

Synthetic videos of the datasets' real sizes and lengths are written once
into ``--workdir`` (H.264 mp4, libx264 ``crf=23`` preset medium = ffmpeg's
defaults, a moving texture, each frame's index as a bar code in its top
rows, so that every decoded frame can be checked):

* ``ssv2``: 45 frames, 426 x 240 (SSv2's 240 px height; 427 is odd, which
  yuv420p cannot hold), 12 fps, a key frame every 24 frames (2 s; the
  originals are VP9 webm with a key frame every few seconds, commonly
  re-encoded to mp4; 24 puts one key frame inside the clip, between
  ffmpeg's default of one per short clip and a dense 12);
* ``k400``: 300 frames (10 s), 568 x 320 (the recipe's 320 px short side),
  30 fps, a key frame every 250 frames (ffmpeg's / libx264's default
  ``keyint``, what re-encoding Kinetics to 320 px with ffmpeg gives).

Pipeline mode: builds the config's ``--split`` dataset on those videos and
runs its pipeline clip by clip, timing every transform of the pipeline list
(whatever they are) and the collate of ``batch_size`` clips (the config's
``collate_fn``, MMEngine's ``pseudo_collate`` by default), in one process
with torch / OpenCV / the decoder pinned to ``--threads`` threads (the
transforms' ``num_threads``), as one DataLoader worker runs. The primary
figure is the process CPU time per clip (all threads; what a worker costs
when every core is busy), wall time is secondary; clips/s per worker =
1 / CPU time per clip. ``--preprocess`` also times the model's
``data_preprocessor`` on each collated batch on ``--device`` (not a
worker's cost; reported apart).

Decoder mode (``--compare-decoders``): for SSv2-like and K400-like files,
train and val sampling (the configs' own sampling transforms, the same
frames for every decoder), the CPU (wall) ms per clip of opening + decoding
with MMAction2's ``DecordInit`` + ``DecordDecode`` and with ``VideoInit`` +
``VideoDecode`` on decord, PyAV and torchcodec, one thread each, at full size
and at short side 224 (``--short-side``); every full-size frame is checked
against its bar code.
"""
import argparse
import copy
import os
import os.path as osp
import platform
import statistics
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: synthetic videos: frames, width, height, fps, key-frame interval
VIDEO_KINDS = dict(
    ssv2=dict(frames=45, width=426, height=240, fps=12, gop=24),
    k400=dict(frames=300, width=568, height=320, fps=30, gop=250),
    # as k400, plus fresh noise in every frame (a camera's): predicted
    # frames cost bits and decoding time as in real video
    k400_noisy=dict(frames=300, width=568, height=320, fps=30, gop=250,
                    noise=4.0),
    # a 360p download before resizing to 320 (the pixel difference of
    # --prepare-diff includes the resize)
    k400_360p=dict(frames=300, width=640, height=360, fps=30, gop=250,
                   noise=4.0),
)
DEFAULT_CONFIGS = ('configs/cast_ssv2.py', 'configs/cast_k400.py')

#: transform type -> stage of the issue's breakdown
CATEGORIES = dict(
    open=('DecordInit', 'VideoInit', 'EpicVideoInit', 'PyAVInit',
          'OpenCVInit'),
    sampling=('SegmentSample', 'DenseSpanSample', 'SampleFrames',
              'UniformSample', 'EpicSampleFrames', 'UntrimmedSampleFrames'),
    decode=('DecordDecode', 'VideoDecode', 'EpicDecode', 'PyAVDecode',
            'OpenCVDecode', 'PyAVDecodeMotionVector'),
    randaugment=('VideoRandAugment', 'RandAugment'),
    crop=('RandomResizedCrop', 'CenterCrop', 'ThreeCrop', 'TenCrop',
          'RandomCrop', 'MultiScaleCrop'),
    resize=('Resize', ),
    flip=('Flip', ),
    format=('FormatShape', 'Normalize'),
    pack=('PackActionInputs', 'PackEpicInputs'),
)


def category(type_name):
    for cat, names in CATEGORIES.items():
        if type_name in names:
            return cat
    return type_name


# --------------------------------------------------------------------------
# machine facts
# --------------------------------------------------------------------------
def machine():
    from cast_mmaction.utils import cpu_facts
    cpu = cpu_facts()
    facts = dict(cpu=cpu.get('cpu_model') or platform.processor() or '?',
                 logical_cpus=os.cpu_count(),
                 python=platform.python_version())
    if 'cpu_isa' in cpu:
        facts['cpu_isa'] = cpu['cpu_isa']
    for mod in ('torch', 'decord', 'av', 'torchcodec', 'cv2'):
        try:
            facts[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - only a record
            facts[mod] = None
    return facts


# --------------------------------------------------------------------------
# synthetic videos
# --------------------------------------------------------------------------
def ensure_videos(workdir, kind, count, spec=None):
    """Write (once) ``count`` videos of ``kind`` (:data:`VIDEO_KINDS` or
    ``spec``) and their list file; returns (list file, folder)."""
    from cast_mmaction.datasets.indexed_video import write_indexed_video
    spec = dict(spec or VIDEO_KINDS[kind])
    folder = osp.join(workdir, f'{kind}_{spec["width"]}x{spec["height"]}_'
                      f'{spec["frames"]}f_{spec["fps"]}fps_g{spec["gop"]}' +
                      (f'_n{spec["noise"]:g}' if spec.get('noise') else ''))
    os.makedirs(folder, exist_ok=True)
    lines = []
    for i in range(count):
        name = f'{kind}_{i:03d}.mp4'
        path = osp.join(folder, name)
        if not osp.isfile(path):
            t = time.perf_counter()
            write_indexed_video(path + '.part.mp4', spec['frames'],
                                spec['width'], spec['height'], spec['fps'],
                                spec['gop'], texture=True, crf=23,
                                noise=spec.get('noise', 0.0), seed=i)
            os.replace(path + '.part.mp4', path)
            print(f'wrote {path} in {time.perf_counter() - t:.1f} s',
                  flush=True)
        lines.append(f'{name} {i % 2}')
    ann = osp.join(folder, f'list_{count}.txt')
    with open(ann, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return ann, folder


def ensure_prepared(folder, ann, short_side, keyint, x264_params=None):
    """The videos of ``ann`` (in ``folder``) prepared as
    ``tools/data/prepare_k400.py --resize-short S --keyint N`` prepares
    them (``cast_mmaction.datasets.reencode``), written once beside
    ``folder``; returns (list file, prepared folder, (width, height),
    CPU seconds spent preparing, mean bytes per file before / after)."""
    from cast_mmaction.datasets.reencode import X264_PARAMS, reencode_videos
    params = X264_PARAMS + (f':{x264_params}' if x264_params else '')
    tag = f'_prep_s{short_side or "same"}_g{keyint or "def"}_' + ''.join(
        c if c.isalnum() else '_' for c in params)
    out = folder.rstrip('/') + tag
    names = [ln.split()[0] for ln in open(ann).read().splitlines()]
    pairs = [(osp.join(folder, n), osp.join(out, n)) for n in names]
    c0 = time.process_time()
    done, failed = reencode_videos(pairs, short_side=short_side,
                                   keyint=keyint, x264_params=x264_params)
    spent = time.process_time() - c0
    if failed:
        raise RuntimeError(f'preparing the benchmark videos failed: '
                           f'{failed}')
    import av
    with av.open(pairs[0][1]) as c:
        cc = c.streams.video[0].codec_context
        size = (cc.width, cc.height)
    new_ann = osp.join(out, osp.basename(ann))
    with open(ann) as f, open(new_ann, 'w') as g:
        g.write(f.read())
    before = statistics.mean(osp.getsize(a) for a, _ in pairs)
    after = statistics.mean(osp.getsize(b) for _, b in pairs)
    return new_ann, out, size, spent, (before, after)


def guess_kind(config):
    name = osp.basename(config).lower()
    return 'k400' if ('k400' in name or 'kinetics' in name) else 'ssv2'


# --------------------------------------------------------------------------
# pipeline breakdown
# --------------------------------------------------------------------------
def pin_threads(threads):
    import cv2
    import torch
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _clock():
    return time.perf_counter(), time.process_time()


def _innermost(ds_cfg):
    """The dataset config that holds ``ann_file`` (wrappers: ``dataset``)."""
    cur = ds_cfg
    while 'ann_file' not in cur and isinstance(cur.get('dataset'), dict):
        cur = cur['dataset']
    if 'ann_file' not in cur:
        raise ValueError('bench_pipeline: the dataset config has no ann_file '
                         '(not even in a wrapped dataset)')
    return cur


def load_config(config, cfg_options=None):
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def swap_decoder(pipeline, decoder):
    """``pipeline`` (list of transform dicts, edited in place) decoding
    with ``decoder``: ``'mmaction'`` = MMAction2's DecordInit +
    DecordDecode, or a ``VideoInit`` backend (``'decord'``, ``'pyav'``,
    ``'torchcodec'``) with ``VideoDecode``; ``None``: as configured."""
    if not decoder:
        return pipeline
    for t in pipeline:
        if t['type'] in ('DecordInit', 'VideoInit'):
            t.clear()
            t.update(type='DecordInit') if decoder == 'mmaction' else \
                t.update(type='VideoInit', backend=decoder)
        elif t['type'] in ('DecordDecode', 'VideoDecode'):
            t.clear()
            t['type'] = 'DecordDecode' if decoder == 'mmaction' else \
                'VideoDecode'
    return pipeline


def build_dataset(cfg, split, ann_file, folder, decoder=None):
    from cast_mmaction.utils import ensure_scope
    from mmaction.registry import DATASETS
    ensure_scope()
    ds_cfg = copy.deepcopy(cfg[f'{split}_dataloader']['dataset'])
    inner = _innermost(ds_cfg)
    inner['ann_file'] = ann_file
    inner['data_prefix'] = dict(video=folder)
    if decoder:
        pipe = ds_cfg['pipeline'] if 'pipeline' in ds_cfg else \
            inner['pipeline']
        swap_decoder(pipe, decoder)
    dataset = DATASETS.build(ds_cfg)
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    while 'dataset' in dataset.__dict__:  # wrappers (RobustDataset, ...)
        dataset = dataset.__dict__['dataset']
    return dataset


def _collate_fn(cfg, split):
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import FUNCTIONS
    spec = cfg[f'{split}_dataloader'].get('collate_fn')
    if not spec:
        return 'pseudo_collate', pseudo_collate
    spec = dict(spec)
    name = spec.pop('type')
    fn = FUNCTIONS.get(name) if isinstance(name, str) else name
    if spec:
        import functools
        fn = functools.partial(fn, **spec)
    return getattr(name, '__name__', name), fn


def stage_names(transforms):
    names, seen = [], {}
    for t in transforms:
        n = type(t).__name__
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f'{n}#{seen[n]}')
    return names


def _set_threads(transforms, threads):
    """Pin the decoders' threads (transforms with ``num_threads``)."""
    pinned = []
    for t in transforms:
        if hasattr(t, 'num_threads'):
            t.num_threads = threads
            pinned.append(type(t).__name__)
    return pinned


def time_pipeline(config, split='train', clips=24, warmup=2, workdir=None,
                  threads=1, videos=None, kind=None, batch_size=None,
                  cfg_options=None, seed=0, preprocess=False, device='cpu',
                  check_frames=True, decoder=None, prepare=None,
                  decode_device=None):
    """Per-transform CPU and wall time of ``clips`` clips (after
    ``warmup``) of ``config``'s ``split`` pipeline on synthetic videos;
    collate per ``batch_size`` clips. Returns a dict (see module doc)."""
    import numpy as np
    import random
    import torch
    cfg = load_config(config, cfg_options)
    kind = kind or guess_kind(config)
    spec = VIDEO_KINDS[kind] if isinstance(kind, str) else kind
    kind_name = kind if isinstance(kind, str) else 'custom'
    nvid = videos or max(4, min(clips, 16))
    ann, folder = ensure_videos(workdir, kind_name, nvid, spec)
    prep_info = None
    if prepare:
        ann, folder, size, spent, sizes = ensure_prepared(
            folder, ann, prepare.get('short_side'), prepare.get('keyint'),
            prepare.get('x264_params'))
        from cast_mmaction.datasets.reencode import X264_PARAMS
        xp = prepare.get('x264_params')
        prep_info = dict(prepare, folder=folder, width=size[0],
                         x264_params_used=X264_PARAMS + (f':{xp}' if xp
                                                         else ''),
                         height=size[1], bytes_per_file_before=sizes[0],
                         bytes_per_file_after=sizes[1],
                         cpu_s_this_run=spent)
        spec = dict(spec, width=size[0], height=size[1])
    dataset = build_dataset(cfg, split, ann, folder, decoder)
    if decode_device:
        for t in dataset.pipeline.transforms:
            if type(t).__name__ == 'VideoInit':
                t.reader_kwargs['device'] = decode_device
    transforms = list(dataset.pipeline.transforms)
    names = stage_names(transforms)
    pinned = _set_threads(transforms, threads)
    pin_threads(threads)
    coll_name, collate = _collate_fn(cfg, split)
    bs = int(batch_size or cfg[f'{split}_dataloader'].get('batch_size', 1))
    pre = None
    if preprocess:
        from mmaction.registry import MODELS
        pre = MODELS.build(copy.deepcopy(cfg.model.data_preprocessor))
        pre = pre.to(device)
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    n_t = len(transforms)
    cpu = np.zeros((clips, n_t))
    wall = np.zeros((clips, n_t))
    coll_cpu, coll_wall, pre_wall, batches = [], [], [], 0
    batch = []
    checked = 0
    load0 = os.getloadavg()
    for i in range(warmup + clips):
        results = copy.deepcopy(dataset.get_data_info(i % len(dataset)))
        row_c, row_w = [], []
        for t in transforms:
            w0, c0 = _clock()
            results = t(results)
            w1, c1 = _clock()
            row_w.append(w1 - w0)
            row_c.append(c1 - c0)
            if results is None:
                raise RuntimeError(f'{config}: transform {t!r} returned '
                                   f'None (it drops the sample)')
            if check_frames and 'imgs' in results and \
                    category(type(t).__name__) == 'decode':
                checked += _check_decoded(results, spec)
        if i < warmup:
            continue
        cpu[i - warmup], wall[i - warmup] = row_c, row_w
        batch.append(results)
        if len(batch) == bs or i == warmup + clips - 1:
            w0, c0 = _clock()
            data = collate(batch)
            w1, c1 = _clock()
            coll_wall.append((w1 - w0, len(batch)))
            coll_cpu.append((c1 - c0, len(batch)))
            if pre is not None:
                if device.startswith('cuda'):
                    torch.cuda.synchronize()
                w0 = time.perf_counter()
                with torch.no_grad():
                    pre(data, training=(split == 'train'))
                if device.startswith('cuda'):
                    torch.cuda.synchronize()
                pre_wall.append((time.perf_counter() - w0, len(batch)))
            batches += 1
            batch = []
    load1 = os.getloadavg()
    stages = []
    for j, (n, t) in enumerate(zip(names, transforms)):
        stages.append(dict(name=n, type=type(t).__name__,
                           category=category(type(t).__name__),
                           cpu_ms=1e3 * float(cpu[:, j].mean()),
                           wall_ms=1e3 * float(wall[:, j].mean())))
    stages.append(dict(
        name='collate', type=coll_name, category='collate',
        cpu_ms=1e3 * sum(c for c, _ in coll_cpu) / clips,
        wall_ms=1e3 * sum(w for w, _ in coll_wall) / clips))
    tot_c = sum(s['cpu_ms'] for s in stages)
    tot_w = sum(s['wall_ms'] for s in stages)
    for s in stages:
        s['cpu_pct'] = 100.0 * s['cpu_ms'] / tot_c if tot_c else 0.0
        s['wall_pct'] = 100.0 * s['wall_ms'] / tot_w if tot_w else 0.0
    per_clip_c = cpu.sum(1) * 1e3
    out = dict(config=config, split=split, video_kind=kind_name,
               decoder=decoder or 'as configured',
               video=spec, clips=clips, warmup=warmup, batch_size=bs,
               batches=batches, threads=threads, pinned=pinned,
               stages=stages, total_cpu_ms=tot_c, total_wall_ms=tot_w,
               median_clip_cpu_ms=float(np.median(per_clip_c)),
               clips_per_s_per_worker_cpu=1e3 / tot_c if tot_c else None,
               clips_per_s_per_worker_wall=1e3 / tot_w if tot_w else None,
               frames_checked=checked, load_avg_before=load0,
               load_avg_after=load1, prepared=prep_info,
               decode_device=decode_device)
    if pre is not None:
        out['data_preprocessor'] = dict(
            device=device,
            wall_ms_per_clip=1e3 * sum(w for w, _ in pre_wall) / clips)
    return out


def _check_decoded(results, spec):
    """Compare the decoded frames' bar codes with ``frame_inds`` (only at
    full size; returns how many frames were checked)."""
    from cast_mmaction.datasets.indexed_video import frame_index
    imgs = results['imgs']
    if tuple(imgs[0].shape[:2]) != (spec['height'], spec['width']):
        return 0
    inds = [min(int(i), spec['frames'] - 1)
            for i in list(results['frame_inds'].reshape(-1))]
    got = [frame_index(im) for im in imgs]
    if got != inds:
        raise AssertionError(f'decoded frames {got} for frame_inds {inds} '
                             f'({results["filename"]})')
    return len(got)


def print_breakdown(res):
    prep = res.get('prepared')
    if prep:
        print(f'\nprepared: short side {prep.get("short_side")}, key frame '
              f'every {prep.get("keyint")} frames -> {prep["width"]}x'
              f'{prep["height"]}, {prep["bytes_per_file_before"] / 1e3:.0f}'
              f' -> {prep["bytes_per_file_after"] / 1e3:.0f} kB per file')
    print(f'\n{res["config"]} ({res["split"]} pipeline) on '
          f'{res["video_kind"]}-like videos ({res["video"]["width"]}x'
          f'{res["video"]["height"]}, {res["video"]["frames"]} frames, '
          f'g={res["video"]["gop"]}): {res["clips"]} clips, batch '
          f'{res["batch_size"]}, {res["threads"]} thread(s); load '
          f'{res["load_avg_before"][0]:.2f} -> {res["load_avg_after"][0]:.2f}')
    print('| stage | transform | CPU ms/clip | % | wall ms/clip | % |')
    print('| --- | --- | --- | --- | --- | --- |')
    for s in res['stages']:
        print(f'| {s["category"]} | {s["name"]} | {s["cpu_ms"]:.2f} | '
              f'{s["cpu_pct"]:.1f} | {s["wall_ms"]:.2f} | '
              f'{s["wall_pct"]:.1f} |')
    print(f'| total | | {res["total_cpu_ms"]:.1f} | 100 | '
          f'{res["total_wall_ms"]:.1f} | 100 |')
    print(f'clips/s per worker: {res["clips_per_s_per_worker_cpu"]:.1f} '
          f'(CPU time), {res["clips_per_s_per_worker_wall"]:.1f} (wall)')
    if 'data_preprocessor' in res:
        d = res['data_preprocessor']
        print(f'data_preprocessor on {d["device"]}: '
              f'{d["wall_ms_per_clip"]:.2f} ms/clip (wall, not a worker '
              f'cost)')


# --------------------------------------------------------------------------
# decoder comparison
# --------------------------------------------------------------------------
def decoder_variants(short_side=224):
    """(label, init transform cfg, decode transform cfg)."""
    from cast_mmaction.datasets.transforms.decoding import \
        torchcodec_unavailable
    out = [('mmaction DecordInit+DecordDecode', dict(type='DecordInit'),
            dict(type='DecordDecode'))]
    backends = ['decord', 'pyav']
    if torchcodec_unavailable() is None:
        backends.append('torchcodec')
    for b in backends:
        out.append((b, dict(type='VideoInit', backend=b, num_threads=1),
                    dict(type='VideoDecode')))
        if b == 'pyav':  # what skipping unwanted non-reference frames saves
            out.append(('pyav skip_nonref=False',
                        dict(type='VideoInit', backend=b, num_threads=1,
                             skip_nonref=False), dict(type='VideoDecode')))
    for b in backends:
        if short_side:
            out.append((f'{b} short_side={short_side}',
                        dict(type='VideoInit', backend=b, num_threads=1,
                             short_side=short_side),
                        dict(type='VideoDecode')))
    return out


def _sampler_cfg(cfg, split):
    pipe = cfg[f'{split}_dataloader']['dataset']
    pipe = _innermost(pipe)['pipeline'] if 'pipeline' not in pipe else \
        pipe['pipeline']
    for t in pipe:
        if category(t['type']) == 'sampling':
            return dict(t)
    raise ValueError(f'no sampling transform in the {split} pipeline')


def compare_decoders(workdir, configs=DEFAULT_CONFIGS, splits=('train', 'val'),
                     clips=24, rounds=3, videos=8, short_side=224, seed=0):
    """Open + decode CPU / wall ms per clip of each decoder (module doc)."""
    import numpy as np
    from cast_mmaction.datasets.indexed_video import frame_index
    from mmaction.registry import TRANSFORMS
    from cast_mmaction.utils import ensure_scope
    ensure_scope()
    pin_threads(1)
    variants = decoder_variants(short_side)
    rows = []
    for config in configs:
        cfg = load_config(config)
        kind = guess_kind(config)
        spec = VIDEO_KINDS[kind]
        ann, folder = ensure_videos(workdir, kind, videos)
        files = [osp.join(folder, ln.split()[0])
                 for ln in open(ann).read().splitlines()]
        for split in splits:
            sampler = TRANSFORMS.build(_sampler_cfg(cfg, split))
            built = [(lab, TRANSFORMS.build(i), TRANSFORMS.build(d))
                     for lab, i, d in variants]
            times = {lab: [] for lab, _, _ in built}
            for r in range(rounds):
                for lab, init, dec in built:
                    c_sum = w_sum = 0.0
                    for k in range(clips):
                        res = dict(filename=files[k % len(files)],
                                   start_index=0, modality='RGB')
                        w0, c0 = _clock()
                        res = init(res)
                        w1, c1 = _clock()
                        np.random.seed(seed + k)
                        res = sampler(res)
                        w2, c2 = _clock()
                        res = dec(res)
                        w3, c3 = _clock()
                        c_sum += (c1 - c0) + (c3 - c2)
                        w_sum += (w1 - w0) + (w3 - w2)
                        imgs = res['imgs']
                        if tuple(imgs[0].shape[:2]) == (spec['height'],
                                                        spec['width']):
                            got = [frame_index(im) for im in imgs]
                            want = [int(i) for i in res['frame_inds']]
                            if got != want:
                                raise AssertionError(
                                    f'{lab}: frames {got} for {want}')
                    times[lab].append((1e3 * c_sum / clips,
                                       1e3 * w_sum / clips))
            for lab, _, _ in built:
                t = times[lab]
                row = dict(config=config, video_kind=kind, split=split,
                           decoder=lab,
                           cpu_ms=statistics.median(x[0] for x in t),
                           wall_ms=statistics.median(x[1] for x in t),
                           cpu_ms_all=[x[0] for x in t],
                           wall_ms_all=[x[1] for x in t])
                rows.append(row)
                print(f'| {kind} | {split} | {lab} | {row["cpu_ms"]:.1f} | '
                      f'{row["wall_ms"]:.1f} |', flush=True)
    return rows


def resize_diff(workdir, configs=DEFAULT_CONFIGS, split='val', clips=8,
                videos=8, short_side=224, seed=0):
    """How far the reduced-size decode (``VideoInit(short_side=S)``) is
    from decode-then-``Resize(scale=(-1, S))``: mean and max absolute
    difference (0-255) over the frames of ``clips`` clips, per decoder."""
    import numpy as np
    from cast_mmaction.datasets.transforms.decoding import (
        READERS, torchcodec_unavailable)
    from cast_mmaction.utils import ensure_scope
    from mmaction.registry import TRANSFORMS
    ensure_scope()
    rows = []
    resize = TRANSFORMS.build(dict(type='Resize', scale=(-1, short_side)))
    for config in configs:
        cfg = load_config(config)
        kind = guess_kind(config)
        ann, folder = ensure_videos(workdir, kind, videos)
        files = [osp.join(folder, ln.split()[0])
                 for ln in open(ann).read().splitlines()]
        sampler = TRANSFORMS.build(_sampler_cfg(cfg, split))
        for backend in READERS:
            if backend == 'torchcodec' and torchcodec_unavailable():
                continue
            diffs, peak = [], 0
            for k in range(clips):
                out = []
                for side in (None, short_side):
                    res = TRANSFORMS.build(dict(
                        type='VideoInit', backend=backend,
                        short_side=side))(dict(filename=files[k % len(
                            files)], start_index=0, modality='RGB'))
                    np.random.seed(seed + k)
                    res = TRANSFORMS.build(dict(type='VideoDecode'))(
                        sampler(res))
                    if side is None:
                        res = resize(res)
                    out.append(np.stack(res['imgs']).astype(np.int16))
                d = np.abs(out[0] - out[1])
                diffs.append(float(d.mean()))
                peak = max(peak, int(d.max()))
            row = dict(config=config, video_kind=kind, split=split,
                       decoder=backend, short_side=short_side,
                       mean_abs_diff=statistics.mean(diffs), max_abs_diff=peak,
                       shape=list(out[1].shape))
            rows.append(row)
            print(f'| {kind} | {backend} | {row["mean_abs_diff"]:.2f} | '
                  f'{peak} |', flush=True)
    return rows


def prepare_diff(workdir, kinds=('k400_360p', 'k400_noisy', 'k400'),
                 clips=8, videos=4, short_side=320, keyint=32, seed=0,
                 sampler=None):
    """How far the frames decoded from prepared files
    (``cast_mmaction.datasets.reencode``) are from decoding the original
    and resizing it to the same size (OpenCV bilinear, as ``Resize``):
    mean and max absolute difference (uint8 levels) and PSNR (dB) over the
    frames of ``clips`` K400 training clips per kind, which must also be the
    same frame indices (checked, with the bar codes)."""
    import cv2
    import numpy as np
    from cast_mmaction.datasets.indexed_video import frame_index
    from cast_mmaction.utils import ensure_scope
    from mmaction.registry import TRANSFORMS
    ensure_scope()
    pin_threads(1)
    sampler = TRANSFORMS.build(sampler or dict(
        type='DenseSpanSample', clip_len=16, frame_interval=4))
    init = TRANSFORMS.build(dict(type='VideoInit', backend='pyav',
                                 num_threads=1))
    dec = TRANSFORMS.build(dict(type='VideoDecode'))
    rows = []
    for kind in kinds:
        spec = VIDEO_KINDS[kind]
        ann, folder = ensure_videos(workdir, kind, videos, spec)
        p_ann, p_folder, size, _, sizes = ensure_prepared(
            folder, ann, short_side, keyint)
        names = [ln.split()[0] for ln in open(ann).read().splitlines()]
        sq, absd, peak, n = 0.0, 0.0, 0, 0
        for k in range(clips):
            out = []
            for root in (folder, p_folder):
                res = init(dict(filename=osp.join(root, names[k % len(
                    names)]), start_index=0, modality='RGB'))
                np.random.seed(seed + k)
                out.append(dec(sampler(res)))
            a, b = out
            if list(a['frame_inds']) != list(b['frame_inds']):
                raise AssertionError(f'{kind}: the prepared file samples '
                                     f'{b["frame_inds"]}, the original '
                                     f'{a["frame_inds"]}')
            want = [int(i) for i in b['frame_inds']]
            if [frame_index(im) for im in b['imgs']] != want:
                raise AssertionError(f'{kind}: prepared frames are not the '
                                     f'frames {want}')
            ref = np.stack([cv2.resize(im, size,
                                       interpolation=cv2.INTER_LINEAR)
                            if im.shape[1::-1] != tuple(size) else im
                            for im in a['imgs']]).astype(np.float64)
            d = np.abs(np.stack(b['imgs']).astype(np.float64) - ref)
            absd += float(d.sum())
            sq += float((d ** 2).sum())
            peak = max(peak, int(d.max()))
            n += d.size
        mse = sq / n
        row = dict(video_kind=kind, source=f'{spec["width"]}x'
                   f'{spec["height"]}', prepared=f'{size[0]}x{size[1]}',
                   short_side=short_side, keyint=keyint, clips=clips,
                   mean_abs_diff=absd / n, max_abs_diff=peak,
                   psnr_db=10 * np.log10(255 ** 2 / mse) if mse else None,
                   bytes_per_file_before=sizes[0],
                   bytes_per_file_after=sizes[1])
        rows.append(row)
        print(f'| {kind} | {row["source"]} -> {row["prepared"]} | '
              f'{row["mean_abs_diff"]:.2f} | {peak} | '
              f'{row["psnr_db"]:.1f} |', flush=True)
    return rows


# --------------------------------------------------------------------------
def parse_args(argv=None):
    from mmengine.config import DictAction
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--config', nargs='+', default=list(DEFAULT_CONFIGS))
    ap.add_argument('--split', default='train',
                    choices=('train', 'val', 'test'))
    ap.add_argument('--video-kind', choices=sorted(VIDEO_KINDS), nargs='+',
                    help='synthetic videos (default: k400 for configs '
                    'named *k400* / *kinetics*, else ssv2)')
    ap.add_argument('--clips', type=int, default=24, help='timed clips')
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--videos', type=int, help='synthetic videos to cycle '
                    'through (default min(clips, 16), at least 4)')
    ap.add_argument('--batch-size', type=int,
                    help='collate batch (default: the config\'s)')
    ap.add_argument('--threads', type=int, default=1,
                    help='torch / OpenCV / decoder threads')
    ap.add_argument('--preprocess', action='store_true',
                    help='also time the model\'s data_preprocessor')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--decoder', choices=('mmaction', 'decord', 'pyav',
                                          'torchcodec'),
                    help='decode with this instead of the config\'s '
                    'decoder (mmaction: DecordInit + DecordDecode, the '
                    'recipes before issue 16; else VideoInit(backend=...))')
    ap.add_argument('--decode-device',
                    help='VideoInit(device=...): e.g. cuda with --decoder '
                    'torchcodec (NVDEC)')
    ap.add_argument('--prepare-short', type=int, metavar='S',
                    help='benchmark the videos as tools/data/prepare_k400.py '
                    '--resize-short S prepares them')
    ap.add_argument('--prepare-keyint', type=int, metavar='N',
                    help='... --keyint N (with or without --prepare-short)')
    ap.add_argument('--prepare-x264-params',
                    help='extra libx264 settings of the preparation')
    ap.add_argument('--prepare-diff', action='store_true',
                    help='pixel difference of prepared files against '
                    'decoding the original + resizing (mean / max |diff|, '
                    'PSNR), per --video-kind (default k400_360p, '
                    'k400_noisy, k400)')
    ap.add_argument('--compare-decoders', action='store_true')
    ap.add_argument('--resize-diff', action='store_true',
                    help='how far --short-side decoding is from '
                    'decode-then-Resize (mean / max |difference|)')
    ap.add_argument('--rounds', type=int, default=3,
                    help='--compare-decoders: rounds (decoders alternate)')
    ap.add_argument('--short-side', type=int, default=224,
                    help='--compare-decoders: reduced-size decode (0: off)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--workdir', default=osp.join(ROOT, 'work_dirs',
                                                  'bench_pipeline'))
    ap.add_argument('--json', help='write the results here')
    ap.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = ap.parse_args(argv)
    if args.decode_device and args.decoder != 'torchcodec':
        # first: no other reader takes a device, whatever the host has
        raise SystemExit('--decode-device needs --decoder torchcodec (the '
                         'reader that decodes on a device)')
    from cast_mmaction.utils import device_problem
    for config in args.config:
        if not osp.isfile(config):
            ap.error(f'--config {config}: no such file')
    for option, device, used in (('--device', args.device, args.preprocess),
                                 ('--decode-device', args.decode_device,
                                  args.decode_device)):
        problem = used and device_problem(device)
        if problem:
            ap.error(f'{option} {device}: {problem}')
    return args


def main(argv=None):
    args = parse_args(argv)
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ.setdefault(var, str(args.threads))
    facts = machine()
    print(f'CPU: {facts["cpu"]} ({facts["logical_cpus"]} logical CPUs, '
          f'ISA {" ".join(facts.get("cpu_isa", []))}); load average '
          f'{" ".join(f"{x:.2f}" for x in os.getloadavg())}', flush=True)
    out = dict(machine=facts, args=vars(args), results=[])
    prepare = None
    if args.prepare_short is not None or args.prepare_keyint is not None:
        prepare = dict(short_side=args.prepare_short,
                       keyint=args.prepare_keyint,
                       x264_params=args.prepare_x264_params)
    kinds = args.video_kind or [None]
    if args.prepare_diff:
        print('| videos | size | mean abs diff | max abs diff | PSNR dB |')
        print('| --- | --- | --- | --- | --- |')
        out['prepare_diff'] = prepare_diff(
            args.workdir, args.video_kind or ('k400_360p', 'k400_noisy',
                                              'k400'),
            clips=args.clips, videos=args.videos or 4,
            short_side=args.prepare_short or 320,
            keyint=args.prepare_keyint or 32, seed=args.seed)
    elif args.resize_diff:
        print('| videos | decoder | mean abs diff | max abs diff |')
        print('| --- | --- | --- | --- |')
        out['resize_diff'] = resize_diff(
            args.workdir, args.config, split=args.split, clips=args.clips,
            videos=args.videos or 8, short_side=args.short_side,
            seed=args.seed)
    elif args.compare_decoders:
        print('| videos | sampling | decoder | CPU ms/clip | wall ms/clip |')
        print('| --- | --- | --- | --- | --- |')
        out['decoders'] = compare_decoders(
            args.workdir, args.config, clips=args.clips, rounds=args.rounds,
            videos=args.videos or 8, short_side=args.short_side,
            seed=args.seed)
    else:
        for config in args.config:
            for kind in kinds:
                res = time_pipeline(
                    config, args.split, args.clips, args.warmup,
                    args.workdir, args.threads, args.videos, kind,
                    args.batch_size, args.cfg_options, args.seed,
                    args.preprocess, args.device, decoder=args.decoder,
                    prepare=prepare, decode_device=args.decode_device)
                print_breakdown(res)
                out['results'].append(res)
    out['load_avg_end'] = os.getloadavg()
    if args.json:
        from cast_mmaction.evaluation.summaries import write_json
        write_json(args.json, out, default=str)
    return out


if __name__ == '__main__':
    main()
