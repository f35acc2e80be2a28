"""Run a trained model on users' own videos (shared by ``tools/infer.py``,
``tools/analysis_tools/extract_features.py`` and ``tools/analysis_tools/attention_maps.py``).

The model and the data pipeline both come from a config:

* :func:`init_model` builds ``cfg.model`` and loads an MMEngine checkpoint
  (``{'state_dict': ..., 'meta': ...}``), failing with the missing keys when
  the checkpoint does not belong to the config;
* :func:`build_test_pipeline` takes ``cfg.test_dataloader.dataset.pipeline``
  (or ``cfg.test_pipeline``): the exact test-time sampling, resizing, crops and
  views of the recipe; :func:`make_sample` replaces the dataset's data source
  by one video file, so the same code serves ``VideoDataset`` pipelines
  (``DecordInit`` / ``PyAVInit`` / ``OpenCVInit``), the EPIC-KITCHENS-100
  pipeline (``EpicVideoInit``: no segment = the whole video) and audio-visual
  pipelines that read the sound track of the same file;
* :func:`iter_videos` runs the pipeline in DataLoader workers and reports a
  video that cannot be decoded instead of stopping;
* :func:`predict` calls ``model.test_step``: the head averages the views (its
  ``average_clips``) and writes ``pred_score`` (single-label) or
  ``pred_verb`` / ``pred_noun`` (EPIC) into the data samples;
  :func:`scores_of` / :func:`topk_predictions` turn them into named top-k
  lists (EPIC: verb, noun and action = the verb x noun pair scored
  ``p(verb) * p(noun)``);
* :func:`capture_backbone` hooks the backbone to collect the pooled per-stream
  features of the same forward pass (``tools/analysis_tools/extract_features.py``).
"""
import copy
import os
import os.path as osp
import re
import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .checkpoints.state_dict import check_fit, fit_report, strip_prefixes
from .datasets.label_maps import LabelMapError, check_num_classes, \
    load_label_maps
from .datasets.sample_timeout import SampleTimeoutError, \
    call_with_time_limit, check_time_limit

VIDEO_EXTS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.mpg',
              '.mpeg', '.flv', '.wmv', '.3gp', '.ts', '.mts', '.ogv')
LIST_EXTS = ('.txt', '.lst', '.list', '.csv')


class InferenceError(RuntimeError):
    """A problem with the user's inputs (config, checkpoint, list file)."""


# ----------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------
def is_video_file(path):
    return osp.splitext(path)[1].lower() in VIDEO_EXTS


#: ``(rest of the line, its last field)`` when that field is an integer
_LABEL_AT_END = re.compile(r'^(.*\S)[\s,]+(-?\d+)$')


def _split_labels(line):
    """``path [label ...]`` -> ``(path, [int labels])``: the labels are the
    integer fields at the end of the line (after a space, tab or comma), so
    a path may hold spaces (``my clip.mp4 0``)."""
    path, labels = line, []
    while True:
        m = _LABEL_AT_END.match(path)
        if m is None:
            return path, labels
        path = m.group(1)
        labels.insert(0, int(m.group(2)))


def read_video_list(path, data_root=None):
    """A list file -> ``[dict(video=..., label=int, list or None)]``.

    One video per line, ``path`` or ``path label`` (MMAction2 list files;
    ``path verb noun`` for EPIC models), space- or comma-separated; the
    labels are the integer fields at the end of the line, so a path may hold
    spaces. Either every line has a label or none. Blank lines and lines
    starting with ``#`` are skipped. Relative paths are taken relative to
    ``data_root``, else to the list file's folder.
    """
    root = data_root if data_root is not None else osp.dirname(
        osp.abspath(path))
    items = []
    with open(path, encoding='utf-8-sig') as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            video, label = _split_labels(line)
            if not label:
                label = None
            elif len(label) == 1:
                label = label[0]
            if not osp.isabs(video):
                video = osp.join(root, video)
            items.append(dict(video=video, label=label, line=n))
    if not items:
        raise InferenceError(f'list file {path} names no videos')
    labelled = [it['line'] for it in items if it['label'] is not None]
    if labelled and len(labelled) < len(items):
        first = next(it['line'] for it in items if it['label'] is None)
        raise InferenceError(
            f'list file {path}, line {first}: no label, but {len(labelled)} '
            f'other line(s) have one (e.g. line {labelled[0]}); give every '
            f'line a label ("path label") or none')
    return items


