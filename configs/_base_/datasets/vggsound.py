# VGGSound (309 classes) with its sound, as the CA2ST authors' VGGSound
# loader reads it: 16 frames at stride 4, 224 px, RandAugment, flip; audio
# 16 kHz mono, 128-bin Kaldi fbank of 1024 frames (10.24 s) centred on the
# clip, AudioSet normalisation, SpecAugment 2 x 70 frames / 2 x 20 bins;
# test 2 clips x 3 crops, one spectrogram per clip. Every sample goes
# through RobustDataset (docs/reliability.md).
#
# A recipe on another audio-visual dataset (Kinetics-Sounds, UCF-101,
# EPIC-SOUNDS) keeps these pipelines and replaces the loaders' dataset.
# Videos with their sound (mp4 with an audio track; the audio is decoded from
# the video). A list file holds "relative/path.mp4 label" per line, or use
# the official vggsound.csv (youtube_id,start_seconds,label,split) with
# video_path_tmpl naming the clip files. For separate audio files add
# data_prefix=dict(video=..., audio=<folder of <video stem>.wav>).
data_root = 'data/vggsound/videos'
ann_file_train = 'data/vggsound/vggsound.csv'
ann_file_val = 'data/vggsound/vggsound.csv'
label_map = 'data/vggsound/vggsound.csv'  # class names for tools/infer.py (the sorted labels)
video_path_tmpl = '{ytid}_{start:06d}.mp4'
num_frames = 16
frame_interval = 4
img_size = 224
audio_frames = 1024  # 10.24 s of 10 ms fbank frames
num_mel_bins = 128
batch_size = 6  # per GPU

audio_train = dict(type='LoadAudioFbank', sample_rate=16000,
                   num_mel_bins=num_mel_bins, target_length=audio_frames,
                   align='clip')
audio_test = dict(audio_train)
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1),
    dict(type='DecordDecode'),
    audio_train,
    dict(type='SpecAugment', time_mask=70, freq_mask=20, num_time_masks=2,
         num_freq_masks=2),
    dict(type='VideoRandAugment', config_str='rand-m7-n4-mstd0.5-inc1'),
    dict(type='RandomResizedCrop', area_range=(0.08, 1.0),
         aspect_ratio_range=(0.75, 1.3333)),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs')
]
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=1, test_mode=True),
    dict(type='DecordDecode'),
    audio_test,
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs')
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=num_frames,
         frame_interval=frame_interval, num_clips=2, test_mode=True),
    dict(type='DecordDecode'),
    audio_test,  # one spectrogram per clip, centred on it
    dict(type='Resize', scale=(-1, img_size)),
    dict(type='ThreeCrop', crop_size=img_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackAudioVisualInputs')
]
# RobustDataset wraps the dataset (dataset_type); bad_sample per loader:
# training replaces an unreadable video (counted), validation scores it
# wrong (counted), testing stops naming it
dataset = dict(type='RobustDataset',
               dataset_type='VGGSoundDataset',
               data_prefix=dict(video=data_root),
               video_path_tmpl=video_path_tmpl)
train_dataloader = dict(
    batch_size=batch_size, num_workers=8, persistent_workers=True,
    drop_last=True, sampler=dict(type='ReproducibleSampler', shuffle=True),
    dataset=dict(dataset, bad_sample='replace', ann_file=ann_file_train,
                 split='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, bad_sample='flag', ann_file=ann_file_val,
                 split='test', pipeline=val_pipeline, test_mode=True))
test_dataloader = dict(
    batch_size=1, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, bad_sample='raise', ann_file=ann_file_val,
                 split='test', pipeline=test_pipeline, test_mode=True))
val_evaluator = dict(type='BadSampleAwareMetric', metric_type='AccMetric')
test_evaluator = val_evaluator
