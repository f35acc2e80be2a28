# CA2ST ViT-B/16 on UCF101Audio (101 classes): the VGGSound recipe
# (configs/ca2st_vggsound.py) on an MMAction2 list file
# ("relative/path.mp4 label"); the audio is decoded from the videos.
# About half of the UCF-101 classes have no sound track: those videos get
# silence (LoadAudioFbank logs how many).
#
#   python tools/train.py configs/ca2st_ucf101.py
_base_ = ['ca2st_vggsound.py']

data_root = 'data/ucf101/videos'
# The three-split protocol: train and test once per official split (1, 2,
# 3; MMAction2's UCF-101 list names, '{split}' filled in by the dataset) and
# report the mean (tools/analysis_tools/average_splits.py, docs/ablations.md). Another
# split: --cfg-options train_dataloader.dataset.split=2
# val_dataloader.dataset.split=2 test_dataloader.dataset.split=2
split = 1
ann_file_train = 'data/ucf101/ucf101_train_split_{split}_videos.txt'
ann_file_val = 'data/ucf101/ucf101_val_split_{split}_videos.txt'
label_map = 'data/ucf101/annotations/classInd.txt'  # class names for tools/infer.py
num_classes = 101

model = dict(cls_head=dict(num_classes=num_classes),
             data_preprocessor=dict(blending=dict(num_classes=num_classes)))
dataset = dict(_delete_=True, type='RobustDataset',
               dataset_type='UCF101AudioDataset', split=split,
               data_prefix=dict(video=data_root))
train_dataloader = dict(dataset=dict(
    dataset, bad_sample='replace',
    ann_file=ann_file_train, pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(dataset=dict(
    dataset, bad_sample='flag',
    ann_file=ann_file_val, pipeline={{_base_.val_pipeline}},
    test_mode=True))
test_dataloader = dict(dataset=dict(
    dataset, bad_sample='raise',
    ann_file=ann_file_val, pipeline={{_base_.test_pipeline}},
    test_mode=True))
