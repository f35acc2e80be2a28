"""Where a tool lives: ``tools/NAME.py`` for the entry points (train, test,
infer, ...), ``tools/<group>/NAME.py`` for the grouped ones (data, convert,
analysis_tools, benchmark). Tests name a tool by its file name only."""
import glob
import importlib.util
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


def load_tool(name):
    """``tools/.../NAME.py`` imported as a module (its ``main`` and helpers
    called in the test's process)."""
    spec = importlib.util.spec_from_file_location(f'_tool_{name}',
                                                  tool_path(name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
