#!/usr/bin/env python
"""Draw the B-CAST cross-attention of a trained model on the frames of one
video: which frames (T2S) and which patches (S2T) a chosen token attends to.

    python tools/analysis_tools/attention_maps.py VIDEO --config CFG --checkpoint CKPT \\
        --out-dir attn/ [--layer 11] [--query-frame 4] [--query-patch 7 7]

The video goes through the config's test pipeline reduced to one view (one
clip, centre crop); the frames shown are the ones the model sees. The
weights drawn are the ones the model returns
(``CASTBackbone.record_attention``: the softmax weights of every head, from
the same q / k as the forward), averaged over heads.

Written to --out-dir:
  t2s_layer<L>.png  temporal-to-spatial: a CLIP patch at (query frame, query
                    patch) attends to the VideoMAE tokens at the same patch
                    position across time. Top: the VideoMAE time steps (first
                    frame of each tubelet) with that patch outlined; middle:
                    its attention over time as bars; bottom: the heat strip
                    for the same patch queried from every CLIP frame (rows)
                    over the VideoMAE time steps (columns).
  s2t_layer<L>.png  spatial-to-temporal: the VideoMAE token at the query
                    patch of each time step attends to the CLIP patches of
                    the CLIP frame of that step: heat map over the frame
                    (scaled from the panel's lowest to its highest weight;
                    the peak is printed as a multiple of uniform attention),
                    the query patch outlined (top row); the mean over every
                    VideoMAE token of that step (bottom row).
  attention_layer<L>.npz  the head-averaged maps: ``t2s`` (Tq, Nq, Tk),
                    ``s2t`` (Tq, Nq, Nk), ``frames`` (T, H, W, 3) uint8.
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import cast_mmaction  # noqa: E402,F401
from cast_mmaction import inference as inf  # noqa: E402
from cast_mmaction import safe_load  # noqa: E402


# ----------------------------------------------------------------------------
# the weights the model returns, in grid layout
# ----------------------------------------------------------------------------
def grid_maps(weights, window, q_grid):
    """Head-averaged weights in the query's grid layout: ``weights`` (B, H,
    windows..., Lq, Lk) as ``CASTBackbone.record_attention`` returns them
    for a link with ``window`` (a window-policy name) and query grid
    ``q_grid`` (Tq, Nq) -> ``time``: (B, Tq, Nq, Tk); ``space``: (B, Tq, Nq,
    Nk); ``global``: (B, Tq, Nq, Tk*Nk)."""
    from cast_mmaction.models.fusion import get_window_policy
    return get_window_policy(window).weights_to_grid(weights.mean(1), q_grid)


# ----------------------------------------------------------------------------
# model structure
# ----------------------------------------------------------------------------
def find_link(backbone, link=None, layer=None):
    """-> (link name, layer index, BottleneckCrossAttention) of a link with a
    ``time`` and a ``space`` window (CAST's S&T link)."""
    links = getattr(backbone, 'links', None)
    if not links:
        raise inf.InferenceError('the model has no B-CA links (attention '
                                 'maps are for CAST-style backbones)')
    names = [link] if link else list(links)
    for name in names:
        if name not in links:
            raise inf.InferenceError(f'--link {name}: the backbone\'s links '
                                     f'are {list(links)}')
        layers = sorted(int(i) for i in links[name])
        mods = links[name][str(layers[0])]
        windows = set(mods.attention_windows().values()) if getattr(
            mods, 'attention_weights', False) else set()
        if windows != {'time', 'space'}:
            if link:
                raise inf.InferenceError(
                    f'link {name} has windows {sorted(windows)}; the maps '
                    f'are drawn for a link with a time and a space window')
            continue
        if layer is None:
            use = layers[-1]
        else:
            use = layer if layer >= 0 else layers[-1] + 1 + layer
            if use not in layers:
                raise inf.InferenceError(f'--layer {layer}: link {name} is '
                                         f'active in layers {layers}')
        return name, use, links[name][str(use)]
    raise inf.InferenceError(f'no link with a time and a space window among '
                             f'{list(links)}')


def expert_frames(expert, t):
    """Clip frame indices that time step ``t`` of an expert stands for."""
    if hasattr(expert, 'frame_start') and hasattr(expert, 'frame_step'):
        return [expert.frame_start + t * expert.frame_step]
    if hasattr(expert, 'tubelet_size'):
        tub = expert.tubelet_size
        return list(range(t * tub, (t + 1) * tub))
    raise inf.InferenceError(f'{type(expert).__name__} is not a video '
                             f'expert; cannot place its tokens on frames')


# ----------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------
def _patch_box(ax, row, col, patch_hw, color='lime', lw=2):
    import matplotlib.patches as mpatches
    ph, pw = patch_hw
    ax.add_patch(mpatches.Rectangle((col * pw - 0.5, row * ph - 0.5), pw, ph,
                                    fill=False, edgecolor=color,
                                    linewidth=lw))


def _upsample(grid, size):
    """(h, w) map -> (H, W) by nearest-neighbour blocks."""
    h, w = grid.shape
    H, W = size
    return np.kron(grid, np.ones((H // h, W // w)))[:H, :W]


def draw_t2s(path, frames, t2s, query_t, query_rc, grid_hw, patch_hw,
             key_frames, query_frames, title):
    """``t2s`` (Tq, Nq, Tk) head-averaged weights of one sample."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tq, nq, tk = t2s.shape
    n = query_rc[0] * grid_hw[1] + query_rc[1]
    w = t2s[query_t, n]  # (Tk,)
    fig = plt.figure(figsize=(max(8, 1.6 * tk), 7.5))
    gs = fig.add_gridspec(3, tk, height_ratios=[1.2, 1, 1.4])
    for k in range(tk):
        ax = fig.add_subplot(gs[0, k])
        ax.imshow(frames[key_frames[k][0]])
        _patch_box(ax, *query_rc, patch_hw,
                   color=plt.cm.viridis(w[k] / max(w.max(), 1e-12)), lw=3)
        ax.set_title(f'frames {key_frames[k][0]}-{key_frames[k][-1]}',
                     fontsize=8)
        ax.axis('off')
    ax = fig.add_subplot(gs[1, :])
    ax.bar(range(tk), w, color=plt.cm.viridis(w / max(w.max(), 1e-12)))
    ax.set_xticks(range(tk))
    ax.set_xticklabels([f't{k}' for k in range(tk)])
    ax.set_xlim(-0.5, tk - 0.5)
    ax.set_ylabel('attention')
    ax.set_title(f'CLIP patch (row {query_rc[0]}, col {query_rc[1]}) of '
                 f'frame {query_frames[query_t][0]} -> VideoMAE time steps',
                 fontsize=9)
    ax = fig.add_subplot(gs[2, :])
    im = ax.imshow(t2s[:, n, :], aspect='auto', cmap='viridis')
    ax.set_xticks(range(tk))
    ax.set_xticklabels([f't{k}' for k in range(tk)])
    ax.set_yticks(range(tq))
    ax.set_yticklabels([f'frame {query_frames[t][0]}' for t in range(tq)],
                       fontsize=7)
    ax.set_xlabel('VideoMAE time step (key)')
    ax.set_ylabel('CLIP frame (query)')
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_s2t(path, frames, s2t, query_rc, grid_hw, patch_hw, key_frames,
             query_frames, title):
    """``s2t`` (Tq, Nq, Nk) head-averaged weights of one sample."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tq, nq, nk = s2t.shape
    n = query_rc[0] * grid_hw[1] + query_rc[1]
    fig, axes = plt.subplots(2, tq, figsize=(max(8, 1.8 * tq), 4.6),
                             squeeze=False)
    for t in range(tq):
        img = frames[key_frames[t][0]]
        size = img.shape[:2]
        for row, (wmap, label) in enumerate(
                ((s2t[t, n], 'query patch'), (s2t[t].mean(0), 'all tokens'))):
            ax = axes[row, t]
            # min-max scaled per panel (the structure, not the level);
            # the peak relative to uniform attention is printed below
            span = max(wmap.max() - wmap.min(), 1e-12)
            heat = _upsample(((wmap - wmap.min()) / span).reshape(grid_hw),
                             size)
            ax.imshow(img)
            ax.imshow(heat, cmap='jet', alpha=0.45, vmin=0, vmax=1)
            if row == 0:
                _patch_box(ax, *query_rc, patch_hw, color='white')
                ax.set_title(f'VideoMAE t{t} -> frame {key_frames[t][0]}',
                             fontsize=8)
            ax.text(0.5, -0.04, f'peak {wmap.max() * nk:.2f}x uniform',
                    transform=ax.transAxes, ha='center', va='top',
                    fontsize=7)
            ax.axis('off')
        axes[1, 0].text(-0.1, 0.5, 'mean over\nall queries',
                        transform=axes[1, 0].transAxes, rotation=90,
                        va='center', ha='right', fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------
def compute_maps(model, packed, link=None, layer=None):
    """Run the model on one packed sample (one view) and return a dict with
    the chosen link / layer, the head-averaged ``t2s`` / ``s2t`` grids of the
    sample, the frames it saw, the experts and the data sample."""
    bb = model.backbone
    name, use, mod = find_link(bb, link, layer)
    by_window = {w: q for q, w in mod.attention_windows().items()}
    with bb.record_attention(links=[name], layers=[use]) as rec:
        samples = inf.predict(model, [packed])
    out = dict(link=name, layer=use, data_sample=samples[0],
               t2s_expert=by_window['time'], s2t_expert=by_window['space'])
    for key, window in (('t2s', 'time'), ('s2t', 'space')):
        got = (use, name, by_window[window])
        if got not in rec:
            raise RuntimeError(f'link {name} layer {use} was not run')
        weights = rec[got]
        out[key] = grid_maps(weights, window,
                             rec.info[got]['q_grid'])[0].cpu().numpy()
        out[key + '_weights'] = weights
    inputs = packed['inputs']
    if isinstance(inputs, dict):
        inputs = inputs['video']
    video = inputs[0] if inputs.ndim == 5 else inputs  # (C, T, H, W)
    out['frames'] = video.permute(1, 2, 3, 0).cpu().numpy().astype(np.uint8)
    return out


def main(argv=None):
    from mmengine.config import DictAction
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('video')
    ap.add_argument('--config', required=True)
    ap.add_argument('--checkpoint', required=True)
    ap.add_argument('--out-dir', required=True)
    ap.add_argument('--layer', type=int,
                    help='layer index (negative counts from the end; '
                    'default: the last layer of the link)')
    ap.add_argument('--link', help='link name (default: the first link with '
                    'time and space windows)')
    ap.add_argument('--query-frame', type=int,
                    help='CLIP time step of the T2S query (default: middle)')
    ap.add_argument('--query-patch', type=int, nargs=2,
                    metavar=('ROW', 'COL'),
                    help='patch of the queries (default: centre)')
    ap.add_argument('--label-map', nargs='+')
    ap.add_argument('--device')
    ap.add_argument('--cfg-options', nargs='+', action=DictAction)
    safe_load.add_trust_argument(ap, '--checkpoint')
    args = ap.parse_args(argv)
    from cast_mmaction.datasets.label_maps import LabelMapError
    try:
        cfg = inf.load_config(args.config, args.cfg_options)
        safe_load.trust_inputs(cfg, args.checkpoint, args.trust_checkpoint)
        model = inf.init_model(cfg, args.checkpoint, args.device)
        names, _ = inf.label_names_for(model, args.label_map, cfg)
        pipeline = inf.build_test_pipeline(cfg, one_view=True)
        if not osp.isfile(args.video):
            raise inf.InferenceError(f'video {args.video} not found')
        packed = inf.run_pipeline(pipeline, inf.make_sample(args.video))
        res = compute_maps(model, packed, args.link, args.layer)
    except (inf.InferenceError, inf.PipelineError, LabelMapError,
            safe_load.UntrustedCheckpointError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    bb = model.backbone
    q_exp = bb.experts[res['t2s_expert']]
    k_exp = bb.experts[res['s2t_expert']]
    t2s, s2t = res['t2s'], res['s2t']
    tq, nq, tk = t2s.shape
    grid_hw = tuple(q_exp.grid_hw)
    patch_hw = (q_exp.patch_size, q_exp.patch_size)
    query_t = tq // 2 if args.query_frame is None else args.query_frame
    if not 0 <= query_t < tq:
        print(f'error: --query-frame {query_t}: the T2S query stream has '
              f'{tq} time steps (0..{tq - 1})', file=sys.stderr)
        return 2
    rc = (tuple(args.query_patch) if args.query_patch else
          (grid_hw[0] // 2, grid_hw[1] // 2))
    if not (0 <= rc[0] < grid_hw[0] and 0 <= rc[1] < grid_hw[1]):
        print(f'error: --query-patch {rc[0]} {rc[1]}: the patch grid is '
              f'{grid_hw[0]} x {grid_hw[1]}', file=sys.stderr)
        return 2
    q_frames = [expert_frames(q_exp, t) for t in range(tq)]
    k_frames = [expert_frames(k_exp, t) for t in range(tk)]
    preds = inf.topk_predictions(inf.scores_of(model, res['data_sample']),
                                 names, 1)
    pred = '; '.join(f'{k}: {v[0]["name"]} ({v[0]["score"]:.2f})'
                     for k, v in preds.items())
    video = osp.basename(args.video)
    os.makedirs(args.out_dir, exist_ok=True)
    layer = res['layer']
    t2s_png = osp.join(args.out_dir, f't2s_layer{layer}.png')
    s2t_png = osp.join(args.out_dir, f's2t_layer{layer}.png')
    npz = osp.join(args.out_dir, f'attention_layer{layer}.npz')
    frames = res['frames']
    draw_t2s(t2s_png, frames, t2s, query_t, rc, grid_hw, patch_hw, k_frames,
             q_frames, f'{video}  T2S, link {res["link"]} layer {layer}  '
             f'[{pred}]')
    # S2T: VideoMAE queries at time t look at the CLIP frame of step t
    draw_s2t(s2t_png, frames, s2t, rc, grid_hw, patch_hw, q_frames,
             k_frames, f'{video}  S2T, link {res["link"]} layer {layer}  '
             f'[{pred}]')
    np.savez_compressed(npz, t2s=t2s, s2t=s2t, frames=frames,
                        query_frame=query_t, query_patch=np.array(rc))
    print(f'prediction: {pred}')
    for p in (t2s_png, s2t_png, npz):
        print(f'wrote {p}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
