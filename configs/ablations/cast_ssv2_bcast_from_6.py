# Ablation: B-CAST only in layers 6..11 (the recipe: every layer)
# Varies configs/cast_ssv2.py in model.backbone.links only (data, schedule and
# everything else are the recipe's; tests/test_ablations.py checks it).
# Tests the claim: B-CAST in every layer beats fusing only in the later layers
#
#   tools/dist_train.sh configs/ablations/cast_ssv2_bcast_from_6.py 8
#   tools/dist_test.sh configs/ablations/cast_ssv2_bcast_from_6.py CKPT 8 \
#       --work-dir work_dirs/cast_ssv2_bcast_from_6
_base_ = ['../cast_ssv2.py']

ablation = dict(
    recipe='configs/cast_ssv2.py',
    varies=['model.backbone.links'],
    claim=('B-CAST in every layer beats fusing only in the later layers'))

model = dict(backbone=dict(links=[
    dict(experts=('clip', 'vmae'),
         windows=dict(clip='time', vmae='space'),
         layers=list(range(6, 12)))
]))
