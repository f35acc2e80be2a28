# CAST with a stronger expert pair on Something-Something-V2: EVA-02-CLIP
# ViT-B/16 (timm eva02_base_patch16_clip_224) as the spatial expert and the
# VideoMAE V2 ViT-B/16 distilled from the giant (vit_b_k710_dl_from_giant.pth)
# as the temporal expert, joined as in CAST (B-CAST in every layer).
#
# BEYOND THE PAPER: no published number exists for this pair; the recipe
# (schedule, augmentation, batch) is cast_ssv2.py's, unchanged. Both experts
# are ViT-B/16 (width 768, 12 blocks, 14 x 14 patches at 224 px), so the
# adapters, links and head have the same sizes as in cast_ssv2.py.
# Parameters (measured, docs/experts.md): 45,205,038 trainable of
# 217,298,478 in total (cast_ssv2.py: 45,205,038 of 217,228,590).
#
#   tools/dist_train.sh configs/cast_ssv2_eva02_videomaev2.py 8
#
# Weights (docs/experts.md): timm's eva02_base_patch16_clip_224.merged2b
# (what timm.create_model(..., pretrained=True) downloads, saved to a local
# file) and OpenGVLab/VideoMAEv2 vit_b_k710_dl_from_giant.pth.
_base_ = ['cast_ssv2.py']

clip_weights = 'checkpoints/eva02_base_patch16_clip_224.merged2b.safetensors'
vmae_weights = 'checkpoints/vit_b_k710_dl_from_giant.pth'

model = dict(
    backbone=dict(
        experts=dict(
            _delete_=True,
            clip=dict(
                type='TimmViTExpert',
                model_name='eva02_base_patch16_clip_224',
                frame_start=1,  # frames 1, 3, ..., 15
                frame_step=2,  # = the VideoMAE tubelet size
                pretrained=clip_weights),
            vmae=dict(
                type='VideoMAEv2Expert',
                arch='base',
                tubelet_size=2,
                pretrained=vmae_weights))))
