"""The multi-expert backbone: CAST, CAVA and CA2ST are configurations of it.

Several frozen experts run layer by layer side by side. Every layer ``i``:

1. each expert's attention branch, passed through its attention adapter
   (with skip) and added to the stream;
2. the links active at layer ``i`` (B-CA unless a link names another
   registered ``type``), in config order; each link reads the
   streams as they are after the previous link and adds its updates through
   drop path;
3. each expert's MLP branch plus a parallel no-skip MLP adapter scaled by
   ``mlp_adapter_scale`` (through drop path).

The output is a tuple of pooled features, one per expert in config order.

Configurations (see ``models/presets.py`` and ``models/presets_av.py``):

* CAST  = {clip, vmae}, link clip-vmae with windows time / space;
* CAVA  = {clip, audio}, link clip-audio with global windows in every layer;
* CA2ST = {clip, vmae, audio}, links clip-vmae (every layer), then clip-audio
  and vmae-audio (global, layers 9-11), applied one after the other.

Audio-visual extras: links may be restricted to a layer subset, carry their
own LayerNorm ``eps``, and add *time encodings* (``time_encoding=True`` on a
link plus a backbone ``time_encoding`` dict; the input is then a dict with a
``times`` entry). ``share_projections=True`` makes every expert's down / up
projections one module across all links active in the same layer (the
authors' ``bcast_share``: the state dict lists each tied tensor under every
link's name).
"""
import contextlib
import functools
import inspect
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp  # noqa: F401 (tests patch it)
from mmengine.model import BaseModule

from mmaction.registry import MODELS
from ... import safe_load
from ..experts.base import (check_expert_modality, check_expert_sizes,
                            expert_class, not_an_expert)
from ..fusion import Adapter
from ..fusion.link import (BACKBONE_LINK_KEYS, DEFAULT_LINK_TYPE,
                           AttentionRecord, link_class)
from ..fusion.time_encoding import SegmentTimeMLP, video_slot_segments
from ..checkpointing import checkpoint, make_policy
from ..layers import DropPath
from ..speedups import apply_speedups


def _as_dtype(value, field):
    names = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16,
             'float16': torch.float16, 'fp16': torch.float16,
             'half': torch.float16, 'float32': torch.float32,
             'fp32': torch.float32}
    if isinstance(value, torch.dtype):
        return value
    if value not in names:
        raise ValueError(f'backbone.{field}={value!r}: use one of '
                         f'{sorted(names)}')
    return names[value]


def _accepts(type_name, key):
    """Whether the registered class ``type_name`` takes argument ``key``."""
    cls = MODELS.get(type_name) if isinstance(type_name, str) else type_name
    if cls is None:
        return True  # let the build raise its own error
    params = inspect.signature(cls.__init__).parameters
    return key in params or any(p.kind == p.VAR_KEYWORD
                                for p in params.values())


def _default(type_name, key):
    """The default of argument ``key`` of the registered class (None when
    it has none)."""
    cls = MODELS.get(type_name) if isinstance(type_name, str) else type_name
    if cls is None:
        return None
    param = inspect.signature(cls.__init__).parameters.get(key)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def _link_directions(link, pair, k):
    """A link's ``directions`` / ``order`` -> (receivers in order,
    sequential)."""
    field = f'backbone.links[{k}]'
    dirs = link.get('directions', 'both')
    order = link.get('order', 'parallel')
    if order not in ('parallel', 'sequential'):
        raise ValueError(f"{field}.order={order!r}: use 'parallel' or "
                         f"'sequential'")
    a, b = pair
    if dirs == 'both':
        if order == 'sequential':
            raise ValueError(
                f"{field}: order='sequential' runs the directions in the "
                f"order listed; list them, e.g. directions=['{b}->{a}', "
                f"'{a}->{b}']")
        return list(pair), False
    if isinstance(dirs, str):
        dirs = [dirs]
    receivers = []
    for d in dirs:
        src, _, dst = str(d).partition('->')
        src, dst = src.strip(), dst.strip()
        if {src, dst} != set(pair) or dst in receivers:
            raise ValueError(
                f"{field}.directions: {d!r} is not one of '{b}->{a}', "
                f"'{a}->{b}' (each at most once; 'src->dst': dst queries src "
                f"and receives the update) or 'both'")
        receivers.append(dst)
    if not receivers:
        raise ValueError(f'{field}.directions is empty; leave the link out '
                         f'instead')
    return receivers, order == 'sequential' and len(receivers) > 1


