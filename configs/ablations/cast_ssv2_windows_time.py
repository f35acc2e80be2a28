# Ablation: window shapes: both directions over time at one position
# Varies configs/cast_ssv2.py in model.backbone.links only (data, schedule and
# everything else are the recipe's; tests/test_ablations.py checks it).
# Tests the claim: the window shapes of B-CAST (T2S over time at one position,
# S2T over the patches of one frame) matter
#
#   tools/dist_train.sh configs/ablations/cast_ssv2_windows_time.py 8
#   tools/dist_test.sh configs/ablations/cast_ssv2_windows_time.py CKPT 8 \
#       --work-dir work_dirs/cast_ssv2_windows_time
_base_ = ['../cast_ssv2.py']

ablation = dict(
    recipe='configs/cast_ssv2.py',
    varies=['model.backbone.links'],
    claim=('the window shapes of B-CAST (T2S over time at one position, S2T '
           'over the patches of one frame) matter'))

model = dict(backbone=dict(links=[
    dict(experts=('clip', 'vmae'),
         windows=dict(clip='time', vmae='time'),
         layers=None)
]))
