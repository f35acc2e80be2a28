"""Check annotation files before a run starts, naming the file and line.

MMAction2's ``VideoDataset`` reads ``path label`` lines without checking
them: a label outside the model's classes crashes (or silently mis-trains)
hours into a run, a tab instead of a space turns ``a.mp4\\t3`` into an
*unlabelled* sample (label -1), a blank line becomes a sample whose path is
the data folder, a repeated line doubles a sample's weight, and
``../other/x.mp4`` or an absolute path silently reads data from outside the
dataset. :func:`check_dataset_annotations` finds all of these when the
dataset is built, i.e. before the first iteration, and raises
:class:`AnnotationError`::

    train_list.txt, line 7: label 174 is outside 0..173 (num_classes=174,
    model.cls_head.num_classes)

Each dataset class checks its own annotations: it defines
``verify_annotations(num_classes, num_classes_field)`` (returning the number
of checked samples) from the helpers of this module, and
:func:`check_dataset_annotations` calls it. Classes this package does not
own (MMAction2's ``VideoDataset``) have their check in
:data:`EXTERNAL_CHECKS` (:func:`register_annotation_check`); any other
dataset with an ``ann_file`` gets the data-root check of its built samples.

What is checked, per dataset type:

* ``VideoDataset`` lists (SSv2, K400, the demo) and the list files of the
  audio-visual datasets (``AudioVisualDataset``, ``KineticsSoundsDataset``,
  ``UCF101AudioDataset``, ``VGGSoundDataset`` given a list): the line layout,
  integer labels inside ``0..num_classes-1``, unlabelled lines (only allowed
  in test mode, and then on every line), repeated paths, paths that leave
  the data root;
* CSV datasets (``EpicKitchens100Dataset``, ``EpicSoundsDataset``, the
  official ``vggsound.csv``): their readers already check the layout and
  the labels with file+line errors; here repeated ids and paths outside the
  data root are added.

Every check can be run on its own (:func:`check_list_file`) and is used by
:class:`~cast_mmaction.datasets.robust.RobustDataset`.
"""
import csv
import os.path as osp

__all__ = ['AnnotationError', 'check_list_file', 'check_dataset_annotations',
           'outside_root', 'check_data_list', 'check_data_infos',
           'csv_id_lines', 'data_infos', 'duplicate_note', 'fail_at',
           'register_annotation_check', 'register_dataset_wrapper',
           'wrapped_datasets', 'EXTERNAL_CHECKS', 'WRAPPERS']


def duplicate_note(path, row, first, key, fields, what='video'):
    """The report of a source row (``tools/data/prepare_*.py``) that names
    the ``what`` of the earlier row ``first`` again (``key``: the file, or
    the stem of a missing one): it repeats that row when their ``fields``
    and ``'label'`` are equal; a different label is named, the first kept.
    Rows are dicts with ``'line'`` and ``'label'``."""
    same = all(row[k] == first[k] for k in (*fields, 'label'))
    note = (f'{path}, line {row["line"]} repeats line {first["line"]}'
            if same else f'{path}, line {row["line"]} names the {what} of '
            f'line {first["line"]} ({key}) again')
    if row['label'] != first['label']:
        note += (f' with another label ({row["label"]!r}; line '
                 f'{first["line"]}\'s {first["label"]!r} is kept)')
    return note


class AnnotationError(ValueError):
    """A bad annotation line; the message names the file and the line."""


def _inside(full, root):
    """True when the (already joined) path ``full`` lies inside ``root``,
    lexically."""
    full, base = osp.normpath(full), osp.normpath(root)
    if osp.isabs(full) != osp.isabs(base):
        full, base = osp.abspath(full), osp.abspath(base)
    return full == base or full.startswith(base.rstrip(osp.sep) + osp.sep)


def outside_root(path, root):
    """True when ``path`` (a list entry, joined to ``root`` as the dataset
    does) is not inside ``root``.

    Lexical: ``..`` components and absolute paths elsewhere count, symbolic
    links inside the root (a common way to mount data) do not. An empty
    root means "paths are relative to the working directory or absolute"
    and accepts everything."""
    if not root:
        return False
    return not _inside(osp.join(root, path), root)


