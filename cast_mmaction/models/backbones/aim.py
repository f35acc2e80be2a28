"""AIM (Yang et al., ICLR 2023; taoyang1122/adapt-image-models) on the
plugin's CLIP expert.

Each block of a frozen CLIP ViT is run three times over, reusing its frozen
weights:

1. temporal adaptation: the block's own attention along time (one sequence
   of ``T`` tokens per token position), then ``T_Adapter`` (no skip); with
   ``num_tadapter=2`` a skip adapter ``T_Adapter_in`` sits between the
   LayerNorm and the attention; added to the tokens through drop path;
2. spatial adaptation: the block's attention within each frame, then
   ``S_Adapter`` (with skip), added to the tokens;
3. joint adaptation: the block's MLP plus ``adapter_scale`` times
   ``MLP_Adapter`` (no skip) on the same normalised tokens, the adapter
   through drop path.

A learned temporal embedding (zeros at the start) is added to every token
before ``ln_pre``. The output is ``ln_post`` of each frame's class token as
a (B, C, T, 1, 1) map for MMAction2's ``I3DHead`` (average, dropout,
``fc_cls``). Adapters are :class:`~cast_mmaction.models.fusion.Adapter`
(``fc2(GELU(fc1 x))``, bottleneck ``adapter_ratio`` = 0.25, ``fc2``
zero-initialised, as AIM's ``init_weights``). Trainable, as AIM's training
script leaves them: the adapters, the temporal embedding, ``ln_post`` and
the head.

Quirk kept from the official code: its drop path acts on the token axis
(its tensors are laid out (tokens, batch x frames, C), and timm's DropPath
draws one mask entry per index of the first axis), so one Bernoulli draw per
token position is shared by every clip and frame of the batch.
"""
import torch
import torch.nn as nn

from mmaction.registry import MODELS
from ..fusion import Adapter
from ..layers import DropPath
from .single_expert import SingleExpertBackbone, build_frozen_expert


@MODELS.register_module()
class AIMViT(SingleExpertBackbone):
    """Args:
        expert: config of the frame-wise expert (``CLIPViTExpert``).
        num_frames, img_size: the clip (the temporal embedding has one row
            per frame the expert sees).
        num_tadapter: 1 (K400 recipe) or 2 (SSv2 recipe: also
            ``T_Adapter_in``).
        adapter_scale: weight of the MLP adapter (K400 0.5, SSv2 1.0).
        adapter_ratio: adapter bottleneck width / embed_dim (0.25).
        drop_path_rate: drop path of the temporal and MLP adapters, linear
            from 0 over the layers (0.2 in their ViT-B configs).
    """

    layer_containers = ('t_in_adapters', 't_adapters', 's_adapters',
                        'mlp_adapters')

    def __init__(self,
                 expert=dict(type='CLIPViTExpert'),
                 num_frames=8,
                 img_size=224,
                 num_tadapter=1,
                 adapter_scale=0.5,
                 adapter_ratio=0.25,
                 drop_path_rate=0.2,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self._set_expert('clip', build_frozen_expert(
            expert, num_frames, img_size, trainable=('ln_post', ),
            owner='AIMViT'))
        if num_tadapter not in (1, 2):
            raise ValueError(f'AIMViT: num_tadapter={num_tadapter!r}; use 1 '
                             f'(T_Adapter) or 2 (T_Adapter_in + T_Adapter)')
        self.num_tadapter = num_tadapter
        self.adapter_scale = float(adapter_scale)
        dim = self.embed_dim
        self.temporal_embedding = nn.Parameter(
            torch.zeros(1, self.expert.grid_t, dim))

        def adapters(skip):
            return self._per_layer(
                lambda i: Adapter(dim, adapter_ratio, skip=skip))

        if num_tadapter == 2:
            self.t_in_adapters = adapters(True)
        self.t_adapters = adapters(False)
        self.s_adapters = adapters(True)
        self.mlp_adapters = adapters(False)
        dpr = torch.linspace(0, drop_path_rate, self.depth,
                             device='cpu').tolist()
        self.drop_path = nn.ModuleList(DropPath(r) for r in dpr)

    def _add_drop(self, i, x, y, scale=1.0):
        """``x + drop(scale * y)``, drawn per token position (the official
        layout) in one pass (``DropPath.add``)."""
        return self.drop_path[i].add(x.transpose(0, 1), y.transpose(0, 1),
                                     scale).transpose(0, 1)

    def forward(self, video):
        """(B, C, T, H, W) -> (B, C, T, 1, 1)."""
        e, b, name = self.expert, video.shape[0], self.expert_name
        x = e.embed_tokens(video)  # (B*T, L, C)
        bt, n, c = x.shape
        t = bt // b
        frames = self.temporal_embedding.shape[1]
        if t != frames:
            raise ValueError(f'AIMViT built for {frames} frames got {t}; set '
                             f'model.backbone.num_frames')
        x = x.reshape(b, t, n, c) + self.temporal_embedding.unsqueeze(2)
        x = e.embed_norm(x.reshape(bt, n, c))
        t_in = self.t_in_adapters[name] if self.num_tadapter == 2 else None
        for i in range(self.depth):
            # temporal adaptation: one sequence over time per token position
            xt = x.reshape(b, t, n, c).transpose(1, 2).reshape(b * n, t, c)
            h = e.attn_norm(i, xt)
            if t_in is not None:
                h = t_in[i](h)
            h = self.t_adapters[name][i](e.attn_core(i, h))
            h = h.reshape(b, n, t, c).transpose(1, 2).reshape(bt, n, c)
            x = self._add_drop(i, x, h)
            # spatial adaptation
            x = x + self.s_adapters[name][i](e.attn_branch(i, x))
            # joint adaptation
            xn = e.mlp_norm(i, x)
            x = self._add_drop(i, x + e.mlp_branch(i, xn),
                               self.mlp_adapters[name][i](xn),
                               self.adapter_scale)
        feats = e.frame_features(x, b)  # (B, T, C)
        return feats.transpose(1, 2)[..., None, None]
