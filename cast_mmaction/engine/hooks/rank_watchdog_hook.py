"""RankWatchdogHook: a distributed run whose rank (or node) dies stops on
every other rank within ``timeout`` seconds, with a message naming the lost
rank and its node.

Config (``configs/_base_/reliability.py``)::

    default_hooks = dict(rank_watchdog=dict(
        type='RankWatchdogHook', interval=5, timeout=60))

Why: when a rank is killed (``kill -9``, the OOM killer, a node that goes
down), torchrun's agent on *its* node reports the failed local rank, but the
other nodes only see their own workers fail with a backend error
("Connection closed by peer") or, when the node vanished without closing its
sockets, wait in the next collective until ``env_cfg.dist_cfg.timeout``
(30 minutes by default). Neither names the rank that was lost.

How: every rank starts a daemon thread (``before_run``) that increments its
counter ``watchdog/beat/<rank>`` in the job's c10d store (its own client,
with ``timeout`` as time limit) every ``interval`` seconds. Rank 0 watches
every rank's counter, the other ranks watch rank 0's and a
``watchdog/lost`` key. A watched counter that has not moved for
``timeout`` seconds (a rank is watched from its first beat, so a slow
start-up is the collective timeout's business) means the rank is lost: the
watcher logs ``rank 1 (node 1) lost: no heartbeat for 60 s``, writes it to
``watchdog/lost`` (so every rank reports the same message) and ends its
process with exit code 1, even while the main thread is blocked in a
collective. A store that has not answered for ``timeout`` seconds means
node 0 (which hosts it under torchrun and SLURM) is lost. When the main
thread fails with a communication error first (the usual case: the peer's
sockets closed), the exception waits, up to ``timeout + 2 * interval``
seconds, for the verdict before the traceback is printed. A rank that
finishes (``after_run``) marks itself done and is no longer watched.

Single-process runs: nothing happens.

Args:
    interval (float): seconds between heartbeats (and checks).
    timeout (float): seconds without a heartbeat after which a rank counts
        as lost.
"""
import logging
import os
import socket
import sys
import threading
import time

from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmaction.registry import HOOKS

__all__ = ['RankWatchdogHook', 'lost_rank_message']

_PREFIX = 'watchdog/'


def lost_rank_message(rank, node, silent_s):
    """The line a surviving rank logs for a lost one."""
    return f'rank {rank} (node {node}) lost: no heartbeat for {silent_s:.0f} s'


def _node_of_this_process():
    """The node index of this process: torchrun's GROUP_RANK, SLURM's
    SLURM_NODEID, else the host name."""
    for name in ('GROUP_RANK', 'SLURM_NODEID'):
        if os.environ.get(name, '') != '':
            return os.environ[name]
    return socket.gethostname()


