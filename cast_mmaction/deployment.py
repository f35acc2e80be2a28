"""ONNX export of a recognizer for one view, checked by onnxruntime.

The exported graph is what the test of one view computes after the data
preprocessor: normalised inputs -> backbone -> head -> the head's
``average_clips`` for one view (softmax for ``'prob'``, the scores for
``'score'`` / ``None``). Inputs and outputs (batch size dynamic):

============================  =========================================
model                         inputs -> outputs
============================  =========================================
CAST (``Recognizer3D`` +      ``video`` (B, 3, T, H, W) -> ``scores``
``CASTBackbone``), MSCA /     (B, classes); verb / noun heads:
TokenShift / ViT              ``verb_scores``, ``noun_scores``
(``MSCAViT``)
CAVA / CA2ST                  ``video`` (B, 3, T, H, W), ``audio``
(``AudioVisualRecognizer``)   (B, 1, T', F) log-mel spectrogram, and
                              ``times`` (B, 2 + T) seconds where the
                              model uses time encodings -> as above
============================  =========================================

Exporter: TorchScript tracing (``torch.onnx.export(..., dynamo=False)``),
opset :data:`OPSET`. Tracing records the one path a view takes through the
backbone's Python (the lock-step loop over experts and links, the window
reshapes of B-CA, registry-built experts) and needs nothing beyond ``onnx``;
the dynamo exporter needs ``onnxscript`` in addition and ``torch.export``
of that Python (dict inputs, shape checks that raise), and gave no benefit
for these static graphs. The batch axis is marked dynamic; the export runs
at batch 2 so that no size-1 axis is folded into a constant, and
:func:`verify` runs another batch size than the export's.
"""
import json
import os
import os.path as osp
import time
import warnings

import torch
from torch import nn

#: the ONNX opset written (LayerNormalization is a single op from 17 on)
OPSET = 17
#: the lowest opset that has the attention the models export
#: (``aten::scaled_dot_product_attention`` has an ONNX form from 14 on)
MIN_OPSET = 14
#: prefix of the metadata the exporter writes into the file
META = 'cast_mmaction'
#: batch size of the traced export (not 1, so no batch axis is folded)
EXPORT_BATCH = 2


class ExportError(RuntimeError):
    """A model, input or file the exporter cannot handle; the message names
    what to change."""


def plain_matmuls():
    """The reference model (``F.linear`` for every matmul, no fused node)
    while inside, whatever CPU speed-ups the model was built with: their
    oneDNN kernel has no ONNX form, and the PyTorch side of :func:`verify`
    computes what the graph computes (both fp32)."""
    from .models.speedups import reference_path
    return reference_path()


def max_opset():
    """The highest opset torch's TorchScript exporter writes (20 in torch
    2.15)."""
    try:
        from torch.onnx._constants import \
            ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
        return int(ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except ImportError:  # pragma: no cover - another torch layout
        return None


def check_opset(opset):
    """Refuse an opset the export cannot write, before the model is traced
    (torch would fail after tracing and print the whole graph)."""
    high = max_opset()
    if opset < MIN_OPSET or (high is not None and opset > high):
        raise ExportError(
            f'opset {opset}: use {MIN_OPSET} to {high} (the attention needs '
            f'{MIN_OPSET}; torch {torch.__version__}\'s TorchScript exporter '
            f'writes up to {high}; default {OPSET})')


def check_num_frames(model, num_frames):
    """Refuse a clip length the model is not exported with: CAST / CAVA /
    CA2ST are built for one (``backbone.num_frames``, which
    :func:`input_spec` uses); a frame-wise MSCAViT takes any."""
    if num_frames is None or _backbone_kind(model) != 'cast':
        return
    if num_frames != model.backbone.num_frames:
        raise ExportError(
            f'--num-frames {num_frames}: this {type(model.backbone).__name__}'
            f' was built for {model.backbone.num_frames} frames and is '
            f'exported with them; omit --num-frames, or build the model for '
            f'{num_frames} (--cfg-options model.backbone.num_frames='
            f'{num_frames}, which the checkpoint must fit)')


def _backbone_kind(model):
    from .models.backbones.cast import CASTBackbone
    from .models.backbones.msca_vit import MSCAViT
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, CASTBackbone):
        return 'cast'
    if isinstance(backbone, MSCAViT):
        return 'msca'
    raise ExportError(
        f'ONNX export supports CASTBackbone (CAST, CAVA, CA2ST) and MSCAViT '
        f'(MSCA, TokenShift, ViT) recognizers; this model has '
        f'{type(backbone).__name__}')


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def input_spec(model, num_frames=None):
    """``[(name, shape without the batch axis)]`` of the exported inputs,
    read from the built model. ``num_frames``: the clip length of a
    frame-wise model (MSCAViT takes any; default: 8)."""
    kind = _backbone_kind(model)
    backbone = model.backbone
    if kind == 'msca':
        h, w = backbone.img_size
        t = int(num_frames or 8)
        return [('video', (3, t, h, w))]
    spec = []
    for name in backbone.stream_names:
        expert = backbone.experts[name]
        if expert.modality == 'video' and 'video' not in dict(spec):
            ph, pw = _pair(expert.patch_size)
            gh, gw = expert.grid_hw
            spec.append(('video', (3, backbone.num_frames, gh * ph, gw * pw)))
        elif expert.modality == 'audio' and 'audio' not in dict(spec):
            spec.append(('audio', (1, expert.input_tdim, expert.input_fdim)))
        elif expert.modality not in ('video', 'audio'):
            raise ExportError(f'expert {name!r} ({type(expert).__name__}) '
                              f'reads a {expert.modality!r} input, which the '
                              f'exporter does not know')
    if backbone.time_encoding is not None:
        spec.append(('times', (2 + backbone.num_frames, )))
    return spec


