"""Checkpoint files that survive a kill at any moment (used by
:class:`~cast_mmaction.engine.hooks.AtomicCheckpointHook`).

* :func:`atomic_write`: a reader (or a resumed run) sees either the old
  file or the complete new one, never a truncated one;
* :class:`AtomicLocalBackend`: MMEngine's local file backend with atomic
  ``put`` / ``put_text``, registered as the file backend ``'atomic_local'``
  (``backend_args=dict(backend='atomic_local')``);
* :func:`resolve_last_checkpoint`: what ``--resume`` (without a file)
  should resume from when ``last_checkpoint`` is empty or names a file that
  is gone, and the clean-up of files left by interrupted writes.
"""
import json
import os
import os.path as osp
import re
import shutil
import tempfile

from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log

__all__ = ['PARTIAL_MARK', 'ATOMIC_BACKEND', 'atomic_write', 'fsync_file',
           'AtomicLocalBackend', 'complete_checkpoints',
           'resolve_last_checkpoint', 'MARKER', 'FORMAT',
           'IncompleteCheckpointError', 'verify', 'is_complete']

#: temporary files of interrupted writes: ``.<name>.partial-<pid>-<rand>``
PARTIAL_MARK = '.partial-'
#: the name :class:`AtomicLocalBackend` is registered under
ATOMIC_BACKEND = 'atomic_local'


def fsync_file(f):
    """``os.fsync`` of an open file (a function, so that tests can simulate a
    kill at this point)."""
    f.flush()
    os.fsync(f.fileno())


