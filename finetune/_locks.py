"""Exclusive locks on outputs, across processes: one lock file per output, ``.<name>.lock`` beside it.

``filelock`` does the locking (the operating system's file locks, released
when the holder dies); this module only names the lock file and gives the
two ways finetune takes a lock: waiting for it (a writer's commit, logging
once that it waits) or not (a long job that refuses to share its folder, a
reader that must not finish another writer's commit). A lock is one object
per file in a process, so the thread that holds it may take it again.
"""

from __future__ import annotations

import contextlib
import logging
import os

__all__ = ["hold", "lock_path"]

log = logging.getLogger("finetune")


def lock_path(path) -> str:
    """The lock file of the output ``path``: ``.<name>.lock`` in the same folder."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f".{name}.lock")


@contextlib.contextmanager
def hold(path, *, wait: bool = True):
    """Hold the exclusive lock of the output ``path`` while the block runs; yields whether it was taken.

    Parameters
    ----------
    path : str or os.PathLike
        The output (a file or a folder); its lock file is :func:`lock_path`.
    wait : bool
        Wait for another holder (logging once that it waits); with
        ``False`` the block runs at once and gets ``False`` when another
        holder has the lock.

    Raises
    ------
    OSError
        The lock file cannot be made (a read-only folder, a missing one).

    Examples
    --------
    >>> import os, tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "out")
    >>> with hold(out) as taken, hold(out) as again:   # the holder may take it again
    ...     taken, again
    (True, True)
    """
    import filelock

    lock = filelock.FileLock(lock_path(path), is_singleton=True)
    try:
        lock.acquire(timeout=0)
        taken = True
    except filelock.Timeout:
        taken = False
        if not os.path.exists(lock_path(path)):  # no holder: the lock file cannot be made here (filelock retries)
            os.close(os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644))  # raises why
        if wait:
            log.info("Waiting for another process that is writing %s.", os.fspath(path))
            lock.acquire()
            taken = True
    try:
        yield taken
    finally:
        if taken:
            lock.release()
