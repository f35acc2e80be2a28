"""Check our models against reference dumps of the authors' code.

A dump folder holds ``meta.json``, ``official_checkpoint.pth``, ``input.pt``
and ``expected.pt`` (see tests/fixtures/README.md). :func:`check_dump` builds
our model from ``meta.json``, converts the official checkpoint with the same
code users run (``tools/convert_checkpoint.py``), runs the input in float32
and compares every expected output.
"""
import json
import os

import torch

from .compat import load_file

FAMILIES = {}


def family(match):
    """Register a (builder, runner) for dumps whose meta 'model' contains
    ``match``."""

    def deco(fn):
        FAMILIES[match] = fn
        return fn

    return deco


def cast_sizes_from_meta(model_cfg, meta):
    """Override the sizes of a CAST recognizer config (e.g. the ViT-B of
    configs/cast_ssv2.py) with those of a dump, keeping its structure."""
    import copy
    cfg = copy.deepcopy(model_cfg)
    bb = cfg['backbone']
    bb.update(num_frames=meta['num_frames'], img_size=meta['img_size'],
              down_ratio=meta['down_ratio'], drop_path_rate=0.0)
    bb.pop('init_cfg', None)
    for e in bb['experts'].values():
        e['pretrained'] = None
        if e['type'] == 'CLIPViTExpert':
            e.update(embed_dim=meta['embed_dim'], depth=meta['depth'],
                     num_heads=meta['num_heads'],
                     patch_size=meta['patch_size'],
                     mlp_ratio=meta['mlp_ratio'],
                     frame_step=meta['tubelet_size'])
        elif e['type'] == 'VideoMAEExpert':
            e.update(embed_dim=meta['embed_dim'], depth=meta['depth'],
                     num_heads=meta['num_heads'],
                     patch_size=meta['patch_size'],
                     tubelet_size=meta['tubelet_size'],
                     mlp_ratio=meta['mlp_ratio'])
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


@family('official CAST STCrossTransformer')
def _cast(meta, dump_dir, model_cfg=None):
    from .checkpoints import load_official_cast
    from .models.presets import cast_recognizer_cfg
    from .utils import build_model

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

    return run


def _find_family(meta):
    for key, fn in FAMILIES.items():
        if key in meta.get('model', ''):
            return fn
    raise ValueError(f'unknown dump model {meta.get("model")!r}; known: '
                     f'{list(FAMILIES)}')


def _to_float(x):
    if torch.is_tensor(x):
        return x.float()
    if isinstance(x, dict):
        return {k: _to_float(v) for k, v in x.items()}
    return x


def check_dump(dump_dir, rtol_scale=1e-4, model_cfg=None):
    """Returns a list of rows (name, max_abs_diff, tolerance, ok). With
    ``model_cfg`` (a recognizer config dict) the model is built from it with
    the dump's sizes."""
    with open(os.path.join(dump_dir, 'meta.json')) as f:
        meta = json.load(f)
    builder = _find_family(meta)
    kwargs = {'model_cfg': model_cfg} if model_cfg is not None else {}
    run = builder(meta, dump_dir, **kwargs)
    inputs = _to_float(load_file(os.path.join(dump_dir, 'input.pt')))
    expected = load_file(os.path.join(dump_dir, 'expected.pt'))
    with torch.no_grad():
        got = run(inputs)
    rows = []
    for name, ref in expected.items():
        ref = ref.float()
        tol = rtol_scale * max(1.0, ref.abs().max().item())
        if name not in got:
            rows.append((name, float('nan'), tol, False))
            continue
        out = got[name].float()
        if out.shape != ref.shape:
            rows.append((name, float('inf'), tol, False))
            continue
        diff = (out - ref).abs().max().item()
        rows.append((name, diff, tol, diff <= tol))
    return rows


# -- frame-wise ViT family (MSCA, TokenShift, plain ViT) ---------------------
_FRAME_VIT_NETS = {
    # authors' VideoNet ``net`` -> (our backbone mode, shift_qkv)
    'AttentionShift': ('msca_heads', 'kv'),
    'TokShift': ('tokenshift', 'kv'),
    'ViT': ('plain', 'kv'),
}


def frame_vit_sizes_from_meta(model_cfg, meta):
    """Override the sizes of a frame-wise ViT recognizer config (e.g. the
    ViT-B of configs/msca_k400.py) with those of a dump; the config must
    describe the dump's variant (mode, shift_qkv, shift_div)."""
    import copy
    cfg = copy.deepcopy(model_cfg)
    args = meta['constructor_args']
    mode, qkv = _FRAME_VIT_NETS[args['net']]
    bb = cfg['backbone']
    if bb.get('mode', 'msca_heads') != mode or (
            mode.startswith('msca') and bb.get('shift_qkv', 'kv') != qkv):
        raise ValueError(f'dump is {args["net"]} (mode={mode!r}, shift_qkv='
                         f'{qkv!r}) but the config backbone has mode='
                         f'{bb.get("mode")!r}, shift_qkv='
                         f'{bb.get("shift_qkv")!r}')
    if mode != 'plain' and bb.get('shift_div', 12) != args['shift_div']:
        raise ValueError(f'dump uses shift_div={args["shift_div"]}, the '
                         f'config {bb.get("shift_div")}')
    bb.update(embed_dim=meta['hidden_size'], depth=meta['num_layers'],
              num_heads=meta['num_heads'],
              mlp_ratio=meta['mlp_dim'] / meta['hidden_size'],
              patch_size=tuple(meta['vit_config']['patches']['size']),
              img_size=args['vit_img_size'], drop_rate=0.0,
              attn_drop_rate=0.0, drop_path_rate=0.0, pretrained=None)
    bb.pop('init_cfg', None)
    head = cfg['cls_head']
    if head['type'] != 'FrameClsHead':
        raise ValueError(f'dump has a per-frame head; the config head is '
                         f'{head["type"]}')
    head.update(num_classes=meta['num_class'], in_channels=meta['hidden_size'])
    return cfg


@family('official MSCA-KV')
@family('official TokenShift')
@family('official frame-wise ViT baseline')
def _frame_vit(meta, dump_dir, model_cfg=None):
    from .checkpoints.timm_vit import load_official_msca
    from .models.backbones.msca_vit import frame_vit_recognizer_cfg
    from .utils import build_model

    args = meta['constructor_args']
    if model_cfg is None:
        mode, qkv = _FRAME_VIT_NETS[args['net']]
        model_cfg = frame_vit_recognizer_cfg(
            mode=mode, shift_qkv=qkv, shift_div=args['shift_div'] or 12)
    cfg = frame_vit_sizes_from_meta(model_cfg, meta)
    model = build_model(cfg).eval()
    load_official_msca(model, os.path.join(dump_dir,
                                           'official_checkpoint.pth'))

    def run(inputs):  # (B, T, C, H, W) as the authors' VideoNet takes it
        feats = model.backbone(inputs.transpose(1, 2))
        return dict(frame_cls_feature=feats,
                    frame_logits=model.cls_head.frame_logits(feats),
                    cls_score=model.cls_head(feats))

    return run


from . import parity_av  # noqa: E402,F401  (CAVA / CA2ST families)