def _is_comm_error(exc):
    """A failed collective or store operation (the symptom of a lost
    peer)."""
    import torch.distributed as dist
    if isinstance(exc, getattr(dist, 'DistError', ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        word in text for word in ('Gloo', 'gloo', 'NCCL', 'Connection closed',
                                  'Connection reset', 'Broken pipe'))


@HOOKS.register_module()
class RankWatchdogHook(Hook):
    """Names a lost rank on every surviving rank and stops them within
    ``timeout`` seconds (module docstring)."""

    priority = 'VERY_HIGH'

    def __init__(self, interval=5.0, timeout=60.0):
        interval, timeout = float(interval), float(timeout)
        if interval <= 0 or timeout <= interval:
            raise ValueError(
                f'RankWatchdogHook needs 0 < interval < timeout, got '
                f'interval={interval}, timeout={timeout} '
                f'(default_hooks.rank_watchdog)')
        self.interval, self.timeout = interval, timeout
        self._thread = None
        self._stop = threading.Event()
        self._failing = threading.Event()
        self._excepthook = None
        self.verdict = None

    # ------------------------------------------------------------ life ----
    def before_run(self, runner):
        from mmengine.dist import get_dist_info, is_distributed
        if not is_distributed() or self._thread is not None:
            return
        self._store = self._open_store()
        self._rank, self._world = get_dist_info()
        self._store.set(f'{_PREFIX}node/{self._rank}',
                        str(_node_of_this_process()))
        self._beat()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='cast-rank-watchdog')
        self._thread.start()
        self._excepthook = sys.excepthook
        sys.excepthook = self._on_exception

    def after_run(self, runner):
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(self.interval + 1)
        try:
            self._store.set(f'{_PREFIX}done/{self._rank}', '1')
        except Exception:  # noqa: BLE001  (the run is over anyway)
            pass
        if sys.excepthook is self._on_exception:
            sys.excepthook = self._excepthook
        self._thread = None

    def _on_exception(self, exc_type, exc, tb):
        thread = self._thread
        if thread is not None and thread.is_alive() and _is_comm_error(exc):
            self._failing.set()  # the watcher reports instead of exiting
            thread.join(self.timeout + 2 * self.interval)
        (self._excepthook or sys.__excepthook__)(exc_type, exc, tb)

    def _open_store(self):
        """A client of the run's c10d store (torchrun's agent store or the
        store rank 0 serves at MASTER_ADDR:MASTER_PORT) with ``timeout`` as
        its own time limit, so a vanished store host cannot block the
        watcher for the collective timeout; the process group's store where
        there is no MASTER_ADDR (tcp:// or file:// init)."""
        import datetime

        import torch.distributed as dist
        import torch.distributed.distributed_c10d as c10d
        attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
        addr, port = os.environ.get('MASTER_ADDR'), os.environ.get(
            'MASTER_PORT')
        if addr and port:
            store = dist.TCPStore(
                addr, int(port), is_master=False,
                timeout=datetime.timedelta(seconds=self.timeout))
        else:
            store = c10d._get_default_store()
        return dist.PrefixStore(f'cast/attempt_{attempt}', store)

    # ---------------------------------------------------------- thread ----
    def _beat(self):
        self._store.add(f'{_PREFIX}beat/{self._rank}', 1)

    def _watched(self):
        return range(self._world) if self._rank == 0 else (0, )

    def _run(self):
        seen = {}  # rank -> (counter, monotonic time it last moved)
        failing_since = None  # the store has not answered since then
        while not self._stop.wait(self.interval):
            try:
                self._beat()
                message = self._check(seen)
                failing_since = None
            except Exception as e:  # noqa: BLE001  the store is gone
                # only once it stays gone for `timeout`: a rank 0 that has
                # finished (the store's host under SLURM) ends its process
                # while this rank may still be in its last hooks
                now = time.monotonic()
                failing_since = failing_since or now
                message = None if now - failing_since < self.timeout else (
                    f'rank 0 (node 0) lost: the c10d store it hosts has not '
                    f'answered for {now - failing_since:.0f} s '
                    f'({type(e).__name__}: {e})')
            if message is not None:
                self._report(message)
                return

    def _check(self, seen):
        store = self._store
        if store.check([f'{_PREFIX}lost']):
            return store.get(f'{_PREFIX}lost').decode()
        now = time.monotonic()
        lost = []
        for rank in self._watched():
            if rank == self._rank or store.check([f'{_PREFIX}done/{rank}']):
                continue
            count = store.add(f'{_PREFIX}beat/{rank}', 0)
            if count == 0:
                continue  # not started yet
            last = seen.get(rank)
            if last is None or count != last[0]:
                seen[rank] = (count, now)
            elif now - last[1] >= self.timeout:
                node = store.get(f'{_PREFIX}node/{rank}').decode()
                lost.append(lost_rank_message(rank, node, now - last[1]))
        if not lost:
            return None
        message = '; '.join(lost)
        store.set(f'{_PREFIX}lost', message)
        return message

    def _report(self, message):
        self.verdict = message
        print_log(f'RankWatchdogHook: {message}', logger='current',
                  level=logging.ERROR)
        print(f'[rank {self._rank}] {message}', file=sys.stderr, flush=True)
        if not self._failing.is_set():
            # the main thread may be blocked in a collective for
            # env_cfg.dist_cfg.timeout: end the process now
            sys.stdout.flush()
            os._exit(1)
