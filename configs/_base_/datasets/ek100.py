# EPIC-KITCHENS-100 verb / noun / action as the CAST authors read it
# (KHU-VLL/CAST dataset/epic.py): TSN 16 segments inside the annotated
# segment, 224 px, RandAugment, flip; test 2 clips x 3 crops on the
# validation split; the EK100 metric (verb / noun / action top-1, top-5).
# Every sample goes through RobustDataset (docs/reliability.md).
#
# Videos: one file per video_id. The official release is
# <ek100_video_root>/P01/videos/P01_01.MP4; for a flat folder of re-encoded
# copies set ek100_video_path_tmpl = '{video_id}.mp4' (any CSV column can be
# used). For the authors' pre-trimmed clips, point the CSVs at their
# "clip_path,verb_class,noun_class" lists and ek100_video_root at the clips.
#
# A recipe with other inputs (CA2ST: audio) writes its own pipelines and
# hands them to the loaders (values here are resolved in this file):
#   train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
ek100_video_root = 'data/ek100/videos'
ek100_video_path_tmpl = '{participant_id}/videos/{video_id}.MP4'
ek100_ann_root = 'data/ek100/epic-kitchens-100-annotations'
ek100_train_csv = ek100_ann_root + '/EPIC_100_train.csv'
ek100_val_csv = ek100_ann_root + '/EPIC_100_validation.csv'
ek100_test_csv = ek100_ann_root + '/EPIC_100_test_timestamps.csv'
label_map = dict(verb=ek100_ann_root + '/EPIC_100_verb_classes.csv', noun=ek100_ann_root + '/EPIC_100_noun_classes.csv')  # tools/infer.py
video_backend = 'decord'  # or 'pyav'

num_segments = 16
num_test_clips = 2
batch_size = 6  # per GPU; 16 GPUs in the published run

dataset_type = 'EpicKitchens100Dataset'
train_pipeline = [
    dict(type='EpicVideoInit', backend=video_backend),
    dict(type='EpicSampleFrames', num_segments=num_segments),
    dict(type='EpicDecode'),
    dict(type='Resize', scale=(-1, 256)),  # no-op on 256-px re-encodes
    dict(type='VideoRandAugment', config_str='rand-m7-n4-mstd0.5-inc1'),
    dict(type='RandomResizedCrop', area_range=(0.08, 1.0),
         aspect_ratio_range=(3 / 4, 4 / 3)),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackEpicInputs'),
]
val_pipeline = [
    dict(type='EpicVideoInit', backend=video_backend),
    dict(type='EpicSampleFrames', num_segments=num_segments, num_clips=1,
         test_mode=True),
    dict(type='EpicDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackEpicInputs'),
]
test_pipeline = [
    dict(type='EpicVideoInit', backend=video_backend),
    dict(type='EpicSampleFrames', num_segments=num_segments,
         num_clips=num_test_clips, test_mode=True),
    dict(type='EpicDecode'),
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackEpicInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=True,
    drop_last=True,  # as the authors' loader: 700 full batches an epoch
    sampler=dict(type='ReproducibleSampler', shuffle=True),
    dataset=dict(type='RobustDataset',
                 bad_sample='replace',  # unreadable: another sample, counted
                 dataset_type=dataset_type,
                 ann_file=ek100_train_csv,
                 data_prefix=dict(video=ek100_video_root),
                 video_path_tmpl=ek100_video_path_tmpl,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='RobustDataset',
                 bad_sample='flag',  # unreadable: scored wrong, counted
                 dataset_type=dataset_type,
                 ann_file=ek100_val_csv,
                 data_prefix=dict(video=ek100_video_root),
                 video_path_tmpl=ek100_video_path_tmpl,
                 pipeline=val_pipeline, test_mode=True))
# 2 clips x 3 crops on the validation split; tools/analysis_tools/
# ek100_submission.py swaps in ek100_test_csv (unlabelled) to write a
# challenge submission.
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='RobustDataset',
                 bad_sample='raise',  # unreadable: an error naming it
                 dataset_type=dataset_type,
                 ann_file=ek100_val_csv,
                 data_prefix=dict(video=ek100_video_root),
                 video_path_tmpl=ek100_video_path_tmpl,
                 pipeline=test_pipeline, test_mode=True))
# flagged (unreadable) samples count as wrong; ek100/bad_samples counts them
val_evaluator = dict(type='BadSampleAwareMetric',
                     metric_type='EpicKitchensMetric')
test_evaluator = dict(type='BadSampleAwareMetric',
                      metric_type='EpicKitchensMetric')
