"""Audio-visual model configs as data: CAVA and CA2ST as configurations of
``CASTBackbone`` (the same backbone as CAST).

* CAVA  = experts {clip, audio}; one link clip-audio with ``global`` windows
  in every layer.
* CA2ST = experts {clip, vmae, audio}; the CAST link clip-vmae (time / space
  windows) in every layer, then clip-audio and vmae-audio (``global``) in the
  last three layers (``CA9`` of ViT-B), applied one after the other.

``revision=True`` selects the revision-era variant: no learned position
tables inside the audio links, time encodings from segment timestamps
instead (and, for CA2ST, shared down / up projections per expert).

Stream order of the pooled features (and of the head adapters): CAVA
``(clip, audio)``, CA2ST ``(clip, vmae, audio)``.
"""

from .presets import base_model, set_sizes

AST_MEAN, AST_STD = -4.2677393, 4.5689974  # AudioSet fbank statistics


def _av_model(name, embed_dim, depth, num_heads, num_frames, img_size,
              patch_size, tubelet_size, down_ratio, mlp_ratio,
              drop_path_rate, input_fdim, input_tdim, fstride, tstride,
              with_cp, pretrained):
    model = set_sizes(base_model(name), embed_dim, depth, num_heads,
                      num_frames, img_size, patch_size, tubelet_size,
                      down_ratio, mlp_ratio, drop_path_rate, with_cp)
    bb = model['backbone']
    bb['experts']['audio'].update(input_fdim=input_fdim,
                                  input_tdim=input_tdim, fstride=fstride,
                                  tstride=tstride)
    for name, weights in pretrained.items():
        bb['experts'][name]['pretrained'] = weights
    return model


def _revision(bb, links, revision, split_time_mlp, pos_embed=None):
    """``revision``: time encodings in ``links``; their learned position
    tables (``pos_embed``, the authors' ``use_stpos``) default to the
    published pairing, off with time encodings and on without."""
    if pos_embed is None:
        pos_embed = not revision
    for link in links:
        link.update(pos_embed=bool(pos_embed), time_encoding=revision)
    bb['time_encoding'] = dict(split=split_time_mlp) if revision else None


def cava_backbone_cfg(embed_dim=768, depth=12, num_heads=12, num_frames=16,
                      img_size=224, patch_size=16, tubelet_size=2,
                      down_ratio=2, mlp_ratio=4.0, drop_path_rate=0.0,
                      input_fdim=128, input_tdim=1024, fstride=10, tstride=10,
                      link_layers=None, revision=False, split_time_mlp=True,
                      clip_pretrained=None, ast_pretrained=None,
                      with_cp=False, audio_pos_embed=None):
    """CAVA: CLIP (frames 1, 3, ...) + AST, B-CA with global windows
    (``configs/_base_/models/cava_vit_b.py`` at these sizes)."""
    bb = _av_model('cava_vit_b', embed_dim, depth, num_heads, num_frames,
                   img_size, patch_size, tubelet_size, down_ratio, mlp_ratio,
                   drop_path_rate, input_fdim, input_tdim, fstride, tstride,
                   with_cp, dict(clip=clip_pretrained,
                                 audio=ast_pretrained))['backbone']
    bb['links'][0]['layers'] = link_layers
    _revision(bb, bb['links'], revision, split_time_mlp, audio_pos_embed)
    return bb


def ca2st_backbone_cfg(embed_dim=768, depth=12, num_heads=12,
                       audio_num_heads=None, num_frames=16, img_size=224,
                       patch_size=16, tubelet_size=2, down_ratio=2,
                       mlp_ratio=4.0, drop_path_rate=0.0, input_fdim=128,
                       input_tdim=1024, fstride=10, tstride=10,
                       audio_link_layers=None, revision=False,
                       split_time_mlp=True, share_projections=None,
                       clip_pretrained=None, vmae_pretrained=None,
                       ast_pretrained=None, with_cp=False,
                       audio_pos_embed=None):
    """CA2ST: CLIP + VideoMAE + AST (``configs/_base_/models/ca2st_vit_b.py``
    at these sizes). ``audio_link_layers`` defaults to the last three layers
    (9, 10, 11 of 12)."""
    if audio_link_layers is None:
        audio_link_layers = list(range(max(0, depth - 3), depth))
    audio_heads = audio_num_heads or num_heads
    if share_projections is None:
        share_projections = revision
    bb = _av_model('ca2st_vit_b', embed_dim, depth, num_heads, num_frames,
                   img_size, patch_size, tubelet_size, down_ratio, mlp_ratio,
                   drop_path_rate, input_fdim, input_tdim, fstride, tstride,
                   with_cp, dict(clip=clip_pretrained, vmae=vmae_pretrained,
                                 audio=ast_pretrained))['backbone']
    # audio_num_heads is the audio links' (the authors' AST self-attention
    # keeps num_heads)
    audio_links = [link for link in bb['links'] if 'audio' in link['experts']]
    for link in audio_links:
        link.update(layers=list(audio_link_layers), num_heads=audio_heads)
    _revision(bb, audio_links, revision, split_time_mlp, audio_pos_embed)
    bb['share_projections'] = share_projections
    return bb


def av_data_preprocessor_cfg(blending=None):
    """ImageNet mean / std on the video; the audio is normalised in the
    pipeline (``AudioFbank``)."""
    return dict(type='AudioVisualDataPreprocessor',
                video=dict(mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375]),
                blending=blending)


def cava_recognizer_cfg(num_classes=309, label_smooth_eps=0.0,
                        average_clips='prob', data_preprocessor=None,
                        **backbone_kwargs):
    """CAVA: head(adapter(clip) + adapter(audio)), adapters with skip."""
    model = base_model('cava_vit_b')
    model['backbone'] = cava_backbone_cfg(**backbone_kwargs)
    model['cls_head'].update(
        num_classes=num_classes,
        in_channels=model['backbone']['experts']['clip']['embed_dim'],
        label_smooth_eps=label_smooth_eps, average_clips=average_clips)
    model['data_preprocessor'] = (data_preprocessor
                                  or av_data_preprocessor_cfg())
    return model


def ca2st_recognizer_cfg(num_classes=309, composition=False, verb_classes=97,
                         noun_classes=300, label_smooth_eps=0.0,
                         average_clips='prob', data_preprocessor=None,
                         **backbone_kwargs):
    """CA2ST single-label: head(adapter(clip) + adapter(vmae) +
    audio_adapter(audio)); verb / noun (EPIC-KITCHENS-100): noun head on
    adapter(clip) + audio_adapter(audio), verb head on adapter(vmae) +
    audio_adapter(audio)."""
    model = base_model('ca2st_vit_b_verb_noun' if composition else
                       'ca2st_vit_b')
    model['backbone'] = ca2st_backbone_cfg(**backbone_kwargs)
    head = dict(in_channels=model['backbone']['experts']['clip']['embed_dim'],
                label_smooth_eps=label_smooth_eps,
                average_clips=average_clips)
    if composition:
        head.update(num_verbs=verb_classes, num_nouns=noun_classes)
    else:
        head.update(num_classes=num_classes)
    model['cls_head'].update(head)
    model['data_preprocessor'] = (data_preprocessor
                                  or av_data_preprocessor_cfg())
    return model
