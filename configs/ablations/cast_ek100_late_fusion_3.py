# Ablation: late fusion: layers 0..11 the plain frozen experts (no adapters,
# no B-CAST), then 3 new fusion layers 12..14 (initialised fresh, trained):
# self-attention, B-CAST and MLP, each with adapters
# Varies configs/cast_ek100.py in model.backbone.depth,
# model.backbone.adapter_layers, model.backbone.links only (data, schedule and
# everything else are the recipe's; tests/test_ablations.py checks it).
# Tests the claim: fusing the experts throughout (B-CAST in every layer with
# adapters) beats late fusion in added layers
# The authors' compo_bidir_vit_late_fusion{1,2,3}_15 (joohyun7u/CA2ST).
#
#   tools/dist_train.sh configs/ablations/cast_ek100_late_fusion_3.py 8
#   tools/dist_test.sh configs/ablations/cast_ek100_late_fusion_3.py CKPT 8 \
#       --work-dir work_dirs/cast_ek100_late_fusion_3
_base_ = ['../cast_ek100.py']

ablation = dict(
    recipe='configs/cast_ek100.py',
    varies=[
        'model.backbone.depth', 'model.backbone.adapter_layers',
        'model.backbone.links'
    ],
    claim=('fusing the experts throughout (B-CAST in every layer with '
           'adapters) beats late fusion in added layers'))

model = dict(backbone=dict(
    depth=15,  # the experts' 12 pretrained layers + 3 fresh ones
    adapter_layers=[12, 13, 14],
    links=[
        dict(experts=('clip', 'vmae'),
             windows=dict(clip='time', vmae='space'),
             layers=[12, 13, 14])
    ]))
