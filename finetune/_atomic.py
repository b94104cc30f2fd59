"""Atomic file writes: the one way finetune's writers put files on disk.

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
:func:`atomic_dir` replaces a whole folder (a model directory): the new
folder is written as a hidden sibling, then swapped in under a journal, so
the previous folder survives until the new one is complete (the next
:func:`atomic_dir` or :func:`recover_dir` finishes a swap a kill interrupted).

On every error the temporaries are removed (those of a process killed
with ``kill -9`` are removed by the next write of the same file); a full disk (``ENOSPC``) or a
file-size limit (``EFBIG``) raises :class:`~finetune.errors.WriteError` naming
the file, with the previous output intact. Writers that report a failed write
their own way (MXNet raises ``MXNetError``) get the same error when the
disk is found full or the file at the size limit.

Written by hand: no maintained library offers journaled multi-file commits
and folder swaps with this cleanup (``atomicwrites`` is archived and
handles single files only).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile

from .errors import WriteError

__all__ = ["atomic_dir", "atomic_files", "atomic_open", "atomic_path", "atomic_paths", "atomic_write", "recover",
           "recover_dir", "scratch_dir"]

_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC, errno.EFBIG}


def _temp(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    os.close(fd)
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
                     **({"encoding": "utf-8"} if isinstance(data, str) else {})) as f:
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
    >>> sorted(os.listdir(folder))
    ['x.bin', 'x.txt']
    """
    paths = [os.fspath(p) for p in paths]
    with _unit(paths) as (temps, _):
        yield list(temps)


