# CAVA ViT-B/16 (joohyun7u/CA2ST models/ast_clip_cast.py): a frozen CLIP
# ViT-B/16 on frames 1, 3, ..., 15 and a frozen AST (AudioSet) on a 128-bin
# log-mel spectrogram, joined by bottleneck cross-attention with global
# windows in every layer. Head: adapter(clip) + adapter(audio), adapters
# with skip. presets_av.cava_recognizer_cfg() builds from it.
model = dict(
    type='AudioVisualRecognizer',
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
                frame_step=2,
                post_norm_eps=1e-6,  # CAVA's ln_post is a 1e-6 LayerNorm
                pretrained=None),
            audio=dict(
                type='ASTExpert',
                embed_dim=768,
                depth=12,
                num_heads=12,
                mlp_ratio=4.0,
                input_fdim=128,  # mel bins
                input_tdim=1024,  # 10.24 s of 10 ms fbank frames
                fstride=10,
                tstride=10,
                pretrained=None)),
        links=[
            # B-CA audio <-> space in every layer, global windows
            dict(
                experts=('clip', 'audio'),
                windows=dict(clip='global', audio='global'),
                layers=None,
                pos_embed=True,
                time_encoding=False)
        ],
        time_encoding=None,
        down_ratio=2,
        drop_path_rate=0.0,
        with_cp=False),
    cls_head=dict(
        type='CASTHead',
        num_classes=309,
        in_channels=768,
        num_streams=2,
        stream_adapters=[dict(skip=True), dict(skip=True)],
        label_smooth_eps=0.0,
        average_clips='prob'),
    data_preprocessor=dict(
        type='AudioVisualDataPreprocessor',
        # ImageNet mean / std on the video; the audio is normalised in the
        # pipeline (AudioFbank)
        video=dict(mean=[123.675, 116.28, 103.53],
                   std=[58.395, 57.12, 57.375])))
