#!/usr/bin/env python
"""Multi-view test data, ours against the authors' test loop: CPU time per
test video to produce every view of it (K400 5 clips x 3 crops, SSv2 2 x 3).

    python tools/benchmark/bench_test_loop.py --reference-repo /path/to/CAST
    python tools/benchmark/bench_test_loop.py --reference-repo /path/to/CAST \\
        --kinds k400 --videos 4 --json benchmarks/runs/test_loop_cpu.json

Ours: the recipe's test pipeline (``configs/cast_k400.py`` /
``configs/cast_ssv2.py``, ``test_dataloader``) produces all views of a video
in one call, decoding the frames of the views once (what ``tools/test.py``
loads; the views then go through the model as one batch). The authors'
(``run_bidirection.py --eval``, ``dataset/kinetics.py`` /
``dataset/ssv2.py`` in test mode): every view is an item of its own, and
every item decodes the video again (K400: every 4th frame of the whole
video, SSv2: 32 frames), resizes all of those frames, then cuts its clip and
crop and converts it to normalised float; their loop batches those items
(``--batch_size`` views a forward, across videos) and averages the views'
softmax scores afterwards (``merge``). Both run here from their own code on
the same synthetic videos of the datasets' sizes (as
``tools/benchmark/bench_pipeline.py`` writes them), one process, one
thread (``--threads``): process CPU time and wall time per video.

The model's work per view is the same in both loops (both batch the views),
so what differs is this data side; ``tools/benchmark/bench_multiview.py``
measures the model side. Ours hands uint8 views to the data preprocessor,
which normalises them on the model's device; theirs normalises in the loader
(on the CPU), which is counted here as theirs.

``--loop``: the whole test loop as well, loader and model in one process,
over ``--videos`` distinct videos: ours as ``tools/test.py`` runs it (each
video's views through the data preprocessor and ``test_step`` as one
batch, the recipe's model), theirs as ``final_test`` + ``merge`` run it
(their items in their order, ``--authors-batch-size`` views a forward of
their ``bidir_vit_base_patch16_224``, one line of text per view, then each
video's softmax scores averaged); random weights on both sides, wall and
CPU time per video, on ``--device`` under ``--amp``. ``--model-config``
replaces our recipe's model (a smaller one, for a quick run).
"""
import argparse
import functools
import os
import os.path as osp
import statistics
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)
from bench_multiview import autocast  # noqa: E402

#: kind -> (our recipe, the authors' test settings from their scripts)
KINDS = dict(
    k400=('configs/cast_k400.py',
          dict(cls='VideoClsDataset', module='dataset.kinetics', sub='val',
               kwargs=dict(clip_len=16, frame_sample_rate=4, num_segment=1,
                           test_num_segment=5, test_num_crop=3))),
    ssv2=('configs/cast_ssv2.py',
          dict(cls='SSVideoClsDataset', module='dataset.ssv2', sub='',
               kwargs=dict(clip_len=1, num_segment=16, test_num_segment=2,
                           test_num_crop=3))),
)
# the K400 settings on K400 videos with fresh noise in every frame (a
# camera's): decoding costs as in real video
KINDS['k400_noisy'] = KINDS['k400']


def _numpy1_function_base():
    """The authors' dataset/kinetics.py imports ``disp`` from
    ``numpy.lib.function_base`` (unused there); NumPy 2 removed both the
    module and ``disp``. Where it is missing, a module holding a ``disp``
    that prints as NumPy 1's did lets their file import unchanged."""
    import importlib.util
    import types
    if 'numpy.lib.function_base' in sys.modules:
        return
    try:
        if importlib.util.find_spec('numpy.lib.function_base'):
            return
    except ModuleNotFoundError:
        pass
    shim = types.ModuleType('numpy.lib.function_base')

    def disp(mesg, device=None, linefeed=True):
        (device or sys.stdout).write(f'{mesg}\n' if linefeed else f'{mesg}')

    shim.disp = disp
    sys.modules['numpy.lib.function_base'] = shim


def authors_dataset(repo, kind, ann, folder):
    """The authors' test dataset over ``ann``'s videos in ``folder``."""
    import importlib
    spec = KINDS[kind][1]
    if not osp.isfile(osp.join(repo, *spec['module'].split('.')) + '.py'):
        raise SystemExit(f'--reference-repo {repo}: no {spec["module"]} '
                         f'there; give a checkout of '
                         f'https://github.com/KHU-VLL/CAST')
    if repo not in sys.path:
        sys.path.insert(0, repo)
    _numpy1_function_base()
    try:
        module = importlib.import_module(spec['module'])
    except ModuleNotFoundError as e:
        raise SystemExit(f'the authors\' {spec["module"]} needs {e.name!r}, '
                         f'which is not installed here (pip install '
                         f'{e.name}); their test loader imports it') from e
    cls = getattr(module, spec['cls'])
    data_path = folder
    if spec['sub']:  # K400 reads DATA_PATH/val/NAME: a folder beside the
        # videos whose val/ is them, made once
        data_path = osp.abspath(folder).rstrip('/') + '_authors_root'
        link = osp.join(data_path, spec['sub'])
        if not osp.islink(link):
            os.makedirs(data_path, exist_ok=True)
            os.symlink(osp.abspath(folder), link)
    return cls(anno_path=ann, data_path=data_path, mode='test',
               num_crop=3, keep_aspect_ratio=True, crop_size=224,
               short_side_size=224, new_height=256, new_width=320,
               args=None, **spec['kwargs'])


