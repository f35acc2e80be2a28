# CA2ST ViT-B/16 on VGGSound (309 classes): CLIP (space) + VideoMAE (time)
# + AST (audio). Every layer runs CAST's S&T bottleneck cross-attention; the
# last three layers (9, 10, 11; the "CA9" model) then run A&S and A&T B-CA
# with global windows, one after the other. Architecture: joohyun7u/CA2ST
# models/ast_Bsquare.py (cast_single_ast_Bsquare_CA9_base_patch16_224);
# tools/check_parity.py --config configs/ca2st_vggsound.py <ca2st dump>
# checks this file against it. Data and schedule: those of cava_vggsound.py
# (_base_/datasets/vggsound.py, _base_/schedules/adamw_linear_cosine_30e.py).
#
#   python tools/train.py configs/ca2st_vggsound.py
_base_ = [
    '_base_/default_runtime.py', '_base_/models/ca2st_vit_b.py',
    '_base_/datasets/vggsound.py',
    '_base_/schedules/adamw_linear_cosine_30e.py'
]

vmae_weights = 'checkpoints/videomae_vit-b16_k400_pretrain.pth'
clip_weights = 'checkpoints/ViT-B-16.pt'
ast_weights = 'checkpoints/audioset_10_10_0.4593.pth'
num_classes = 309
drop_path = 0.2
label_smoothing = 0.1

# The CA2ST ViT-B of _base_/models/ca2st_vit_b.py
# (= presets_av.ca2st_recognizer_cfg()) with this recipe's weights and
# regularisation: S&T (CAST) in every layer, then A&S and A&T in layers
# 9-11; head(adapter(clip) + adapter(vmae) + audio_adapter(audio)), the audio
# adapter Linear-QuickGELU-Linear, not zero-initialised (as published).
model = dict(
    backbone=dict(
        # CPU speed-ups where they apply (fp32 CPU outside autocast: the
        # frozen-MLP node, oneDNN matmuls on AMD AVX-512); the reference
        # model on a GPU (models/speedups.py, docs/benchmarks.md)
        speedups=dict(preset='cpu'),
        num_frames={{_base_.num_frames}},
        experts=dict(
            clip=dict(pretrained=clip_weights),
            vmae=dict(pretrained=vmae_weights),
            audio=dict(input_tdim={{_base_.audio_frames}},
                       pretrained=ast_weights)),
        drop_path_rate=drop_path),
    cls_head=dict(num_classes=num_classes, label_smooth_eps=label_smoothing),
    data_preprocessor=dict(
        blending=dict(type='AudioVisualMixup', num_classes=num_classes,
                      mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                      switch_prob=0.5)))