def collect_inputs(source, data_root=None):
    """INPUT of the tools: a video file, a folder (searched recursively for
    video files) or a list file. Returns ``[dict(video=, label=)]``."""
    if osp.isdir(source):
        videos = []
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                if is_video_file(name):
                    videos.append(osp.join(dirpath, name))
        if not videos:
            raise InferenceError(
                f'folder {source} holds no video files (extensions '
                f'{", ".join(VIDEO_EXTS)})')
        return [dict(video=v, label=None) for v in videos]
    if not osp.exists(source):
        raise InferenceError(f'input {source} does not exist')
    ext = osp.splitext(source)[1].lower()
    if ext in LIST_EXTS:
        return read_video_list(source, data_root)
    if not ext:
        # MMAction2's DecordInit (and VideoInit, as it) appends '.mp4' to a
        # path without an extension: the file would be 'not found'
        raise InferenceError(
            f'{source} has no file extension, and the video readers add '
            f'.mp4 to such a name; rename it with its container\'s '
            f'extension (e.g. {source}.mp4)')
    if not is_video_file(source):
        warnings.warn(f'{source}: unknown extension {ext!r}; treating it as '
                      f'a video file')
    return [dict(video=source, label=None)]


# ----------------------------------------------------------------------------
# config, model, checkpoint
# ----------------------------------------------------------------------------
def load_config(config, cfg_options=None):
    from mmengine.config import Config
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        if not osp.isfile(str(config)):
            raise InferenceError(f'config {config} not found')
        cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _state_dict_of(ckpt, path):
    if not isinstance(ckpt, dict):
        raise InferenceError(f'checkpoint {path}: expected a dict, got '
                             f'{type(ckpt).__name__}')
    if 'state_dict' in ckpt:
        return ckpt['state_dict']
    if 'module' in ckpt and isinstance(ckpt['module'], dict):
        raise InferenceError(
            f'checkpoint {path} is a DeepSpeed dump ({{"module": ...}}, e.g. '
            f'an official CAST release); convert it first: python '
            f'tools/convert/convert_checkpoint.py {path} OUT.pth --config CONFIG')
    if ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt
    raise InferenceError(f'checkpoint {path}: no "state_dict" (keys: '
                         f'{list(ckpt)[:8]})')


def _looks_like_onnx(path):
    """``.onnx`` name, or a protobuf ``ModelProto`` start (field 1,
    ``ir_version``, a varint: byte 0x08)."""
    if path.lower().endswith('.onnx'):
        return True
    with open(path, 'rb') as f:
        return f.read(1) == b'\x08'


def load_weights(model, checkpoint):
    """Load an MMEngine checkpoint into ``model``; every parameter and
    persistent buffer of the model must be in it."""
    # the package's reader itself, not MMEngine's _load_checkpoint (which
    # comes to the same reader, but logs 'Loads checkpoint by local
    # backend' and FileClient deprecation warnings to stdout, where the
    # tools write their results)
    from .safe_load import load_checkpoint
    if not osp.isfile(checkpoint):
        raise InferenceError(f'checkpoint {checkpoint} not found')
    try:
        ckpt = load_checkpoint(checkpoint, map_location='cpu')
    except ValueError as e:  # not a checkpoint file (text, ONNX, ...)
        hint = ('; an ONNX file (tools/deployment/export_onnx.py) runs '
                'with tools/infer.py --backend onnxruntime'
                if _looks_like_onnx(checkpoint) else '')
        raise InferenceError(f'{e}{hint}') from None
    sd = _state_dict_of(ckpt, checkpoint)
    sd = strip_prefixes(sd)
    report = check_fit(
        fit_report(model, sd), f'checkpoint {checkpoint}',
        'the config\'s model', hint='(is it the checkpoint of this config? '
        'other class counts or sizes need the matching config)',
        allow_unexpected=True, error=InferenceError)
    if report.unexpected:
        warnings.warn(f'checkpoint {checkpoint}: {len(report.unexpected)} '
                      f'keys the model does not use are ignored, e.g. '
                      f'{report.unexpected[:6]}')
    model.load_state_dict({k: sd[k] for k in report.loadable}, strict=True)
    return model


