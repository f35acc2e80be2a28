"""Progress on stderr for the tools that loop over files or tensors.

One library for every tool: tqdm (a pinned requirement, already what
``tools/infer.py`` and ``tools/data/prepare_ek100.py`` show). Chosen over
MMEngine's ``ProgressBar`` / ``track_iter_progress``, which need the total
up front (a directory walk has none), print to stdout (where the tools'
results go) and cannot be switched off; tqdm writes to stderr, counts
without a total, shows the rate and the time left, and ``--quiet`` turns
it off. Progress never changes what a tool computes or prints on stdout.
"""
import sys


def add_quiet_argument(parser):
    """The ``--quiet`` flag of the tools: no progress bar."""
    parser.add_argument('--quiet', action='store_true',
                        help='no progress bar on stderr')


def track(iterable=None, desc=None, total=None, unit='it', quiet=False):
    """``iterable`` with a progress bar on stderr (``quiet``: none)."""
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, unit=unit,
                file=sys.stderr, disable=quiet, mininterval=0.5,
                dynamic_ncols=True)


def write(message):
    """Print ``message`` to stderr without breaking a bar that is shown."""
    from tqdm import tqdm
    tqdm.write(message, file=sys.stderr)


class Stages:
    """A bar over the named steps of a tool whose slow work is a few long
    calls (read a checkpoint, convert it, build the model, write)::

        with Stages(['read', 'convert', 'write'], 'convert') as stage:
            stage('read'); ...
            stage('convert'); ...
    """

    def __init__(self, names, desc, quiet=False):
        self.names = list(names)
        self.bar = track(total=len(self.names), desc=desc, unit='step',
                         quiet=quiet)
        self.current = None

    def __call__(self, name):
        if name not in self.names:
            raise ValueError(f'unknown stage {name!r} (stages: {self.names})')
        if self.current is not None:
            self.bar.update(1)
        self.current = name
        self.bar.set_postfix_str(name)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self.current is not None:
            self.bar.update(1)
        self.bar.close()
        return False
