"""Heads of the published CAST models.

``CASTHead`` (SSv2 / K400 and the audio-visual single-label models): one
no-skip, zero-initialised adapter per stream, summed, then a linear
classifier: ``fc_cls(sum_s adapter_s(feat_s))``. Options (ablations):
``fusion='mean'`` is the head of the authors' later code,
``fc_cls(mean_s (feat_s + adapter_s(feat_s)))`` (skip-connected adapters);
``fusion='none'`` is ``fc_cls(feat)`` on one stream (single-expert
baselines); ``streams`` picks the pooled streams the head reads.

``CASTVerbNounHead`` (EPIC-KITCHENS-100): a noun classifier on one stream
(the spatial CLIP stream) and a verb classifier on another (the temporal
VideoMAE stream); loss = CE(verb) + CE(noun).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmaction.models.heads.base import BaseHead
from mmaction.registry import MODELS
from ..fusion import Adapter


def _as_tuple(feats):
    return tuple(feats) if isinstance(feats, (tuple, list)) else (feats, )


def _stream_adapter(in_channels, ratio, spec):
    """One head adapter from a per-stream spec (audio-visual models):
    ``dict(skip=False, act='gelu' | 'quick_gelu', zero_init=True,
    ratio=None)``; CAVA uses ``skip=True``, CA2ST's audio stream
    ``act='quick_gelu', zero_init=False``."""
    from ..layers import QuickGELU
    spec = dict(spec or {})
    known = {'skip', 'act', 'zero_init', 'ratio', 'stream'}
    if set(spec) - known:
        raise ValueError(f'head adapter spec: unknown keys '
                         f'{sorted(set(spec) - known)}; known: {sorted(known)}')
    act = spec.get('act', 'gelu')
    if act not in ('gelu', 'quick_gelu'):
        raise ValueError(f'head adapter act must be gelu or quick_gelu, got '
                         f'{act!r}')
    adapter = Adapter(in_channels, spec.get('ratio') or ratio,
                      skip=spec.get('skip', False),
                      zero_init=spec.get('zero_init', True))
    if act == 'quick_gelu':
        adapter.act = QuickGELU()
    return adapter


@MODELS.register_module()
class CASTHead(BaseHead):
    """Single-label head on the summed per-stream adapters.

    Args:
        num_classes: classes (SSv2 174, K400 400).
        in_channels: stream width.
        num_streams: number of pooled streams the backbone returns.
        adapter_ratio: adapter bottleneck ratio.
        dropout_ratio: dropout before the classifier (the published
            ``head_drop_rate``, 0 in the recipes).
        init_std: std of the classifier's trunc-normal init.
        fusion: ``'sum'`` (default: summed no-skip adapters), ``'mean'``
            (mean of skip-connected adapters) or ``'none'`` (no adapter; the
            head reads exactly one stream).
        streams: indices of the backbone's pooled streams the head reads
            (default all ``num_streams``), e.g. ``[0]`` for a head on the
            spatial stream of a two-expert backbone.
        **kwargs: ``BaseHead`` arguments (``loss_cls``, ``label_smooth_eps``,
            ``average_clips``, ``topk``).
    """

    def __init__(self,
                 num_classes,
                 in_channels,
                 num_streams=2,
                 adapter_ratio=0.25,
                 dropout_ratio=0.0,
                 init_std=0.02,
                 fusion='sum',
                 streams=None,
                 **kwargs):
        kwargs.setdefault('average_clips', 'prob')
        # audio-visual models: one adapter spec per stream (_stream_adapter)
        stream_adapters = kwargs.pop('stream_adapters', None)
        super().__init__(num_classes, in_channels, **kwargs)
        if fusion not in ('sum', 'mean', 'none'):
            raise ValueError(f"CASTHead.fusion={fusion!r}: use 'sum', 'mean' "
                             f"or 'none'")
        self.num_streams = num_streams
        self.fusion = fusion
        self.streams = list(range(num_streams)) if streams is None else [
            int(i) for i in streams]
        bad = [i for i in self.streams if not 0 <= i < num_streams]
        if bad or not self.streams:
            raise ValueError(f'CASTHead.streams={streams}: indices in 0..'
                             f'{num_streams - 1} (num_streams={num_streams})')
        if fusion == 'none' and len(self.streams) != 1:
            raise ValueError(f"CASTHead(fusion='none') reads one stream; set "
                             f"streams=[i] (got {self.streams})")
        self.adapters = nn.ModuleList(
            Adapter(in_channels, adapter_ratio, skip=fusion == 'mean')
            for _ in ([] if fusion == 'none' else self.streams))
        if stream_adapters is not None:
            if len(stream_adapters) != len(self.adapters):
                raise ValueError(f'CASTHead.stream_adapters has '
                                 f'{len(stream_adapters)} entries for '
                                 f'{len(self.adapters)} head adapters '
                                 f'(streams={self.streams})')
            self.adapters = nn.ModuleList(
                _stream_adapter(in_channels, adapter_ratio, spec)
                for spec in stream_adapters)
        self.dropout = nn.Dropout(dropout_ratio)
        self.fc_cls = nn.Linear(in_channels, num_classes)
        nn.init.trunc_normal_(self.fc_cls.weight, std=init_std)
        nn.init.zeros_(self.fc_cls.bias)

    def init_weights(self):
        """Initialisation happens in ``__init__`` (zero adapters)."""

    def input_widths(self, num_streams):
        """The widths of the pooled streams this head reads from a backbone
        that returns ``num_streams`` of them (the start-up check asks):
        ``in_channels`` each, exactly ``self.num_streams`` streams."""
        if num_streams != self.num_streams:
            raise ValueError(
                f'model.cls_head.num_streams={self.num_streams} but the '
                f'backbone returns {num_streams} streams; set '
                f'model.cls_head.num_streams={num_streams}.')
        return [self.in_channels] * num_streams

    def forward(self, feats, **kwargs):
        feats = _as_tuple(feats)
        if len(feats) != self.num_streams:
            raise ValueError(f'CASTHead(num_streams={self.num_streams}) got '
                             f'{len(feats)} pooled streams from the backbone;'
                             f' set cls_head.num_streams')
        feats = [feats[i] for i in self.streams]
        if self.fusion == 'none':
            x = feats[0]
        else:
            x = sum(a(f) for a, f in zip(self.adapters, feats))
            if self.fusion == 'mean':
                x = x / len(feats)
        return self.fc_cls(self.dropout(x))


@MODELS.register_module()
class CASTVerbNounHead(BaseHead):
    """Verb and noun classifiers on separate streams.

    Forward returns ``(verb_scores, noun_scores)``. Ground truth is read from
    each data sample's ``gt_verb`` / ``gt_noun`` fields (hard labels, or soft
    label vectors after mixup); ``gt_label`` holding ``[verb, noun]`` is
    accepted too.
    """

    def __init__(self,
                 num_verbs=97,
                 num_nouns=300,
                 in_channels=768,
                 verb_stream=1,
                 noun_stream=0,
                 dropout_ratio=0.0,
                 init_std=0.02,
                 **kwargs):
        kwargs.setdefault('average_clips', 'prob')
        # audio-visual (CA2ST): the verb / noun input is a sum of per-stream
        # adapters, each given as dict(stream=i, **_stream_adapter spec)
        fuse = dict(verb=kwargs.pop('verb_adapters', None),
                    noun=kwargs.pop('noun_adapters', None))
        super().__init__(num_verbs, in_channels, **kwargs)
        self.num_verbs, self.num_nouns = num_verbs, num_nouns
        self.fuse_streams = {k: [dict(a)['stream'] for a in v]
                             for k, v in fuse.items() if v}
        for k, v in fuse.items():
            if v:
                setattr(self, f'{k}_adapters', nn.ModuleList(
                    _stream_adapter(in_channels, 0.25, a) for a in v))
        self.verb_stream, self.noun_stream = verb_stream, noun_stream
        self.dropout = nn.Dropout(dropout_ratio)
        self.fc_verb = nn.Linear(in_channels, num_verbs)
        self.fc_noun = nn.Linear(in_channels, num_nouns)
        for fc in (self.fc_verb, self.fc_noun):
            nn.init.trunc_normal_(fc.weight, std=init_std)
            nn.init.zeros_(fc.bias)

    def init_weights(self):
        """Initialisation happens in ``__init__``."""

    def input_widths(self, num_streams):
        """``in_channels`` for every pooled stream; the verb, noun and
        fused streams must exist."""
        read = {'verb_stream': self.verb_stream,
                'noun_stream': self.noun_stream}
        for k, v in getattr(self, 'fuse_streams', {}).items():
            read.update((f'{k}_adapters[{j}].stream', i)
                        for j, i in enumerate(v))
        bad = {f: i for f, i in read.items() if not 0 <= i < num_streams}
        if bad:
            raise ValueError(
                f'model.cls_head reads streams {bad} but the backbone returns '
                f'{num_streams} streams (0..{num_streams - 1})')
        return [self.in_channels] * num_streams

    def forward(self, feats, **kwargs):
        feats = _as_tuple(feats)
        if getattr(self, 'fuse_streams', None):
            feats = self._fuse_streams(feats)
        verb = self.fc_verb(self.dropout(feats[self.verb_stream]))
        noun = self.fc_noun(self.dropout(feats[self.noun_stream]))
        return verb, noun

    # -- labels -----------------------------------------------------------
    @staticmethod
    def _labels(data_samples, field, index):
        out = []
        for i, ds in enumerate(data_samples):
            if field in ds:
                out.append(torch.as_tensor(ds.get(field)))
            elif 'gt_label' in ds and ds.gt_label.numel() == 2:
                out.append(torch.as_tensor(ds.gt_label).reshape(-1)[index])
            else:
                raise KeyError(
                    f'CASTVerbNounHead: data sample {i} has no {field!r} '
                    f'(nor a gt_label [verb, noun]); pack EPIC-KITCHENS '
                    f'segments with PackEpicInputs and a labelled CSV')
        return torch.stack(out)

    def _ce(self, scores, labels, num_classes):
        labels = labels.to(scores.device)
        if not labels.is_floating_point():
            # hard labels, (B,) or (B, 1): an integer (B, 1) must not be
            # taken for a (B, classes) soft target
            labels = F.one_hot(labels.reshape(-1).long(),
                               num_classes).to(scores.dtype)
        elif labels.ndim == 1:
            labels = F.one_hot(labels.long(), num_classes).to(scores.dtype)
        eps = self.label_smooth_eps
        if eps:
            labels = (1 - eps) * labels + eps / num_classes
        return torch.sum(-labels * F.log_softmax(scores, dim=-1), dim=-1).mean()

    def loss_by_feat(self, scores, data_samples):
        verb, noun = scores
        lv = self._labels(data_samples, 'gt_verb', 0)
        ln = self._labels(data_samples, 'gt_noun', 1)
        loss_verb = self._ce(verb, lv, self.num_verbs)
        loss_noun = self._ce(noun, ln, self.num_nouns)
        return dict(loss_verb=loss_verb, loss_noun=loss_noun)

    def predict_by_feat(self, scores, data_samples):
        verb, noun = scores
        num_segs = verb.shape[0] // len(data_samples)
        verb = self.average_clip(verb, num_segs=num_segs)
        noun = self.average_clip(noun, num_segs=num_segs)
        for ds, v, n in zip(data_samples, verb, noun):
            ds.set_field(v, 'pred_verb')
            ds.set_field(n, 'pred_noun')
            ds.set_pred_score(torch.cat([v, n]))
            ds.set_pred_label(v.argmax(-1, keepdim=True))
        return data_samples

    def _fuse_streams(self, feats):
        """Replace the verb / noun streams by their summed adapters."""
        out = list(feats)
        index = dict(verb=self.verb_stream, noun=self.noun_stream)
        for k, streams in self.fuse_streams.items():
            adapters = getattr(self, f'{k}_adapters')
            out[index[k]] = sum(a(feats[s]) for a, s in zip(adapters, streams))
        return tuple(out)
