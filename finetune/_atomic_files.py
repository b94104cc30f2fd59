"""Atomic file writes and journaled multi-file units (see :mod:`finetune._atomic`).

A file is written to a temporary file in the same folder, flushed, fsynced
and renamed over the target with :func:`os.replace`, so a reader (or a
process killed half-way) sees either the previous file or the complete new
one, never a part. :func:`atomic_files` commits several files as one unit
(a ``.rec`` with its ``.idx``, descriptors with their ids): the new files are
written beside the targets first, then renamed in order under a small
journal; if the process dies between renames, the next :func:`atomic_files`
or :func:`recover` on those targets finishes the interrupted commit, so the
set is always all-old or all-new once any finetune writer looks at it.
:func:`atomic_paths` does the same for writers that take file names.

The helpers here (temporaries, sweeping, fsync, disk-full errors) are shared
with the folder swaps of :mod:`finetune._atomic`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import tempfile

from ._locks import hold
from ._outputs import apply_umask, check_parts, manifest_path, write_manifest
from .errors import MixedOutputError, WriteError

__all__ = ["atomic_files", "atomic_open", "atomic_path", "atomic_paths", "atomic_write", "recover", "settled"]

_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC, errno.EFBIG}


def _temp(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)  # an output's folder is created like the output itself
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    os.close(fd)
    apply_umask(tmp)  # the final file gets the user's umask, not mkstemp's 0600
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sweep(path: str) -> None:
    """Remove temporaries of ``path`` left by writer processes that were killed."""
    folder, name = os.path.split(os.path.abspath(path))
    start = f".{name}."
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            if not (entry.startswith(start) and entry.endswith(".tmp")):
                continue
            pid = entry[len(start):].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                _remove(os.path.join(folder, entry))


def _remove(path) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_error(path: str, e: OSError, what: str = "file") -> WriteError:
    if e.errno in _FULL:
        why = "the disk is full" if e.errno == errno.ENOSPC else "the file size limit was reached"
        msg = (f"Cannot write {path!r}: {why} ({os.strerror(e.errno)}). The previous {what}, if any, is "
               "unchanged; free space (or raise the limit) and run again.")
    else:
        msg = f"Cannot write {path!r}: {e.strerror or e}. The previous {what}, if any, is unchanged."
    err = WriteError(msg)
    err.errno, err.filename = e.errno, path
    return err


def _full(files) -> int:
    """``ENOSPC`` or ``EFBIG`` when a write into ``files`` (paths) must have failed for lack of room, else 0.

    For writers that do not raise :class:`OSError` (MXNet's ``mx.nd.save``
    raises ``MXNetError: FileStream.Write incomplete``).
    """
    files = [f for f in files if os.path.isfile(f)]
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


def _native_error(path: str, files, e: BaseException, what: str = "file"):
    """A :class:`WriteError` for a non-``OSError`` ``e`` raised while writing ``files``, or None."""
    code = 0 if isinstance(e, (OSError, KeyboardInterrupt, SystemExit, GeneratorExit)) else _full(files)
    if not code:
        return None
    return _write_error(path, OSError(code, os.strerror(code)), what)


@contextlib.contextmanager
def _no_sigxfsz():
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


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **kwargs):
    """Open a temporary file that replaces ``path`` when the ``with`` block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The file to (re)place.
    mode : {"wb", "w"}
        Binary or text; ``kwargs`` (e.g. ``encoding``, ``newline``) go to :func:`open`.

    Raises
    ------
    WriteError
        The file cannot be written; ``path`` keeps its previous content and the
        temporary file is removed.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> with atomic_open(path, "w") as f:
    ...     _ = f.write("hello")
    >>> open(path).read()
    'hello'
    """
    path = os.fspath(path)
    with atomic_files([path], [mode], **kwargs) as (f,):
        yield f


def atomic_write(path, data) -> None:
    """Write ``data`` (bytes or str) to ``path`` atomically; see :func:`atomic_open`."""
    with atomic_open(path, "w" if isinstance(data, str) else "wb",
                     **({"encoding": "utf-8", "errors": "surrogateescape"} if isinstance(data, str) else {})) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary file name that replaces ``path`` when the ``with`` block succeeds.

    For writers that take a file name (``mx.nd.save``, ``cv2.imwrite``, ...);
    the same guarantees as :func:`atomic_open`.
    """
    path = os.fspath(path)
    _sweep(path)
    tmp, in_body = None, False
    with _no_sigxfsz():
        try:
            tmp = _temp(path)
            in_body = True
            yield tmp
            in_body = False
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(os.path.dirname(os.path.abspath(path)))
        except BaseException as e:
            native = _native_error(path, [tmp], e) if in_body and tmp is not None else None
            if tmp is not None:
                _remove(tmp)
            if isinstance(e, OSError) and not isinstance(e, WriteError) and (not in_body or e.errno in _FULL):
                raise _write_error(path, e) from e
            if native is not None:
                raise native from e
            raise


