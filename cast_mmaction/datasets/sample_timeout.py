"""A time limit for loading one sample (issue 18: no sample can hang a run).

:func:`call_with_time_limit` runs a loading function under two limits:

soft limit ``seconds``
    :class:`SampleTimeoutError` is raised inside the loading code, which
    unwinds normally (``finally`` blocks close the readers), so the caller
    -- :class:`~cast_mmaction.datasets.robust.RobustDataset` -- treats it as
    any other bad sample (replaced and counted, raised, or flagged).

    In the main thread of a process -- the main process with
    ``num_workers=0``, every DataLoader worker process, every DDP rank --
    the limit is a ``SIGALRM`` timer (``signal.setitimer``); the Python
    handler raises the error at the next Python bytecode, and a blocking
    system call of the main thread (``time.sleep``, ``select``, a file
    read) is interrupted by the signal. The timer re-fires every
    :data:`REPEAT` seconds until the load ends, so code that swallows the
    exception with a broad ``except`` is interrupted again. The previous
    ``SIGALRM`` handler is put back afterwards. When the call runs in
    another thread, or another ``ITIMER_REAL`` timer is running (the
    caller's own alarm), a helper thread raises the error asynchronously
    in the loading thread instead (``PyThreadState_SetAsyncExc``), which
    does not interrupt blocking system calls.

    Interruptible: any loop that returns to Python between steps -- PyAV's
    frame-by-frame decoding (``PyAVVideoReader``, the audio reader), Python
    transforms, a ``time.sleep`` -- and C code that checks for signals.
    NOT interruptible: one C call that never returns (e.g. decord's
    ``get_batch`` spinning in C++, see dmlc/decord#373 and #375, some of
    which even hold the GIL); a call that returns late raises the error
    when it returns.
hard limit ``hard_seconds`` (default ``max(2 * seconds, seconds + 30)``)
    for the C calls that never return: :mod:`faulthandler`'s C watchdog
    thread (it needs no GIL) prints the stack of every thread -- the
    loading frame is shown as ``File "<sample N: PATH>" ... in load`` -- and
    ends the process with status 1. In a DataLoader worker the main process
    then stops with ``DataLoader worker (pid ...) exited unexpectedly``; a
    DDP rank that exits makes ``torchrun`` stop the others. The run fails
    quickly and names the file instead of hanging until the collective
    timeout. Only one ``faulthandler.dump_traceback_later`` can be pending
    per process: a caller's own one is cancelled by a load.

``seconds=0`` (or ``None``) turns both limits off. Nested calls run under
the outer call's limits.

Resources: nothing is abandoned. The interrupted load unwinds in its own
thread, so decoders are closed by their ``finally`` blocks or, at the
latest, when the unwound objects are freed (PyAV containers and decord
readers close their files and join their decoding threads when
deallocated); ``tests/test_sample_timeout.py`` checks that the open file
descriptors and OS threads of the process come back to their count after
interrupted PyAV and decord loads. The watchdog threads of the fallback
path end with each call.
"""
import ctypes
import faulthandler
import signal
import sys
import threading
import time
import types

__all__ = ['SampleTimeoutError', 'call_with_time_limit', 'check_time_limit',
           'default_hard_limit', 'REPEAT']

#: seconds between repeated interruptions once the soft limit has passed
REPEAT = 1.0


class SampleTimeoutError(RuntimeError):
    """Loading one sample took longer than its time limit."""


_local = threading.local()


def check_time_limit(seconds, what):
    """``seconds`` as a float >= 0 (``None``: 0, no limit); a clear
    ``ValueError`` naming ``what`` otherwise."""
    if seconds is None:
        return 0.0
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = -1.0
    if not value >= 0:  # also NaN
        raise ValueError(f'{what} must be a number of seconds >= 0 (0: no '
                         f'limit), got {seconds!r}')
    return value


def _where(frame):
    if frame is None:
        return ''
    code = frame.f_code
    return f' in {code.co_name} ({code.co_filename}:{frame.f_lineno})'


