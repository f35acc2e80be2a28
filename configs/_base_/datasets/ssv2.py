# Something-Something-V2 as the CAST authors read it (KHU-VLL/CAST
# dataset/ssv2.py): TSN-style, one frame from each of 16 segments, 224 px,
# RandAugment, no flip (SSv2 has left/right classes); test 2 clips x 3 crops.
#
# Videos as .mp4 with their original height (240 px); list files hold
# "relative/path.mp4 label" per line (the authors' train.csv / val.csv are
# in this format). Paths are relative to the directory you run from.
#
# A recipe that changes num_frames, img_size or the test views writes its
# own pipelines and hands them to the loaders (values here are resolved in
# this file):
#   train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
_base_ = ['video_loaders.py']

data_root = 'data/sthv2/videos'
data_root_val = 'data/sthv2/videos'
ann_file_train = 'data/sthv2/sthv2_train_list_videos.txt'
ann_file_val = 'data/sthv2/sthv2_val_list_videos.txt'
ann_file_test = 'data/sthv2/sthv2_val_list_videos.txt'
label_map = 'data/sthv2/annotations/something-something-v2-labels.json'  # class names for tools/infer.py (docs/inference.md, "Class names")

num_frames = 16  # TSN-style: one frame from each of 16 segments
img_size = 224
rand_augment = 'rand-m7-n4-mstd0.5-inc1'
test_num_clips = 2
test_num_crops = 3  # ThreeCrop
# Video decoder (cast_mmaction/datasets/transforms/decoding.py): 'pyav',
# 'decord' or 'torchcodec' give identical frames (tests/test_decoding.py);
# PyAV, one thread per worker, is the fastest here (docs/data_pipeline.md).
video_backend = 'pyav'

train_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='SegmentSample', num_segments=num_frames),
    dict(type='VideoDecode'),
    dict(type='VideoRandAugment', config_str=rand_augment),
    dict(
        type='RandomResizedCrop',
        area_range=(0.08, 1.0),
        aspect_ratio_range=(0.75, 1.3333)),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    # no flip: SSv2 has left/right classes
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(type='SegmentSample', num_segments=num_frames, test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    dict(
        type='SegmentSample',
        num_segments=num_frames,
        num_clips=test_num_clips,
        test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='ThreeCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]

train_dataloader = dict(dataset=dict(
    ann_file=ann_file_train,
    data_prefix=dict(video=data_root),
    pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    ann_file=ann_file_val,
    data_prefix=dict(video=data_root_val),
    pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(
    ann_file=ann_file_test,
    data_prefix=dict(video=data_root_val),
    pipeline=test_pipeline))
