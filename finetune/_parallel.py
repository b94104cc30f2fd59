"""An ordered parallel map over worker processes (used by check, pack and MeanImage).

Workers are forked, so they inherit the arguments without pickling and never
touch MXNet; each one limits OpenCV to one thread, which is faster than letting
several processes fight over the cores.

Interrupts are the main process's business: workers ignore SIGINT (a Ctrl-C
reaches every process of the terminal's group, and a worker interrupted while
holding the pool's queue lock hangs the pool) and die on SIGTERM, which is
what ``Pool.terminate`` sends. When the main process is interrupted, it
stops the pool with :func:`stop_pool`: terminate, wait a few seconds, kill
what is left.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.pool
import multiprocessing.util
import os
import signal
import threading
import time

import cv2

__all__ = ["default_workers", "fork_pool", "ordered_map", "resolve_workers", "stop_pool"]

log = logging.getLogger(__name__)

_STATE = {}


def default_workers() -> int:
    """The number of usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers, what: str = "workers", owner: str = "") -> int:
    """The number of worker processes to start for a requested ``workers``, capped at the machine.

    Parameters
    ----------
    workers : int or None
        ``None``: :func:`default_workers`. 0 means "in this process". More
        than the machine has (:func:`default_workers`) is capped there, with
        one WARNING: extra processes only compete for the same cores (and
        100000 of them exhaust the file descriptors).
    what, owner : str
        The parameter (or flag) and who takes it, for the messages.

    Raises
    ------
    ConfigError
        ``workers`` is negative or not an integer.

    Examples
    --------
    >>> resolve_workers(0), resolve_workers(1), resolve_workers(None) == default_workers()
    (0, 1, True)
    """
    from numbers import Integral

    from ._validation import Interval, validate

    if workers is None:
        return default_workers()
    validate(owner, {what: workers}, {what: Interval(Integral, 0, None)})
    cap = default_workers()
    if workers > cap:
        log.warning("%s=%d is more than the %d usable core(s); using %d worker processes.", what, workers, cap, cap)
        return cap
    return int(workers)


def _init(fn, context):
    cv2.setNumThreads(1)
    _STATE["fn"] = fn
    _STATE["context"] = context


def _call(item):
    return _STATE["fn"](_STATE["context"], item)


def ordered_map(fn, context, items, *, workers=None, chunksize=8):
    """Yield ``fn(context, item)`` for every item, in order, using ``workers`` processes.

    ``workers`` of 1 (or fewer items than 2) runs in this process.
    """
    workers = resolve_workers(workers)
    items = list(items)
    if workers <= 1 or len(items) < 2:
        for item in items:
            yield fn(context, item)
        return
    pool = fork_pool(workers, _init, (fn, context))
    try:
        for k, result in enumerate(pool.imap(_call, items, chunksize=max(1, chunksize))):
            if k == len(items) - 1:  # stopped here, in the consumer's flow: a consumer that never asks past the
                stop_pool(pool)      # last item leaves this generator to the garbage collector, which swallows
            yield result             # an interrupt that lands in its clean-up
    finally:  # also on KeyboardInterrupt, or a consumer that stops early
        stop_pool(pool)


