"""The single-expert PEFT baselines as config dicts at any size, read from
``configs/_base_/models/st_adapter_vit_b.py`` and ``aim_vit_b.py`` (as
``presets.py`` does for CAST): tests and ``tools/check_parity.py`` build
what the recipes build."""
from .presets import base_model

_NO_NORM = dict(type='ActionDataPreprocessor', format_shape='NCTHW')


def _size(model, embed_dim, depth, num_heads, patch_size, num_frames,
          img_size, num_classes, pretrained, data_preprocessor):
    bb = model['backbone']
    bb.update(num_frames=num_frames, img_size=img_size)
    bb['expert'].update(embed_dim=embed_dim, depth=depth,
                        num_heads=num_heads, patch_size=patch_size,
                        pretrained=pretrained)
    model['cls_head'].update(num_classes=num_classes, in_channels=embed_dim)
    if data_preprocessor is not None:
        model['data_preprocessor'] = data_preprocessor
    return model


def st_adapter_recognizer_cfg(embed_dim=768, depth=12, num_heads=12,
                              patch_size=16, num_frames=8, img_size=224,
                              num_classes=400, adapter_width=384,
                              adapter_layers=None,
                              adapter_kernel_size=(3, 1, 1),
                              adapter_pre_attn=False, adapter_pre_mlp=True,
                              pretrained=None, data_preprocessor=_NO_NORM):
    """ST-Adapter recognizer (``adapter_layers`` default: every layer).
    ``data_preprocessor`` defaults to one without normalisation (inputs
    already normalised, as the parity dumps give them); ``None`` keeps the
    base file's."""
    model = _size(base_model('st_adapter_vit_b'), embed_dim, depth,
                  num_heads, patch_size, num_frames, img_size, num_classes,
                  pretrained, data_preprocessor)
    model['backbone'].update(
        adapter_width=adapter_width,
        adapter_layers=depth if adapter_layers is None else adapter_layers,
        adapter_kernel_size=tuple(adapter_kernel_size),
        adapter_pre_attn=adapter_pre_attn, adapter_pre_mlp=adapter_pre_mlp)
    return model


def aim_recognizer_cfg(embed_dim=768, depth=12, num_heads=12, patch_size=16,
                       num_frames=8, img_size=224, num_classes=400,
                       num_tadapter=1, adapter_scale=0.5, adapter_ratio=0.25,
                       drop_path_rate=0.2, pretrained=None,
                       data_preprocessor=_NO_NORM):
    """AIM recognizer (K400 settings by default)."""
    model = _size(base_model('aim_vit_b'), embed_dim, depth, num_heads,
                  patch_size, num_frames, img_size, num_classes, pretrained,
                  data_preprocessor)
    model['backbone'].update(num_tadapter=num_tadapter,
                             adapter_scale=adapter_scale,
                             adapter_ratio=adapter_ratio,
                             drop_path_rate=drop_path_rate)
    return model
