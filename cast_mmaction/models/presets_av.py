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

AST_MEAN, AST_STD = -4.2677393, 4.5689974  # AudioSet fbank statistics


def _clip(embed_dim, depth, num_heads, patch_size, mlp_ratio, tubelet_size,
          post_norm_eps, pretrained):
    return dict(type='CLIPViTExpert', width=embed_dim, layers=depth,
                heads=num_heads, patch_size=patch_size, mlp_ratio=mlp_ratio,
                frame_start=1, frame_step=tubelet_size,
                post_norm_eps=post_norm_eps, pretrained=pretrained)


def _ast(embed_dim, depth, num_heads, mlp_ratio, input_fdim, input_tdim,
         fstride, tstride, pretrained):
    return dict(type='ASTExpert', embed_dim=embed_dim, depth=depth,
                num_heads=num_heads, mlp_ratio=mlp_ratio,
                input_fdim=input_fdim, input_tdim=input_tdim,
                fstride=fstride, tstride=tstride, pretrained=pretrained)


def cava_backbone_cfg(embed_dim=768, depth=12, num_heads=12, num_frames=16,
                      img_size=224, patch_size=16, tubelet_size=2,
                      down_ratio=2, mlp_ratio=4.0, drop_path_rate=0.0,
                      input_fdim=128, input_tdim=1024, fstride=10, tstride=10,
                      link_layers=None, revision=False, split_time_mlp=True,
                      clip_pretrained=None, ast_pretrained=None,
                      with_cp=False):
    """CAVA: CLIP (frames 1, 3, ...) + AST, B-CA with global windows."""
    return dict(
        type='CASTBackbone',
        num_frames=num_frames,
        img_size=img_size,
        experts=dict(
            clip=_clip(embed_dim, depth, num_heads, patch_size, mlp_ratio,
                       tubelet_size, 1e-6, clip_pretrained),
            audio=_ast(embed_dim, depth, num_heads, mlp_ratio, input_fdim,
                       input_tdim, fstride, tstride, ast_pretrained)),
        links=[dict(experts=('clip', 'audio'),
                    windows=dict(clip='global', audio='global'),
                    layers=link_layers, pos_embed=not revision,
                    time_encoding=revision)],
        time_encoding=dict(split=split_time_mlp) if revision else None,
        down_ratio=down_ratio,
        drop_path_rate=drop_path_rate,
        with_cp=with_cp)


def ca2st_backbone_cfg(embed_dim=768, depth=12, num_heads=12,
                       audio_num_heads=None, num_frames=16, img_size=224,
                       patch_size=16, tubelet_size=2, down_ratio=2,
                       mlp_ratio=4.0, drop_path_rate=0.0, input_fdim=128,
                       input_tdim=1024, fstride=10, tstride=10,
                       audio_link_layers=None, revision=False,
                       split_time_mlp=True, share_projections=None,
                       clip_pretrained=None, vmae_pretrained=None,
                       ast_pretrained=None, with_cp=False):
    """CA2ST: CLIP + VideoMAE + AST. ``audio_link_layers`` defaults to the
    last three layers (9, 10, 11 of 12)."""
    if audio_link_layers is None:
        audio_link_layers = list(range(max(0, depth - 3), depth))
    audio_heads = audio_num_heads or num_heads
    if share_projections is None:
        share_projections = revision
    audio_link = dict(layers=list(audio_link_layers), num_heads=audio_heads,
                      pos_embed=not revision, time_encoding=revision)
    return dict(
        type='CASTBackbone',
        num_frames=num_frames,
        img_size=img_size,
        experts=dict(
            clip=_clip(embed_dim, depth, num_heads, patch_size, mlp_ratio,
                       tubelet_size, 1e-5, clip_pretrained),
            vmae=dict(type='VideoMAEExpert', embed_dim=embed_dim,
                      depth=depth, num_heads=num_heads,
                      patch_size=patch_size, tubelet_size=tubelet_size,
                      mlp_ratio=mlp_ratio, pretrained=vmae_pretrained),
            audio=_ast(embed_dim, depth, audio_heads, mlp_ratio, input_fdim,
                       input_tdim, fstride, tstride, ast_pretrained)),
        links=[
            dict(experts=('clip', 'vmae'),
                 windows=dict(clip='time', vmae='space')),
            dict(experts=('clip', 'audio'),
                 windows=dict(clip='global', audio='global'), **audio_link),
            dict(experts=('vmae', 'audio'),
                 windows=dict(vmae='global', audio='global'), **audio_link),
        ],
        time_encoding=dict(split=split_time_mlp) if revision else None,
        share_projections=share_projections,
        down_ratio=down_ratio,
        drop_path_rate=drop_path_rate,
        with_cp=with_cp)


def av_data_preprocessor_cfg(blending=None):
    """ImageNet mean / std on the video; the audio is normalised in the
    pipeline (``AudioFbank``)."""
    return dict(type='AudioVisualDataPreprocessor',
                video=dict(mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375]),
                blending=blending)


_AUDIO_HEAD = dict(act='quick_gelu', zero_init=False)


def cava_recognizer_cfg(num_classes=309, label_smooth_eps=0.0,
                        average_clips='prob', data_preprocessor=None,
                        **backbone_kwargs):
    """CAVA: head(adapter(clip) + adapter(audio)), adapters with skip."""
    backbone = cava_backbone_cfg(**backbone_kwargs)
    dim = backbone['experts']['clip']['width']
    head = dict(type='CASTHead', num_classes=num_classes, in_channels=dim,
                num_streams=2,
                stream_adapters=[dict(skip=True), dict(skip=True)],
                label_smooth_eps=label_smooth_eps,
                average_clips=average_clips)
    return dict(type='AudioVisualRecognizer', backbone=backbone,
                cls_head=head,
                data_preprocessor=data_preprocessor or
                av_data_preprocessor_cfg())


def ca2st_recognizer_cfg(num_classes=309, composition=False, verb_classes=97,
                         noun_classes=300, label_smooth_eps=0.0,
                         average_clips='prob', data_preprocessor=None,
                         **backbone_kwargs):
    """CA2ST single-label: head(adapter(clip) + adapter(vmae) +
    audio_adapter(audio)); verb / noun (EPIC-KITCHENS-100): noun head on
    adapter(clip) + audio_adapter(audio), verb head on adapter(vmae) +
    audio_adapter(audio)."""
    backbone = ca2st_backbone_cfg(**backbone_kwargs)
    dim = backbone['experts']['clip']['width']
    if composition:
        head = dict(type='CASTVerbNounHead', num_verbs=verb_classes,
                    num_nouns=noun_classes, in_channels=dim, verb_stream=1,
                    noun_stream=0,
                    noun_adapters=[dict(stream=0),
                                   dict(stream=2, **_AUDIO_HEAD)],
                    verb_adapters=[dict(stream=1),
                                   dict(stream=2, **_AUDIO_HEAD)],
                    label_smooth_eps=label_smooth_eps,
                    average_clips=average_clips)
    else:
        head = dict(type='CASTHead', num_classes=num_classes,
                    in_channels=dim, num_streams=3,
                    stream_adapters=[dict(), dict(), dict(_AUDIO_HEAD)],
                    label_smooth_eps=label_smooth_eps,
                    average_clips=average_clips)
    return dict(type='AudioVisualRecognizer', backbone=backbone,
                cls_head=head,
                data_preprocessor=data_preprocessor or
                av_data_preprocessor_cfg())
