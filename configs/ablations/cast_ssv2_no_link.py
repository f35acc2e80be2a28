# Ablation: both experts with their adapters, no B-CAST (fusion only in the
# head)
# Varies configs/cast_ssv2.py in model.backbone.links only (data, schedule and
# everything else are the recipe's; tests/test_ablations.py checks it).
# Tests the claim: the gain of CAST comes from the exchange between the
# experts, not from running two adapted experts side by side
#
#   tools/dist_train.sh configs/ablations/cast_ssv2_no_link.py 8
#   tools/dist_test.sh configs/ablations/cast_ssv2_no_link.py CKPT 8 \
#       --work-dir work_dirs/cast_ssv2_no_link
_base_ = ['../cast_ssv2.py']

ablation = dict(
    recipe='configs/cast_ssv2.py',
    varies=['model.backbone.links'],
    claim=('the gain of CAST comes from the exchange between the experts, '
           'not from running two adapted experts side by side'))

model = dict(backbone=dict(links=[]))