@contextlib.contextmanager
def _unit(paths):
    """The commit shared by :func:`atomic_files` and :func:`atomic_paths`: yields ``(temps, files)``.

    The body may append open file objects to ``files``; they are flushed,
    fsynced and closed before the renames.
    """
    if len({os.path.dirname(os.path.abspath(p)) for p in paths}) != 1:
        raise ValueError("atomic_files needs every path in the same folder.")
    recover(paths)
    for path in paths + [_journal(paths)]:
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
            if len(paths) == 1:
                os.replace(temps[0], paths[0])
            else:
                journal = _journal(paths)
                jtmp = _temp(journal)
                temps.append(jtmp)
                with open(jtmp, "w", encoding="utf-8") as f:
                    json.dump([[os.path.basename(t), os.path.basename(p)] for t, p in zip(temps, paths)], f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(jtmp, journal)  # from here on the commit completes, even after a kill
                committing = True
                for tmp, path in zip(temps, paths):
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


# ----------------------------------------------------------------- folders
def _dir_journal(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.swap")


def _sweep_dirs(path: str) -> None:
    """Remove the temporary and set-aside folders of ``path`` left by killed writers."""
    folder, name = os.path.split(os.path.abspath(path))
    start = f".{name}."
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            if not (entry.startswith(start) and entry.endswith((".tmpdir", ".old"))):
                continue
            pid = entry[len(start):].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)


def _fsync_tree(folder: str) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb+") as f:
                os.fsync(f.fileno())
        _fsync_dir(root)


def recover_dir(path) -> None:
    """Finish a folder swap of :func:`atomic_dir` on ``path`` that a kill interrupted.

    Does nothing when no swap was under way, or while the process that
    started it is still running. Readers of a folder written by
    :func:`atomic_dir` (``load_model``) call it first.
    """
    path = os.path.abspath(os.fspath(path))
    journal = _dir_journal(path)
    try:
        with open(journal, encoding="utf-8") as f:
            plan = json.load(f)
        pid, new, old = int(plan["pid"]), str(plan["new"]), str(plan["old"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, TypeError, KeyError):
        _remove(journal)  # written half: nothing was renamed yet
        return
    if pid != os.getpid() and _alive(pid):
        return
    parent = os.path.dirname(path)
    new, old = os.path.join(parent, os.path.basename(new)), os.path.join(parent, os.path.basename(old))
    if os.path.isdir(new):
        if os.path.lexists(path) and not os.path.lexists(old):
            os.replace(path, old)
        os.replace(new, path)
        _fsync_dir(parent)
    _remove(journal)
    if os.path.lexists(old):
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            _remove(old)


@contextlib.contextmanager
def atomic_dir(path, *, what: str = "folder"):
    """Yield a temporary folder that replaces the folder ``path`` when the ``with`` block succeeds.

    The temporary folder is a hidden sibling of ``path`` (same file system).
    On success its files are fsynced and it is swapped in under a journal:
    ``path`` is renamed aside, the new folder renamed to ``path``, the old one
    removed. A kill at any moment leaves the previous folder, or the complete
    new one once :func:`recover_dir` (called by the next :func:`atomic_dir`
    on ``path`` and by readers) has finished the swap; never a partial folder
    at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The folder to (re)place; anything in it is replaced.
    what : str
        How error messages call the folder ("model directory").

    Raises
    ------
    WriteError
        A file cannot be written (disk full, size limit, ...), naming it
        (as it would be inside ``path``); the previous folder is intact and
        the temporary folder is removed.

    Examples
    --------
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "out")
    >>> with atomic_dir(target) as tmp:
    ...     _ = open(os.path.join(tmp, "a.txt"), "w").write("new")
    >>> os.listdir(target)
    ['a.txt']
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    recover_dir(path)
    _sweep_dirs(path)
    _sweep(_dir_journal(path))
    tmp, in_body, committing = None, False, False
    with _no_sigxfsz():
        try:
            tmp = tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmpdir", dir=parent)
            in_body = True
            yield tmp
            in_body = False
            _fsync_tree(tmp)
            old = tmp[: -len(".tmpdir")] + ".old"
            journal = _dir_journal(path)
            jtmp = _temp(journal)
            try:
                with open(jtmp, "w", encoding="utf-8") as f:
                    json.dump({"pid": os.getpid(), "new": os.path.basename(tmp), "old": os.path.basename(old)}, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(jtmp, journal)  # from here on the swap completes, even after a kill
            except BaseException:
                _remove(jtmp)
                raise
            committing = True
            if os.path.lexists(path):
                os.replace(path, old)
            os.replace(tmp, path)
            _fsync_dir(parent)
            _remove(journal)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException as e:
            if committing:
                with contextlib.suppress(OSError):
                    recover_dir(path)
                raise
            failed = _newest(tmp) if tmp is not None else None
            shown = os.path.join(path, os.path.relpath(failed, tmp)) if failed else path
            if isinstance(e, OSError) and e.filename and tmp and os.fspath(e.filename).startswith(tmp):
                shown = os.path.join(path, os.path.relpath(os.fspath(e.filename), tmp))
            native = _native_error(shown, [failed] if failed else [], e, what) if in_body else None
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and not isinstance(e, WriteError) and (not in_body or e.errno in _FULL):
                raise _write_error(shown, e, what) from e
            if native is not None:
                raise native from e
            raise


def _newest(folder: str):
    """The file last written under ``folder`` (the one a failed write was filling), or None."""
    best, when = None, -1.0
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            with contextlib.suppress(OSError):
                t = os.stat(p).st_mtime_ns
                if t >= when:
                    best, when = p, t
    return best


@contextlib.contextmanager
def scratch_dir(path):
    """Yield a hidden scratch folder beside ``path``, removed when the ``with`` block ends.

    For outputs that a third-party writer produces under names it chooses
    (``HybridBlock.export(prefix)``): write them into the scratch folder,
    then move them onto the temporaries of :func:`atomic_paths` (same file
    system, so the moves are renames). A scratch folder left by a killed
    process is removed by the next :func:`scratch_dir` or :func:`atomic_dir`
    on ``path``.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    _sweep_dirs(path)
    try:
        tmp = tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmpdir", dir=parent)
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
