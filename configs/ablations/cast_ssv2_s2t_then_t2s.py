# Ablation: sequential B-CAST: S2T first, then T2S on the updated VideoMAE
# stream
# Varies configs/cast_ssv2.py in model.backbone.links only (data, schedule and
# everything else are the recipe's; tests/test_ablations.py checks it).
# Tests the claim: the two directions exchange information at once (parallel)
# rather than one after the other
#
#   tools/dist_train.sh configs/ablations/cast_ssv2_s2t_then_t2s.py 8
#   tools/dist_test.sh configs/ablations/cast_ssv2_s2t_then_t2s.py CKPT 8 \
#       --work-dir work_dirs/cast_ssv2_s2t_then_t2s
_base_ = ['../cast_ssv2.py']

ablation = dict(
    recipe='configs/cast_ssv2.py',
    varies=['model.backbone.links'],
    claim=('the two directions exchange information at once (parallel) '
           'rather than one after the other'))

model = dict(backbone=dict(links=[
    dict(experts=('clip', 'vmae'),
         windows=dict(clip='time', vmae='space'),
         layers=None,
         directions=['clip->vmae', 'vmae->clip'],
         order='sequential')
]))