_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def _worker_signals(initializer, *initargs):
    """Worker start: SIGINT ignored, SIGTERM the default (die), both unblocked; then ``initializer``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)
    if initializer is not None:
        initializer(*initargs)


def stop_pool(pool, timeout: float = 5.0) -> None:
    """Stop a pool at once (its unfinished work is discarded), waiting at most about ``timeout`` seconds.

    ``Pool.terminate`` alone can hang forever: a worker killed while it held
    the task queue's read lock or the result queue's write lock (a SIGTERM
    sent to the whole process group does that) never releases it, and
    ``terminate`` waits for both locks without a time limit. So the workers
    are stopped first (no replacements started), the locks a dead worker held
    are released, and only then is the pool terminated, in a thread that is
    given up after ``timeout`` seconds. SIGINT and SIGTERM are held back
    meanwhile and raised once the pool is down: an interrupt halfway through
    left the pool to Python's own, unbounded clean-up. A pool of
    :func:`fork_pool` is stopped this way also when the garbage collector
    finalises it; stopping a stopped pool does nothing.
    """
    if isinstance(pool, _Pool):
        pool.terminate()
    else:  # a pool of another origin
        pool._state = multiprocessing.pool.TERMINATE
        _bounded_terminate(_pool_parts(pool), timeout)


class _Pool(multiprocessing.pool.Pool):
    """A ``Pool`` whose every clean-up (stop, collection, exit) is :func:`_bounded_terminate`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._terminate.cancel()  # Python's own clean-up can wait for ever on a lock a killed worker held
        self._terminate = multiprocessing.util.Finalize(self, _bounded_terminate, args=(_pool_parts(self),),
                                                        exitpriority=15)

    def terminate(self):
        self._state = multiprocessing.pool.TERMINATE
        self._terminate()  # runs once: the finaliser unregisters itself

    def __del__(self):
        """Nothing: the finaliser has stopped the pool (Python's would poke its closed notifier)."""


def _pool_parts(pool) -> tuple:
    """What Python's ``Pool._terminate_pool`` takes, in its order."""
    return (pool._taskqueue, pool._inqueue, pool._outqueue, pool._pool, pool._change_notifier, pool._worker_handler,
            pool._task_handler, pool._result_handler, pool._cache)


def _bounded_terminate(parts, timeout: float = 5.0) -> None:
    """Python's pool clean-up, made bounded and interrupt-proof (see :func:`stop_pool`); holds no pool reference."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)  # an interrupt waits until the pool is down
    try:
        _, inqueue, outqueue, processes, _, handler, *_ = parts
        handler._state = multiprocessing.pool.TERMINATE  # start no replacements for the workers stopped below
        if handler is not threading.current_thread():
            handler.join(1.0)
        workers = list(processes)
        for process in workers:
            if process.exitcode is None:
                process.terminate()
        deadline = time.monotonic() + timeout / 2
        for process in workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join(1.0)
        for lock in (getattr(inqueue, "_rlock", None), getattr(outqueue, "_wlock", None)):
            if lock is not None and lock.acquire(timeout=0.2):  # only a worker (all stopped now) holds it long
                lock.release()
            elif lock is not None:
                lock.release()
        stopper = threading.Thread(target=_terminate_quietly, args=parts, name="finetune-stop-pool", daemon=True)
        stopper.start()
        stopper.join(timeout / 2)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _terminate_quietly(*parts) -> None:
    """Python's ``Pool._terminate_pool``; what it raises is logged, not printed.

    A worker killed halfway through reading a task leaves a cut message in the
    task queue, which the clean-up then drains (``EOFError``); the pool is
    going away, so that is no error of the user's run.
    """
    try:
        multiprocessing.pool.Pool._terminate_pool(*parts)
    except Exception as exc:  # noqa: BLE001 - the pool is being discarded; only its queues' leftovers fail
        log.debug("While stopping a worker pool: %r", exc)


def fork_pool(workers, initializer, initargs):
    """A forked ``multiprocessing.Pool`` that is safe after OpenCV has used threads here.

    OpenCV's thread pool does not survive ``fork``: a child calling a parallel
    OpenCV function waits forever for threads that were not copied. Dropping
    this process to one OpenCV thread while forking (and restoring it after)
    gives the children a clean, single-threaded OpenCV.

    SIGINT and SIGTERM are blocked while forking, so a worker never runs the
    parent's handlers: it starts ignoring SIGINT and dying on SIGTERM (see
    the module docstring). A signal arriving meanwhile reaches the parent
    once the pool is up. Stop the pool with :func:`stop_pool`.
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        return _Pool(workers, initializer=_worker_signals, initargs=(initializer, *initargs),
                     context=multiprocessing.get_context("fork"))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        cv2.setNumThreads(previous)
