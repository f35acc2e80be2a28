# Kinetics-400 as the CAST authors read it (KHU-VLL/CAST
# dataset/kinetics.py): dense sampling, 16 frames spread evenly over a
# random 64-frame span, 224 px, RandAugment, flip; test 5 clips x 3 crops.
#
# Videos resized to a short side of 320 px, split into a train and a val
# folder; list files hold "relative/path.mp4 label" per line (the authors'
# train.csv / val.csv are in this format). Paths are relative to the
# directory you run from.
#
# A recipe that changes num_frames, img_size or the test views writes its
# own pipelines and hands them to the loaders (values here are resolved in
# this file):
#   train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
_base_ = ['video_loaders.py']

data_root = 'data/kinetics400/videos_train'
data_root_val = 'data/kinetics400/videos_val'
ann_file_train = 'data/kinetics400/kinetics400_train_list_videos.txt'
ann_file_val = 'data/kinetics400/kinetics400_val_list_videos.txt'
ann_file_test = 'data/kinetics400/kinetics400_val_list_videos.txt'
label_map = 'data/kinetics400/label_map_k400.txt'  # class names for tools/infer.py; written by tools/data/prepare_k400.py

num_frames = 16  # dense sampling: 16 frames, stride 4
frame_interval = 4
img_size = 224
rand_augment = 'rand-m7-n4-mstd0.5-inc1'
test_num_clips = 5
test_num_crops = 3  # ThreeCrop
# Video decoder (cast_mmaction/datasets/transforms/decoding.py): 'pyav',
# 'decord' or 'torchcodec' give identical frames (tests/test_decoding.py);
# PyAV, one thread per worker, is the fastest here (docs/data_pipeline.md).
video_backend = 'pyav'

train_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    # the authors' clip: 16 frames spread evenly over a random 64-frame span
    dict(type='DenseSpanSample', clip_len=num_frames,
         frame_interval=frame_interval),
    dict(type='VideoDecode'),
    dict(type='VideoRandAugment', config_str=rand_augment),
    dict(
        type='RandomResizedCrop',
        area_range=(0.08, 1.0),
        aspect_ratio_range=(0.75, 1.3333)),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    # the middle one of the test windows
    dict(type='DenseSpanSample', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1, test_mode=True),
    dict(type='VideoDecode'),
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='VideoInit', backend=video_backend),
    # the authors' test: every 4th frame cut into 5 windows of 16, the
    # first and the last at the ends of the video
    dict(type='DenseSpanSample', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=test_num_clips,
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