@contextlib.contextmanager
def _locked(path, what: str = "file"):
    """:func:`finetune._locks.hold` of ``path``, waiting for another writer; a lock that cannot be made is a
    :class:`WriteError`."""
    try:
        lock = hold(path)
        lock.__enter__()
    except OSError as e:
        raise _write_error(path, e, what) from e
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def settled(paths, *, what: str = "output") -> None:
    """Make the multi-file output ``paths`` readable: finish an interrupted commit, check the parts belong together.

    Readers call it before reading. A commit is finished only when no writer
    holds the output's lock (a writer that died released it); while a writer
    is at work, a reader that finds the parts mixed waits for it to finish.
    A read-only folder needs no finishing.

    Raises
    ------
    MixedOutputError
        The files come from different writes (see :func:`finetune._outputs.check_parts`).
    """
    paths = [os.fspath(p) for p in paths]
    if not (os.path.exists(_journal(paths)) or os.path.exists(manifest_path(paths[0]))):
        return  # not written by finetune (or not at all): nothing to finish or check, no lock file made
    try:
        with hold(paths[0], wait=False) as taken:
            if taken:  # no writer at work: finish what a killed one left, then check
                with contextlib.suppress(OSError):
                    recover(paths)
                check_parts(paths, what=what)
                return
    except OSError:  # no lock can be made here (read-only): nobody writes here either
        check_parts(paths, what=what)
        return
    try:  # a writer is at work: read what is there, or wait for it when that is mixed
        check_parts(paths, what=what)
    except MixedOutputError:
        with hold(paths[0]):
            check_parts(paths, what=what)


def _journal(paths) -> str:
    first = os.path.abspath(paths[0])
    folder, name = os.path.split(first)
    return os.path.join(folder, f".{name}.commit")


def recover(paths) -> None:
    """Finish a commit of :func:`atomic_files` on ``paths`` that a kill interrupted.

    Does nothing when no commit was under way. Called by :func:`atomic_files`
    itself; readers of a multi-file output may call it first.
    """
    paths = [os.fspath(p) for p in paths]
    journal = _journal(paths)
    try:
        with open(journal, encoding="utf-8") as f:
            plan = json.load(f)
        pairs = [(str(t), str(p)) for t, p in plan]
    except (OSError, ValueError, TypeError):
        _remove(journal)  # absent, or written half: nothing was renamed yet
        return
    folder = os.path.dirname(os.path.abspath(paths[0]))
    for tmp, path in pairs:
        tmp, path = os.path.join(folder, os.path.basename(tmp)), os.path.join(folder, os.path.basename(path))
        if os.path.exists(tmp):
            os.replace(tmp, path)
    _fsync_dir(folder)
    _remove(journal)


@contextlib.contextmanager
def atomic_files(paths, modes=None, **kwargs):
    """Write several files that replace ``paths`` together, as one unit.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        The files to (re)place; all in the same folder.
    modes : sequence of {"wb", "w"}, optional
        One open mode per file (default binary).
    **kwargs
        Passed to :func:`open` for text files.

    Yields
    ------
    list of file objects
        Write each file; when the ``with`` block ends without an error all
        files replace their targets. A kill at any moment leaves either every
        previous file or every new one (the next call on the same ``paths``,
        or :func:`recover`, completes an interrupted rename sequence).

    Raises
    ------
    WriteError
        A file cannot be written (disk full, size limit, ...); the previous
        files are intact and every temporary is removed.
    """
    paths = [os.fspath(p) for p in paths]
    modes = list(modes) if modes is not None else ["wb"] * len(paths)
    with _unit(paths) as (temps, opened):
        for tmp, mode in zip(temps, modes):
            opened.append(open(tmp, mode, **({} if "b" in mode else kwargs)))
        yield list(opened)


