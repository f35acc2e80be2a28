# CAVA ViT-B/16 (AST audio + CLIP space; the CA2ST paper evaluates CAVA on
# this set too) on KineticsSounds (31 classes): the VGGSound recipe
# (configs/cava_vggsound.py) on an MMAction2 list file
# ("relative/path.mp4 label"); the audio is decoded from the videos.

#
#   python tools/train.py configs/cava_kinetics_sounds.py
_base_ = ['cava_vggsound.py']

data_root = 'data/kinetics_sounds/videos'
ann_file_train = 'data/kinetics_sounds/train_list.txt'
ann_file_val = 'data/kinetics_sounds/val_list.txt'
label_map = None  # a class-name file (one per line) for tools/infer.py
num_classes = 31

model = dict(cls_head=dict(num_classes=num_classes),
             data_preprocessor=dict(blending=dict(num_classes=num_classes)))
dataset = dict(_delete_=True, type='RobustDataset',
               dataset_type='KineticsSoundsDataset',
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
