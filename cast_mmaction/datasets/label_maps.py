"""Class names at run time, read from the files users already hold.

A *label map* turns class indices into names. It is read from:

========================  ====================================================
file                      format
========================  ====================================================
SSv2 labels JSON          ``something-something-v2-labels.json``:
                          ``{"Approaching something with your camera": "0",
                          ...}`` (name -> index, index as string or int); a
                          JSON list of names or ``{"0": "name"}`` works too
EK100 class CSVs          ``EPIC_100_verb_classes.csv`` /
                          ``EPIC_100_noun_classes.csv``: header
                          ``id,key,instances,category``; the name is ``key``
VGGSound CSV              ``vggsound.csv`` (no header:
                          ``youtube_id,start_seconds,label,split``); classes
                          are the sorted distinct labels (the usual index
                          order); or a ``index,mid,display_name`` class CSV
EPIC-SOUNDS CSV           ``EPIC_Sounds_train.csv``: the ``class`` of each
                          ``class_id``
plain text                one name per line, line ``i`` = class ``i`` (the
                          MMAction2 label maps, e.g. ``label_map_k400.txt``);
                          lines ``<index> <name>`` / ``<index>,<name>`` are
                          read by index when every line has one (0-based, or
                          1-based as UCF-101's ``classInd.txt``; a missing or
                          repeated index is an error)
``mmaction:<file>``       a label map shipped with MMAction2 (``.mim/tools/
                          data/*/<file>`` of the installed package, or
                          ``tools/data/*/<file>`` of a source checkout)
========================  ====================================================

A config names its label map(s) with the top-level field ``label_map``: a
path (single-label models) or a dict of paths keyed by output (``verb`` /
``noun`` for EPIC-KITCHENS-100 models)::

    label_map = 'data/sthv2/something-something-v2-labels.json'
    label_map = dict(verb='data/epic-kitchens-100/EPIC_100_verb_classes.csv',
                     noun='data/epic-kitchens-100/EPIC_100_noun_classes.csv')

Every reader checks its input and raises :class:`LabelMapError` naming the
file, the line and what is wrong (duplicate names, missing indices, ...).
"""
import csv
import glob
import json
import os
import os.path as osp
import re

__all__ = [
    'LabelMapError', 'LabelMapNotFound', 'load_label_map', 'load_label_maps',
    'parse_label_map_arg', 'find_mmaction_label_map', 'check_num_classes', 'read_ssv2_labels',
    'read_epic_classes', 'read_epic_sounds_classes', 'read_vggsound_classes',
    'read_text_label_map'
]


class LabelMapError(ValueError):
    """A label map that cannot be read (names the file and the problem)."""


class LabelMapNotFound(LabelMapError):
    """The label map's file is not there (a config's default path on a
    machine without the dataset: the tools show indices instead)."""


# ----------------------------------------------------------------------------
# readers
# ----------------------------------------------------------------------------
def _from_index_dict(path, mapping):
    """{index: name} -> list, checking the indices are 0..N-1."""
    if not mapping:
        raise LabelMapError(f'{path}: no classes')
    n = len(mapping)
    missing = sorted(set(range(n)) - set(mapping))
    if missing:
        extra = sorted(set(mapping) - set(range(n)))
        raise LabelMapError(
            f'{path}: class indices must be 0..{n - 1} without gaps; missing '
            f'{missing[:10]}, out of range {extra[:10]}')
    names = [mapping[i] for i in range(n)]
    _check_unique(path, names)
    return names


def _check_unique(path, names):
    seen = {}
    for i, name in enumerate(names):
        if not name:
            raise LabelMapError(f'{path}: class {i} has an empty name')
        if name in seen:
            raise LabelMapError(f'{path}: class name {name!r} appears twice '
                                f'(classes {seen[name]} and {i})')
        seen[name] = i


def _as_index(path, value, what):
    try:
        idx = int(str(value).strip())
    except ValueError:
        raise LabelMapError(f'{path}: {what}: index {value!r} is not an '
                            f'integer') from None
    if idx < 0:
        raise LabelMapError(f'{path}: {what}: negative index {idx}')
    return idx


