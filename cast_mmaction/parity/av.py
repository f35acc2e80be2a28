"""Parity families of the audio-visual dumps (CAVA, CA2ST).

The dumps' ``input.pt`` is a dict ``video`` (B, 3, 16, H, W), ``spec``
(B, 3, T, 128) and, for the revision (``_rev``) dumps, ``idx`` (B, 18)
seconds ``[audio_start, audio_end, t_0 .. t_15]``; they map onto our inputs
``video`` / ``audio`` / ``times``. The model is built from
``meta['constructor_args_all']`` with the same preset functions the configs
use (or from a given recognizer config with the dump's sizes), and the
official checkpoint goes through the converter users run.
"""
import copy
import os

from ..checkpoints import load_official_av
from .cast import authors_experts


def av_sizes_from_meta(meta):
    """Keyword arguments of the presets from a dump's constructor args."""
    a = meta['constructor_args_all']
    depth = a['depth']
    kw = dict(embed_dim=a['embed_dim'], depth=depth, num_heads=a['num_heads'],
              num_frames=a['all_frames'], img_size=a['img_size'],
              patch_size=a['patch_size'], tubelet_size=a['tubelet_size'],
              down_ratio=a['down_ratio'], mlp_ratio=float(a['mlp_ratio']),
              input_fdim=a['input_fdim'], input_tdim=a['input_tdim'],
              fstride=a['fstride'], tstride=a['tstride'],
              revision=bool(a.get('time_encoding')),
              split_time_mlp=bool(a.get('split_time_mlp')),
              # the audio links' learned tables and time encodings are two
              # switches (use_stpos, time_encoding), any pairing
              audio_pos_embed=bool(a.get('use_stpos', True)))
    ca = a.get('CA', 0)
    if 'audio_dim' in a:  # CA2ST
        if a.get('audio_dim') != a['embed_dim']:
            raise ValueError('CA2ST with audio_dim != embed_dim is not '
                             'supported (the published models use 768/768)')
        # 'add_param' runs the same sequential B-CA as 'seq' in their code
        if a.get('bcast_method', 'seq') not in ('seq', 'add_param'):
            raise ValueError(f'bcast_method={a["bcast_method"]!r}: only the '
                             f'published sequential B-CA is implemented')
        kw.update(audio_num_heads=a['audio_num_heads'],
                  audio_link_layers=list(range(ca, depth)),
                  share_projections=bool(a.get('bcast_share')))
    else:  # CAVA
        kw.update(link_layers=list(range(ca, depth)))
    return kw


_SIZE_KEYS = ('width', 'layers', 'heads', 'embed_dim', 'depth', 'num_heads',
              'patch_size', 'mlp_ratio', 'frame_step', 'tubelet_size',
              'input_fdim', 'input_tdim', 'fstride', 'tstride')


def _override(model_cfg, built):
    """Keep the structure of ``model_cfg`` (a config's recognizer: expert
    types and norms, link windows / position tables / time encodings, head
    adapters) and take the sizes from ``built`` (the preset at the dump's
    sizes): widths, depths, heads, frames, spectrogram length, classes and
    the layers of each link (the dumps' small depths stand for 12)."""
    cfg = copy.deepcopy(model_cfg)
    bb, ref = cfg['backbone'], built['backbone']
    if bb.get('type') != 'CASTBackbone' or set(bb['experts']) != set(
            ref['experts']):
        raise ValueError('the config\'s model is not the dump\'s architecture '
                         f'(experts {list(bb.get("experts", {}))} vs '
                         f'{list(ref["experts"])})')
    for key in ('num_frames', 'img_size', 'down_ratio'):
        bb[key] = ref[key]
    bb['drop_path_rate'] = 0.0
    bb.pop('init_cfg', None)
    for name, e in bb['experts'].items():
        if e['type'] != ref['experts'][name]['type']:
            raise ValueError(f'expert {name}: config {e["type"]} vs dump '
                             f'{ref["experts"][name]["type"]}')
        e.update({k: v for k, v in ref['experts'][name].items()
                  if k in _SIZE_KEYS})
        e['pretrained'] = None
    ref_links = {frozenset(link['experts']): link for link in ref['links']}
    cfg_pairs = [frozenset(link['experts']) for link in bb['links']]
    if sorted(map(sorted, cfg_pairs)) != sorted(map(sorted, ref_links)):
        raise ValueError(f'config links {[sorted(p) for p in cfg_pairs]} vs '
                         f'dump links {[sorted(p) for p in ref_links]}')
    for link in bb['links']:
        r = ref_links[frozenset(link['experts'])]
        link['layers'] = r.get('layers')
        if 'num_heads' in r:
            link['num_heads'] = r['num_heads']
    head, ref_head = cfg['cls_head'], built['cls_head']
    if head['type'] != ref_head['type']:
        raise ValueError(f'dump head {ref_head["type"]} vs config head '
                         f'{head["type"]}')
    for key in ('num_classes', 'num_verbs', 'num_nouns', 'in_channels'):
        if key in ref_head:
            head[key] = ref_head[key]
    return cfg


