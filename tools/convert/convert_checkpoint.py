#!/usr/bin/env python
"""Convert an official released checkpoint into one ``tools/test.py`` loads.

    python tools/convert/convert_checkpoint.py SRC.pth DST.pth --config configs/cast_ssv2.py

SRC is the authors' file (CAST: a DeepSpeed dump ``{'module': state_dict}``;
``{'model': ...}`` and plain state dicts work too). A release that holds
the trained parameters only (ST-Adapter: adapters and ``fc``) needs the
frozen tower it was trained on, OpenAI's CLIP file:

    python tools/convert/convert_checkpoint.py st_adapter_k400.pth DST.pth \\
        --tower checkpoints/ViT-B-16.pt --config configs/st_adapter_k400.py

With ``--config`` the result is checked against the model the config builds
(every key present, shapes equal, position tables resized for other input
sizes) and the tool fails with the offending keys otherwise. The output is an
MMEngine checkpoint ``{'state_dict': ..., 'meta': ...}``; a checkpoint of this
package (tools/train.py's, or this tool's output) needs no conversion and is
used as it is.

Expert weights (``--expert clip|videomae|ast``): SRC is anything the
expert's ``pretrained`` field accepts (the authors' / OpenAI / open_clip
files, a ``transformers`` folder or its weight file, ``hf:ORG/NAME`` from the
local Hugging Face cache, timm CLIP towers, MMAction2 VisionTransformer
checkpoints; docs/weights.md). The tool recognises the layout, maps it into
the expert's names and writes them (``{'state_dict': ..., 'meta': ...}``),
a file the expert's ``pretrained`` field loads as it is. With ``--config`` it first
loads SRC into that expert of the config's model (the same checks as
training: patch / width / grid, every tensor's shape) and reports what
was loaded, missing or ignored:

    python tools/convert/convert_checkpoint.py hf:MCG-NJU/videomae-base vmae.safetensors --expert videomae --config configs/cast_k400.py
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

import cast_mmaction  # noqa: E402,F401
from cast_mmaction.checkpoints import (CONVERTERS, check_fit,  # noqa: E402
                                       convert_state, detect_kind,
                                       fit_report, with_tower)
from cast_mmaction.checkpoints.common import (  # noqa: E402
    check_output, read_state_dict)
from cast_mmaction.checkpoints.expert_formats import (  # noqa: E402
    Source, file_kind, read_source)
from cast_mmaction import safe_load  # noqa: E402  (docs/security.md)
from cast_mmaction.progress import Stages, add_quiet_argument  # noqa: E402
from cast_mmaction.checkpoints.ast import load_ast_expert, read_ast  # noqa
from cast_mmaction.checkpoints.clip import (load_clip_expert,  # noqa: E402
                                            read_clip_visual)
from cast_mmaction.checkpoints.videomae import (  # noqa: E402
    load_videomae_expert, read_videomae)

#: --expert: (expert class in configs, reader, loader)
EXPERTS = {
    'clip': ('CLIPViTExpert', read_clip_visual, load_clip_expert),
    'videomae': ('VideoMAEExpert', read_videomae, load_videomae_expert),
    'ast': ('ASTExpert', read_ast,
            lambda e, src: load_ast_expert(e, src, e.pretrained_grid)),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('src', help='official checkpoint file (with --expert: '
                    'expert weights: a file, a transformers folder or '
                    'hf:ORG/NAME)')
    ap.add_argument('dst', help='output file (.pth, or .safetensors: no '
                    'pickle, recommended for sharing)')
    ap.add_argument('--format', choices=('pth', 'safetensors'),
                    help='output format; must agree with the extension of '
                    'dst, by which every reader picks the format (default: '
                    'by the extension)')
    safe_load.add_trust_argument(ap, 'src')
    ap.add_argument('--config', help='config whose model the result must fit')
    ap.add_argument('--tower', metavar='FILE',
                    help='the frozen tower of a release that holds trained '
                    'parameters only (ST-Adapter: OpenAI CLIP ViT-B-16.pt)')
    ap.add_argument('--kind', choices=sorted(CONVERTERS),
                    help='checkpoint family (default: detected)')
    ap.add_argument('--expert', choices=sorted(EXPERTS),
                    help='SRC holds weights of this pretrained expert (not an '
                    'official full model): convert them into the expert\'s '
                    'names (docs/weights.md)')
    ap.add_argument('--cfg-options', nargs='+', action=DictAction,
                    default={}, help='key=value overrides for the config')
    add_quiet_argument(ap)
    args = ap.parse_args(argv)
    if args.config and not os.path.isfile(args.config):
        ap.error(f'--config {args.config}: no such file')
    if args.format and (args.format == 'safetensors') != \
            args.dst.endswith('.safetensors'):
        ap.error(f'--format {args.format} with dst {args.dst}: the readers '
                 f'pick the format by the extension, so name dst '
                 f'*.{"safetensors" if args.format == "safetensors" else "pth"}')
    return args


def _not_found(option, value, error):
    """The message for a FileNotFoundError reading ``value`` (given as
    ``option``): when ``value`` itself does not exist, name the option (the
    readers name the config field an expert's weights come from, which
    is not what this command was given); else the reader's words."""
    if value and ':' not in value and not os.path.exists(
            os.path.expanduser(value)):
        return f'FileNotFoundError: {option} {value}: no such file or folder'
    return f'{type(error).__name__}: {error}'


