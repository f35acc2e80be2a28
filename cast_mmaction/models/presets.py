"""Model configs as data: one function per family builds the config dict
of a recognizer at any size. The shipped configs spell these out; tests,
``tools/check_parity.py`` and ``tools/benchmark.py`` use the functions."""


def cast_backbone_cfg(embed_dim=768, depth=12, num_heads=12, num_frames=16,
                      img_size=224, patch_size=16, tubelet_size=2,
                      down_ratio=2, mlp_ratio=4.0, drop_path_rate=0.0,
                      clip_pretrained=None, vmae_pretrained=None,
                      link_layers=None, with_cp=False):
    """CAST: CLIP (frames 1, 3, ...) + VideoMAE with one S&T B-CA link."""
    return dict(
        type='CASTBackbone',
        num_frames=num_frames,
        img_size=img_size,
        experts=dict(
            clip=dict(type='CLIPViTExpert', width=embed_dim, layers=depth,
                      heads=num_heads, patch_size=patch_size,
                      mlp_ratio=mlp_ratio, frame_start=1,
                      frame_step=tubelet_size, pretrained=clip_pretrained),
            vmae=dict(type='VideoMAEExpert', embed_dim=embed_dim,
                      depth=depth, num_heads=num_heads,
                      patch_size=patch_size, tubelet_size=tubelet_size,
                      mlp_ratio=mlp_ratio, pretrained=vmae_pretrained)),
        links=[dict(experts=('clip', 'vmae'),
                    windows=dict(clip='time', vmae='space'),
                    layers=link_layers)],
        down_ratio=down_ratio,
        drop_path_rate=drop_path_rate,
        with_cp=with_cp)


def cast_recognizer_cfg(num_classes=174, composition=False, verb_classes=97,
                        noun_classes=300, label_smooth_eps=0.0,
                        average_clips='prob', data_preprocessor=None,
                        **backbone_kwargs):
    backbone = cast_backbone_cfg(**backbone_kwargs)
    dim = backbone['experts']['clip']['width']
    if composition:
        head = dict(type='CASTVerbNounHead', num_verbs=verb_classes,
                    num_nouns=noun_classes, in_channels=dim, verb_stream=1,
                    noun_stream=0, label_smooth_eps=label_smooth_eps,
                    average_clips=average_clips)
    else:
        head = dict(type='CASTHead', num_classes=num_classes,
                    in_channels=dim, num_streams=2,
                    label_smooth_eps=label_smooth_eps,
                    average_clips=average_clips)
    return dict(type='Recognizer3D', backbone=backbone, cls_head=head,
                data_preprocessor=data_preprocessor or dict(
                    type='ActionDataPreprocessor', format_shape='NCTHW'))