@MODELS.register_module()
class CASTBackbone(BaseModule):
    """Experts + adapters + B-CA links.

    Args:
        experts: ``{name: expert config}`` in stream order (the order of the
            output tuple). ``num_frames`` and ``img_size`` given here are
            passed to every expert that does not set them.
        links: list of ``dict(type=..., experts=(a, b), layers=None | list
            of layer indices, name=..., directions=..., order=..., **own
            keys)``; ``layers=None`` means every layer. ``type`` names a
            registered :class:`~cast_mmaction.models.fusion.Link` subclass
            (default ``'BottleneckCrossAttention'``), which takes and checks
            the other keys. B-CA's: ``windows={a: w, b: w}``, ``num_heads``
            (default the first expert's), ``pos_embed`` (learned window
            tables, default True), ``eps`` (its LayerNorm epsilon, default
            ``link_eps``), ``time_encoding`` (add time encodings, default
            False), ``down_ratio`` (its bottleneck, default the backbone's;
            1: none). Links run in list order, each on the streams left by
            the previous one.

            ``directions``: ``'both'`` (default) or a list of ``'src->dst'``
            (``dst`` queries ``src`` and receives the update; CAST's T2S is
            ``'vmae->clip'``, S2T ``'clip->vmae'``). A stream no direction
            reaches is left exactly as without the link. ``order``:
            ``'parallel'`` (default: every direction reads the same
            streams) or ``'sequential'`` (the directions run in list order,
            each reading the streams the previous one updated).
        num_frames, img_size: clip size, passed to every expert whose class
            takes these arguments and does not set them.
        adapter_ratio: adapter bottleneck (0.25: 768 -> 192).
        adapter_layers: layers that get adapters (None: all); a layer gets
            an attention (MLP) adapter only where it has that branch.
        depth: None (the experts' depth), or a depth larger than the
            experts' configured (pretrained) depth: each expert gets the
            extra layers, initialised fresh and trainable (late fusion).
        attn_layers, mlp_layers: layers that run the experts' self-attention
            / MLP branch (None: all); elsewhere the branch is removed from
            the experts (its parameters leave the state dict).
        mlp_adapter_scale: scale of the MLP-branch adapter (0.5).
        down_ratio: B-CA bottleneck = width // down_ratio.
        drop_path_rate: stochastic depth, linear from 0 to this over layers,
            applied to B-CA updates and MLP adapters.
        link_eps: LayerNorm epsilon inside B-CA.
        with_cp: activation checkpointing in training: ``True`` (every
            layer), ``False``, an int ``k`` (the last ``k`` layers) or a list
            of layer indices. A checkpointed layer keeps only its input
            streams and recomputes its forward in backward (about 170 MB less
            per ViT-B layer at batch 1 in fp32, for one more layer forward).
        checkpoint_policy: None / ``'full'`` (``with_cp`` as above),
            ``'selective'``, ``'narrow'`` or ``'attention'``: checkpoint the
            ``with_cp`` layers (all when ``with_cp`` is False), keeping
            attention (and q/k/v, or the non-widening matmuls) and
            recomputing the rest (plain ``torch.utils.checkpoint``, every
            device; models/checkpointing.py; docs/benchmarks.md).
        speedups: None (the reference model, plain PyTorch), ``'cpu'`` (the
            CPU preset, decided from the CPU's facts) or a dict of the CPU
            speed-ups ``onednn_linear``, ``frozen_mlp``, ``checkpoint``
            (``'fusion'`` / ``'fusion_qkv'``: checkpoint regions inside
            the ``with_cp`` layers, all when ``with_cp`` is False) and
            ``malloc_mmap_threshold``, applied to the built backbone by
            :func:`~cast_mmaction.models.speedups.apply_speedups`; each runs
            only on fp32 CPU tensors outside autocast, and the reference
            model everywhere else (models/speedups.py).
        malloc_mmap_threshold: moved to ``speedups``; a value here is an
            error naming the new field.
        frozen_dtype: None, or ``'bfloat16'`` / ``'float16'``: store the
            experts' frozen weights (all but their norms) in this dtype and
            run the experts' blocks under autocast to it, while the trainable
            adapters, links and heads stay in their own dtype (fp32 unless a
            global autocast is on). Under a global autocast to the same dtype
            the results are those of autocast alone, with half the weight
            memory and no per-step weight casts.
        share_projections: per layer, one down / up projection per expert
            shared by all links active in that layer (CA2ST revision): the
            parts each link class declares in ``shareable_parts``.
        time_encoding: None, or ``dict(split=True, num_layers=3, eps=1e-5,
            audio_segments=None)``: MLPs from segment timestamps to the B-CA
            width (one for video and one for audio experts with ``split``,
            else one shared), used by links with ``time_encoding=True``.
            ``audio_segments``: segments the audio crop is split into
            (default: the time slots of the first video expert).
    """

    def __init__(self,
                 experts,
                 links=(),
                 num_frames=16,
                 img_size=224,
                 adapter_ratio=0.25,
                 adapter_layers=None,
                 mlp_adapter_scale=0.5,
                 down_ratio=2,
                 drop_path_rate=0.0,
                 link_eps=1e-6,
                 depth=None,
                 attn_layers=None,
                 mlp_layers=None,
                 with_cp=False,
                 checkpoint_policy=None,
                 speedups=None,
                 malloc_mmap_threshold=None,
                 frozen_dtype=None,
                 share_projections=False,
                 time_encoding=None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if not experts:
            raise ValueError('backbone.experts is empty')
        built = OrderedDict()
        shared = dict(num_frames=num_frames, img_size=img_size)
        fresh = {}  # expert name -> its configured (pretrained) depth
        for name, cfg in experts.items():
            # the expert dict's trust_checkpoint (docs/security.md), here
            # too, for entry points that did not run trust_config
            cfg = dict(safe_load.pop_trust(cfg, f'backbone.experts.{name}'))
            cls = expert_class(cfg.get('type'), f'backbone.experts.{name}')
            for key, value in shared.items():
                if _accepts(cfg.get('type'), key):
                    cfg.setdefault(key, value)
            if depth is not None:
                fresh[name] = cfg.get('depth', _default(cfg.get('type'),
                                                        'depth'))
                if fresh[name] is not None and depth < fresh[name]:
                    raise ValueError(
                        f'backbone.depth={depth} is less than the depth '
                        f'{fresh[name]} of backbone.experts.{name}; set '
                        f'the expert depth instead')
                cfg['depth'] = depth
            try:
                built[name] = MODELS.build(cfg)
            except (TypeError, ValueError) as e:
                raise type(e)(f'backbone.experts.{name}: {e}'
                              f'{not_an_expert(cls)}') from e
            check_expert_sizes(built[name], f'backbone.experts.{name}')
            check_expert_modality(built[name], f'backbone.experts.{name}')
            if fresh.get(name) is not None:
                built[name].unfreeze_layers(range(fresh[name], depth))
        self.experts = nn.ModuleDict(built)
        self.stream_names = list(built)
        depths = {n: e.depth for n, e in built.items()}
        if len(set(depths.values())) != 1:
            raise ValueError(f'experts run in lock-step and need the same '
                             f'depth; got {depths} (backbone.experts.*.'
                             f'depth)')
        self.depth = depth = next(iter(depths.values()))
        self.num_frames = num_frames
        self.mlp_adapter_scale = mlp_adapter_scale
        if malloc_mmap_threshold is not None:
            raise ValueError(
                f'backbone.malloc_mmap_threshold moved: set backbone.speedups'
                f'=dict(malloc_mmap_threshold={malloc_mmap_threshold!r}) '
                f'(a CPU speed-up, models/speedups.py)')
        self.cp_policy = make_policy(checkpoint_policy)
        self.cp_layers = self._cp_layers(
            with_cp or checkpoint_policy is not None, depth)
        self.with_cp = with_cp
        self.frozen_dtype = None
        if frozen_dtype is not None and _as_dtype(
                frozen_dtype, 'frozen_dtype') != torch.float32:
            self.frozen_dtype = _as_dtype(frozen_dtype, 'frozen_dtype')
            for expert in built.values():
                expert.cast_frozen(self.frozen_dtype)

        self.adapter_layers = self._layer_set(adapter_layers,
                                              'adapter_layers')
        self.attn_layers = self._layer_set(attn_layers, 'attn_layers')
        self.mlp_layers = self._layer_set(mlp_layers, 'mlp_layers')
        for i in range(depth):
            for branch, on in (('attn', self.attn_layers),
                               ('mlp', self.mlp_layers)):
                if i not in on:
                    for e in built.values():
                        e.remove_branch(i, branch)

        def adapters(skip, branch_layers):
            return nn.ModuleDict({
                n: nn.ModuleDict({
                    str(i): Adapter(e.embed_dim, adapter_ratio, skip=skip)
                    for i in self.adapter_layers if i in branch_layers
                })
                for n, e in built.items()
            })

        self.attn_adapters = adapters(True, self.attn_layers)
        self.mlp_adapters = adapters(False, self.mlp_layers)

        self.links = nn.ModuleDict()
        self._links_at = [[] for _ in range(depth)]
        self._link_order = {}  # link name -> receivers in order, if sequential
        timed = {}  # expert name -> B-CA width of its time encodings
        backbone_args = dict(down_ratio=down_ratio, link_eps=link_eps)
        for k, link in enumerate(links):
            link = dict(link)
            field = f'backbone.links[{k}]'
            cls = link_class(link.get('type', DEFAULT_LINK_TYPE), field)
            own = {key: v for key, v in link.items()
                   if key not in BACKBONE_LINK_KEYS}
            cls.check_config(own, field)
            for arg, src in cls.backbone_defaults.items():
                if src not in backbone_args:
                    raise ValueError(
                        f'{cls.__name__}.backbone_defaults: {arg!r} <- '
                        f'{src!r}, which is not a backbone argument links '
                        f'default to; use one of {sorted(backbone_args)}')
                own.setdefault(arg, backbone_args[src])
            if 'experts' not in link:
                first, last = self.stream_names[0], self.stream_names[-1]
                raise ValueError(f'{field}: no experts; give the experts it '
                                 f'joins, e.g. experts=({first!r}, {last!r})')
            pair = tuple(link['experts'])
            for n in pair:
                if n not in built:
                    raise ValueError(f'backbone.links[{k}] names expert '
                                     f'{n!r}; experts are {list(built)}')
            name = link.get('name', '_'.join(pair))
            if name in self.links:
                raise ValueError(f'backbone.links[{k}]: a link named {name!r} '
                                 f'exists already; give it another `name`')
            lyr = link.get('layers')
            lyr = list(range(depth)) if lyr is None else sorted(set(lyr))
            self._check_layers(lyr, f'links[{k}].layers')
            receivers, sequential = _link_directions(link, pair, k)
            if sequential:
                self._link_order[name] = receivers
            mods = nn.ModuleDict()
            for i in lyr:
                try:
                    mods[str(i)] = cls({n: built[n] for n in pair},
                                       receivers=receivers, **own)
                except (TypeError, ValueError) as e:
                    raise type(e)(f'{field} ({cls.__name__}): {e}') from e
                self._links_at[i].append(name)
            if lyr and mods[str(lyr[0])].time_encoding:
                for n in pair:
                    timed[n] = mods[str(lyr[0])].dim
            self.links[name] = mods
        self.share_projections = bool(share_projections)
        if self.share_projections:
            self._tie_projections()
        self._build_time_encoding(time_encoding, timed)

        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.drop_path = nn.ModuleList(DropPath(r) for r in dpr)
        # how a layer runs in training: None is run_layer below; the CPU
        # speed-ups may install another (models/speedups.py)
        self.layer_runner = None
        self.speedups = apply_speedups(self, speedups)

    def _tie_projections(self):
        """One module per (layer, expert, shareable part) across the links of
        that layer: each link class declares its ``shareable_parts``
        (ModuleDicts keyed by expert name; B-CA: ``down`` / ``up``); the
        first link's modules are kept."""
        for i in range(self.depth):
            owner = {}  # (part, expert) -> the first link that has it
            for name in self._links_at[i]:
                link = self.links[name][str(i)]
                for part in link.shareable_parts:
                    for n, mod in getattr(link, part).items():
                        if (part, n) not in owner:
                            owner[part, n] = link
                            continue
                        first = owner[part, n]
                        a = getattr(first, part)[n]
                        sa = {k: v.shape for k, v in a.state_dict().items()}
                        sb = {k: v.shape for k, v in mod.state_dict().items()}
                        if sa != sb:
                            raise ValueError(
                                f'share_projections: links {first.names} and '
                                f'{link.names} have different {part!r} '
                                f'modules for expert {n!r} at layer {i} '
                                f'({type(a).__name__} {sa} vs '
                                f'{type(mod).__name__} {sb}; e.g. different '
                                f'bottleneck widths)')
                        getattr(link, part)[n] = a

    def _build_time_encoding(self, cfg, timed):
        self.time_encoding = None
        if not timed:
            if cfg:
                raise ValueError('backbone.time_encoding is set but no link '
                                 'has time_encoding=True')
            return
        if not cfg:
            raise ValueError('backbone.links set time_encoding=True but '
                             'backbone.time_encoding is None; set e.g. '
                             'time_encoding=dict(split=True)')
        cfg = dict(cfg)
        known = {'split', 'num_layers', 'eps', 'audio_segments'}
        if set(cfg) - known:
            raise ValueError(f'backbone.time_encoding: unknown keys '
                             f'{sorted(set(cfg) - known)}; known: '
                             f'{sorted(known)}')
        dims = set(timed.values())
        if len(dims) != 1:
            raise ValueError(f'time-encoded links have different B-CA widths '
                             f'{timed}; they share one time MLP width')
        dim = dims.pop()
        split = cfg.get('split', True)
        groups = ('video', 'audio') if split else ('shared', )
        self.time_mlps = nn.ModuleDict({
            g: SegmentTimeMLP(dim, cfg.get('num_layers', 3),
                              cfg.get('eps', 1e-5))
            for g in groups
        })
        segs = cfg.get('audio_segments')
        if segs is None:
            video = [e.grid_t for e in self.experts.values()
                     if e.modality == 'video']
            segs = video[0] if video else max(1, self.num_frames // 2)
        self.time_encoding = dict(split=split, audio_segments=int(segs),
                                  experts=sorted(timed))

    @staticmethod
    def _cp_layers(with_cp, depth):
        if with_cp is True:
            return set(range(depth))
        if not with_cp:
            return set()
        if isinstance(with_cp, int):
            if not 0 <= with_cp <= depth:
                raise ValueError(f'backbone.with_cp={with_cp}: the number of '
                                 f'checkpointed layers must be in 0..{depth}')
            return set(range(depth - with_cp, depth))
        layers = set(int(i) for i in with_cp)
        bad = sorted(i for i in layers if not 0 <= i < depth)
        if bad:
            raise ValueError(f'backbone.with_cp: layers {bad} outside 0..'
                             f'{depth - 1}')
        return layers

    def _expert_ctx(self, x):
        """Autocast to ``frozen_dtype`` around an expert's blocks, unless a
        global autocast is on already; returns (context, cast_back)."""
        dev = x.device.type
        if self.frozen_dtype is None or torch.is_autocast_enabled(dev):
            return contextlib.nullcontext(), False
        return torch.autocast(dev, dtype=self.frozen_dtype), True

    def _run_expert(self, fn, *args):
        """``fn(*args)`` (an expert piece whose last argument is its input
        tensor) in the frozen dtype, the result back in the input's dtype."""
        x = args[-1]
        if isinstance(x, dict) or self.frozen_dtype is None:
            return fn(*args)
        ctx, cast_back = self._expert_ctx(x)
        with ctx:
            y = fn(*args)
        if cast_back and y.is_floating_point():
            dtype = x.dtype if x.is_floating_point() else torch.float32
            y = y.to(dtype)
        return y

    def _layer_set(self, layers, field):
        layers = range(self.depth) if layers is None else layers
        layers = sorted(set(int(i) for i in layers))
        self._check_layers(layers, field)
        return layers

    def _check_layers(self, layers, field):
        bad = [i for i in layers if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f'backbone.{field}: layers {bad} outside 0..'
                             f'{self.depth - 1}')

    def init_weights(self):
        """Load each expert's pretrained weights (``pretrained`` field).
        Fusion modules keep the initialisation of their constructors."""
        for expert in self.experts.values():
            expert.init_weights()

    # ------------------------------------------------------------------
    def _inputs_for(self, expert, inputs):
        if isinstance(inputs, dict):
            if expert.modality not in inputs:
                raise KeyError(f'the model needs a {expert.modality!r} input;'
                               f' got {list(inputs)}')
            return inputs[expert.modality]
        return inputs

    def time_encodings(self, times, batch):
        """Segment timestamps -> time encodings.

        ``times`` (B, 2 + F): ``[audio_start, audio_end, t_0 .. t_{F-1}]`` in
        seconds (the audio crop in the source and the timestamps of the F
        sampled frames). Returns ``(grids, raw)``: ``grids[name]`` is the
        (B, T, N, d) encoding of each time-encoded expert's patch tokens,
        ``raw[name]`` the MLP output before broadcasting ((B, slots, d) for
        video experts, (B, spectrogram columns, d) for audio experts)."""
        cfg = self.time_encoding
        if times is None:
            raise KeyError(
                'this model uses time encodings and needs a "times" input: '
                '(B, 2 + num_frames) seconds [audio_start, audio_end, t_0, '
                '...]; add PackAudioVisualInputs (which packs it) to the '
                'pipeline')
        times = torch.as_tensor(times)
        if times.ndim != 2 or times.shape[0] != batch or (
                times.shape[1] != 2 + self.num_frames):
            raise ValueError(
                f'"times" input must be (B={batch}, 2 + num_frames='
                f'{2 + self.num_frames}), got {tuple(times.shape)}')
        dtype = next(self.time_mlps.parameters()).dtype
        times = times.to(dtype)
        grids, raw = {}, {}
        for n in cfg['experts']:
            e = self.experts[n]
            mlp = self.time_mlps['shared' if not cfg['split'] else (
                'audio' if e.modality == 'audio' else 'video')]
            if e.modality == 'audio':
                seg = e.time_segments(times[:, :2], cfg['audio_segments'])
                enc = mlp(seg)  # (B, columns, d)
                grids[n] = e.time_grid(enc)
            else:
                seg = video_slot_segments(times[:, 2:], e.grid_t)
                enc = mlp(seg)  # (B, T, d)
                grids[n] = enc[:, :, None].expand(-1, -1, e.grid_n, -1)
            raw[n] = enc
        return grids, raw

    def _layer(self, i, batch, time_grids, *xs, fuse=True):
        """Layer ``i`` on the streams ``xs`` (steps 1-3 of the module
        docstring); ``fuse``: see :meth:`_mlp_residual` (False inside a
        checkpointed layer, whose selective policies keep ``addmm``
        outputs)."""
        names, experts = self.stream_names, self.experts
        tokens = dict(zip(names, xs))
        key = str(i)
        drop = self.drop_path[i]
        if i in self.attn_layers:
            for n in names:
                tokens[n] = tokens[n] + self._attn_branch_adapter(
                    i, n, tokens[n])
        for link_name in self._links_at[i]:
            link = self.links[link_name][key]
            for queries in self._link_steps(link_name):
                updates = link(tokens, experts, batch, time_grids, queries)
                for n, upd in updates.items():
                    tokens[n] = drop.add(tokens[n], upd)
        if i in self.mlp_layers:
            for n in names:
                x = tokens[n]
                xn = self._run_expert(experts[n].mlp_norm, i, x)
                adapter = self.mlp_adapters[n][key] if (
                    key in self.mlp_adapters[n]) else None
                a = None if adapter is None else adapter(xn)
                tokens[n] = self._mlp_residual(i, n, x, xn, a, drop, fuse)
        return tuple(tokens[n] for n in names)

    def _mlp_residual(self, i, n, x, xn, a, drop, fuse=True):
        """``x`` + stream ``n``'s MLP branch of layer ``i`` on ``xn`` + the
        MLP adapter's output ``a`` (or None) through ``drop``. With
        ``fuse`` (outside a checkpointed layer), where the expert's MLP adds
        its output into a residual in fewer passes (``Expert.mlp_adder``:
        the frozen MLP speed-up on fp32 CPU) and the expert runs in the
        stream's dtype: ``x`` + the adapter's part first, then the MLP's
        output accumulated into that sum (fp32 rounding in another
        order)."""
        adder = self.experts[n].mlp_adder(i, xn) if (
            fuse and self.frozen_dtype is None) else None
        if adder is not None:
            return adder(x if a is None else drop.add(
                x, a, self.mlp_adapter_scale))
        y = self._run_expert(self.experts[n].mlp_branch, i, xn)
        if a is not None:
            y = drop.add(y, a, self.mlp_adapter_scale)
        return x + y

    def _link_steps(self, link_name):
        """The receivers of each call of a link: parallel, one call on the
        same streams (``[None]``: all receivers); sequential, one call per
        receiver, each on the streams the previous one updated."""
        if link_name in self._link_order:
            return [[q] for q in self._link_order[link_name]]
        return [None]

    def _attn_branch_adapter(self, i, n, x):
        """Stream ``n``'s attention branch of layer ``i`` through its
        adapter (when it has one)."""
        y = self._run_expert(self.experts[n].attn_branch, i, x)
        if str(i) in self.attn_adapters[n]:
            y = self.attn_adapters[n][str(i)](y)
        return y

    def run_layer(self, i, batch, time_grids, xs):
        """Layer ``i``, checkpointed (``with_cp`` / ``checkpoint_policy``)
        in training when ``i`` is one of ``cp_layers``."""
        if (i in self.cp_layers and self.training
                and torch.is_grad_enabled()):
            return checkpoint(functools.partial(self._layer, fuse=False), i,
                              batch, time_grids, *xs, policy=self.cp_policy)
        return self._layer(i, batch, time_grids, *xs)

    def forward(self, inputs):
        """``inputs``: the video (B, C, T, H, W), or a dict of modality
        inputs (``video``, ``audio``, and ``times`` for time encodings).
        Returns pooled features, one (B, D) per expert."""
        names = self.stream_names
        xs = [
            self._run_expert(self.experts[n].embed,
                             self._inputs_for(self.experts[n], inputs))
            for n in names
        ]
        first = self._inputs_for(self.experts[names[0]], inputs)
        batch = first.shape[0]
        time_grids = None
        if self.time_encoding is not None:
            times = inputs.get('times') if isinstance(inputs, dict) else None
            time_grids, _ = self.time_encodings(times, batch)
        run = self.layer_runner or type(self).run_layer
        for i in range(self.depth):
            xs = run(self, i, batch, time_grids, xs)
        return tuple(self.experts[n].pool(x, batch)
                     for n, x in zip(names, xs))

    # ------------------------------------------------------------------
    @contextlib.contextmanager
    def record_attention(self, links=None, layers=None):
        """Inside ``with backbone.record_attention() as rec:``, every
        forward stores the softmax attention weights the links used in
        ``rec`` (an :class:`~cast_mmaction.models.fusion.AttentionRecord`:
        ``rec[layer, link name, receiver]`` -> (B, heads, windows..., Lq,
        Lk), detached; the last forward's). The weights are computed from
        the same q / k as the forward, whose output is unchanged (it stays on
        ``F.scaled_dot_product_attention``). ``links`` / ``layers``: record
        only these link names / layer indices (default all)."""
        names = list(self.links) if links is None else list(links)
        bad = [n for n in names if n not in self.links]
        if bad:
            raise ValueError(f'record_attention: no links {bad}; the '
                             f'backbone\'s links are {list(self.links)}')
        if layers is not None:
            layers = set(int(i) for i in layers)
            self._check_layers(sorted(layers), 'record_attention layers')
        rec = AttentionRecord()
        on = []
        for name in names:
            for key, mod in self.links[name].items():
                if layers is not None and int(key) not in layers:
                    continue
                if not mod.attention_weights:
                    rec.silent.append((int(key), name))
                    continue
                mod.set_attention_sink(rec.sink(int(key), name))
                on.append(mod)
        try:
            yield rec
        finally:
            for mod in on:
                mod.set_attention_sink(None)

    def param_counts(self):
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return train, total
