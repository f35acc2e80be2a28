"""Runs training scenarios of tests/test_reliability_resume.py.

``python tests/_reliability_driver.py SPEC.json`` imports the code base once
and runs every ``runs`` entry of the spec in a forked child through
``tools/train.py``'s ``main`` (the command-line path a user takes). A child
may kill itself with SIGKILL:

* ``kill_at_iter``: just before the given training iteration (``runner.iter``);
* ``kill_in_write``: while the file of that name is being written (after half
  of its bytes reached the disk, before the rename), i.e. mid-checkpoint.

The parent never computes anything with torch before forking (fork-safety of
OpenMP); it writes ``{name: {"signal": ..., "code": ...}}`` to ``out``.
Each child appends ``{"iter", "loss"}`` per training iteration and
``{"val_epoch", "metrics"}`` per validation to its ``record`` file.
"""
import json
import os
import signal
import sys
import traceback

from mmengine.hooks import Hook

from mmaction.registry import HOOKS

# The hooks below are registered when this module is imported: by the
# driver, and by MMAction2's own tools through the test configs'
# custom_imports = dict(imports=['cast_mmaction', '_reliability_driver'])
# (tests/ on PYTHONPATH; tests/test_reliability_tools.py).


@HOOKS.register_module(force=True)
class RecordForTestHook(Hook):
    """Appends one JSON line per training iteration (``iter``, ``loss``),
    validation (``val_epoch``, ``metrics``) and test (``test_metrics``)."""

    priority = 'LOWEST'

    def __init__(self, path):
        self.path = path

    def _write(self, item):
        with open(self.path, 'a') as f:
            f.write(json.dumps(item) + '\n')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self._write(dict(iter=runner.iter, loss=float(outputs['loss'])))

    def after_val_epoch(self, runner, metrics=None):
        self._write(dict(val_epoch=runner.epoch,
                         metrics={k: float(v)
                                  for k, v in (metrics or {}).items()}))

    def after_test_epoch(self, runner, metrics=None):
        self._write(dict(test_metrics={k: float(v) for k, v in (
            metrics or {}).items()}))


@HOOKS.register_module(force=True)
class KillForTestHook(Hook):
    """SIGKILL just before training iteration ``at_iter`` (``runner.iter``)."""

    priority = 'HIGHEST'

    def __init__(self, at_iter):
        self.at_iter = at_iter

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at_iter:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module(force=True)
class NaNForTestHook(Hook):
    """Multiplies the head's output by NaN at training iteration
    ``at_iter`` (a non-finite loss there) and keeps the weights before and
    after that iteration (``before``, ``after``)."""

    priority = 'HIGHEST'

    def __init__(self, at_iter):
        self.at_iter = at_iter
        self.handle = None
        self.before = self.after = None

    @staticmethod
    def _weights(runner):
        return {k: v.clone() for k, v in runner.model.state_dict().items()}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at_iter:
            self.before = self._weights(runner)
            model = getattr(runner.model, 'module', runner.model)
            self.handle = model.cls_head.register_forward_hook(
                lambda m, i, o: o * float('nan'))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
            self.after = self._weights(runner)


def read_records(path):
    """What RecordForTestHook wrote: ({iter: [loss, ...]}, [validation
    items], [test metrics])."""
    with open(path) as f:
        items = [json.loads(line) for line in f]
    losses = {}
    for item in items:
        if 'iter' in item:
            losses.setdefault(item['iter'], []).append(item['loss'])
    vals = [item for item in items if 'val_epoch' in item]
    tests = [item['test_metrics'] for item in items if 'test_metrics' in item]
    return losses, vals, tests


def synthetic_lists(data, num_train_per_class):
    """Synthetic 32 px videos under ``data`` (seed 11); returns the dataset
    info and the lines of its training and validation lists."""
    from cast_mmaction.datasets.synthetic import write_synthetic_video_dataset
    info = write_synthetic_video_dataset(
        data, num_train_per_class=num_train_per_class, num_val_per_class=1,
        num_frames=8, size=32, seed=11)
    lines = []
    for key in ('train_ann', 'val_ann'):
        with open(info[key]) as f:
            lines.append([ln.strip() for ln in f if ln.strip()])
    return info, lines[0], lines[1]


def _kill_in_write(name):
    from cast_mmaction.engine import checkpoint_files as cf
    original = cf.fsync_file

    def fsync_then_die(f):
        base = os.path.basename(f.name)
        if base.startswith(f'.{name}{cf.PARTIAL_MARK}'):
            f.flush()
            size = os.fstat(f.fileno()).st_size
            os.ftruncate(f.fileno(), size // 2)  # half of it on disk
            print(f'KILLED while writing {name} ({size // 2} of {size} '
                  f'bytes)', flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        original(f)

    cf.fsync_file = fsync_then_die


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    root = spec['root']
    sys.path.insert(0, root)
    os.chdir(root)
    import importlib.util

    import torch
    torch.set_num_threads(1)
    spec_train = importlib.util.spec_from_file_location(
        '_train_tool', os.path.join(root, 'tools', 'train.py'))
    train_tool = importlib.util.module_from_spec(spec_train)
    spec_train.loader.exec_module(train_tool)
    results = {}
    for run in spec['runs']:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if run.get('kill_in_write'):
                    _kill_in_write(run['kill_in_write'])
                print(f'=== {run["name"]}: tools/train.py '
                      f'{" ".join(run["argv"])}', flush=True)
                train_tool.main(run['argv'])
            except BaseException:  # noqa: BLE001 - reported to the parent
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        results[run['name']] = dict(
            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None)
        print(f'=== {run["name"]}: {results[run["name"]]}', flush=True)
    with open(spec['out'], 'w') as f:
        json.dump(results, f)


if __name__ == '__main__':
    main(sys.argv[1])