def output_names(model):
    from .models.heads.cast_head import CASTVerbNounHead
    head = getattr(model, 'cls_head', None)
    if head is None:
        raise ExportError('the model has no cls_head; only recognizers with '
                          'a classification head are exported')
    if isinstance(head, CASTVerbNounHead):
        return ['verb_scores', 'noun_scores']
    return ['scores']


class OneViewRecognizer(nn.Module):
    """``recognizer`` as a plain module over positional tensors (the names
    of :func:`input_spec`), returning the scores of one view."""

    def __init__(self, recognizer, input_names):
        super().__init__()
        if getattr(recognizer, 'with_neck', False):
            raise ExportError('recognizers with a neck are not exported '
                              '(none of the shipped models has one)')
        self.recognizer = recognizer
        self.input_names = list(input_names)
        self.dict_input = self.input_names != ['video']
        average = getattr(recognizer.cls_head, 'average_clips', None)
        if average not in ('prob', 'score', None):
            raise ExportError(f'cls_head.average_clips={average!r}: the '
                              f'exporter knows prob, score and None')
        self.softmax = average == 'prob'

    def forward(self, *tensors):
        if self.dict_input:
            x = dict(zip(self.input_names, tensors))
        else:
            x = tensors[0]
        scores = self.recognizer.cls_head(self.recognizer.backbone(x))
        if isinstance(scores, (tuple, list)):
            return tuple(self._one_view(s) for s in scores)
        return self._one_view(scores)

    def _one_view(self, s):
        return s.softmax(-1) if self.softmax else s