def read_ssv2_labels(path):
    """SSv2 ``something-something-v2-labels.json`` (``{name: "idx"}``), or a
    JSON list of names, or ``{"idx": name}``. Returns the list of names."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise LabelMapError(f'{path}: not valid JSON ({e})') from None
    if isinstance(data, list):
        if not all(isinstance(x, str) for x in data):
            raise LabelMapError(f'{path}: a JSON label map list must hold '
                                f'class names (strings)')
        names = [x.strip() for x in data]
        _check_unique(path, names)
        return names
    if not isinstance(data, dict):
        raise LabelMapError(f'{path}: expected a JSON object '
                            f'{{"class name": "index"}} (the SSv2 labels '
                            f'file) or a list of names, got '
                            f'{type(data).__name__}')
    if not data:
        raise LabelMapError(f'{path}: no classes')
    keys_are_idx = all(re.fullmatch(r'\d+', str(k).strip()) for k in data)
    vals_are_idx = all(
        isinstance(v, int) or re.fullmatch(r'\d+', str(v).strip())
        for v in data.values())
    mapping = {}
    if vals_are_idx and not keys_are_idx:  # SSv2: name -> index
        for name, idx in data.items():
            i = _as_index(path, idx, f'class {name!r}')
            if i in mapping:
                raise LabelMapError(f'{path}: index {i} is given to both '
                                    f'{mapping[i]!r} and {name!r}')
            mapping[i] = str(name).strip()
    elif keys_are_idx and not vals_are_idx:  # index -> name
        for idx, name in data.items():
            mapping[_as_index(path, idx, f'key {idx!r}')] = str(name).strip()
    else:
        raise LabelMapError(
            f'{path}: cannot tell names from indices; expected '
            f'{{"class name": "index"}} (SSv2 labels JSON) or '
            f'{{"index": "class name"}}')
    return _from_index_dict(path, mapping)


def _read_csv_rows(path):
    with open(path, newline='', encoding='utf-8-sig') as f:
        rows = [(i + 1, [x.strip() for x in r]) for i, r in
                enumerate(csv.reader(f))]
    return [(i, r) for i, r in rows if r and any(r)]


def read_epic_classes(path):
    """``EPIC_100_verb_classes.csv`` / ``EPIC_100_noun_classes.csv`` (header
    ``id,key,...``): names are the ``key`` column, indexed by ``id``."""
    rows = _read_csv_rows(path)
    if not rows:
        raise LabelMapError(f'{path}: empty file')
    header = [x.lower() for x in rows[0][1]]
    if 'id' not in header or 'key' not in header:
        raise LabelMapError(f'{path}: expected the EPIC-KITCHENS-100 class '
                            f'header "id,key,instances,category", got '
                            f'{",".join(rows[0][1])!r}')
    ci, ck = header.index('id'), header.index('key')
    mapping = {}
    for line, r in rows[1:]:
        if len(r) <= max(ci, ck):
            raise LabelMapError(f'{path}, line {line}: expected at least '
                                f'{max(ci, ck) + 1} fields, got {len(r)}')
        i = _as_index(path, r[ci], f'line {line}')
        if i in mapping:
            raise LabelMapError(f'{path}, line {line}: id {i} repeats')
        mapping[i] = r[ck]
    return _from_index_dict(path, mapping)


def _read_index_name_csv(path, rows):
    header = [x.lower() for x in rows[0][1]]
    ci = header.index('index')
    cn = next(header.index(c) for c in ('display_name', 'name', 'label')
              if c in header)
    mapping = {}
    for line, r in rows[1:]:
        if len(r) <= max(ci, cn):
            raise LabelMapError(f'{path}, line {line}: too few fields')
        i = _as_index(path, r[ci], f'line {line}')
        if i in mapping:
            raise LabelMapError(f'{path}, line {line}: index {i} repeats')
        mapping[i] = r[cn]
    return _from_index_dict(path, mapping)


def read_vggsound_classes(path):
    """VGGSound ``vggsound.csv`` (``youtube_id,start_seconds,label,split``,
    no header): the sorted distinct labels. A class CSV with a header
    ``index,...,display_name`` (or ``name`` / ``label``) is read by index."""
    rows = _read_csv_rows(path)
    if not rows:
        raise LabelMapError(f'{path}: empty file')
    header = [x.lower() for x in rows[0][1]]
    if 'index' in header and {'display_name', 'name', 'label'} & set(header):
        return _read_index_name_csv(path, rows)
    labels = set()
    for line, r in rows:
        if len(r) != 4:
            raise LabelMapError(
                f'{path}, line {line}: a VGGSound CSV has 4 fields '
                f'"youtube_id,start_seconds,label,split", got {len(r)}')
        if not r[2]:
            raise LabelMapError(f'{path}, line {line}: empty label')
        labels.add(r[2])
    return sorted(labels)


def read_epic_sounds_classes(path):
    """EPIC-SOUNDS annotation CSV (``..., class, class_id``): the class name
    of every ``class_id`` (each id must always carry the same name)."""
    rows = _read_csv_rows(path)
    if not rows:
        raise LabelMapError(f'{path}: empty file')
    header = [x.lower() for x in rows[0][1]]
    if 'class' not in header or 'class_id' not in header:
        raise LabelMapError(f'{path}: expected "class" and "class_id" '
                            f'columns (an EPIC-SOUNDS annotation CSV)')
    cn, ci = header.index('class'), header.index('class_id')
    mapping = {}
    for line, r in rows[1:]:
        if len(r) <= max(cn, ci):
            raise LabelMapError(f'{path}, line {line}: too few fields')
        i = _as_index(path, r[ci], f'line {line}')
        if mapping.setdefault(i, r[cn]) != r[cn]:
            raise LabelMapError(f'{path}, line {line}: class_id {i} is '
                                f'{r[cn]!r} here but {mapping[i]!r} before')
    return _from_index_dict(path, mapping)


def read_text_label_map(path):
    """One class name per line (line i = class i). Lines ``<i> <name>`` or
    ``<i>,<name>`` are read by index when every line has one; the indices
    must then run 0..N-1 (or 1..N) without gaps or repeats."""
    with open(path, encoding='utf-8-sig') as f:
        lines = [ln.rstrip('\r\n') for ln in f]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise LabelMapError(f'{path}: empty label map')
    for i, ln in enumerate(lines):
        if not ln.strip():
            raise LabelMapError(
                f'{path}, line {i + 1}: blank line inside the label map '
                f'(line i must be the name of class i-1)')
    indexed = [re.fullmatch(r'\s*(\d+)\s*[,\s:]\s*(\S.*?)\s*', ln)
               for ln in lines]
    if all(indexed) and len(lines) > 1:
        # every line is "<index> <name>": 0-based, or 1-based as UCF-101's
        # classInd.txt; a gap or a repeat is an error, as in a JSON map
        first = 1 if min(int(m.group(1)) for m in indexed) == 1 else 0
        mapping, line_of = {}, {}
        for n, m in enumerate(indexed, 1):
            i = int(m.group(1))
            if i in line_of:
                raise LabelMapError(
                    f'{path}, line {n}: index {i} repeats (line '
                    f'{line_of[i]}); every line starts with a class index, '
                    f'so each index must appear once')
            line_of[i] = n
            mapping[i - first] = m.group(2)
        missing = sorted(set(range(first, max(line_of) + 1)) - set(line_of))
        if missing:
            shown = ', '.join(map(str, missing[:10]))
            raise LabelMapError(
                f'{path}: every line starts with a class index, but index '
                f'{shown}{" ..." if len(missing) > 10 else ""} is missing '
                f'(indices must run {first}..{first + len(lines) - 1} '
                f'without gaps)')
        return _from_index_dict(path, mapping)
    names = [ln.strip() for ln in lines]
    _check_unique(path, names)
    return names


# ----------------------------------------------------------------------------
# MMAction2's own label maps
# ----------------------------------------------------------------------------
def find_mmaction_label_map(name):
    """Path of a label map shipped with MMAction2 (``name`` like
    ``label_map_k400.txt``), or None when the installation has none (the
    1.2.0 wheel ships none; source checkouts have ``tools/data/*/``)."""
    try:
        import mmaction
    except ImportError:  # pragma: no cover - mmaction is a dependency
        return None
    pkg = osp.dirname(mmaction.__file__)
    patterns = [
        osp.join(pkg, '.mim', 'tools', 'data', '*', name),
        osp.join(osp.dirname(pkg), 'tools', 'data', '*', name),
    ]
    for pattern in patterns:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


# ----------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------
def load_label_map(path):
    """Read one label map file (format chosen from the name and content).

    Returns:
        list[str]: ``names[i]`` is the name of class ``i``.
    """
    path = str(path)
    if path.startswith('mmaction:'):
        name = path[len('mmaction:'):]
        found = find_mmaction_label_map(name)
        if found is None:
            raise LabelMapNotFound(
                f'{path}: the installed MMAction2 ships no {name} (the '
                f'1.2.0 wheel has no label maps). Use a plain text file with '
                f'one class name per line instead, e.g. the one '
                f'tools/data/prepare_k400.py writes next to the list files, or '
                f'tools/data/kinetics/{name} of an MMAction2 source checkout')
        path = found
    if not osp.isfile(path):
        raise LabelMapNotFound(f'label map {path} not found (set the '
                               f'config\'s label_map field or pass '
                               f'--label-map)')
    base = osp.basename(path).lower()
    ext = osp.splitext(base)[1]
    try:
        if ext == '.json':
            return read_ssv2_labels(path)
        if ext == '.csv':
            with open(path, newline='', encoding='utf-8-sig') as f:
                first = f.readline().strip().lower()
            # csv's own split: a quoted label may hold commas
            fields = [x.strip() for x in next(csv.reader([first]), [])]
            if 'id' in fields and 'key' in fields:
                return read_epic_classes(path)
            if 'class' in fields and 'class_id' in fields:
                return read_epic_sounds_classes(path)
            if len(fields) == 4 or 'index' in fields:
                return read_vggsound_classes(path)
            raise LabelMapError(
                f'{path}: unknown CSV label map; expected an EPIC-KITCHENS-'
                f'100 class CSV (id,key,...), a VGGSound CSV (youtube_id,'
                f'start_seconds,label,split) or index,display_name; got the '
                f'header {first[:120]!r}')
        return read_text_label_map(path)
    except UnicodeDecodeError:
        raise LabelMapError(f'{path}: not a text file') from None


def parse_label_map_arg(values):
    """Command-line ``--label-map`` values -> a config-style spec: ``['f']``
    -> ``'f'``; ``['verb=a.csv', 'noun=b.csv']`` -> ``{'verb': 'a.csv',
    'noun': 'b.csv'}``."""
    if not values:
        return None
    keyed, plain = {}, []
    for v in values:
        m = re.fullmatch(r'([A-Za-z_]\w*)=(.+)', v)
        if m and not osp.exists(v):
            keyed[m.group(1)] = m.group(2)
        else:
            plain.append(v)
    if plain and keyed or len(plain) > 1:
        raise LabelMapError(
            f'--label-map takes one file, or KEY=FILE pairs (e.g. '
            f'verb=EPIC_100_verb_classes.csv noun=EPIC_100_noun_classes.csv)'
            f'; got {values}')
    return plain[0] if plain else keyed


def load_label_maps(spec):
    """A config's ``label_map`` value -> ``{output: names}``.

    ``spec`` is None (no names), a path (-> ``{'label': names}``) or a dict
    ``{output: path}`` (EPIC: ``verb`` / ``noun``).
    """
    if spec is None or spec == '' or spec == {}:
        return {}
    if isinstance(spec, (str, os.PathLike)):
        return {'label': load_label_map(spec)}
    if isinstance(spec, dict):
        return {str(k): load_label_map(v) for k, v in spec.items()}
    raise LabelMapError(f'label_map must be a path or a dict of paths, got '
                        f'{type(spec).__name__}: {spec!r}')


def check_num_classes(names, num_classes, what='label map', source=None):
    """Raise when a label map does not have exactly ``num_classes`` names."""
    if names is not None and len(names) != num_classes:
        src = f' ({source})' if source else ''
        raise LabelMapError(
            f'the {what}{src} has {len(names)} class names but the model '
            f'predicts {num_classes} classes; pass the matching file with '
            f'--label-map or fix the config\'s label_map')
