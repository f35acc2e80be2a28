# MSCA-KV ViT-B/16 (Hashiguchi & Tamaki, ACCV 2022 workshops): a frame-wise
# ViT-B/16 whose attention heads 0 / 11 take their keys and values from frame
# t+1 / t-1 in every block (shift_div 12), logits averaged over frames.
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='MSCAViT',
        arch='base',  # 'small' / 'large' (sizes in MSCAViT ARCH_SETTINGS)
        patch_size=16,
        img_size=224,
        mode='msca_heads',  # plain | msca_heads | msca_patches | tokenshift
        shift_div=12,  # 12 heads // 12 = one head from t+1, one from t-1
        shift_qkv='kv',  # MSCA-KV; 'q', 'k', 'v', 'qkv' are the other variants
        drop_path_rate=0.0,
        pretrained=None,
        with_cp=False),  # True: activation checkpointing per block
    cls_head=dict(
        type='FrameClsHead',
        num_classes=400,
        in_channels=768,
        dropout_ratio=0.0,
        init_std=0.0,  # the authors' zero_head
        label_smooth_eps=0.1,
        average_clips='score'),  # the authors average logits over views
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[127.5, 127.5, 127.5],  # ToTensor + Normalize(0.5, 0.5)
        std=[127.5, 127.5, 127.5],
        format_shape='NCTHW'))
