# CA2ST ViT-B/16 on VGGSound (309 classes): CLIP (space) + VideoMAE (time)
# + AST (audio). Every layer runs CAST's S&T bottleneck cross-attention; the
# last three layers (9, 10, 11; the "CA9" model) then run A&S and A&T B-CA
# with global windows, one after the other. Architecture: joohyun7u/CA2ST
# models/ast_Bsquare.py (cast_single_ast_Bsquare_CA9_base_patch16_224);
# tools/check_parity.py --config configs/ca2st_vggsound.py <ca2st dump>
# checks this file against it. Data, schedule and optimiser: see
# cava_vggsound.py (the audio recipes are not public; CAST's schedule).
#
#   python tools/train.py configs/ca2st_vggsound.py
_base_ = ['cava_vggsound.py']

vmae_weights = 'checkpoints/videomae_vit-b16_k400_pretrain.pth'
clip_weights = 'checkpoints/ViT-B-16.pt'
ast_weights = 'checkpoints/audioset_10_10_0.4593.pth'
num_classes = 309
num_frames = 16
audio_frames = 1024

# The CA2ST ViT-B of _base_/models/ca2st_vit_b.py
# (= presets_av.ca2st_recognizer_cfg(num_classes=309)), spelled out here
# because this recipe inherits the CAVA recipe's data and schedule and
# MMEngine takes each key from one base only.
model = dict(
    _delete_=True,
    type='AudioVisualRecognizer',
    backbone=dict(
        # CPU speed-ups where they apply (fp32 CPU outside autocast: the
        # frozen-MLP node, oneDNN matmuls on AMD AVX-512); the reference
        # model on a GPU (models/speedups.py, docs/benchmarks.md)
        speedups='cpu',
        type='CASTBackbone',
        num_frames=num_frames,
        img_size=224,
        experts=dict(
            clip=dict(type='CLIPViTExpert', embed_dim=768, depth=12,
                      num_heads=12, patch_size=16, mlp_ratio=4.0,
                      frame_start=1, frame_step=2, post_norm_eps=1e-5,
                      pretrained=clip_weights),
            vmae=dict(type='VideoMAEExpert', embed_dim=768, depth=12,
                      num_heads=12, patch_size=16, tubelet_size=2,
                      mlp_ratio=4.0, pretrained=vmae_weights),
            audio=dict(type='ASTExpert', embed_dim=768, depth=12,
                       num_heads=12, mlp_ratio=4.0, input_fdim=128,
                       input_tdim=audio_frames, fstride=10, tstride=10,
                       pretrained=ast_weights)),
        links=[
            # S&T (CAST) in every layer
            dict(experts=('clip', 'vmae'),
                 windows=dict(clip='time', vmae='space'), layers=None),
            # then A&S and A&T in layers 9-11, sequentially
            dict(experts=('clip', 'audio'),
                 windows=dict(clip='global', audio='global'),
                 layers=[9, 10, 11], num_heads=12, pos_embed=True,
                 time_encoding=False),
            dict(experts=('vmae', 'audio'),
                 windows=dict(vmae='global', audio='global'),
                 layers=[9, 10, 11], num_heads=12, pos_embed=True,
                 time_encoding=False),
        ],
        time_encoding=None,
        share_projections=False,
        down_ratio=2,
        drop_path_rate=0.2,
        with_cp=False),
    # head(adapter(clip) + adapter(vmae) + audio_adapter(audio)); the audio
    # adapter is Linear-QuickGELU-Linear, not zero-initialised (as published)
    cls_head=dict(
        type='CASTHead', num_classes=num_classes, in_channels=768,
        num_streams=3,
        stream_adapters=[dict(), dict(),
                         dict(act='quick_gelu', zero_init=False)],
        label_smooth_eps=0.1, average_clips='prob'),
    data_preprocessor=dict(
        type='AudioVisualDataPreprocessor',
        video=dict(mean=[123.675, 116.28, 103.53],
                   std=[58.395, 57.12, 57.375]),
        blending=dict(type='AudioVisualMixup', num_classes=num_classes,
                      mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                      switch_prob=0.5)))
