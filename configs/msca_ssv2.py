# MSCA-KV on Something-Something-V2 (174 classes), where the order of frames
# carries the label. Not a published recipe (the authors report Kinetics-400
# only): the K400 recipe of msca_k400.py with the SSv2 conventions of
# MMAction2 - no horizontal flip (it swaps "left"/"right" classes) and
# uniform (TSN-style) sampling of 8 frames over the whole video instead of
# dense 8 x 32. Test: 2 clips x 3 crops (SSv2 videos are ~45 frames long, so
# more uniform clips mostly repeat frames).
_base_ = ['./msca_k400.py']

model = dict(cls_head=dict(num_classes=174))

dataset_type = 'VideoDataset'
data_root = 'data/sthv2/videos'
data_root_val = 'data/sthv2/videos'
ann_file_train = 'data/sthv2/sthv2_train_list_videos.txt'
ann_file_val = 'data/sthv2/sthv2_val_list_videos.txt'
ann_file_test = 'data/sthv2/sthv2_val_list_videos.txt'
label_map = 'data/sthv2/annotations/something-something-v2-labels.json'


def _jitter(**kw):
    args = dict(brightness=(1.0, 1.0), contrast=(1.0, 1.0),
                saturation=(1.0, 1.0), hue=(0.0, 0.0))
    args.update(kw)
    return dict(type='mmcv.RandomApply', prob=0.1,
                transforms=[dict(type='ColorJitter', **args)])


train_pipeline = [
    dict(type='DecordInit'),
    dict(type='UniformSample', clip_len=8, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='RandomRescale', scale_range=(224, 330)),
    dict(type='RandomCrop', size=224),
    _jitter(brightness=(0.5, 2.0)),
    _jitter(saturation=(0.5, 2.0)),
    _jitter(hue=(-0.5, 0.5)),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='UniformSample', clip_len=8, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='UniformSample', clip_len=8, num_clips=2, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]

train_dataloader = dict(
    dataset=dict(dataset_type=dataset_type,
                 ann_file=ann_file_train,
                 data_prefix=dict(video=data_root), pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(dataset_type=dataset_type,
                 ann_file=ann_file_val,
                 data_prefix=dict(video=data_root_val),
                 pipeline=val_pipeline, test_mode=True))
test_dataloader = dict(
    dataset=dict(dataset_type=dataset_type,
                 ann_file=ann_file_test,
                 data_prefix=dict(video=data_root_val),
                 pipeline=test_pipeline, test_mode=True))