def example_inputs(spec, batch=1, seed=0):
    """Random inputs of ``spec`` at ``batch``: normal video and audio (what
    normalisation gives), increasing times in seconds."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for name, shape in spec:
        if name == 'times':
            n = shape[0]
            start = torch.rand(batch, 1, generator=g) * 2
            frames = start + torch.linspace(0, 4, n - 2).expand(batch, -1)
            out.append(torch.cat([start, start + 4, frames], 1))
        else:
            out.append(torch.randn((batch, ) + tuple(shape), generator=g))
    return out


def fill_zero_init(model, seed=0, std=0.02):
    """Give every all-zero parameter (the zero-initialised adapters, B-CA
    up-projections, biases and heads) normal noise of ``std``, so that a
    model without a checkpoint computes a function of all its branches (at
    initialisation the adapters and links are identities and the
    single-label heads see zeros: constant scores would make a comparison
    of two runtimes vacuous). Returns the number of parameters filled."""
    g = torch.Generator().manual_seed(seed)
    filled = 0
    with torch.no_grad():
        for p in model.parameters():
            if p.device.type != 'meta' and not p.any():
                p.copy_(std * torch.randn(p.shape, generator=g))
                filled += p.numel()
    return filled


def load_model(config, checkpoint=None, cfg_options=None):
    """Build ``config`` on the CPU in eval mode and load ``checkpoint``
    (None: the initialised weights). A checkpoint of another model stops
    with the keys that do not fit."""
    from . import inference as inf
    try:
        cfg = inf.load_config(config, cfg_options)
        return inf.init_model(cfg, checkpoint, device='cpu')
    except inf.InferenceError as e:
        raise ExportError(str(e)) from e


def export(model, path, num_frames=None, opset=OPSET):
    """Write ``model`` (a built recognizer) for one view to ``path``; returns
    ``(wrapper, spec, output names)``."""
    import onnx
    check_opset(opset)
    spec = input_spec(model, num_frames)
    names = [n for n, _ in spec]
    outputs = output_names(model)
    wrapper = OneViewRecognizer(model, names).eval()
    inputs = tuple(example_inputs(spec, EXPORT_BATCH))
    dynamic = {n: {0: 'batch'} for n in names + outputs}
    folder = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:  # a file in the way, no permission, ...
        raise ExportError(f'cannot write {path}: its folder {folder} cannot '
                          f'be created ({e}); give --out in a writable '
                          f'folder') from e
    try:
        with torch.no_grad(), plain_matmuls(), warnings.catch_warnings():
            # tracing notes every Python bool / int it records as a
            # constant (the shape checks); they hold for every batch size
            warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
            torch.onnx.export(wrapper, inputs, path, dynamo=False,
                              opset_version=opset, input_names=names,
                              output_names=outputs, dynamic_axes=dynamic,
                              do_constant_folding=True)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - report with what was exported
        raise ExportError(f'torch.onnx.export of {type(model).__name__} with '
                          f'{type(model.backbone).__name__} failed: '
                          f'{type(e).__name__}: {e}') from e
    proto = onnx.load(path)
    meta = {f'{META}.average_clips': json.dumps(
        getattr(model.cls_head, 'average_clips', None)),
            f'{META}.inputs': json.dumps(spec),
            f'{META}.backbone': type(model.backbone).__name__}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)
    onnx.checker.check_model(path)
    return wrapper, spec, outputs


def _one_line(exc):
    """``exc``'s message on one line (onnxruntime's span several)."""
    return ' '.join(str(exc).split()) or type(exc).__name__


def ort_session(path, threads=None):
    """An onnxruntime CPU session of ``path`` (``threads``: intra-op threads,
    None = onnxruntime's default). Raises :class:`ExportError` naming the
    file when onnxruntime is missing or cannot load it."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError(f'onnxruntime is not installed, so {path} cannot '
                          f'be run: pip install onnxruntime') from e
    if not osp.isfile(path):
        raise ExportError(f'ONNX file {path} not found')
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path, opts,
                                    providers=['CPUExecutionProvider'])
    except Exception as e:  # noqa: BLE001 - name the file
        raise ExportError(
            f'onnxruntime cannot load {path}: {_one_line(e)}') from e


def run_ort(session, inputs):
    """Run ``session`` on a list of tensors (in the file's input order)."""
    feed = {i.name: t.detach().cpu().numpy()
            for i, t in zip(session.get_inputs(), inputs)}
    return [torch.from_numpy(o) for o in session.run(None, feed)]


def _run_ort_file(session, inputs, path):
    """:func:`run_ort`, a failure inside onnxruntime raised as
    :class:`ExportError` naming ``path`` and onnxruntime's message."""
    try:
        return run_ort(session, inputs)
    except Exception as e:  # noqa: BLE001 - name the file
        raise ExportError(
            f'onnxruntime cannot run {path}: {_one_line(e)}') from e


def verify(path, wrapper, spec, batch=3, seed=1):
    """Run onnxruntime and PyTorch on the same random input (at a batch size
    the export did not use). Returns ``(max abs difference over every
    output, spread)``: ``spread`` is the largest difference of PyTorch's
    outputs between the batch items, the scale the difference is small
    against (a constant model would have 0)."""
    inputs = example_inputs(spec, batch, seed)
    with torch.no_grad(), plain_matmuls():
        ref = wrapper(*inputs)
    ref = list(ref) if isinstance(ref, tuple) else [ref]
    got = _run_ort_file(ort_session(path), inputs, path)
    if [tuple(r.shape) for r in ref] != [tuple(g.shape) for g in got]:
        raise ExportError(
            f'{path}: onnxruntime output shapes '
            f'{[tuple(g.shape) for g in got]} differ from PyTorch '
            f'{[tuple(r.shape) for r in ref]}')
    diff = max(float((r - g).abs().max()) for r, g in zip(ref, got))
    spread = max(float((r - r[:1]).abs().max()) for r in ref)
    return diff, spread


def benchmark(path, wrapper, spec, runs=5, threads=1, batch=1, seed=2):
    """Time one forward of onnxruntime and of PyTorch eager, both with
    ``threads`` intra-op threads, each after one warm-up run, alternated run
    by run. Returns ``{'ort' | 'torch': {'wall' | 'cpu': [seconds]}}``:
    wall-clock and process CPU time of each run (on a shared machine the CPU
    time is the steadier figure: waiting for a core does not count)."""
    inputs = example_inputs(spec, batch, seed)
    session = ort_session(path, threads)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = {k: dict(wall=[], cpu=[]) for k in ('ort', 'torch')}
    steps = dict(ort=lambda: _run_ort_file(session, inputs, path),
                 torch=lambda: wrapper(*inputs))
    try:
        with torch.no_grad():
            for step in steps.values():
                step()
            for _ in range(runs):
                for name, step in steps.items():
                    w0, c0 = time.perf_counter(), time.process_time()
                    step()
                    times[name]['cpu'].append(time.process_time() - c0)
                    times[name]['wall'].append(time.perf_counter() - w0)
    finally:
        torch.set_num_threads(old)
    return times