def main(argv=None):
    args = parse_args(argv)
    try:  # before SRC is read and converted
        check_output(args.dst)
    except ValueError as e:
        sys.exit(f'ValueError: {e}')
    if args.trust_checkpoint:
        safe_load.trust(args.src)
    checks = ['build model', 'check fit'] if args.config else []
    if args.expert:
        checks = ['build expert, load'] if args.config else []
    with Stages(['read'] + ([] if args.expert else ['convert']) + checks +
                ['write'], f'convert {os.path.basename(args.src)}',
                args.quiet) as stage:
        if args.expert:
            return convert_expert(args, stage)
        return _convert_full(args, stage)


def _convert_full(args, stage):
    stage('read')
    try:
        if args.src.startswith('hf:') or os.path.isdir(args.src):
            _not_a_full_model(args.src, read_source(args.src, 'checkpoint',
                                                    'SRC'))
        state = read_state_dict(args.src, 'official checkpoint')
    except safe_load.UntrustedCheckpointError as e:
        sys.exit(f'UntrustedCheckpointError: {e}')
    except (ValueError, FileNotFoundError) as e:  # missing, not a checkpoint
        sys.exit(f'{type(e).__name__}: {e}')
    try:
        kind = args.kind or detect_kind(state)
    except ValueError as e:
        _not_a_full_model(args.src, Source(state), e)
        sys.exit(f'{type(e).__name__}: {e}')
    conv = CONVERTERS[kind]
    stage('convert')
    try:
        state = with_tower(kind, state, args.tower)
    except safe_load.UntrustedCheckpointError as e:
        sys.exit(f'UntrustedCheckpointError: {e}')
    except FileNotFoundError as e:
        sys.exit(_not_found('--tower', args.tower, e))
    except ValueError as e:
        sys.exit(f'{type(e).__name__}: {e}')
    try:
        out, unmapped = convert_state(kind, state)
    except ValueError as e:  # --kind names another family than SRC's
        sys.exit(f'{type(e).__name__}: {e}')
    print(f'[{kind}] converted {len(out)} tensors from {args.src}')
    if unmapped:
        print(f'  not mapped ({len(unmapped)}): {unmapped[:10]}')
    if args.config:
        stage('build model')
        from cast_mmaction.utils import build_model
        cfg = Config.fromfile(args.config)
        cfg.merge_from_dict(args.cfg_options)
        safe_load.trust_config(cfg)  # removes model trust_checkpoint fields
        _clear_pretrained(cfg.model)
        model = build_model(cfg.model)
        stage('check fit')
        out, notes = conv.adapt(out, model)
        for n in notes:
            print('  ' + n)
        fit = fit_report(model, out)
        # SRC's keys no row of the table maps are lost in the output: as
        # load_official(strict=True), they count as unexpected
        fit.unexpected += [f'{k} (in SRC, not mapped)' for k in unmapped]
        try:
            fit = check_fit(fit, f'the converted {kind} '
                            f'checkpoint', args.config, conv.fit_hint)
            if conv.check is not None:
                conv.check(out, model)
        except ValueError as e:  # CheckpointFitError or tied values differ
            sys.exit(str(e))
        print(f'  fits the model of {args.config}: all '
              f'{len(fit.loadable)} keys')
    stage('write')
    _write(args, {'state_dict': out,
                  'meta': dict(converted_from=os.path.abspath(args.src),
                               tower=args.tower and os.path.abspath(
                                   args.tower),
                               kind=kind, config=args.config)})