class _Scope:
    """State of the active limit of one thread."""

    def __init__(self, seconds, label, setting):
        self.seconds, self.label, self.setting = seconds, label, setting
        self.start = time.monotonic()
        self.active = True

    def error(self, frame=None):
        took = time.monotonic() - self.start
        return SampleTimeoutError(
            f'loading {self.label} was interrupted after {took:.1f} s, '
            f'longer than its {self.seconds:g} s limit ({self.setting}; 0 '
            f'turns it off){_where(frame)}')


def _run_labelled(label, fn, args, kwargs):
    return fn(*args, **kwargs)


def _labelled(label):
    """:func:`_run_labelled` whose code object carries ``label`` as its file
    name, so that faulthandler's stack dump names the sample."""
    code = _run_labelled.__code__.replace(
        co_filename=f'<{label}>'[:400], co_name='load')
    return types.FunctionType(code, _run_labelled.__globals__, 'load')


def _stderr_fd():
    for stream in (sys.stderr, sys.__stderr__):
        try:
            return stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue
    return 2


# -- soft limit: SIGALRM in the main thread ---------------------------------
def _can_use_signal():
    if threading.current_thread() is not threading.main_thread():
        return False
    if not hasattr(signal, 'setitimer'):  # pragma: no cover - Windows
        return False
    return signal.getitimer(signal.ITIMER_REAL)[0] == 0


def _alarm(signum, frame):
    scope = getattr(_local, 'scope', None)
    if scope is not None and scope.active:
        raise scope.error(frame)


class _SignalTimer:

    def __init__(self, scope):
        self.previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, scope.seconds, REPEAT)

    def stop(self):
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        # run a handler call the signal may have left pending (a no-op now
        # that the scope is inactive) before the old handler is back
        signal.pthread_sigmask(signal.SIG_BLOCK, [])
        signal.signal(signal.SIGALRM, self.previous
                      if self.previous is not None else signal.SIG_DFL)


# -- soft limit elsewhere: an asynchronous exception from a helper thread ---
class _ThreadTimer:

    def __init__(self, scope):
        self.scope = scope
        self.target = threading.get_ident()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True,
                                       name='sample-time-limit')
        self.thread.start()

    def _watch(self):
        wait = self.scope.seconds
        while not self.done.wait(wait):
            if not self.scope.active:
                return
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.target),
                ctypes.py_object(SampleTimeoutError))
            wait = REPEAT

    def stop(self):
        self.done.set()
        self.thread.join()
        # an exception set just before ``done`` but not yet raised must not
        # escape later: clear it
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self.target), ctypes.py_object())


def default_hard_limit(seconds):
    """The hard limit of a soft limit of ``seconds``."""
    return max(2.0 * seconds, seconds + 30.0)


def call_with_time_limit(fn, *args, seconds, hard_seconds=None,
                         label='sample',
                         setting='RobustDataset.sample_timeout', **kwargs):
    """``fn(*args, **kwargs)`` under a soft limit of ``seconds``
    (:class:`SampleTimeoutError`) and a hard one of ``hard_seconds``
    (default ``max(2 * seconds, seconds + 30)``; process exit with a stack
    dump; 0: none): see the
    module's documentation. ``label`` names the sample in messages,
    ``setting`` the option that sets the limit."""
    seconds = check_time_limit(seconds, 'the sample time limit')
    if not seconds or getattr(_local, 'scope', None) is not None:
        return fn(*args, **kwargs)
    hard = check_time_limit(hard_seconds, 'the hard sample time limit') \
        if hard_seconds is not None else default_hard_limit(seconds)
    if hard and hard < seconds:
        raise ValueError(f'the hard sample time limit ({hard} s) must not be '
                         f'shorter than the soft one ({seconds} s)')
    scope = _local.scope = _Scope(seconds, label, setting)
    timer = None
    try:
        if hard:
            faulthandler.dump_traceback_later(hard, exit=True,
                                              file=_stderr_fd())
        timer = (_SignalTimer if _can_use_signal() else _ThreadTimer)(scope)
        return _labelled(label)(label, fn, args, kwargs)
    except SampleTimeoutError as e:
        if e.args:
            raise
        # raised by _ThreadTimer (a class, no message): say where and when
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        raise scope.error(tb.tb_frame if tb else None) from None
    finally:
        scope.active = False
        if timer is not None:
            timer.stop()
        if hard:
            faulthandler.cancel_dump_traceback_later()
        _local.scope = None