def default_device():
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def init_model(cfg, checkpoint=None, device=None):
    """Build ``cfg.model`` in eval mode on ``device`` (GPU when available)
    and load ``checkpoint``. Pretrained-expert paths of the config are not
    read (the checkpoint holds every weight)."""
    from mmengine.registry import DefaultScope
    from mmaction.registry import MODELS
    from .utils import device_problem
    problem = device and device_problem(device)
    if problem:  # before the model is built and read (checked early)
        raise InferenceError(f'--device {device}: {problem}')
    cfg = load_config(cfg)
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmaction')):
        model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_weights(model, checkpoint)
    model.cfg = cfg
    model.to(device or default_device())
    model.eval()
    return model


# ----------------------------------------------------------------------------
# pipeline
# ----------------------------------------------------------------------------
def test_pipeline_cfg(cfg):
    """The recipe's test pipeline: ``test_dataloader.dataset.pipeline``,
    else ``test_pipeline``."""
    dl = cfg.get('test_dataloader')
    pipeline = None
    if dl is not None:
        ds = dl.get('dataset', {})
        while 'pipeline' not in ds and 'dataset' in ds:  # wrappers
            ds = ds['dataset']
        pipeline = ds.get('pipeline')
    if pipeline is None:
        pipeline = cfg.get('test_pipeline')
    if not pipeline:
        raise InferenceError('the config has neither test_dataloader.dataset.'
                             'pipeline nor test_pipeline')
    return copy.deepcopy([dict(t) for t in pipeline])


#: ``{transform class: fn(transform cfg) -> its one-view cfg}`` for
#: multi-view transforms that cannot declare ``one_view_cfg`` themselves
#: (MMAction2's ``ThreeCrop`` / ``TenCrop``; :func:`register_one_view`)
ONE_VIEW_TRANSFORMS = {}


def register_one_view(cls, fn):
    """Reduce transforms of ``cls`` (and its subclasses) to one view with
    ``fn(cfg) -> cfg`` in :func:`single_view`."""
    ONE_VIEW_TRANSFORMS[cls] = fn
    return fn


def _center_crop(t):
    return dict(type='CenterCrop', crop_size=t['crop_size'])


def _one_view_rule(t):
    """How transform config ``t`` becomes one view: its class's
    ``one_view_cfg`` (a transform of ours or yours declares it), else the
    :data:`ONE_VIEW_TRANSFORMS` entry of its class; None: it already gives
    one view."""
    from mmaction.datasets.transforms import TenCrop, ThreeCrop
    from mmaction.registry import TRANSFORMS
    for cls in (ThreeCrop, TenCrop):
        ONE_VIEW_TRANSFORMS.setdefault(cls, _center_crop)
    kind = t.get('type')
    cls = TRANSFORMS.get(kind) if isinstance(kind, str) else kind
    if not isinstance(cls, type):
        return None  # unknown type: Compose names it
    rule = getattr(cls, 'one_view_cfg', None)
    if callable(rule):
        return rule
    for c in cls.__mro__:
        if c in ONE_VIEW_TRANSFORMS:
            return ONE_VIEW_TRANSFORMS[c]
    return None


def single_view(pipeline):
    """A pipeline with one view: ``num_clips=1`` wherever it is set, and each
    multi-view transform replaced by its one-view form (declared by the
    transform class as ``one_view_cfg(cfg)``, or registered for it with
    :func:`register_one_view`; ``ThreeCrop`` / ``TenCrop`` become
    ``CenterCrop`` of the same size)."""
    out = []
    for t in copy.deepcopy(pipeline):
        if t.get('num_clips', 1) != 1:
            t['num_clips'] = 1
        rule = _one_view_rule(t)
        if rule is not None:
            t = dict(rule(t))
        out.append(t)
    return out


