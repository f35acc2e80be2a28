"""Command-line arguments the tools share: a tool that runs a trained model
over videos (``tools/infer.py``, ``tools/analysis_tools/extract_features.py``)
takes its inputs, model and loading options the same way."""
import os


def add_video_model_arguments(parser):
    """INPUT, ``--config``, ``--checkpoint`` (with ``--trust-checkpoint``),
    ``--data-root``, ``--device``, ``--batch-size``, ``--num-workers``,
    ``--one-view`` and ``--cfg-options``; returns ``parser``."""
    from mmengine.config import DictAction

    from cast_mmaction import safe_load
    parser.add_argument('input', help='video file, folder or list file')
    parser.add_argument('--config', required=True, help='model config')
    parser.add_argument(
        '--checkpoint', required=True,
        help='MMEngine checkpoint (tools/train.py output or '
        'tools/convert/convert_checkpoint.py output)')
    parser.add_argument(
        '--data-root', help='folder that relative paths of a list file '
        'start from (default: the list\'s folder)')
    parser.add_argument(
        '--device', help='cuda, cuda:1, cpu (default: cuda when available)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='videos per forward pass')
    parser.add_argument('--num-workers', type=int,
                        default=min(4, os.cpu_count() or 1),
                        help='decoding processes')
    parser.add_argument(
        '--one-view', action='store_true',
        help='one clip and a centre crop instead of the recipe\'s test '
        'views (faster, slightly less accurate)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    safe_load.add_trust_argument(parser, '--checkpoint')
    return parser