def fail_at(path, line, msg):
    """Raise :class:`AnnotationError` naming ``path`` and ``line``."""
    raise AnnotationError(f'{path}, line {line}: {msg}')


_fail = fail_at


def _is_int(text):
    try:
        int(text)
        return True
    except (TypeError, ValueError):
        return False


def check_list_file(path,
                    root='',
                    num_classes=None,
                    test_mode=False,
                    delimiter=' ',
                    multi_class=False,
                    layout='video_dataset',
                    allow_duplicates=False,
                    num_classes_field='num_classes'):
    """Check an MMAction2 list file line by line.

    Args:
        path (str): the list file.
        root (str): the folder the dataset joins the paths to
            (``data_prefix['video']``); paths must stay inside it.
        num_classes (int, optional): labels must lie in
            ``0..num_classes-1`` (negative labels are always refused).
        test_mode (bool): unlabelled lines are allowed (all or none).
        delimiter (str): ``VideoDataset.delimiter`` (one space by default:
            MMAction2 splits on it exactly, so two spaces or a tab are
            errors, not formatting).
        multi_class (bool): ``path label label ...``.
        layout (str): ``'video_dataset'`` (split on ``delimiter``, as
            ``VideoDataset``) or ``'label_last'`` (the label is the last
            whitespace-separated field, paths may hold spaces, as the
            audio-visual datasets read it).
        allow_duplicates (bool): accept a path listed twice.
        num_classes_field (str): the config field named in range errors.

    Returns:
        int: the number of samples.

    Raises:
        FileNotFoundError: the list file does not exist.
        AnnotationError: naming the file, the line and what is wrong.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file {path} not found')
    seen = {}
    labelled_lines = unlabelled_lines = 0
    first_unlabelled = first_labelled = None
    count = 0
    with open(path, encoding='utf-8') as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip('\n\r')
            if layout == 'label_last':
                text = line.strip()
                if not text or text.startswith('#'):
                    continue  # the audio-visual readers skip these
                parts = text.rsplit(None, 1)
                if len(parts) == 2 and _is_int(parts[1]):
                    rel, labels = parts[0], [parts[1]]
                else:
                    rel, labels = text, []
            else:
                if not line.strip():
                    _fail(path, n, 'blank line; VideoDataset would read it '
                          'as a sample whose path is the data folder. '
                          'Delete the line.')
                fields = line.strip().split(delimiter)
                if '' in fields:
                    _fail(path, n, f'repeated delimiter {delimiter!r} '
                          f'(VideoDataset splits on each one); write '
                          f'"path{delimiter}label": {line[:200]!r}')
                rel, labels = fields[0], fields[1:]
                if len(fields) == 1 and any(c in rel for c in '\t,;'):
                    _fail(path, n, f'no label found: the line is not split '
                          f'by the delimiter {delimiter!r} (a tab or comma '
                          f'instead?): {line[:200]!r}')
                if len(labels) > 1 and not multi_class:
                    _fail(path, n, f'expected "path{delimiter}label", got '
                          f'{len(fields)} fields: {line[:200]!r} (a space in '
                          f'the path? a multi-label list needs '
                          f'multi_class=True)')
                bad = [x for x in labels if not _is_int(x)]
                if bad:
                    _fail(path, n, f'label {bad[0]!r} is not an integer: '
                          f'{line[:200]!r}')
            if labels:
                labelled_lines += 1
                first_labelled = first_labelled or n
                for x in labels:
                    value = int(x)
                    if value < 0 or (num_classes is not None
                                     and value >= num_classes):
                        rng = (f'0..{num_classes - 1} ({num_classes_field}='
                               f'{num_classes})' if num_classes is not None
                               else 'the class ids (>= 0)')
                        _fail(path, n, f'label {value} is outside {rng}')
            else:
                if not test_mode:
                    _fail(path, n, f'no label ("path{delimiter}label" '
                          f'expected): {line[:200]!r}; unlabelled lists '
                          f'are only for testing (test_mode=True)')
                unlabelled_lines += 1
                first_unlabelled = first_unlabelled or n
            if labelled_lines and unlabelled_lines:
                _fail(path, max(first_labelled, first_unlabelled),
                      f'some lines have a label and some do not (line '
                      f'{min(first_labelled, first_unlabelled)} differs)')
            if outside_root(rel, root):
                _fail(path, n, f'path {rel!r} is outside the data root '
                      f'{root!r} (data_prefix); list paths relative to it')
            key = osp.normpath(osp.join(root or '', rel))
            if key in seen and not allow_duplicates:
                _fail(path, n, f'{rel!r} repeats line {seen[key]} (a '
                      f'duplicate sample); remove one of the two lines')
            seen.setdefault(key, n)
            count += 1
    if count == 0:
        raise AnnotationError(f'{path}: no samples listed')
    return count


def csv_id_lines(path, column, encoding='utf-8-sig'):
    """{id: [line numbers]} of a CSV with a header naming ``column``."""
    out = {}
    with open(path, newline='', encoding=encoding) as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            return out
        for row in reader:
            value = (row.get(column) or '').strip()
            out.setdefault(value, []).append(reader.line_num)
    return out


def data_infos(dataset):
    """The data infos of a built dataset (its ``data_list`` may have been
    serialised away)."""
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def check_data_list(ds, data_list, path, lines, id_key=None,
                    roots=(('filename', 'video'), ('audio_path', 'audio'))):
    """Paths outside their data root and repeated ids of a built data list;
    ``lines[k]`` is the line of sample ``k`` (None when unknown)."""
    prefix = getattr(ds, 'data_prefix', None) or {}
    seen = {}
    for k, info in enumerate(data_list):
        where = lines[k] if lines and k < len(lines) else None

        def fail(msg, where=where, k=k):
            if where is None:
                raise AnnotationError(f'{path}, sample {k}: {msg}')
            _fail(path, where, msg)

        for key, root_key in roots:
            value = info.get(key)
            root = prefix.get(root_key) or ''
            if isinstance(value, str) and root and not _inside(value, root):
                fail(f'{key} {value!r} is outside the data root {root!r} '
                     f"(data_prefix['{root_key}']); check the paths / the "
                     f'path template')
        if id_key is not None and info.get(id_key) is not None:
            ident = info[id_key]
            if ident in seen:
                fail(f'{id_key} {ident!r} repeats sample {seen[ident]} (a '
                     f'duplicate sample); remove one of the two rows')
            seen[ident] = where if where is not None else k


def check_data_infos(dataset):
    """The check of a dataset that has no check of its own: the built
    samples' paths stay inside their data roots. Returns the sample count
    (0 without an ``ann_file``)."""
    if not (getattr(dataset, 'ann_file', None)
            and hasattr(dataset, 'get_data_info')):
        return 0
    data_list = data_infos(dataset)
    check_data_list(dataset, data_list, dataset.ann_file, None)
    return len(data_list)


def _check_video_dataset(dataset, num_classes, num_classes_field):
    """MMAction2's ``VideoDataset``: its list file, line by line (a subclass
    with its own reader gets the generic check)."""
    from mmaction.datasets import VideoDataset
    if type(dataset).load_data_list is not VideoDataset.load_data_list:
        return check_data_infos(dataset)
    prefix = getattr(dataset, 'data_prefix', None) or {}
    return check_list_file(
        dataset.ann_file, prefix.get('video') or '', num_classes,
        bool(getattr(dataset, 'test_mode', False)),
        getattr(dataset, 'delimiter', ' '),
        bool(getattr(dataset, 'multi_class', False)),
        num_classes_field=num_classes_field)


def _video_dataset_reads_file_only(dataset):
    from mmaction.datasets import VideoDataset
    return type(dataset).load_data_list is VideoDataset.load_data_list


_check_video_dataset.reads_file_only = _video_dataset_reads_file_only

# {class: check(dataset, num_classes, num_classes_field)} for dataset classes
# that cannot carry a ``verify_annotations`` method (not ours to edit)
EXTERNAL_CHECKS = {}


def register_annotation_check(cls, check):
    """Check datasets of ``cls`` (and its subclasses) with ``check``."""
    EXTERNAL_CHECKS[cls] = check
    return check


def _external_check(dataset):
    from mmaction.datasets import VideoDataset
    EXTERNAL_CHECKS.setdefault(VideoDataset, _check_video_dataset)
    for cls in type(dataset).__mro__:
        if cls in EXTERNAL_CHECKS:
            return EXTERNAL_CHECKS[cls]
    return None


# {class: fn(wrapper) -> the datasets it wraps} for wrapper classes that
# cannot carry a ``wrapped_datasets`` method (MMEngine's)
WRAPPERS = {}


def register_dataset_wrapper(cls, inner):
    """Check the datasets ``inner(wrapper)`` returns for wrappers of ``cls``
    (and its subclasses) instead of the wrapper itself."""
    WRAPPERS[cls] = inner
    return inner


def wrapped_datasets(dataset):
    """The datasets ``dataset`` wraps, or None when it is no wrapper: its
    own ``wrapped_datasets()`` (``RobustDataset`` declares one), else the
    :data:`WRAPPERS` entry of its class (MMEngine's ``RepeatDataset``,
    ``ClassBalancedDataset``, ``ConcatDataset``)."""
    from mmengine.dataset import (ClassBalancedDataset, ConcatDataset,
                                  RepeatDataset)
    for cls in (RepeatDataset, ClassBalancedDataset):
        WRAPPERS.setdefault(cls, lambda d: [d.dataset])
    WRAPPERS.setdefault(ConcatDataset, lambda d: list(d.datasets))
    method = getattr(type(dataset), 'wrapped_datasets', None)
    if callable(method):
        return list(method(dataset))
    for cls in type(dataset).__mro__:
        if cls in WRAPPERS:
            return list(WRAPPERS[cls](dataset))
    return None


def check_dataset_annotations(dataset, num_classes=None,
                              num_classes_field='model.cls_head.num_classes'):
    """Run the checks that fit ``dataset`` (a built MMAction2 dataset, or an
    MMEngine wrapper of one): its own ``verify_annotations``, else the
    :data:`EXTERNAL_CHECKS` entry of its class, else
    :func:`check_data_infos`. ``num_classes`` (e.g. the model head's) bounds
    the labels when the dataset itself does not know its class count.
    Wrappers (:func:`wrapped_datasets`) are checked through the datasets
    they wrap.

    Returns the number of checked samples (0 when nothing could be checked).
    """
    inner = wrapped_datasets(dataset)
    if inner is not None:  # a wrapper: check what it wraps
        return sum(
            check_dataset_annotations(d, num_classes, num_classes_field)
            for d in inner)
    own = getattr(dataset, 'num_classes', None)
    if own is not None:
        num_classes, num_classes_field = own, 'dataset num_classes'
    method = getattr(dataset, 'verify_annotations', None)
    check = None if callable(method) else _external_check(dataset)
    if check is not None and _reads_file_only(check, dataset):
        # the file before the dataset parses it (a dataset built with
        # lazy_init=True, as RobustDataset builds it): MMAction2's
        # VideoDataset parser meets a malformed line with a bare
        # 'too many values to unpack' / int() ValueError
        n = check(dataset, num_classes, num_classes_field)
        _full_init(dataset)
        return n
    _full_init(dataset)
    if callable(method):
        return method(num_classes, num_classes_field)
    if check is not None:
        return check(dataset, num_classes, num_classes_field)
    return check_data_infos(dataset)


def _full_init(dataset):
    if hasattr(dataset, 'full_init') and not getattr(
            dataset, '_fully_initialized', True):
        dataset.full_init()


def _reads_file_only(check, dataset):
    """Whether ``check`` reads the annotation file itself, not the samples
    the dataset parsed from it (so it can run first)."""
    test = getattr(check, 'reads_file_only', None)
    return bool(test and test(dataset))