def _not_a_full_model(src, source, error=None):
    """Exit naming the --expert flag when ``source`` holds expert weights
    (a transformers folder, an hf: reference, a tower's state dict)."""
    kind = file_kind(source.state, source.config)
    if kind is not None and kind.expert is not None:
        sys.exit(f'{error or ""}\n{src} is {kind.label}: expert weights, not '
                 f'a full model. Pass --expert {kind.expert}'.strip())
    if error is None:
        sys.exit(f'{src} is a folder / hf: reference without the weights of '
                 f'a full model: pass a checkpoint file')


def _write(args, ckpt):
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    fmt = args.format or ('safetensors' if args.dst.endswith('.safetensors')
                          else 'pth')
    if fmt == 'safetensors':
        safe_load.save_safetensors(ckpt, args.dst)
    else:
        tmp = args.dst + '.tmp'
        torch.save(ckpt, tmp)
        os.replace(tmp, args.dst)
    print(f'wrote {args.dst}')


def _source(src):
    return src if src.startswith('hf:') else os.path.abspath(src)


def convert_expert(args, stage):
    """``--expert``: SRC's tower in the expert's names (a file its
    ``pretrained`` field loads); with ``--config``, loaded into that expert
    of the config's model first."""
    expert_type, read, load = EXPERTS[args.expert]
    stage('read')
    try:
        state = read(args.src)
    except safe_load.UntrustedCheckpointError as e:
        sys.exit(f'UntrustedCheckpointError: {e}')
    except FileNotFoundError as e:
        sys.exit(_not_found('SRC', args.src, e))
    except ValueError as e:
        sys.exit(f'{type(e).__name__}: {e}')
    print(f'[{args.expert} expert] {len(state)} tensors from {args.src}')
    if args.config:
        stage('build expert, load')
        from mmaction.registry import MODELS
        cfg = Config.fromfile(args.config)
        cfg.merge_from_dict(args.cfg_options)
        safe_load.trust_config(cfg)
        backbone = cfg.model.get('backbone', {})
        experts = {f'experts.{n}': e
                   for n, e in backbone.get('experts', {}).items()}
        if isinstance(backbone.get('expert'), dict):  # single-expert backbones
            experts['expert'] = backbone['expert']
        names = [n for n, e in experts.items() if e.get('type') == expert_type]
        if not names:
            sys.exit(f'{args.config} has no {expert_type} under '
                     f'model.backbone.experts or model.backbone.expert (it has '
                     f'{ {n: e.get("type") for n, e in experts.items()} })')
        from cast_mmaction.models.backbones.cast import _accepts
        ecfg = dict(experts[names[0]], pretrained=None)
        for key in ('num_frames', 'img_size'):  # as CASTBackbone passes them
            if key in cfg.model.backbone and _accepts(ecfg['type'], key):
                ecfg.setdefault(key, cfg.model.backbone[key])
        expert = MODELS.build(ecfg)
        try:
            missing, unexpected = load(expert, args.src)
        except ValueError as e:  # wrong size / layout: the loader's words
            sys.exit(f'{type(e).__name__}: {e}')
        print(f'  loads into model.backbone.{names[0]} of '
              f'{args.config}: missing {missing or "none"} (trained or '
              f'left at their initial values), unexpected '
              f'{unexpected or "none"}')
    stage('write')
    _write(args, {'state_dict': state,
                  'meta': dict(converted_from=_source(args.src),
                               kind=f'{args.expert} expert',
                               config=args.config)})


def _clear_pretrained(model_cfg):
    """Expert weights are not needed to check a full checkpoint."""
    bb = model_cfg.get('backbone', {})
    experts = list(bb.get('experts', {}).values())
    if isinstance(bb.get('expert'), dict):  # single-expert backbones
        experts.append(bb['expert'])
    for e in experts:
        if 'pretrained' in e:
            e['pretrained'] = None


if __name__ == '__main__':
    main()
