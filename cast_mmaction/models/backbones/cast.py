"""The multi-expert backbone: CAST, CAVA and CA2ST are configurations of it.

Several frozen experts run layer by layer side by side. Every layer ``i``:

1. each expert's attention branch, passed through its attention adapter
   (with skip) and added to the stream;
2. the B-CA links active at layer ``i``, in config order; each link reads the
   streams as they are after the previous link and adds its updates through
   drop path;
3. each expert's MLP branch plus a parallel no-skip MLP adapter scaled by
   ``mlp_adapter_scale`` (through drop path).

The output is a tuple of pooled features, one per expert in config order.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule

from mmaction.registry import MODELS
from ..fusion import Adapter, BottleneckCrossAttention
from ..layers import DropPath


@MODELS.register_module()
class CASTBackbone(BaseModule):
    """Experts + adapters + B-CA links.

    Args:
        experts: ``{name: expert config}`` in stream order (the order of the
            output tuple). ``num_frames`` and ``img_size`` given here are
            passed to every expert that does not set them.
        links: list of ``dict(experts=(a, b), windows={a: w, b: w},
            layers=None | list of layer indices)``; ``layers=None`` means
            every layer. A link may also set ``num_heads``, ``name``.
        num_frames, img_size: clip size, shared by the video experts.
        adapter_ratio: adapter bottleneck (0.25: 768 -> 192).
        adapter_layers: layers that get adapters (None: all).
        mlp_adapter_scale: scale of the MLP-branch adapter (0.5).
        down_ratio: B-CA bottleneck = width // down_ratio.
        drop_path_rate: stochastic depth, linear from 0 to this over layers,
            applied to B-CA updates and MLP adapters.
        link_eps: LayerNorm epsilon inside B-CA.
        with_cp: activation checkpointing per layer (saves memory in
            training at the cost of a second forward).
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
                 with_cp=False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if not experts:
            raise ValueError('backbone.experts is empty')
        built = OrderedDict()
        shared = dict(num_frames=num_frames, img_size=img_size)
        for name, cfg in experts.items():
            cfg = dict(cfg)
            for key, value in shared.items():
                cfg.setdefault(key, value)
            try:
                built[name] = MODELS.build(cfg)
            except (TypeError, ValueError) as e:
                raise type(e)(f'backbone.experts.{name}: {e}') from e
        self.experts = nn.ModuleDict(built)
        self.stream_names = list(built)
        depths = {n: e.depth for n, e in built.items()}
        if len(set(depths.values())) != 1:
            raise ValueError(f'experts run in lock-step and need the same '
                             f'depth; got {depths} (backbone.experts.*.'
                             f'layers/depth)')
        self.depth = depth = next(iter(depths.values()))
        self.mlp_adapter_scale = mlp_adapter_scale
        self.with_cp = with_cp

        layers = range(depth) if adapter_layers is None else adapter_layers
        self.adapter_layers = sorted(set(layers))
        self._check_layers(self.adapter_layers, 'adapter_layers')

        def adapters(skip):
            return nn.ModuleDict({
                n: nn.ModuleDict({
                    str(i): Adapter(e.embed_dim, adapter_ratio, skip=skip)
                    for i in self.adapter_layers
                })
                for n, e in built.items()
            })

        self.attn_adapters = adapters(skip=True)
        self.mlp_adapters = adapters(skip=False)

        self.links = nn.ModuleDict()
        self._links_at = [[] for _ in range(depth)]
        for k, link in enumerate(links):
            link = dict(link)
            pair = tuple(link['experts'])
            for n in pair:
                if n not in built:
                    raise ValueError(f'backbone.links[{k}] names expert '
                                     f'{n!r}; experts are {list(built)}')
            name = link.get('name', '_'.join(pair))
            lyr = link.get('layers')
            lyr = list(range(depth)) if lyr is None else sorted(set(lyr))
            self._check_layers(lyr, f'links[{k}].layers')
            heads = link.get('num_heads', built[pair[0]].num_heads)
            mods = nn.ModuleDict()
            for i in lyr:
                mods[str(i)] = BottleneckCrossAttention(
                    {n: built[n] for n in pair}, dict(link['windows']),
                    heads, down_ratio, link_eps,
                    link.get('pos_embed', True))
                self._links_at[i].append(name)
            self.links[name] = mods

        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.drop_path = nn.ModuleList(DropPath(r) for r in dpr)

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

    def _layer(self, i, batch, *xs):
        names, experts = self.stream_names, self.experts
        tokens = dict(zip(names, xs))
        key = str(i)
        drop = self.drop_path[i]
        for n in names:
            y = experts[n].attn_branch(i, tokens[n])
            if key in self.attn_adapters[n]:
                y = self.attn_adapters[n][key](y)
            tokens[n] = tokens[n] + y
        for link_name in self._links_at[i]:
            updates = self.links[link_name][key](tokens, experts, batch)
            for n, upd in updates.items():
                tokens[n] = tokens[n] + drop(upd)
        for n in names:
            x = tokens[n]
            xn = experts[n].mlp_norm(i, x)
            y = experts[n].mlp_branch(i, xn)
            if key in self.mlp_adapters[n]:
                y = y + drop(self.mlp_adapter_scale *
                             self.mlp_adapters[n][key](xn))
            tokens[n] = x + y
        return tuple(tokens[n] for n in names)

    def forward(self, inputs):
        """``inputs``: the video (B, C, T, H, W), or a dict of modality
        inputs. Returns pooled features, one (B, D) per expert."""
        names = self.stream_names
        xs = [self.experts[n].embed(self._inputs_for(self.experts[n], inputs))
              for n in names]
        first = self._inputs_for(self.experts[names[0]], inputs)
        batch = first.shape[0]
        for i in range(self.depth):
            if self.with_cp and self.training and torch.is_grad_enabled():
                xs = cp.checkpoint(self._layer, i, batch, *xs,
                                   use_reentrant=False)
            else:
                xs = self._layer(i, batch, *xs)
        return tuple(self.experts[n].pool(x, batch)
                     for n, x in zip(names, xs))

    # ------------------------------------------------------------------
    def param_counts(self):
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return train, total
