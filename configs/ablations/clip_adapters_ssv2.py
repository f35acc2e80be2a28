# Ablation: CLIP with adapters alone (the authors' clip_only baseline;
# CASTHead on the one stream, no head adapter: fc(feature))
# Varies configs/cast_ssv2.py in model.backbone.experts, model.backbone.links,
# model.cls_head only (data, schedule and everything else are the recipe's;
# tests/test_ablations.py checks it).
# Tests the claim: each expert alone is weaker than the two joined by B-CAST
# (the spatial expert on SSv2 most)
#
#   tools/dist_train.sh configs/ablations/clip_adapters_ssv2.py 8
#   tools/dist_test.sh configs/ablations/clip_adapters_ssv2.py CKPT 8 \
#       --work-dir work_dirs/clip_adapters_ssv2
_base_ = ['../cast_ssv2.py']

ablation = dict(
    recipe='configs/cast_ssv2.py',
    varies=[
        'model.backbone.experts', 'model.backbone.links', 'model.cls_head'
    ],
    claim=('each expert alone is weaker than the two joined by B-CAST (the '
           'spatial expert on SSv2 most)'))

model = dict(
    backbone=dict(
        # the other expert removed: this one alone, with its adapters
        experts=dict(
            _delete_=True,
            clip=dict(type='CLIPViTExpert', embed_dim=768, depth=12,
                      num_heads=12, patch_size=16, mlp_ratio=4.0,
                      frame_start=1, frame_step=2,
                      pretrained='checkpoints/ViT-B-16.pt')),
        links=[]),
    cls_head=dict(num_streams=1, fusion='none', streams=[0]))
