# CAVA ViT-B/16 on EPIC-SOUNDS (44 sound classes). A sample is the span
# [start_timestamp, stop_timestamp] of an untrimmed EPIC-KITCHENS video:
# 16 frames are sampled TSN-style inside the span (EpicVideoInit /
# EpicSampleFrames / EpicDecode, only those frames are decoded) and a
# 400-frame (4 s) spectrogram is cut inside the span, centred on the
# sampled frames and zero-padded when the span is shorter. The audio is
# decoded from the video's own audio track (48 kHz AAC -> 16 kHz mono), or
# from per-video wav files (epic_audio_root + audio_path_tmpl).
#
#   python tools/train.py configs/cava_epic_sounds.py
_base_ = ['cava_vggsound.py']

# ---------------------------------------------------------------- paths ----
epic_video_root = 'data/ek100/videos'
epic_video_path_tmpl = '{participant_id}/videos/{video_id}.MP4'
# Separate per-video audio files instead of the videos' audio tracks: set
# both, e.g. 'data/ek100/audio' and '{video_id}.wav'.
epic_audio_root = None
epic_audio_path_tmpl = None
epic_sounds_ann_root = 'data/epic-sounds-annotations'
ann_file_train = epic_sounds_ann_root + '/EPIC_Sounds_train.csv'
ann_file_val = epic_sounds_ann_root + '/EPIC_Sounds_validation.csv'
label_map = ann_file_train  # class names (class / class_id columns) for tools/infer.py

num_classes = 44
num_segments = 16
audio_frames = 400  # 4 s
video_backend = 'decord'  # or 'pyav'

model = dict(
    backbone=dict(experts=dict(audio=dict(input_tdim=audio_frames))),
    cls_head=dict(num_classes=num_classes),
    data_preprocessor=dict(blending=dict(num_classes=num_classes)))

audio = dict(type='LoadAudioFbank', sample_rate=16000, num_mel_bins=128,
             target_length=audio_frames, align='clip')
train_pipeline = [
    dict(type='EpicVideoInit', backend=video_backend),
    dict(type='EpicSampleFrames', num_segments=num_segments),
    dict(type='EpicDecode'),
    audio,
    dict(type='SpecAugment', time_mask=70, freq_mask=20, num_time_masks=2,
         num_freq_masks=2),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='VideoRandAugment', config_str='rand-m7-n4-mstd0.5-inc1'),
    dict(type='RandomResizedCrop', area_range=(0.08, 1.0),
         aspect_ratio_range=(3 / 4, 4 / 3)),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs'),
]
val_pipeline = [
    dict(type='EpicVideoInit', backend=video_backend),
    dict(type='EpicSampleFrames', num_segments=num_segments, num_clips=1,
         test_mode=True),
    dict(type='EpicDecode'),
    audio,
    dict(type='Resize', scale=(-1, 224)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs'),
]
test_pipeline = [
    dict(type='EpicVideoInit', backend=video_backend),
    dict(type='EpicSampleFrames', num_segments=num_segments, num_clips=2,
         test_mode=True),
    dict(type='EpicDecode'),
    audio,
    dict(type='Resize', scale=(-1, 224)),
    dict(type='ThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs'),
]
dataset = dict(_delete_=True, type='RobustDataset',
               dataset_type='EpicSoundsDataset',
               data_prefix=dict(video=epic_video_root,
                                audio=epic_audio_root),
               video_path_tmpl=epic_video_path_tmpl,
               audio_path_tmpl=epic_audio_path_tmpl)
train_dataloader = dict(dataset=dict(
    dataset, bad_sample='replace',
    ann_file=ann_file_train, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(
    dataset, bad_sample='flag',
    ann_file=ann_file_val, pipeline=val_pipeline, test_mode=True))
test_dataloader = dict(dataset=dict(
    dataset, bad_sample='raise',
    ann_file=ann_file_val, pipeline=test_pipeline, test_mode=True))
# the benchmark's metrics: top-1/5, mean class accuracy, mAP, mAUC (an
# unreadable clip counts as a wrong prediction)
val_evaluator = dict(type='BadSampleAwareMetric',
                     metric_type='EpicSoundsMetric')
test_evaluator = val_evaluator
