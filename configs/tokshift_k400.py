# TokenShift (Zhang et al., ACM MM 2021) on Kinetics-400, the baseline of
# MSCA: frame-wise ViT-B/16 (ImageNet-21k) where, before the attention and the
# MLP branch of every block, channels [0, 192) of the class token come from
# frame t+1 and [192, 384) from frame t-1 (shift_div 4).
# Published recipe (VideoNetworks/TokShift-Transformer
# k400_tokshift_div4_8x32_base_224.yml, reported 77.28 top-1 with 10 clips x
# 3 crops) = the MSCA recipe; only the backbone mode differs.
_base_ = ['./msca_k400.py']

model = dict(backbone=dict(mode='tokenshift', shift_div=4))
