# The train / val / test loaders of the single-label video recipes (one
# "relative/path.mp4 label" list per split). Every sample goes through
# RobustDataset (docs/reliability.md): an unreadable video is replaced by
# another one in training, scored wrong in validation and an error naming
# the file in testing, and always counted. The sampler gives the same
# batches after a mid-epoch --resume. A dataset file (ssv2.py, k400.py)
# adds the paths and the pipelines:
#   train_dataloader = dict(dataset=dict(ann_file=..., data_prefix=...,
#                                        pipeline=train_pipeline))
dataset_type = 'VideoDataset'
batch_size = 6  # per GPU

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=True,
    drop_last=True,
    # the same batches after a mid-epoch --resume
    sampler=dict(type='ReproducibleSampler', shuffle=True),
    dataset=dict(
        type='RobustDataset',
        bad_sample='replace',  # unreadable: another sample, counted
        dataset_type=dataset_type))
val_dataloader = dict(
    batch_size=9,  # 1.5 x batch_size, as the authors
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='RobustDataset',
        bad_sample='flag',  # unreadable: scored wrong and counted
        dataset_type=dataset_type,
        test_mode=True))
test_dataloader = dict(
    batch_size=1,  # one video = all its test views
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='RobustDataset',
        bad_sample='raise',  # unreadable: an error naming the file
        dataset_type=dataset_type,
        test_mode=True))

# flagged (unreadable) samples count as wrong; acc/bad_samples counts them
val_evaluator = dict(type='BadSampleAwareMetric', metric_type='AccMetric')
test_evaluator = val_evaluator