@contextlib.contextmanager
def atomic_paths(paths):
    """Yield temporary file names that replace ``paths`` together, as one unit.

    :func:`atomic_files` for writers that take a file name (``mx.nd.save``,
    ``faiss.write_index``, ...); the same guarantees. A writer that adds its
    own extension to the name it is given (``np.savez``) needs a file
    object instead: ``open`` the temporary name.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> a, b = os.path.join(folder, "x.bin"), os.path.join(folder, "x.txt")
    >>> with atomic_paths([a, b]) as (ta, tb):
    ...     _ = open(ta, "wb").write(b"1"); _ = open(tb, "w").write("2")
    >>> sorted(os.listdir(folder))   # the parts, their manifest and the lock of the unit
    ['.x.bin.finetune', '.x.bin.lock', 'x.bin', 'x.txt']
    """
    paths = [os.fspath(p) for p in paths]
    with _unit(paths) as (temps, _):
        yield list(temps)


@contextlib.contextmanager
def _unit(paths):
    """The commit shared by :func:`atomic_files` and :func:`atomic_paths`: yields ``(temps, files)``.

    The body may append open file objects to ``files``; they are flushed,
    fsynced and closed before the renames. A unit of several files is
    written under the lock of its first file (one writer at a time) and
    committed with a manifest (:func:`finetune._outputs.write_manifest`) that
    its readers check with :func:`settled`.
    """
    if len({os.path.dirname(os.path.abspath(p)) for p in paths}) != 1:
        raise ValueError("atomic_files needs every path in the same folder.")
    with (_locked(paths[0]) if len(paths) > 1 else contextlib.nullcontext()):
        yield from _commit(paths)


def _commit(paths):
    for path in paths:
        if os.path.isdir(path):
            err = IsADirectoryError(errno.EISDIR, "a folder of that name is in the way", path)
            raise _write_error(path, err)
    recover(paths)
    manifest = manifest_path(paths[0]) if len(paths) > 1 else None
    for path in paths + [_journal(paths)] + ([manifest] if manifest else []):
        _sweep(path)
    temps, files = [], []
    current, in_body, committing = paths[0], False, False
    with _no_sigxfsz():
        try:
            for path in paths:
                current = path
                temps.append(_temp(path))
            in_body = True
            yield temps, files
            in_body = False
            for path, f in zip(paths, files):
                current = path
                f.flush()
                os.fsync(f.fileno())
                f.close()
            for path, tmp in zip(paths[len(files):], temps[len(files):]):  # written by name
                current = path
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            current = paths[0]
            if manifest is None:
                os.replace(temps[0], paths[0])
            else:
                temps.append(_temp(manifest))
                write_manifest(temps[-1], dict(zip(paths, temps)))
                targets = paths + [manifest]  # the manifest last: it names the new generation
                journal = _journal(paths)
                jtmp = _temp(journal)
                temps.append(jtmp)
                with open(jtmp, "w", encoding="utf-8") as f:
                    json.dump([[os.path.basename(t), os.path.basename(p)] for t, p in zip(temps, targets)], f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(jtmp, journal)  # from here on the commit completes, even after a kill
                committing = True
                for tmp, path in zip(temps, targets):
                    os.replace(tmp, path)
                _remove(journal)
            _fsync_dir(os.path.dirname(os.path.abspath(paths[0])))
        except BaseException as e:
            for f in files:
                with contextlib.suppress(OSError):
                    f.close()
            native = _native_error(" + ".join(paths), temps, e) if in_body else None
            if committing:
                with contextlib.suppress(OSError):
                    recover(paths)
            else:
                for tmp in temps:
                    _remove(tmp)
            if isinstance(e, OSError) and not isinstance(e, WriteError) and (not in_body or e.errno in _FULL):
                raise _write_error(" + ".join(paths) if in_body else current, e) from e
            if native is not None:
                raise native from e
            raise
