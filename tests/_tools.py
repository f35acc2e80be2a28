"""Where a tool lives: ``tools/NAME.py`` for the entry points (train, test,
infer, ...), ``tools/<group>/NAME.py`` for the grouped ones (data, convert,
analysis_tools, benchmark). Tests name a tool by its file name only."""
import glob
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def tool_path(name):
    """The path of ``NAME.py`` under ``tools/`` (one level of groups)."""
    hits = glob.glob(osp.join(ROOT, 'tools', f'{name}.py')) + glob.glob(
        osp.join(ROOT, 'tools', '*', f'{name}.py'))
    if len(hits) != 1:
        raise FileNotFoundError(
            f'tools/: {len(hits)} files named {name}.py: {hits}')
    return hits[0]
