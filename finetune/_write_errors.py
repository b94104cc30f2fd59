"""What a failed write means: a :class:`~finetune.errors.WriteError` naming the file.

A full disk (``ENOSPC``, ``EDQUOT``) or a file-size limit (``EFBIG``) is a
``WriteError`` also for writers that report a failed write their own way
(MXNet raises ``MXNetError``): the room left on the disk and the size of the
temporaries tell. A size limit is ``EFBIG``, not a kill (:func:`no_sigxfsz`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal

from .errors import FinetuneError, WriteError

__all__ = ["as_write_error", "failed_in", "no_sigxfsz", "write_error"]

_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC, errno.EFBIG}


def write_error(path: str, e: OSError, what: str = "file") -> WriteError:
    """The :class:`WriteError` that the ``OSError`` ``e`` means for ``path`` (``what``: how messages call it)."""
    if isinstance(e, WriteError):  # says it already
        return e
    if e.errno in _FULL:
        why = "the disk is full" if e.errno == errno.ENOSPC else "the file size limit was reached"
        msg = (f"Cannot write {path!r}: {why} ({os.strerror(e.errno)}). The previous {what}, if any, is "
               "unchanged; free space (or raise the limit) and run again.")
    else:
        msg = f"Cannot write {path!r}: {e.strerror or e}. The previous {what}, if any, is unchanged."
    err = WriteError(msg)
    err.errno, err.filename = e.errno, path
    return err


def as_write_error(e: BaseException, path: str, files, in_body: bool, what: str = "file"):
    """The :class:`WriteError` that ``e`` means for ``path`` (an ``OSError`` of the commit, or any error of the
    writer when ``files``, before their removal, show a full disk or the size limit), or None: ``e`` as it is."""
    if isinstance(e, (FinetuneError, KeyboardInterrupt, SystemExit, GeneratorExit)):  # typed already
        return None
    if isinstance(e, OSError) and (not in_body or e.errno in _FULL):
        return write_error(path, e, what)
    if isinstance(e, OSError) and e.errno is not None:  # numpy's short write ("N requested and M written") has none
        return None
    code = _full(files) if in_body else 0
    return write_error(path, OSError(code, os.strerror(code)), what) if code else None


def _full(files) -> int:
    """``ENOSPC`` or ``EFBIG`` when a write into ``files`` (paths) must have failed for lack of room, else 0."""
    files = [f for f in files if f and os.path.isfile(f)]
    if not files:
        return 0
    with contextlib.suppress(OSError):
        st = os.statvfs(os.path.dirname(os.path.abspath(files[0])))
        if min(st.f_bavail, st.f_bfree) * st.f_frsize < (1 << 20):
            return errno.ENOSPC
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and any(os.path.getsize(f) >= limit for f in files):
            return errno.EFBIG
    return 0


def failed_in(path: str, tmp, e: BaseException) -> tuple:
    """``(name shown, newest)``: the name inside ``path`` of the file a write into its temporary folder ``tmp``
    failed on (the one ``e`` names, else the last one written), and the last one written."""
    failed, when = None, -1.0
    for root, _, names in os.walk(tmp) if tmp is not None else ():
        for n in names:
            with contextlib.suppress(OSError):
                t = os.stat(os.path.join(root, n)).st_mtime_ns
                if t >= when:
                    failed, when = os.path.join(root, n), t
    if isinstance(e, OSError) and e.filename and tmp and os.fspath(e.filename).startswith(tmp):
        return os.path.join(path, os.path.relpath(os.fspath(e.filename), tmp)), failed
    return (os.path.join(path, os.path.relpath(failed, tmp)) if failed else path), failed


@contextlib.contextmanager
def no_sigxfsz():
    """Let a file-size limit surface as ``EFBIG`` instead of killing the process."""
    old = None
    with contextlib.suppress(ValueError, AttributeError, OSError):  # not the main thread / no SIGXFSZ
        old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        if old is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGXFSZ, old)