def build_test_pipeline(cfg, one_view=False):
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    pipeline = test_pipeline_cfg(cfg)
    if one_view:
        pipeline = single_view(pipeline)
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmaction')):
        return Compose(pipeline)


def make_sample(video):
    """The pipeline input for one whole video file, in place of a dataset
    item. The keys cover the loaders of every family here: MMAction2's
    ``*Init`` transforms read ``filename``; ``EpicVideoInit`` without a
    segment uses the whole file; audio loaders read the sound track of
    ``audio_path`` (the same file)."""
    return dict(filename=video, audio_path=video, start_index=0,
                modality='RGB', label=-1,
                video_id=osp.splitext(osp.basename(video))[0],
                narration_id=osp.splitext(osp.basename(video))[0])


class PipelineError(RuntimeError):
    """A transform failed on one video (names the transform)."""


def run_pipeline(pipeline, sample):
    """Apply a ``Compose`` transform by transform, so that a failure names
    the transform (e.g. ``DecordInit`` for a file that cannot be decoded)."""
    for t in pipeline.transforms:
        try:
            sample = t(sample)
        except Exception as e:  # noqa: BLE001 - re-raised with context
            msg = str(e).strip() or '(no message)'
            raise PipelineError(f'{type(t).__name__}: {type(e).__name__}: '
                                f'{msg}') from e
        if sample is None:
            raise PipelineError(f'{type(t).__name__} dropped the sample')
    return sample


#: the error record of a video file that does not exist
MISSING = 'file not found'


class _VideoItems(torch.utils.data.Dataset):
    """Runs the test pipeline on each video; a failure, or a video that
    takes longer than ``sample_timeout`` seconds (see
    :mod:`~cast_mmaction.datasets.sample_timeout`), becomes an error record
    instead of an exception (the run goes on)."""

    def __init__(self, items, pipeline, sample_timeout=120):
        self.items, self.pipeline = items, pipeline
        self.sample_timeout = check_time_limit(sample_timeout,
                                               'sample_timeout')

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        if not osp.isfile(item['video']):
            return dict(item=item, packed=None, error=MISSING)
        try:
            packed = call_with_time_limit(
                run_pipeline, self.pipeline, make_sample(item['video']),
                seconds=self.sample_timeout, label=f'video {item["video"]}',
                setting='iter_videos(sample_timeout=...)')
            return dict(item=item, packed=packed, error=None)
        except (PipelineError, SampleTimeoutError) as e:  # reported, the
            # run continues
            return dict(item=item, packed=None, error=str(e))


def _first(batch):
    return batch


def iter_videos(items, pipeline, batch_size=1, num_workers=0,
                sample_timeout=120):
    """Yield lists of ``dict(item, packed, error)`` of up to ``batch_size``
    videos, decoded by ``num_workers`` DataLoader workers; a video whose
    decoding takes longer than ``sample_timeout`` seconds (0: no limit) gets
    an error record."""
    loader = torch.utils.data.DataLoader(
        _VideoItems(items, pipeline, sample_timeout), batch_size=batch_size,
        shuffle=False, num_workers=num_workers, collate_fn=_first,
        persistent_workers=False)
    yield from loader


