# Frame-wise ViT-B/16 (ImageNet-21k) on Kinetics-400: every frame is
# classified alone and the per-frame logits are averaged (no temporal
# modelling). Baseline of TokenShift and MSCA; published recipe
# (k400_vit_8x32_224.yml, reported 76.02 top-1 with 10 clips x 3 crops) = the
# MSCA recipe with the shifts switched off.
_base_ = ['./msca_k400.py']

model = dict(backbone=dict(mode='plain'))
