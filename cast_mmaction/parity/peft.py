"""Parity families of the CLIP-based PEFT baselines (``st_adapter_*``,
``aim_*``): the model is the preset of ``configs/_base_/models/
st_adapter_vit_b.py`` / ``aim_vit_b.py`` (or a given recognizer config) at
the sizes and switches of the dump's ``meta.json`` ``constructor_args``,
loaded through the converter users run (ST-Adapter: the release plus the
dump's ``clip_visual.pth`` tower)."""
import copy
import os

from ..checkpoints import load_official_aim, load_official_st_adapter


def _arg(meta, key, default=None):
    """A constructor argument, or a top-level meta entry (the dumps keep
    ``num_frames`` / ``num_classes`` in either place)."""
    args = meta.get('constructor_args', {})
    if key in args:
        return args[key]
    if key in meta:
        return meta[key]
    if default is None:
        raise KeyError(f'meta.json has no {key!r} (neither in '
                       f'constructor_args nor at the top level)')
    return default


def _expert_sizes(bb, args, num_frames):
    bb['num_frames'] = num_frames
    bb['img_size'] = args['input_resolution']
    bb['expert'].update(embed_dim=args['width'], depth=args['layers'],
                        num_heads=args['heads'],
                        patch_size=args['patch_size'], pretrained=None)
    bb.pop('init_cfg', None)


def _head(cfg, num_classes, in_channels, want):
    head = cfg['cls_head']
    if head['type'] != 'I3DHead':
        raise ValueError(f'the dump has {want}; the config head is '
                         f'{head["type"]} (use I3DHead)')
    head.update(num_classes=num_classes, in_channels=in_channels)


def st_adapter_sizes_from_meta(model_cfg, meta):
    """An ST-Adapter recognizer config (e.g. configs/st_adapter_k400.py's)
    with the dump's sizes and adapter switches."""
    cfg = copy.deepcopy(model_cfg)
    args = meta['constructor_args']
    bb = cfg['backbone']
    if bb['type'] != 'STAdapterViT':
        raise ValueError(f'the dump is an ST-Adapter model; the config '
                         f'backbone is {bb["type"]}')
    _expert_sizes(bb, args, _arg(meta, 'num_frames'))
    # their model puts adapters in the last adapter_layers blocks: in all
    # of them when it names more than there are
    bb.update(adapter_width=args['adapter_width'],
              adapter_layers=min(_arg(meta, 'adapter_layers', args['layers']),
                                 args['layers']),
              adapter_kernel_size=tuple(
                  _arg(meta, 'adapter_kernel_size', (3, 1, 1))),
              adapter_pre_attn=bool(_arg(meta, 'adapter_pre_attn', False)),
              adapter_pre_mlp=bool(_arg(meta, 'adapter_pre_mlp', False)))
    _head(cfg, _arg(meta, 'num_classes'), args['width'],
          'fc(dropout(feature)) on the pooled feature')
    if cfg['cls_head'].get('spatial_type') is not None:
        raise ValueError('ST-Adapter classifies the pooled (B, C) feature: '
                         'the I3DHead needs spatial_type=None')
    return cfg


def aim_sizes_from_meta(model_cfg, meta):
    """An AIM recognizer config with the dump's sizes and switches."""
    cfg = copy.deepcopy(model_cfg)
    args = meta['constructor_args']
    bb = cfg['backbone']
    if bb['type'] != 'AIMViT':
        raise ValueError(f'the dump is an AIM model; the config backbone is '
                         f'{bb["type"]}')
    _expert_sizes(bb, args, _arg(meta, 'num_frames'))
    # their ViT_CLIP defaults: num_tadapter=1, adapter_scale=0.5
    # their ViT_CLIP builds the second temporal adapter for num_tadapter
    # == 2 only: any other value is one
    bb.update(num_tadapter=2 if _arg(meta, 'num_tadapter', 1) == 2 else 1,
              adapter_scale=_arg(meta, 'adapter_scale', 0.5),
              drop_path_rate=_arg(meta, 'drop_path_rate', 0.0))
    _head(cfg, _arg(meta, 'num_classes'), args['width'], 'an I3D-style head')
    return cfg


def _build(cfg):
    from ..utils import build_model
    return build_model(cfg).eval()


def build_st_adapter(meta, dump_dir, model_cfg=None):
    from ..models.presets_peft import st_adapter_recognizer_cfg
    cfg = st_adapter_sizes_from_meta(
        model_cfg or st_adapter_recognizer_cfg(), meta)
    model = _build(cfg)
    load_official_st_adapter(
        model, os.path.join(dump_dir, 'official_checkpoint.pth'),
        tower=os.path.join(dump_dir, 'clip_visual.pth'))

    def run(inputs):
        feature = model.backbone(inputs)
        return dict(feature=feature, cls_score=model.cls_head(feature))

    run.models = (model, )  # check_dump(speedups=...) rewrites these
    return run


def build_aim(meta, dump_dir, model_cfg=None):
    from ..models.presets_peft import aim_recognizer_cfg
    cfg = aim_sizes_from_meta(model_cfg or aim_recognizer_cfg(), meta)
    model = _build(cfg)
    load_official_aim(model, os.path.join(dump_dir,
                                          'official_checkpoint.pth'))

    def run(inputs):
        feature = model.backbone(inputs)
        return dict(feature=feature, cls_score=model.cls_head(feature))

    run.models = (model, )  # check_dump(speedups=...) rewrites these
    return run
