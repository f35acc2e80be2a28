# CA2ST ViT-B/16 with a verb / noun head (EPIC-KITCHENS-100,
# compo_cast_single_ast_Bsquare_CA9 of joohyun7u/CA2ST):
#   noun = head_noun(adapter(clip) + audio_adapter(audio)),
#   verb = head_verb(adapter(vmae) + audio_adapter(audio)).
# presets_av.ca2st_recognizer_cfg(composition=True) builds from it.
_base_ = ['ca2st_vit_b.py']
model = dict(
    cls_head=dict(
        _delete_=True,
        type='CASTVerbNounHead',
        num_verbs=97,
        num_nouns=300,
        in_channels=768,
        verb_stream=1,
        noun_stream=0,
        noun_adapters=[
            dict(stream=0),
            dict(stream=2, act='quick_gelu', zero_init=False)
        ],
        verb_adapters=[
            dict(stream=1),
            dict(stream=2, act='quick_gelu', zero_init=False)
        ],
        label_smooth_eps=0.0,
        average_clips='prob'))
