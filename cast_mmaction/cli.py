"""Command-line arguments the tools share: a tool that runs a trained model
over videos (``tools/infer.py``, ``tools/analysis_tools/extract_features.py``)
takes its inputs, model and loading options the same way."""
import os


def add_video_model_arguments(parser, quiet_help='no progress bar on stderr'):
    """INPUT, ``--config``, ``--checkpoint`` (with ``--trust-checkpoint``),
    ``--data-root``, ``--device``, ``--batch-size``, ``--num-workers``,
    ``--one-view``, ``--cfg-options`` and ``--quiet`` (the tool adds what
    else it hides); returns ``parser``."""
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
    parser.add_argument('--quiet', action='store_true', help=quiet_help)
    return parser


def check_writable(path, what, folder=False):
    """``None``, or why ``path`` (a file, or with ``folder`` a folder to
    write files in; ``what``: the option naming it) cannot be written,
    checked before any video is run (the folders are created): a file where
    a folder must be, a folder where the file must be, no write permission."""
    import os.path as osp
    where = osp.abspath(path) if folder else osp.dirname(osp.abspath(path))
    try:
        os.makedirs(where, exist_ok=True)
    except OSError as e:
        return (f'{what} {path}: cannot create the folder {where} '
                f'({e.strerror}: {e.filename or where})')
    if not folder and osp.isdir(path):
        return f'{what} {path}: is a folder'
    if not os.access(where, os.W_OK):
        return f'{what} {path}: the folder {where} is not writable'
    return None


def mmengine_logs_to_stderr():
    """Send MMEngine's log lines to stderr: its logger writes to stdout
    (e.g. MMAction2's ``DecordInit`` makes a ``FileClient``, whose
    deprecation warnings it logs), where ``tools/infer.py`` writes its
    results. Call it before any MMEngine logging; worker processes forked
    later inherit it."""
    import logging
    import sys
    from mmengine.logging import MMLogger
    for handler in MMLogger.get_current_instance().handlers:
        if isinstance(handler, logging.StreamHandler) and \
                handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
