"""Parity family of the frame-wise ViT dumps (``msca_kv``, ``tokshift``,
``vit_framewise``): MSCA, TokenShift and the plain ViT of the authors'
VideoNet, converted with the ``msca`` converter."""
import copy
import os

from ..checkpoints import load_official_msca

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


def build_frame_vit(meta, dump_dir, model_cfg=None):
    from ..models.backbones.msca_vit import frame_vit_recognizer_cfg
    from ..utils import build_model

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

    run.models = (model, )  # check_dump(speedups=...) rewrites these
    return run

