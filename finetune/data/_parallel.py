"""An ordered parallel map over worker processes (used by check, pack and MeanImage).

Workers are forked, so they inherit the arguments without pickling and never
touch MXNet; each one limits OpenCV to one thread, which is faster than letting
several processes fight over the cores.
"""

from __future__ import annotations

import multiprocessing
import os

import cv2

__all__ = ["default_workers", "fork_pool", "ordered_map"]

_STATE = {}


def default_workers() -> int:
    """The number of usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


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
    workers = default_workers() if workers is None else int(workers)
    items = list(items)
    if workers <= 1 or len(items) < 2:
        for item in items:
            yield fn(context, item)
        return
    with fork_pool(workers, _init, (fn, context)) as pool:
        yield from pool.imap(_call, items, chunksize=max(1, chunksize))


def fork_pool(workers, initializer, initargs):
    """A forked ``multiprocessing.Pool`` that is safe after OpenCV has used threads here.

    OpenCV's thread pool does not survive ``fork``: a child calling a parallel
    OpenCV function waits forever for threads that were not copied. Dropping
    this process to one OpenCV thread while forking (and restoring it after)
    gives the children a clean, single-threaded OpenCV.
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return multiprocessing.get_context("fork").Pool(workers, initializer=initializer,
                                                        initargs=initargs)
    finally:
        cv2.setNumThreads(previous)
