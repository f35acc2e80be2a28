# CAST ViT-B/16 with a verb / noun head (EPIC-KITCHENS-100): the noun from
# the spatial stream (CLIP, stream 0), the verb from the temporal stream
# (VideoMAE, stream 1); loss CE(verb) + CE(noun).
# presets.cast_recognizer_cfg(composition=True) builds from it.
_base_ = ['cast_vit_b.py']
model = dict(
    cls_head=dict(
        _delete_=True,
        type='CASTVerbNounHead',
        num_verbs=97,
        num_nouns=300,
        in_channels=768,
        verb_stream=1,
        noun_stream=0,
        label_smooth_eps=0.0,
        average_clips='prob'))