class OnnxRecognizer:
    """An exported file in place of the PyTorch recognizer for
    :func:`cast_mmaction.inference.predict` (``tools/infer.py --backend
    onnxruntime``): ``test_step`` normalises the packed pipeline outputs with
    the config's data preprocessor, runs every view as a batch item through
    onnxruntime and averages the views as the head's ``average_clips`` says
    (the file records it)."""

    def __init__(self, path, cfg, threads=None):
        from mmaction.registry import MODELS
        from mmengine.registry import DefaultScope
        self.path = path
        self.session = ort_session(path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if f'{META}.average_clips' not in meta:
            raise ExportError(
                f'{path} was not written by tools/deployment/export_onnx.py '
                f'(no {META}.* metadata); export the model with it')
        self.average_clips = json.loads(meta[f'{META}.average_clips'])
        self.input_names = [i.name for i in self.session.get_inputs()]
        outs = self.session.get_outputs()
        classes = {o.name: o.shape[-1] for o in outs}
        if set(classes) == {'verb_scores', 'noun_scores'}:
            self.cls_head = _HeadInfo(self.average_clips,
                                      num_verbs=classes['verb_scores'],
                                      num_nouns=classes['noun_scores'])
        else:
            self.cls_head = _HeadInfo(self.average_clips,
                                      num_classes=classes['scores'])
        self.output_names = [o.name for o in outs]
        pre = cfg.model.get('data_preprocessor')
        if pre is None:
            raise ExportError('the config has no model.data_preprocessor: '
                              'the ONNX file takes normalised inputs')
        with DefaultScope.overwrite_default_scope(
                cfg.get('default_scope', 'mmaction')):
            self.data_preprocessor = MODELS.build(pre)
        self.data_preprocessor.eval()
        self._check_config(meta)

    def _check_config(self, meta):
        spec = json.loads(meta.get(f'{META}.inputs', '[]'))
        if [n for n, _ in spec] != self.input_names:
            raise ExportError(f'{self.path}: inputs {self.input_names} do '
                              f'not match the recorded {spec}')
        self.spec = [(n, tuple(s)) for n, s in spec]

    def parameters(self):
        yield torch.zeros(0)  # the device the tools report: the CPU

    def _flat_inputs(self, inputs):
        if isinstance(inputs, dict):
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise ExportError(f'{self.path} needs inputs {missing}; the '
                                  f'pipeline packed {sorted(inputs)}')
            tensors = [inputs[n] for n in self.input_names]
        else:
            tensors = [inputs]
        views = tensors[0].shape[1]
        flat = []
        for (name, shape), t in zip(self.spec, tensors):
            t = t.reshape((-1, ) + tuple(t.shape[2:])).float()
            if tuple(t.shape[1:]) != tuple(shape):
                raise ExportError(
                    f'{self.path} was exported for {name} of shape '
                    f'{tuple(shape)} per view; the config\'s test pipeline '
                    f'gives {tuple(t.shape[1:])}: use the config the model '
                    f'was exported with')
            flat.append(t)
        return flat, views

    def _average(self, scores, views):
        scores = scores.reshape(-1, views, scores.shape[-1])
        if self.average_clips is None:
            return scores
        return scores.mean(1)  # 'prob': the file gives probabilities

    def test_step(self, data):
        with torch.no_grad():
            data = self.data_preprocessor(data, training=False)
        flat, views = self._flat_inputs(data['inputs'])
        outs = dict(zip(self.output_names, run_ort(self.session, flat)))
        samples = data['data_samples']
        if 'verb_scores' in outs:
            verb = self._average(outs['verb_scores'], views)
            noun = self._average(outs['noun_scores'], views)
            for ds, v, n in zip(samples, verb, noun):
                ds.set_field(v, 'pred_verb')
                ds.set_field(n, 'pred_noun')
                ds.set_pred_score(torch.cat([v, n], -1))
            return samples
        scores = self._average(outs['scores'], views)
        for ds, s in zip(samples, scores):
            ds.set_pred_score(s)
        return samples


class _HeadInfo:
    """What the inference helpers read from a head: ``average_clips`` and
    the class counts."""

    def __init__(self, average_clips, **classes):
        self.average_clips = average_clips
        for key, value in classes.items():
            setattr(self, key, int(value))