def run_videos(items, pipeline, fn, failed, batch_size=1, num_workers=0,
               quiet=False):
    """Decode ``items`` in batches (:func:`iter_videos`) and call
    ``fn(packed_list)`` on each batch's decodable videos; yields ``(records,
    fn's result)``. A video that cannot be decoded, or whose batch's ``fn``
    raises, is appended to ``failed`` as ``dict(video, error)`` and named on
    stderr; the others go on. A progress bar over the videos is shown on
    stderr for more than one video, unless ``quiet``."""
    from .progress import track, write
    bar = track(total=len(items), unit='video', quiet=quiet or len(items) < 2)
    try:
        for batch in iter_videos(items, pipeline, batch_size, num_workers):
            good = []
            for rec in batch:
                if rec['error']:
                    failed.append(dict(video=rec['item']['video'],
                                       error=rec['error']))
                    write(f'skipped {rec["item"]["video"]}: {rec["error"]}')
                else:
                    good.append(rec)
            if good:
                try:
                    out = fn([r['packed'] for r in good])
                except Exception as e:  # noqa: BLE001 - report, continue
                    for r in good:
                        failed.append(dict(video=r['item']['video'],
                                           error=f'{type(e).__name__}: {e}'))
                        write(f'failed {r["item"]["video"]}: {e}')
                else:
                    yield good, out
            bar.update(len(batch))
    finally:
        bar.close()


# ----------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------
def predict(model, packed_list):
    """``model.test_step`` on packed pipeline outputs; returns the data
    samples with the head's predictions."""
    from mmengine.dataset import pseudo_collate
    data = pseudo_collate(list(packed_list))
    with torch.no_grad():
        return model.test_step(data)


# stream name of each declared expert role (``Expert.role``)
_ROLE_STREAMS = dict(image='spatial', video='temporal', audio='audio')


def _stream_roles(backbone):
    """Names of the pooled streams in backbone output order, from the role
    each expert class declares (``Expert.role``): ``spatial`` (image
    experts such as CLIP), ``temporal`` (video experts such as VideoMAE),
    ``audio``; experts without a role, and a second expert of the same
    role, keep their config name."""
    names = list(getattr(backbone, 'stream_names', []) or [])
    experts = getattr(backbone, 'experts', {})
    roles = []
    for n in names:
        e = experts[n] if n in experts else None
        role = _ROLE_STREAMS.get(getattr(e, 'role', None), n)
        roles.append(role if role not in roles else n)
    return names, roles


def stream_info(model):
    """``[(role, stream name, expert class)]`` of the backbone's outputs."""
    bb = model.backbone
    names, roles = _stream_roles(bb)
    experts = getattr(bb, 'experts', {})
    return [(r, n, type(experts[n]).__name__) for r, n in zip(roles, names)]


