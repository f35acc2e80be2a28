# ST-Adapter ViT-B/16 (Pan et al., NeurIPS 2022; linziyi96/st-adapter): a
# frozen CLIP ViT-B/16 on every frame, with a depth-wise 3-D convolution
# adapter (bottleneck 384, kernel (3, 1, 1)) before the MLP of the last 12
# blocks (their "12x384" K400 model; configs/st_adapter_ssv2.py adds the
# pre-attention adapters: "24x384"). Classifier fc(dropout(ln_post(mean over
# frames of the class token))). The one definition of this model:
# the ST-Adapter recipes inherit it, presets_peft.st_adapter_recognizer_cfg()
# builds from it.
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='STAdapterViT',
        num_frames=8,
        img_size=224,
        expert=dict(
            type='CLIPViTExpert',
            embed_dim=768,
            depth=12,
            num_heads=12,
            patch_size=16,
            mlp_ratio=4.0,
            pretrained=None),  # OpenAI ViT-B-16.pt
        adapter_width=384,
        adapter_layers=None,  # every block (their 12 of 12)
        adapter_kernel_size=(3, 1, 1),
        adapter_pre_attn=False,
        adapter_pre_mlp=True),
    cls_head=dict(
        type='I3DHead',  # spatial_type=None: dropout + fc_cls on (B, C)
        num_classes=400,
        in_channels=768,
        spatial_type=None,
        dropout_ratio=0.5,
        init_std=0.02,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[122.771, 116.746, 104.094],  # CLIP's, on 0..255
        std=[68.501, 66.632, 70.323],
        format_shape='NCTHW'))
