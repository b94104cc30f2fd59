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
import hashlib
import logging
import os

__all__ = ["hold", "lock_path", "sidecar_stem"]

log = logging.getLogger("finetune")


#: The longest name a sidecar file may take from its output's name, in bytes: the file system's 255
#: less room for ``.`` and the longest suffix (a temporary's ``.<pid>.<random>.tmpdir``).
_STEM_BYTES = 200


def sidecar_stem(path) -> tuple:
    """``(folder, ".<name>")``, the start of every file finetune keeps beside the output ``path``.

    Locks, temporaries, journals and manifests are named from the output's
    name; an output name near the file system's 255-byte limit would make
    theirs too long, so a long name is cut and a hash of the whole of it added.
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    raw = os.fsencode(name)
    if len(raw) > _STEM_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:16]
        name = os.fsdecode(raw[:_STEM_BYTES - 17].decode("utf-8", "ignore").encode()) + "~" + digest
    return folder, "." + name


def lock_path(path) -> str:
    """The lock file of the output ``path``: ``.<name>.lock`` in the same folder."""
    folder, stem = sidecar_stem(path)
    return os.path.join(folder, stem + ".lock")


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
    WriteError
        The lock file exists but cannot be opened (read-only, another user's).

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
    except PermissionError as exc:
        if not os.path.exists(lock_path(path)):  # the folder refuses a new file: the caller names the output
            raise
        from .errors import WriteError

        err = WriteError(f"Cannot take the lock file {lock_path(path)!r} of {os.fspath(path)!r} ({exc.strerror}): "
                         "it is read-only or another user's. If no finetune process is writing there, delete it "
                         "and run again.")
        err.errno, err.filename = exc.errno, lock_path(path)
        raise err from None
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
