# AIM ViT-B/16 (Yang et al., ICLR 2023; taoyang1122/adapt-image-models): a
# frozen CLIP ViT-B/16 on every frame whose blocks are reused for temporal
# attention (then T_Adapter), spatial attention (then S_Adapter) and the
# MLP (plus adapter_scale x MLP_Adapter); a learned temporal embedding;
# MMAction2's I3DHead on the per-frame class tokens. Their K400 settings
# (num_tadapter=1, adapter_scale=0.5); configs/aim_ssv2.py sets the SSv2
# ones. The one definition of this model: the AIM recipes inherit it,
# presets_peft.aim_recognizer_cfg() builds from it.
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='AIMViT',
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
        num_tadapter=1,
        adapter_scale=0.5,
        adapter_ratio=0.25,
        drop_path_rate=0.2),
    cls_head=dict(
        type='I3DHead',
        num_classes=400,
        in_channels=768,
        spatial_type='avg',
        dropout_ratio=0.5,
        init_std=0.01,  # I3DHead's default, as their configs
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[122.769, 116.74, 104.04],  # their configs' img_norm_cfg
        std=[68.493, 66.63, 70.321],
        format_shape='NCTHW'))
