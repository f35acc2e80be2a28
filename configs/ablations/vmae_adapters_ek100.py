# Ablation: VideoMAE with adapters alone: verb and noun from its stream (the
# authors' compo_vmae_only)
# Varies configs/cast_ek100.py in model.backbone.experts,
# model.backbone.links, model.cls_head only (data, schedule and everything
# else are the recipe's; tests/test_ablations.py checks it).
# Tests the claim: each expert alone is weaker than the two joined by B-CAST
# (CLIP alone lags on verbs, VideoMAE alone on nouns)
#
#   tools/dist_train.sh configs/ablations/vmae_adapters_ek100.py 8
#   tools/dist_test.sh configs/ablations/vmae_adapters_ek100.py CKPT 8 \
#       --work-dir work_dirs/vmae_adapters_ek100
_base_ = ['../cast_ek100.py']

ablation = dict(
    recipe='configs/cast_ek100.py',
    varies=[
        'model.backbone.experts', 'model.backbone.links', 'model.cls_head'
    ],
    claim=('each expert alone is weaker than the two joined by B-CAST (CLIP '
           'alone lags on verbs, VideoMAE alone on nouns)'))

model = dict(
    backbone=dict(
        # the other expert removed: this one alone, with its adapters
        experts=dict(
            _delete_=True,
            vmae=dict(type='VideoMAEExpert', embed_dim=768, depth=12,
                      num_heads=12, patch_size=16, tubelet_size=2,
                      mlp_ratio=4.0,
                      pretrained=('checkpoints/'
                                  'videomae_vit_b_ek100_pretrain.pth'))),
        links=[]),
    cls_head=dict(verb_stream=0, noun_stream=0))