def _authors_experts(cfg, meta):
    """The preset's config with what the authors' modules fix
    (:func:`~.cast.authors_experts`)."""
    authors_experts(cfg['backbone']['experts'],
                    meta['constructor_args_all'].get('qkv_bias', True))
    return cfg


def _build(meta, dump_dir, preset, model_cfg):
    from ..utils import build_model
    built = preset(meta)
    cfg = built if model_cfg is None else _override(model_cfg, built)
    model = build_model(cfg).eval()
    load_official_av(model, os.path.join(dump_dir, 'official_checkpoint.pth'))
    return model


def _inputs(inputs):
    ours = dict(video=inputs['video'], audio=inputs['spec'])
    if 'idx' in inputs:
        ours['times'] = inputs['idx']
    return ours


def _time_outputs(model, ours, out, audio='audio', video='clip'):
    bb = model.backbone
    if bb.time_encoding is None:
        return
    _, raw = bb.time_encodings(ours['times'], ours['video'].shape[0])
    out['audio_time_mlp_out'] = raw[audio]
    out['video_time_mlp_out'] = raw[video]


def build_cava(meta, dump_dir, model_cfg=None):
    from ..models.presets_av import cava_recognizer_cfg

    def preset(meta):
        a = meta['constructor_args_all']
        if a.get('composition'):
            raise ValueError('CAVA verb/noun dumps are not supported')
        return _authors_experts(cava_recognizer_cfg(
            num_classes=a['num_classes'], **av_sizes_from_meta(meta)), meta)

    model = _build(meta, dump_dir, preset, model_cfg)

    def run(inputs):
        ours = _inputs(inputs)
        feats = model.backbone(ours)
        out = dict(spatial_feature=feats[0], audio_feature=feats[1],
                   cls_score=model.cls_head(feats))
        _time_outputs(model, ours, out)
        return out

    run.models = (model, )  # check_dump(speedups=...) rewrites these
    return run


def build_ca2st(meta, dump_dir, model_cfg=None):
    from ..models.presets_av import ca2st_recognizer_cfg

    def preset(meta):
        a = meta['constructor_args_all']
        return _authors_experts(ca2st_recognizer_cfg(
            num_classes=a['num_classes'], composition=bool(a['composition']),
            verb_classes=meta.get('verb_classes') or 97,
            noun_classes=meta.get('noun_classes') or 300,
            **av_sizes_from_meta(meta)), meta)

    model = _build(meta, dump_dir, preset, model_cfg)
    composition = bool(meta['constructor_args_all']['composition'])

    def run(inputs):
        ours = _inputs(inputs)
        feats = model.backbone(ours)
        out = dict(spatial_feature=feats[0], temporal_feature=feats[1],
                   audio_feature=feats[2])
        scores = model.cls_head(feats)
        if composition:
            out['verb'], out['noun'] = scores
        else:
            out['cls_score'] = scores
        _time_outputs(model, ours, out)
        return out

    run.models = (model, )  # check_dump(speedups=...) rewrites these
    return run