def atomic_write(path, data):
    """Write ``data`` (bytes or str) to ``path`` so that a reader (or a run
    killed at any moment) sees either the old file or the complete new one:
    a temporary file in the same folder, fsync, rename, fsync of the
    folder."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = osp.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}{PARTIAL_MARK}{os.getpid()}-',
                               dir=folder)
    os.close(fd)
    try:
        with open(tmp, 'wb') as f:
            f.write(data.encode('utf-8') if isinstance(data, str) else data)
            fsync_file(f)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some file systems refuse fsync on folders
        pass


class AtomicLocalBackend(LocalBackend):
    """MMEngine's ``LocalBackend`` whose writes are atomic
    (:func:`atomic_write`): a run killed while a checkpoint is written leaves
    the previous file (or none), never a truncated ``epoch_N.pth``."""

    def put(self, obj, filepath):
        atomic_write(str(filepath), obj)

    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write(str(filepath), obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


# ------------------------------- sharded checkpoint folders (FSDP2) ----
# written by cast_mmaction.engine.sharded_checkpoint.save
MARKER = 'cast_checkpoint.json'
FORMAT = 'cast_mmaction.sharded_checkpoint.v1'
_SHARD = re.compile(r'^__(\d+)_\d+\.distcp$')


class IncompleteCheckpointError(FileNotFoundError):
    """A sharded checkpoint folder lacks a file (or has a truncated one)."""


def is_sharded(path):
    """Whether ``path`` is a sharded checkpoint folder (complete or not)."""
    return isinstance(path, (str, os.PathLike)) and osp.isdir(path)


def _what(name):
    m = _SHARD.match(name)
    if m:
        return f"rank {m.group(1)}'s shard {name}"
    if name == '.metadata':
        return 'the DCP metadata file .metadata'
    return name


def verify(folder):
    """The completion marker of ``folder`` after checking that every file it
    lists is there with its size; :class:`IncompleteCheckpointError` naming
    what is missing otherwise."""
    folder = str(folder)
    if not osp.isdir(folder):
        raise IncompleteCheckpointError(
            f'sharded checkpoint {folder}: no such folder')
    marker = osp.join(folder, MARKER)
    if not osp.isfile(marker):
        present = sorted(os.listdir(folder))
        raise IncompleteCheckpointError(
            f'sharded checkpoint {folder} is incomplete: it has no {MARKER} '
            f'(the completion marker rank 0 writes last), so its save did '
            f'not finish or the folder was copied in part (it holds '
            f'{present}). Resume from an earlier checkpoint')
    try:
        with open(marker) as f:
            info = json.load(f)
    except ValueError as e:
        raise IncompleteCheckpointError(
            f'sharded checkpoint {folder}: {MARKER} is damaged ({e})'
        ) from None
    if info.get('format') != FORMAT:
        raise IncompleteCheckpointError(
            f'sharded checkpoint {folder}: {MARKER} is not of format '
            f'{FORMAT!r} (got {info.get("format")!r})')
    problems = []
    for name, size in sorted(info['files'].items()):
        path = osp.join(folder, name)
        if not osp.isfile(path):
            problems.append(f'{_what(name)} is missing')
        elif osp.getsize(path) != size:
            problems.append(f'{_what(name)} has {osp.getsize(path)} bytes, '
                            f'{size} were written (truncated or replaced)')
    if problems:
        raise IncompleteCheckpointError(
            f'sharded checkpoint {folder} (written by {info["world_size"]} '
            f'rank(s)) is incomplete: ' + '; '.join(problems) +
            '. Copy the missing file(s) back, or resume from an earlier '
            'checkpoint')
    return info


def is_complete(folder):
    """:func:`verify` as a bool."""
    try:
        verify(folder)
        return True
    except IncompleteCheckpointError:
        return False


def complete_checkpoints(folder):
    """Complete checkpoints of a work dir, newest first: ``*.pth`` files and
    complete sharded checkpoint folders (FSDP2, :func:`verify`); ``best_*``
    excluded (they are not resumption points; temporary files and folders
    of interrupted writes start with a dot)."""
    out = []
    for name in os.listdir(folder):
        if name.startswith(('.', 'best_')) or not name.endswith('.pth'):
            continue
        path = osp.join(folder, name)
        if osp.isfile(path) or (osp.isdir(path) and is_complete(path)):
            out.append((osp.getmtime(path), path))
    return [p for _, p in sorted(out, reverse=True)]


def _remove_partial_files(folder):
    for name in os.listdir(folder):
        if name.startswith('.') and PARTIAL_MARK in name:
            path = osp.join(folder, name)
            try:
                if osp.isdir(path) and not osp.islink(path):
                    shutil.rmtree(path)  # a sharded checkpoint's temp folder
                else:
                    os.remove(path)
            except FileNotFoundError:
                continue
            print_log(f'removed {name}, a partial file left by an '
                      f'interrupted write', logger='current')


def _usable(last):
    """Whether ``last_checkpoint``'s record names something to resume from
    (a file, a complete sharded folder or a URL); logs why a sharded folder
    is not."""
    if not last:
        return False
    if '://' in last or osp.isfile(last):
        return True
    if osp.isdir(last):
        try:
            verify(last)
            return True
        except IncompleteCheckpointError as e:
            print_log(str(e), logger='current', level=30)
    return False


def resolve_last_checkpoint(work_dir):
    """Make ``<work_dir>/last_checkpoint`` name a checkpoint that exists, so
    that MMEngine's ``find_latest_checkpoint`` (what ``--resume`` without a
    file uses) resumes from it; return that checkpoint (or None).

    MMEngine writes ``last_checkpoint`` in place after each save and reads
    it back verbatim: a kill while it was written leaves it empty, and a
    checkpoint removed by hand leaves it naming a missing file; either way
    ``--resume`` fails. A sharded checkpoint folder (FSDP2) counts only when
    it is complete (its marker and every rank's shard are there). Here an
    empty, missing, stale or incomplete record is replaced
    (atomically) by the newest complete ``*.pth`` of the work dir; with none
    left, a stale record is removed so that the run starts afresh. Temporary
    files of interrupted writes are deleted."""
    if not osp.isdir(work_dir):
        return None
    _remove_partial_files(work_dir)
    record = osp.join(work_dir, 'last_checkpoint')
    last = None
    if osp.exists(record):
        with open(record) as f:
            last = f.read().strip()
    if _usable(last):
        return last
    found = complete_checkpoints(work_dir)
    # a sharded run (FSDP2) resumes from its folders only, not from files
    # consolidated next to them (those hold no optimizer state)
    found = [p for p in found if osp.isdir(p)] or found
    if not found:
        if last is not None:
            os.remove(record)
            print_log(f'last_checkpoint in {work_dir} names '
                      f'{last or "nothing"!r}, and no other checkpoint is '
                      f'there: starting afresh', logger='current', level=30)
        return None
    state = ('missing' if last is None else 'empty' if not last else
             f'{last!r} (incomplete)' if osp.isdir(last) else
             f'{last!r} (gone)')
    print_log(f'last_checkpoint in {work_dir} is {state}; resuming from the '
              f'newest complete checkpoint, {found[0]}', logger='current',
              level=30)
    atomic_write(record, found[0])
    return found[0]
