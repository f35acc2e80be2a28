"""ST-Adapter (Pan et al., NeurIPS 2022; linziyi96/st-adapter) on the
plugin's CLIP expert.

A frozen CLIP ViT runs every frame on its own (attention within a frame);
in each of the last ``adapter_layers`` blocks a
:class:`~cast_mmaction.models.fusion.ConvAdapter` (bottleneck, depth-wise
3-D convolution over time and space, zero-initialised) updates the patch
tokens before the attention and / or before the MLP. The output is the
expert's pooled feature, ``ln_post`` of the class token averaged over
frames; their classifier is ``fc(dropout(feature))`` (an ``I3DHead`` with
``spatial_type=None`` in the configs). Trainable: the adapters and the head
(the official code freezes everything else, ``ln_post`` included).
"""
from mmaction.registry import MODELS
from ..fusion import ConvAdapter
from .single_expert import SingleExpertBackbone, build_frozen_expert


@MODELS.register_module()
class STAdapterViT(SingleExpertBackbone):
    """Args:
        expert: config of the frame-wise expert (``CLIPViTExpert``: its
            size and ``pretrained`` weights); it sees every frame.
        num_frames, img_size: the clip.
        adapter_width: bottleneck channels (ViT-B: 384).
        adapter_layers: adapters in the last this many blocks (<= depth;
            None: every block, as both released models).
        adapter_kernel_size: (t, h, w) of the depth-wise convolution.
        adapter_pre_attn, adapter_pre_mlp: where the adapters are (the K400
            model 12x384: pre-MLP only; the SSv2 model 24x384: both).
    """

    layer_containers = ('pre_attn_adapters', 'pre_mlp_adapters')

    def __init__(self,
                 expert=dict(type='CLIPViTExpert'),
                 num_frames=8,
                 img_size=224,
                 adapter_width=384,
                 adapter_layers=None,
                 adapter_kernel_size=(3, 1, 1),
                 adapter_pre_attn=False,
                 adapter_pre_mlp=True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self._set_expert('clip', build_frozen_expert(
            expert, num_frames, img_size, owner='STAdapterViT'))
        if adapter_layers is None:
            adapter_layers = self.depth
        if not 0 <= adapter_layers <= self.depth:
            raise ValueError(f'STAdapterViT: adapter_layers={adapter_layers} '
                             f'must be in 0..depth ({self.depth})')
        if not (adapter_pre_attn or adapter_pre_mlp):
            raise ValueError('STAdapterViT: set adapter_pre_attn and / or '
                             'adapter_pre_mlp (no adapter otherwise)')
        self.adapter_layers = adapter_layers
        first = self.depth - adapter_layers
        dim = self.embed_dim

        def make(on):
            return lambda i: (ConvAdapter(dim, adapter_width,
                                          adapter_kernel_size)
                              if on and i >= first else None)

        self.pre_attn_adapters = self._per_layer(make(adapter_pre_attn))
        self.pre_mlp_adapters = self._per_layer(make(adapter_pre_mlp))

    def _adapt(self, adapter, x, batch):
        if not isinstance(adapter, ConvAdapter):
            return x
        e = self.expert
        prefix, grid = e.split(x, batch)
        return e.merge(prefix, adapter(grid, e.grid_hw), batch)

    def forward(self, video):
        """(B, C, T, H, W) -> pooled feature (B, C)."""
        e, batch = self.expert, video.shape[0]
        pre_attn = self.pre_attn_adapters[self.expert_name]
        pre_mlp = self.pre_mlp_adapters[self.expert_name]
        x = e.embed(video)
        for i in range(self.depth):
            x = self._adapt(pre_attn[i], x, batch)
            x = x + e.attn_branch(i, x)
            x = self._adapt(pre_mlp[i], x, batch)
            x = x + e.mlp_branch(i, e.mlp_norm(i, x))
        return e.pool(x, batch)
