"""Model configs as data: one function per family builds the config dict of a
recognizer at any size.

The architecture of each family is defined once, in
``configs/_base_/models/`` (MMAction2's pattern; the recipes inherit those
files): the functions here read that definition and set the sizes and
options they are given, so tests, ``tools/check_parity.py`` and
``tools/benchmark.py`` build exactly what the configs build.
"""
import copy
import functools
import os.path as osp

_PACKAGE = osp.dirname(osp.dirname(osp.abspath(__file__)))
# a clone (editable install): <repo>/configs; a wheel: the copy setup.py
# puts inside the package (cast_mmaction/.mim/configs, MMAction2's layout)
MODEL_BASES = next(
    (p for p in (osp.join(osp.dirname(_PACKAGE), 'configs', '_base_',
                          'models'),
                 osp.join(_PACKAGE, '.mim', 'configs', '_base_', 'models'))
     if osp.isdir(p)),
    osp.join(osp.dirname(_PACKAGE), 'configs', '_base_', 'models'))


@functools.lru_cache(maxsize=None)
def _read_base(name):
    from mmengine.config import Config
    path = osp.join(MODEL_BASES, name + '.py')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'model definition {path} not found: the presets read '
            f'configs/_base_/models/ of the source tree or the copy a wheel '
            f'carries in cast_mmaction/.mim/configs; reinstall the plugin '
            f'(pip install -e . from a clone, or pip install .)')
    return Config.fromfile(path).model.to_dict()


def base_model(name):
    """The model dict of ``configs/_base_/models/<name>.py`` (a copy)."""
    return copy.deepcopy(_read_base(name))


def set_sizes(model, embed_dim=768, depth=12, num_heads=12, num_frames=16,
              img_size=224, patch_size=16, tubelet_size=2, down_ratio=2,
              mlp_ratio=4.0, drop_path_rate=0.0, with_cp=False):
    """Give every expert of a multi-expert recognizer ``model`` (in place)
    the size ``embed_dim`` / ``depth`` / ``num_heads`` / ``mlp_ratio``, the
    video experts ``patch_size`` and ``tubelet_size`` (the frame step of the
    frame-wise experts), the backbone the clip size, and the head its input
    width. Returns ``model``."""
    bb = model['backbone']
    bb.update(num_frames=num_frames, img_size=img_size, down_ratio=down_ratio,
              drop_path_rate=drop_path_rate, with_cp=with_cp)
    for e in bb['experts'].values():
        e.update(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                 mlp_ratio=mlp_ratio)
        if 'patch_size' in e:
            e['patch_size'] = patch_size
        if 'frame_step' in e:
            e['frame_step'] = tubelet_size
        if 'tubelet_size' in e:
            e['tubelet_size'] = tubelet_size
    model['cls_head']['in_channels'] = embed_dim
    return model


def _head_args(model, **kwargs):
    model['cls_head'].update(kwargs)


def cast_backbone_cfg(embed_dim=768, depth=12, num_heads=12, num_frames=16,
                      img_size=224, patch_size=16, tubelet_size=2,
                      down_ratio=2, mlp_ratio=4.0, drop_path_rate=0.0,
                      clip_pretrained=None, vmae_pretrained=None,
                      link_layers=None, with_cp=False):
    """CAST: CLIP (frames 1, 3, ...) + VideoMAE with one S&T B-CA link
    (``configs/_base_/models/cast_vit_b.py`` at these sizes)."""
    model = set_sizes(base_model('cast_vit_b'), embed_dim, depth, num_heads,
                      num_frames, img_size, patch_size, tubelet_size,
                      down_ratio, mlp_ratio, drop_path_rate, with_cp)
    bb = model['backbone']
    bb['experts']['clip']['pretrained'] = clip_pretrained
    bb['experts']['vmae']['pretrained'] = vmae_pretrained
    bb['links'][0]['layers'] = link_layers
    return bb


def cast_recognizer_cfg(num_classes=174, composition=False, verb_classes=97,
                        noun_classes=300, label_smooth_eps=0.0,
                        average_clips='prob', data_preprocessor=None,
                        **backbone_kwargs):
    """CAST recognizer (``cast_vit_b`` / ``cast_vit_b_verb_noun``).
    ``data_preprocessor`` defaults to one without normalisation (inputs
    already normalised, as the parity dumps and tests give them)."""
    model = base_model('cast_vit_b_verb_noun' if composition else
                       'cast_vit_b')
    model['backbone'] = cast_backbone_cfg(**backbone_kwargs)
    head = dict(in_channels=model['backbone']['experts']['clip']['embed_dim'],
                label_smooth_eps=label_smooth_eps,
                average_clips=average_clips)
    if composition:
        head.update(num_verbs=verb_classes, num_nouns=noun_classes)
    else:
        head.update(num_classes=num_classes)
    _head_args(model, **head)
    model['data_preprocessor'] = data_preprocessor or dict(
        type='ActionDataPreprocessor', format_shape='NCTHW')
    return model
