# A tiny CA2ST (CLIP + VideoMAE + AST) on the synthetic audio-visual clips:
# S&T B-CA in both layers, A&S and A&T in the last layer, sequentially.
#
#   python tools/data/make_synthetic_av_data.py demo_av_data
#   python tools/train.py configs/ca2st_demo.py --work-dir work_dirs/ca2st_demo
_base_ = ['cava_demo.py']

num_classes = 4
num_frames = 8
img_size = 32
audio_frames = 200
width = 64
depth = 2
heads = 4
expert_frozen = False

model = dict(
    _delete_=True,
    type='AudioVisualRecognizer',
    backbone=dict(
        type='CASTBackbone',
        num_frames=num_frames,
        img_size=img_size,
        experts=dict(
            clip=dict(type='CLIPViTExpert', embed_dim=width, depth=depth,
                      num_heads=heads, patch_size=16, mlp_ratio=4.0,
                      frame_start=1, frame_step=2, pretrained=None,
                      frozen=expert_frozen),
            vmae=dict(type='VideoMAEExpert', embed_dim=width, depth=depth,
                      num_heads=heads, patch_size=16, tubelet_size=2,
                      mlp_ratio=4.0, pretrained=None, frozen=expert_frozen),
            audio=dict(type='ASTExpert', embed_dim=width, depth=depth,
                       num_heads=heads, mlp_ratio=4.0, input_fdim=128,
                       input_tdim=audio_frames, pretrained=None,
                       frozen=expert_frozen)),
        links=[
            dict(experts=('clip', 'vmae'),
                 windows=dict(clip='time', vmae='space')),
            dict(experts=('clip', 'audio'),
                 windows=dict(clip='global', audio='global'),
                 layers=[depth - 1]),
            dict(experts=('vmae', 'audio'),
                 windows=dict(vmae='global', audio='global'),
                 layers=[depth - 1]),
        ],
        down_ratio=2,
        drop_path_rate=0.0),
    cls_head=dict(type='CASTHead', num_classes=num_classes,
                  in_channels=width, num_streams=3,
                  stream_adapters=[dict(), dict(),
                                   dict(act='quick_gelu', zero_init=False)],
                  label_smooth_eps=0.1, average_clips='prob'),
    data_preprocessor=dict(
        type='AudioVisualDataPreprocessor',
        video=dict(mean=[123.675, 116.28, 103.53],
                   std=[58.395, 57.12, 57.375]),
        blending=dict(type='AudioVisualMixup', num_classes=num_classes,
                      mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5)))
