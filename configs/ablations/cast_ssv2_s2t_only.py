# Ablation: B-CAST with S2T only (VideoMAE queries CLIP; CLIP receives
# nothing)
# Varies configs/cast_ssv2.py in model.backbone.links only (data, schedule and
# everything else are the recipe's; tests/test_ablations.py checks it).
# Tests the claim: bi-directional cross-attention (both T2S and S2T) beats
# either direction alone
#
#   tools/dist_train.sh configs/ablations/cast_ssv2_s2t_only.py 8
#   tools/dist_test.sh configs/ablations/cast_ssv2_s2t_only.py CKPT 8 \
#       --work-dir work_dirs/cast_ssv2_s2t_only
_base_ = ['../cast_ssv2.py']

ablation = dict(
    recipe='configs/cast_ssv2.py',
    varies=['model.backbone.links'],
    claim=('bi-directional cross-attention (both T2S and S2T) beats either '
           'direction alone'))

model = dict(backbone=dict(links=[
    dict(experts=('clip', 'vmae'),
         windows=dict(clip='time', vmae='space'),
         layers=None,
         directions=['clip->vmae'])
]))
