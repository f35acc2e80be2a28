# The worked example of docs/architecture.md: a CAST-style model whose
# temporal stream is the new FrameDiffExpert, linked to CLIP by the new
# 'global_time' window and, in the last layer, by the new TimePoolLink,
# trained on the new CsvClipDataset. Everything new
# lives in my_extension.py (on PYTHONPATH); the package is not edited.
custom_imports = dict(imports=['cast_mmaction', 'my_extension'],
                      allow_failed_imports=False)
default_scope = 'mmaction'
_base_ = ['../../configs/_base_/models/cast_vit_b.py']

num_classes = 3
model = dict(
    backbone=dict(
        num_frames=8,
        img_size=32,
        experts=dict(
            _delete_=True,
            clip=dict(type='CLIPViTExpert', embed_dim=64, depth=2,
                      num_heads=4, patch_size=16, frame_start=1,
                      frame_step=2),
            diff=dict(type='FrameDiffExpert', embed_dim=64, depth=2,
                      num_heads=4, patch_size=16)),
        links=[
            dict(experts=('clip', 'diff'),
                 windows=dict(clip='global_time', diff='global_time')),
            dict(type='TimePoolLink', name='clip_diff_pool',
                 experts=('clip', 'diff'), layers=[1], num_heads=2),
        ]),
    cls_head=dict(num_classes=num_classes, in_channels=64))

train_dataloader = dict(
    batch_size=2,
    dataset=dict(type='CsvClipDataset', ann_file='data/clips.csv',
                 data_prefix=dict(video='data/videos'),
                 num_classes=num_classes, pipeline=[]))
