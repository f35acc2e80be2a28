"""Pins of what every recipe resolves to (model, data, schedule), so that a
reorganisation of ``configs/`` (``_base_`` files, shared blocks) cannot change
a recipe unnoticed. ``tests/config_pins.json`` holds, for each recipe under
``configs/`` and ``configs/ablations/``, the resolved value of each pinned
section (``Config.fromfile(p).to_dict()[section]``); identical values are
stored once, keyed by their digest.

Write the pins again after an intended change of a recipe (and review the
diff of ``tests/config_pins.json``)::

    PYTHONPATH=. python tests/_config_pins.py --write
"""
import glob
import hashlib
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs')
PINS = osp.join(ROOT, 'tests', 'config_pins.json')

# What a recipe builds and how it trains. ``model.backbone.links`` is left
# out: its form belongs to the link registry, pinned by the model tests.
SECTIONS = ('model', 'train_dataloader', 'val_dataloader', 'test_dataloader',
            'val_evaluator', 'test_evaluator', 'optim_wrapper',
            'param_scheduler', 'train_cfg', 'val_cfg', 'test_cfg',
            'auto_scale_lr', 'strategy', 'default_hooks', 'custom_hooks',
            'randomness', 'load_from')
UNPINNED = (('model', 'backbone', 'links'),)


def recipes():
    """Every recipe, as its path relative to ``configs/``."""
    paths = glob.glob(osp.join(CONFIGS, '*.py')) + glob.glob(
        osp.join(CONFIGS, 'ablations', '*.py'))
    return sorted(osp.relpath(p, CONFIGS) for p in paths)


def plain(obj):
    """The JSON form of a resolved value (tuples -> lists)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=repr))


def resolve(name):
    """{section: plain value} of one recipe; absent sections are None."""
    from mmengine.config import Config
    cfg = plain(Config.fromfile(osp.join(CONFIGS, name)).to_dict())
    for path in UNPINNED:
        node = cfg
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return {s: cfg.get(s) for s in SECTIONS}


def digest(value):
    text = json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_pins():
    with open(PINS) as f:
        pins = json.load(f)
    return {name: {s: pins['values'][d] for s, d in secs.items()}
            for name, secs in pins['recipes'].items()}


def differences(expected, got, path=''):
    """'path: expected -> got' for every leaf that differs."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(expected) | set(got)):
            sub = f'{path}.{key}' if path else key
            if key not in got:
                out.append(f'{sub}: {expected[key]!r} -> (missing)')
            elif key not in expected:
                out.append(f'{sub}: (absent) -> {got[key]!r}')
            else:
                out += differences(expected[key], got[key], sub)
        return out
    if (isinstance(expected, list) and isinstance(got, list)
            and len(expected) == len(got)):
        out = []
        for i, (e, g) in enumerate(zip(expected, got)):
            out += differences(e, g, f'{path}[{i}]')
        return out
    return [] if expected == got else [f'{path}: {expected!r} -> {got!r}']


def write():
    values, table = {}, {}
    for name in recipes():
        table[name] = {}
        for section, value in resolve(name).items():
            d = digest(value)
            values[d] = value
            table[name][section] = d
    with open(PINS, 'w') as f:
        json.dump(dict(recipes=table, values=values), f, indent=1,
                  sort_keys=True)
        f.write('\n')
    print(f'{PINS}: {len(table)} recipes, {len(values)} distinct values')


if __name__ == '__main__':
    if sys.argv[1:] != ['--write']:
        sys.exit(__doc__)
    write()