@contextmanager
def capture_backbone(model):
    """Collect the backbone outputs of the forward passes run inside the
    block: ``calls`` is a list of output tuples (one per backbone call)."""
    calls = []

    def hook(module, args, output):
        out = output if isinstance(output, (tuple, list)) else (output, )
        calls.append(tuple(o.detach() for o in out))

    handle = model.backbone.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def pooled_features(calls, num_samples, average_views=True):
    """Backbone outputs captured over one ``predict`` -> one tensor per
    stream, ``(num_samples, D)`` (views averaged) or ``(num_samples, V, D)``.
    Frame-wise outputs ``(B*V, T, D)`` are averaged over frames first,
    MMAction2's 3-D feature maps ``(B*V, D, T, H, W)`` (AIM's backbone, the
    input of ``I3DHead``) over ``T, H, W``."""
    if not calls:
        raise RuntimeError('the backbone was not called')
    per_stream = [torch.cat(parts) for parts in zip(*calls)]
    out = []
    for f in per_stream:
        f = f.float()
        if f.ndim == 5:  # (N, D, T, H, W)
            f = f.mean((2, 3, 4))
        while f.ndim > 2:
            f = f.mean(1)
        if f.shape[0] % num_samples:
            raise RuntimeError(f'backbone returned {f.shape[0]} rows for '
                               f'{num_samples} videos')
        f = f.reshape(num_samples, f.shape[0] // num_samples, -1)
        out.append(f.mean(1) if average_views else f)
    return out


# ----------------------------------------------------------------------------
# scores and names
# ----------------------------------------------------------------------------
def _probabilities(scores, already_prob):
    scores = scores.detach().float().cpu()
    if scores.ndim == 2:  # average_clips=None: (views, C)
        return F.softmax(scores, -1).mean(0)
    return scores if already_prob else F.softmax(scores, -1)


def scores_of(model, data_sample):
    """``{output: class probabilities (C,)}`` of one data sample:
    ``{'verb', 'noun'}`` for EPIC heads, ``{'label'}`` otherwise."""
    prob = getattr(model.cls_head, 'average_clips', None) == 'prob'
    if 'pred_verb' in data_sample and 'pred_noun' in data_sample:
        return {
            'verb': _probabilities(data_sample.pred_verb, prob),
            'noun': _probabilities(data_sample.pred_noun, prob)
        }
    if 'pred_score' not in data_sample:
        raise RuntimeError('the model wrote no pred_score into the data '
                           'sample')
    return {'label': _probabilities(data_sample.pred_score, prob)}


def expected_classes(model):
    """``{output: number of classes}`` read from the head."""
    head = model.cls_head
    if hasattr(head, 'num_verbs') and hasattr(head, 'num_nouns'):
        return dict(verb=head.num_verbs, noun=head.num_nouns)
    return dict(label=head.num_classes)


def resolve_label_names(model, spec):
    """Label names for the model's outputs from a ``label_map`` spec (config
    field or ``--label-map``), checked against the head's class counts.
    Returns ``{output: names}`` (missing outputs fall back to indices)."""
    maps = load_label_maps(spec)
    expected = expected_classes(model)
    if 'label' in maps and 'label' not in expected:
        raise LabelMapError(
            f'this model predicts {sorted(expected)}; give one label map per '
            f'output, e.g. --label-map verb=EPIC_100_verb_classes.csv '
            f'noun=EPIC_100_noun_classes.csv')
    for key, names in maps.items():
        if key not in expected:
            raise LabelMapError(f'label map for {key!r}: the model has no '
                                f'such output (outputs: {sorted(expected)})')
        src = spec if isinstance(spec, str) else spec.get(key)
        check_num_classes(names, expected[key], 'label map' if key ==
                          'label' else f'{key} label map', src)
    return maps


def label_names_for(model, cli_values, cfg):
    """Class names for a tool run: ``--label-map`` values (errors are
    fatal) else the config's ``label_map`` (a missing file there only warns
    and indices are shown; one that is there but does not fit the model is
    an error, as with ``--label-map``). Returns ``(names, note)``."""
    from .datasets.label_maps import LabelMapNotFound, parse_label_map_arg
    spec = parse_label_map_arg(cli_values)
    if spec is not None:
        return resolve_label_names(model, spec), 'from --label-map'
    spec = cfg.get('label_map')
    if not spec:
        return {}, 'none, indices shown (no --label-map, no label_map in ' \
            'the config)'
    try:
        return resolve_label_names(model, spec), 'from the config\'s ' \
            f'label_map ({spec})'
    except LabelMapNotFound as e:
        warnings.warn(f'class names unavailable, showing indices: {e}')
        return {}, f'none, indices shown (the config\'s label_map: {e})'


def _named(i, names):
    return names[i] if names is not None else str(i)


def topk_predictions(scores, names=None, k=5):
    """``scores`` from :func:`scores_of` -> ``{output: [dict(index, name,
    score)]}`` best first; with verb and noun also ``action``: the top-k
    (verb, noun) pairs by ``p(verb) * p(noun)``."""
    names = names or {}
    out = {}
    for key, p in scores.items():
        kk = min(k, p.numel())
        val, idx = p.topk(kk)
        out[key] = [
            dict(index=int(i), name=_named(int(i), names.get(key)),
                 score=float(v)) for v, i in zip(val, idx)
        ]
    if 'verb' in scores and 'noun' in scores:
        pv, pn = scores['verb'], scores['noun']
        joint = (pv[:, None] * pn[None, :]).reshape(-1)
        val, idx = joint.topk(min(k, joint.numel()))
        actions = []
        for v, i in zip(val, idx):
            vi, ni = divmod(int(i), pn.numel())
            actions.append(
                dict(verb=vi, noun=ni,
                     name=f'{_named(vi, names.get("verb"))} '
                     f'{_named(ni, names.get("noun"))}',
                     score=float(v)))
        out['action'] = actions
    return out
