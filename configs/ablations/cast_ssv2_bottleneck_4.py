# Ablation: B-CAST bottleneck ratio 4 (width 768 / 4 = 192; the recipe: 2,
# width 384)
# Varies configs/cast_ssv2.py in model.backbone.down_ratio only (data,
# schedule and everything else are the recipe's; tests/test_ablations.py
# checks it).
# Tests the claim: the bottleneck (down_ratio 2) balances accuracy and cost of
# B-CAST
#
#   tools/dist_train.sh configs/ablations/cast_ssv2_bottleneck_4.py 8
#   tools/dist_test.sh configs/ablations/cast_ssv2_bottleneck_4.py CKPT 8 \
#       --work-dir work_dirs/cast_ssv2_bottleneck_4
_base_ = ['../cast_ssv2.py']

ablation = dict(
    recipe='configs/cast_ssv2.py',
    varies=['model.backbone.down_ratio'],
    claim=('the bottleneck (down_ratio 2) balances accuracy and cost of '
           'B-CAST'))

model = dict(backbone=dict(down_ratio=4))