def time_authors(ds, videos, warmup):
    """CPU / wall seconds per video for all of a video's items (views)."""
    n_videos = len(ds.dataset_samples)
    views = len(ds) // n_videos
    per_video = []
    shapes = set()
    # the dataset orders its items view-major: item v * n_videos + i is
    # view v of video i
    for i in range(warmup + videos):
        vid = i % n_videos
        w0, c0 = time.perf_counter(), time.process_time()
        for v in range(views):
            item = ds[v * n_videos + vid]
            shapes.add(tuple(item[0].shape))
        w1, c1 = time.perf_counter(), time.process_time()
        if i >= warmup:
            per_video.append((c1 - c0, w1 - w0))
    return views, per_video, sorted(shapes)


@functools.lru_cache(maxsize=None)
def _benchmark_module():
    """tools/benchmark.py (its model builders), loaded once."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        '_cast_benchmark', osp.join(ROOT, 'tools', 'benchmark.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Clock:
    """Wall and process CPU time of a block, the device synchronised."""

    def __init__(self, device):
        import torch
        self.sync = (lambda: torch.cuda.synchronize(device)) \
            if torch.device(device).type == 'cuda' else (lambda: None)

    def __enter__(self):
        self.sync()
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.sync()
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() - self.c


def ours_loop(config, ann, folder, videos, device, amp, model_config=None):
    """Our test loop over the first ``videos`` videos of ``ann``: seconds
    (wall, CPU) in all, the predicted class of each video."""
    import argparse as ap
    import torch
    import bench_pipeline as bp
    cfg = bp.load_config(config)
    if model_config:
        from mmengine.config import Config
        cfg.model = Config.fromfile(model_config).model
    ds = bp.build_dataset(cfg, 'test', ann, folder)
    model = _benchmark_module().build_ours(
        ap.Namespace(with_cp=False, speedups=None), cfg)['model']
    model = model.eval().to(device)

    def step(data):
        with torch.no_grad(), autocast(device, amp):
            return model.test_step(dict(inputs=[data['inputs']],
                                        data_samples=[data['data_samples']]))

    first = ds[0]
    step(dict(first, inputs=first['inputs'][:1]))  # warm-up: one view
    preds = []
    with _Clock(device) as t:
        for i in range(videos):
            out = step(ds[i])[0]
            preds.append(int(out.pred_score.argmax()))
    return t.wall, t.cpu, preds


def authors_loop(repo, kind, ann, folder, config, batch, device, amp):
    """The authors' test loop (``final_test`` then ``merge``) over every
    video of ``ann``: seconds (wall, CPU) in all, video name -> predicted
    class."""
    import argparse as ap
    import numpy as np
    import torch
    import bench_pipeline as bp
    ds = authors_dataset(repo, kind, ann, folder)
    model = _benchmark_module().build_reference(
        ap.Namespace(reference_repo=repo), bp.load_config(config))['model']
    model = model.eval().to(device)
    with torch.no_grad(), autocast(device, amp):  # warm-up: one view
        model(ds[0][0][None].to(device))
    lines = []
    with _Clock(device) as t:
        for start in range(0, len(ds), batch):  # their sequential sampler
            items = [ds[j] for j in range(start, min(start + batch, len(ds)))]
            x = torch.stack([it[0] for it in items]).to(device)
            with torch.no_grad(), autocast(device, amp):
                out = model(x)
            for it, o in zip(items, out):
                lines.append(f'{it[2]} {o.float().cpu().numpy().tolist()} '
                             f'{it[1]} {it[3]} {it[4]}')
        scores = {}  # merge: each view's softmax, averaged per video
        for line in lines:
            name = line.split('[')[0].strip()
            v = np.array(line.split('[')[1].split(']')[0].split(','), float)
            e = np.exp(v - v.max())
            scores.setdefault(name, []).append(e / e.sum())
        preds = {k: int(np.mean(v, 0).argmax()) for k, v in scores.items()}
    return t.wall, t.cpu, preds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--reference-repo', required=True,
                    help='a checkout of https://github.com/KHU-VLL/CAST')
    ap.add_argument('--kinds', nargs='+', default=['k400', 'ssv2'],
                    choices=sorted(KINDS),
                    help='synthetic videos of tools/benchmark/bench_pipeline.py')
    ap.add_argument('--videos', type=int, default=4,
                    help='timed videos per kind (cycled over 4 files)')
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--workdir', default=osp.join(ROOT, 'work_dirs',
                                                  'bench_pipeline'))
    ap.add_argument('--loop', action='store_true',
                    help='the whole test loop too: loader and model')
    ap.add_argument('--device', default='cpu', help='--loop: cpu or cuda[:i]')
    ap.add_argument('--amp', choices=['none', 'fp16', 'bf16'], default='none',
                    help='--loop: autocast of both models')
    ap.add_argument('--authors-batch-size', type=int, default=6,
                    help='--loop: views a forward in their loop (their '
                         'scripts: 6)')
    ap.add_argument('--model-config',
                    help='--loop: a config whose model replaces our recipe\'s')
    ap.add_argument('--json', help='write the results here')
    args = ap.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))
    import bench_pipeline as bp
    bp.pin_threads(args.threads)
    repo = osp.abspath(args.reference_repo)
    facts = bp.machine()
    load0 = os.getloadavg()
    print(f'CPU: {facts["cpu"]} ({facts["logical_cpus"]} logical CPUs, ISA '
          f'{" ".join(facts.get("cpu_isa", []))}); load average '
          f'{load0[0]:.2f}; {args.threads} thread(s)', flush=True)
    rows = []
    for kind in args.kinds:
        config = KINDS[kind][0]
        # --loop: as many distinct videos as timed (their merge keys views
        # by file name)
        n_files = max(4, args.videos) if args.loop else 4
        ann, folder = bp.ensure_videos(args.workdir, kind, n_files)
        # preprocess: the data preprocessor's normalisation on the CPU as
        # well, reported apart (it runs on the model's device in a test run)
        ours = bp.time_pipeline(config, split='test', clips=args.videos,
                                warmup=args.warmup, workdir=args.workdir,
                                threads=args.threads, videos=n_files,
                                kind=kind, preprocess=True, batch_size=1)
        norm = ours['data_preprocessor']['wall_ms_per_clip'] / 1e3
        ds = authors_dataset(repo, kind, ann, folder)
        views, theirs, shapes = time_authors(ds, args.videos, args.warmup)
        t_cpu = statistics.mean(c for c, _ in theirs)
        t_wall = statistics.mean(w for _, w in theirs)
        o_cpu, o_wall = ours['total_cpu_ms'] / 1e3, ours['total_wall_ms'] / 1e3
        row = dict(
            kind=kind, config=config, views_per_video=views,
            videos=args.videos, video=bp.VIDEO_KINDS[kind],
            ours=dict(cpu_s_per_video=o_cpu, wall_s_per_video=o_wall,
                      videos_per_s_cpu=1 / o_cpu,
                      views_per_s_cpu=views / o_cpu,
                      normalise_on_cpu_wall_s_per_video=norm,
                      stages=ours['stages']),
            authors=dict(cpu_s_per_video=t_cpu, wall_s_per_video=t_wall,
                         videos_per_s_cpu=1 / t_cpu,
                         views_per_s_cpu=views / t_cpu,
                         cpu_s_all=[c for c, _ in theirs],
                         view_shapes=shapes),
            authors_over_ours_cpu=t_cpu / o_cpu,
            authors_over_ours_with_normalising=t_cpu / (o_cpu + norm))
        if args.loop:
            loop_ann = ann + f'.first{args.videos}'
            with open(ann) as f, open(loop_ann, 'w') as g:
                g.writelines(f.readlines()[:args.videos])
            ow, oc, op = ours_loop(config, loop_ann, folder, args.videos,
                                   args.device, args.amp, args.model_config)
            tw, tc, tp = authors_loop(repo, kind, loop_ann, folder, config,
                                      args.authors_batch_size, args.device,
                                      args.amp)
            n = args.videos
            row['loop'] = dict(
                device=args.device, amp=args.amp,
                authors_batch_size=args.authors_batch_size,
                model_config=args.model_config or config,
                ours=dict(wall_s_per_video=ow / n, cpu_s_per_video=oc / n,
                          videos_per_s_wall=n / ow, predictions=op),
                authors=dict(wall_s_per_video=tw / n, cpu_s_per_video=tc / n,
                             videos_per_s_wall=n / tw, predictions=tp),
                ours_over_authors_wall=ow / tw)
            print(f'{kind}: whole test loop on {args.device} ({args.amp}): '
                  f'ours {ow / n:.2f} s a video, the authors\' {tw / n:.2f} s '
                  f'({ow / tw:.2f}x)', flush=True)
        rows.append(row)
        print(f'| {kind} ({views} views) | ours | {o_cpu:.3f} | {o_wall:.3f} '
              f'| {1 / o_cpu:.2f} |', flush=True)
        print(f'| {kind} ({views} views) | authors | {t_cpu:.3f} | '
              f'{t_wall:.3f} | {1 / t_cpu:.2f} |', flush=True)
        print(f'{kind}: the authors\' loader takes {t_cpu / o_cpu:.1f}x our '
              f'CPU per test video ({t_cpu / (o_cpu + norm):.1f}x with our '
              f'normalisation on the CPU too, {norm:.3f} s)', flush=True)
    out = dict(machine=facts, args=vars(args), results=rows,
               load_avg_before=load0, load_avg_after=os.getloadavg())
    if args.json:
        from cast_mmaction.evaluation.summaries import write_json
        write_json(args.json, out, default=str)
    return out


if __name__ == '__main__':
    main()
