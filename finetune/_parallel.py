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
        yield from pool.imap(_call, items, chunksize=max(1, chunksize))
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
    are stopped here first (no replacements started), the locks a dead
    worker held are released, and only then is the pool terminated, in a
    thread that is given up after ``timeout`` seconds.
    """
    handler = getattr(pool, "_worker_handler", None)
    if handler is not None:
        handler._state = multiprocessing.pool.TERMINATE  # start no replacements for the workers stopped below
        handler.join(1.0)
    workers = list(getattr(pool, "_pool", ()))
    for process in workers:
        if process.exitcode is None:
            process.terminate()
    deadline = time.monotonic() + timeout / 2
    for process in workers:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join(1.0)
    for lock in (getattr(getattr(pool, "_inqueue", None), "_rlock", None),
                 getattr(getattr(pool, "_outqueue", None), "_wlock", None)):
        if lock is not None and lock.acquire(timeout=0.2):  # only a worker (all stopped now) holds it long
            lock.release()
        elif lock is not None:
            lock.release()
    stopper = threading.Thread(target=pool.terminate, name="finetune-stop-pool", daemon=True)
    stopper.start()
    stopper.join(timeout / 2)


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
        return multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals,
                                                        initargs=(initializer, *initargs))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        cv2.setNumThreads(previous)
