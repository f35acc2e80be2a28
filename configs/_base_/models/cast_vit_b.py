# CAST ViT-B/16 (Lee et al., NeurIPS 2023): a frozen CLIP ViT-B/16 spatial
# expert on frames 1, 3, ..., 15 and a frozen VideoMAE ViT-B/16 temporal
# expert, joined by bottleneck cross-attention in every layer (the clip
# stream queries the vmae stream over time, vmae queries clip over space).
# The one definition of this model: the CAST recipes inherit it and name
# only what differs (weights, clip size, classes, drop path, blending), and
# cast_mmaction.models.presets.cast_recognizer_cfg() builds from it.
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='CASTBackbone',
        num_frames=16,
        img_size=224,
        experts=dict(
            clip=dict(
                type='CLIPViTExpert',
                embed_dim=768,
                depth=12,
                num_heads=12,
                patch_size=16,
                mlp_ratio=4.0,
                frame_start=1,  # frames 1, 3, ..., 15
                frame_step=2,  # = the VideoMAE tubelet size
                pretrained=None),
            vmae=dict(
                type='VideoMAEExpert',
                embed_dim=768,
                depth=12,
                num_heads=12,
                patch_size=16,
                tubelet_size=2,
                mlp_ratio=4.0,
                pretrained=None)),
        links=[
            dict(
                experts=('clip', 'vmae'),
                windows=dict(clip='time', vmae='space'),
                layers=None)  # B-CAST in every layer
        ],
        down_ratio=2,
        drop_path_rate=0.0,
        with_cp=False),  # True: activation checkpointing, less memory
    cls_head=dict(
        type='CASTHead',
        num_classes=400,
        in_channels=768,
        num_streams=2,
        label_smooth_eps=0.0,
        average_clips='prob'),  # softmax scores averaged over views
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],  # ImageNet, on 0..255
        std=[58.395, 57.12, 57.375],
        format_shape='NCTHW'))
