"""An earlier models/onednn_attention.py beside the current one, for the
alternations of attention_kernels.py and alternate_attention.py
(``OLD_ATTENTION=FILE``, e.g. from
``git show COMMIT:cast_mmaction/models/onednn_attention.py > FILE``)."""
import os


def old_onednn_sdpa():
    """``(FILE, onednn_sdpa of FILE)`` when ``OLD_ATTENTION`` names a file,
    else ``None``; the file's operators are registered under the namespace
    ``old_attention`` so that they do not replace the current ones."""
    path = os.environ.get('OLD_ATTENTION')
    if not path:
        return None
    with open(path) as f:
        src = f.read().replace("'cast_mmaction::", "'old_attention::")
    ns = {}
    exec(compile(src, path, 'exec'), ns)
    return path, ns['onednn_sdpa']
