#!/usr/bin/env python
"""Convert an official released checkpoint into one ``tools/test.py`` loads.

    python tools/convert_checkpoint.py SRC.pth DST.pth --config configs/cast_ssv2.py

SRC is the authors' file (CAST: a DeepSpeed dump ``{'module': state_dict}``;
``{'model': ...}`` and plain state dicts work too). With ``--config`` the
result is checked against the model the config builds (every key present,
shapes equal, position tables resized for other input sizes) and the tool
fails with the offending keys otherwise. The output is an MMEngine checkpoint
``{'state_dict': ..., 'meta': ...}``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

import cast_mmaction  # noqa: E402,F401
from cast_mmaction.checkpoints import (CONVERTERS, check_fit,  # noqa: E402
                                       convert_state, detect_kind,
                                       fit_report)
from cast_mmaction.checkpoints.common import read_state_dict  # noqa: E402
from cast_mmaction import safe_load  # noqa: E402  (docs/security.md)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('src', help='official checkpoint file')
    ap.add_argument('dst', help='output file (.pth, or .safetensors: no '
                    'pickle, recommended for sharing)')
    ap.add_argument('--format', choices=('pth', 'safetensors'),
                    help='output format (default: by the extension of dst)')
    safe_load.add_trust_argument(ap, 'src')
    ap.add_argument('--config', help='config whose model the result must fit')
    ap.add_argument('--kind', choices=sorted(CONVERTERS),
                    help='checkpoint family (default: detected)')
    ap.add_argument('--cfg-options', nargs='+', action=DictAction,
                    default={}, help='key=value overrides for the config')
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.trust_checkpoint:
        safe_load.trust(args.src)
    try:
        state = read_state_dict(args.src, 'official checkpoint')
    except safe_load.UntrustedCheckpointError as e:
        sys.exit(f'UntrustedCheckpointError: {e}')
    kind = args.kind or detect_kind(state)
    conv = CONVERTERS[kind]
    out, unmapped = convert_state(kind, state)
    print(f'[{kind}] converted {len(out)} tensors from {args.src}')
    if unmapped:
        print(f'  not mapped ({len(unmapped)}): {unmapped[:10]}')
    if args.config:
        from cast_mmaction.utils import build_model
        cfg = Config.fromfile(args.config)
        cfg.merge_from_dict(args.cfg_options)
        safe_load.trust_config(cfg)  # removes model trust_checkpoint fields
        _clear_pretrained(cfg.model)
        model = build_model(cfg.model)
        out, notes = conv.adapt(out, model)
        for n in notes:
            print('  ' + n)
        try:
            fit = check_fit(fit_report(model, out), f'the converted {kind} '
                            f'checkpoint', args.config, conv.fit_hint)
            if conv.check is not None:
                conv.check(out, model)
        except ValueError as e:  # CheckpointFitError or tied values differ
            sys.exit(str(e))
        print(f'  fits the model of {args.config}: all '
              f'{len(fit.loadable)} keys')
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    ckpt = {'state_dict': out,
            'meta': dict(converted_from=os.path.abspath(args.src), kind=kind,
                         config=args.config)}
    fmt = args.format or ('safetensors' if args.dst.endswith('.safetensors')
                          else 'pth')
    if fmt == 'safetensors':
        safe_load.save_safetensors(ckpt, args.dst)
    else:
        tmp = args.dst + '.tmp'
        torch.save(ckpt, tmp)
        os.replace(tmp, args.dst)
    print(f'wrote {args.dst}')


def _clear_pretrained(model_cfg):
    """Expert weights are not needed to check a full checkpoint."""
    experts = model_cfg.get('backbone', {}).get('experts', {})
    for e in experts.values():
        if 'pretrained' in e:
            e['pretrained'] = None


if __name__ == '__main__':
    main()
