# CAVA ViT-B/16 on VGGSound (309 classes): AST (audio) + CLIP (space) with
# bottleneck cross-attention between them in every layer, global windows
# (every audio patch sees every CLIP patch of the clip and vice versa).
# Architecture: joohyun7u/CA2ST models/ast_clip_cast.py
# (single_ast_clip_vit_base_patch16_224); tools/check_parity.py --config
# configs/cava_vggsound.py <cava dump> checks this file against it.
#
# Data: _base_/datasets/vggsound.py (the authors' VGGSound loader: 16 kHz
# mono, 128-bin Kaldi fbank, 1024 frames, AudioSet normalisation,
# SpecAugment). Schedule: _base_/schedules/adamw_linear_cosine_30e.py (the
# authors' audio training scripts are not public: CAST's published optimiser,
# 30 epochs); label smoothing 0.1, mixup 0.8 / cutmix 1.0.
#
#   python tools/train.py configs/cava_vggsound.py
#   python tools/test.py configs/cava_vggsound.py work_dirs/.../best.pth
_base_ = [
    '_base_/default_runtime.py', '_base_/models/cava_vit_b.py',
    '_base_/datasets/vggsound.py',
    '_base_/schedules/adamw_linear_cosine_30e.py'
]

# Experts: OpenAI CLIP ViT-B/16 (TorchScript) and the official AST AudioSet
# checkpoint (module.v.* keys; its 12 x 101 position grid is centre-cropped /
# resized to the 1024-frame input).
clip_weights = 'checkpoints/ViT-B-16.pt'
ast_weights = 'checkpoints/audioset_10_10_0.4593.pth'

# --------------------------------------------------------------- recipe ----
num_classes = 309
drop_path = 0.2
label_smoothing = 0.1

# ---------------------------------------------------------------- model ----
# The CAVA ViT-B of _base_/models/cava_vit_b.py
# (= presets_av.cava_recognizer_cfg()) with this recipe's sizes and weights.
model = dict(
    backbone=dict(
        # CPU speed-ups where they apply (fp32 CPU outside autocast: the
        # frozen-MLP node, oneDNN matmuls on AMD AVX-512); the reference
        # model on a GPU (models/speedups.py, docs/benchmarks.md)
        speedups=dict(preset='cpu'),
        num_frames={{_base_.num_frames}},
        img_size={{_base_.img_size}},
        experts=dict(
            clip=dict(pretrained=clip_weights),
            audio=dict(input_fdim={{_base_.num_mel_bins}},
                       input_tdim={{_base_.audio_frames}},
                       pretrained=ast_weights)),
        drop_path_rate=drop_path),
    cls_head=dict(num_classes=num_classes, label_smooth_eps=label_smoothing),
    data_preprocessor=dict(
        # one permutation and one weight for video, spectrogram and labels
        blending=dict(type='AudioVisualMixup', num_classes=num_classes,
                      mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                      switch_prob=0.5)))
