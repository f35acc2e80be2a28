"""Parity family of the CAST dumps (``cast_single``, ``cast_composition``):
the model is the CAST preset (or a given recognizer config) at the dump's
sizes, with the official checkpoint through the converter users run."""
import copy
import os

from ..checkpoints import load_official_cast
from ..models.presets import set_sizes


def authors_experts(experts, qkv_bias):
    """What the authors' modules fix whatever the sizes say, in the expert
    configs ``experts`` (every family of their code): CLIP's MLP is 4 x
    wide (``mlp_ratio`` sizes the others'), and VideoMAE's / AST's q / v
    biases follow ``qkv_bias``."""
    experts['clip']['mlp_ratio'] = 4.0
    for name in ('vmae', 'audio'):
        if name in experts:
            experts[name]['qkv_bias'] = bool(qkv_bias)


def cast_sizes_from_meta(model_cfg, meta):
    """Override the sizes of a CAST recognizer config (e.g. the ViT-B of
    configs/cast_ssv2.py) with those of a dump, keeping its structure."""
    from ..models.presets import cast_recognizer_cfg
    cfg = copy.deepcopy(model_cfg)
    bb = cfg['backbone']
    cast = sorted(cast_recognizer_cfg()['backbone']['experts'])
    experts = sorted(bb.get('experts') or {})
    if bb.get('type') != 'CASTBackbone' or experts != cast:
        built = f'backbone {bb.get("type")}' + (
            f' with the experts {experts}' if experts else '')
        raise ValueError(
            f'the config\'s model ({built}) is another model family than '
            f'the dump, a CAST model (CASTBackbone with the experts {cast}); '
            f'give a CAST config (e.g. configs/cast_ssv2.py) or leave out '
            f'--config')
    # the one size vocabulary: the presets' setter sizes every expert
    set_sizes(cfg, embed_dim=meta['embed_dim'], depth=meta['depth'],
              num_heads=meta['num_heads'], num_frames=meta['num_frames'],
              img_size=meta['img_size'], patch_size=meta['patch_size'],
              tubelet_size=meta['tubelet_size'],
              down_ratio=meta['down_ratio'], mlp_ratio=meta['mlp_ratio'],
              with_cp=bb.get('with_cp', False))
    bb.pop('init_cfg', None)
    for e in bb['experts'].values():
        e['pretrained'] = None
    authors_experts(bb['experts'], meta.get('qkv_bias', True))
    head = cfg['cls_head']
    head['in_channels'] = meta['embed_dim']
    if meta['composition']:
        if head['type'] != 'CASTVerbNounHead':
            raise ValueError(f'dump is a verb/noun model but the config head '
                             f'is {head["type"]}')
        head.update(num_verbs=meta['verb_classes'],
                    num_nouns=meta['noun_classes'])
    else:
        if head['type'] != 'CASTHead':
            raise ValueError(f'dump is a single-label model but the config '
                             f'head is {head["type"]}')
        head['num_classes'] = meta['num_classes']
    return cfg


def build_cast(meta, dump_dir, model_cfg=None):
    from ..models.presets import cast_recognizer_cfg
    from ..utils import build_model

    if model_cfg is None:
        model_cfg = cast_recognizer_cfg(composition=bool(meta['composition']))
    cfg = cast_sizes_from_meta(model_cfg, meta)
    model = build_model(cfg).eval()
    load_official_cast(model, os.path.join(dump_dir,
                                           'official_checkpoint.pth'))

    def run(inputs):
        feats = model.backbone(inputs)
        out = dict(spatial_feature=feats[0], temporal_feature=feats[1])
        scores = model.cls_head(feats)
        if meta['composition']:
            out['verb'], out['noun'] = scores
        else:
            out['cls_score'] = scores
        return out

    run.models = (model, )  # check_dump(speedups=...) rewrites these
    return run
