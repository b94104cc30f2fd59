"""Atomic writes: the one way finetune's writers put files and folders on disk.

Every writer imports from here. A file is written to a temporary file in the
same folder, flushed, fsynced and renamed over the target with
:func:`os.replace` (:func:`atomic_open`, :func:`atomic_write`,
:func:`atomic_path`), so a reader (or a process killed half-way) sees either
the previous file or the complete new one, never a part. :func:`atomic_files`
and :func:`atomic_paths` commit several files as one unit (a ``.rec`` with its
``.idx``, descriptors with their ids) under the lock of the first file: the new
files are written beside the targets, then renamed in order under a small
journal, their manifest last; the next write or :func:`recover` finishes a
commit a kill interrupted, and readers call :func:`settled`, which also checks
that the parts belong together. :func:`atomic_dir` replaces a whole folder (a
model directory): the new folder is written as a hidden sibling, then swapped
in under a journal, so the previous folder survives until the new one is
complete (the next :func:`atomic_dir` or :func:`recover_dir` finishes a swap a
kill interrupted).

On every error the temporaries are removed (those of a process killed with
``kill -9`` are removed by the next write of the same output); a full disk
(``ENOSPC``) or a file-size limit (``EFBIG``) raises
:class:`~finetune.errors.WriteError` naming the file, with the previous output
intact. Writers that report a failed write their own way (MXNet raises
``MXNetError``) get the same error when the disk is found full or the file at
the size limit.

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

from ._locks import hold
from ._outputs import apply_umask, check_parts, claim_folder, manifest_path, write_manifest, write_marker
from .errors import MixedOutputError, WriteError

__all__ = ["atomic_dir", "atomic_files", "atomic_open", "atomic_path", "atomic_paths", "atomic_write", "recover",
           "recover_dir", "settled"]

_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC, errno.EFBIG}
_BUILDING = set()  # the temporary folders this process's atomic_dir calls are filling


# ----------------------------------------------------------------- temporaries, journals, errors
def _temp(path: str, *, folder: bool = False) -> str:
    """A new temporary beside ``path``: ``.name.<pid>.<random>.tmp`` (a folder: ``.tmpdir``), with the umask's mode."""
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)  # an output's folder is created like the output itself
    prefix = f".{name}.{os.getpid()}."
    if folder:
        tmp = tempfile.mkdtemp(prefix=prefix, suffix=".tmpdir", dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
        os.close(fd)
    apply_umask(tmp, folder=folder)  # the output gets the user's umask, not mkstemp's 0600
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sweep(path: str, suffixes=(".tmp",)) -> None:
    """Remove the temporaries of ``path`` (names ending in ``suffixes``) left by writer processes that were killed."""
    folder, name = os.path.split(os.path.abspath(path))
    start = f".{name}."
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            pid = entry[len(start):].split(".", 1)[0]
            if (entry.startswith(start) and entry.endswith(suffixes) and pid.isdigit() and int(pid) != os.getpid()
                    and not _alive(int(pid))):
                _remove(os.path.join(folder, entry))


def _remove(path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _journal(path, suffix: str) -> str:
    """The journal of a commit on ``path``: ``.name.commit`` (files) or ``.name.swap`` (a folder)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{suffix}")


def _aside(tmp: str) -> str:
    """Where a folder replaced by the temporary folder ``tmp`` is set aside until the commit ends."""
    return tmp.rsplit(".", 1)[0] + ".old"


def _write_journal(journal: str, pairs, **plan) -> None:
    """Put the plan of a commit (temporary -> target renames) in place: from then on it completes, even after a kill."""
    tmp = _temp(journal)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({**plan, "renames": [[os.path.basename(t), os.path.basename(p)] for t, p in pairs]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, journal)
    except BaseException:
        _remove(tmp)
        raise


def _rename_all(journal: str, pairs) -> None:
    """The renames of a commit, in order; a folder in the way is set aside first and removed at the end."""
    for tmp, path in pairs:
        if tmp.endswith(".tmpdir") and os.path.lexists(path) and not os.path.lexists(_aside(tmp)):
            os.replace(path, _aside(tmp))
        os.replace(tmp, path)
    _fsync_dir(os.path.dirname(journal))
    _remove(journal)
    for tmp, _ in pairs:
        if tmp.endswith(".tmpdir"):
            _remove(_aside(tmp))


def _finish(journal: str) -> None:
    """Finish the commit of ``journal`` that a kill interrupted; nothing when none was under way, or while the
    process that started it still runs."""
    try:
        with open(journal, encoding="utf-8") as f:
            plan = json.load(f)
        pid, pairs = plan.get("pid"), [(str(t), str(p)) for t, p in plan["renames"]]
        alive = pid is not None and int(pid) != os.getpid() and _alive(int(pid))
    except FileNotFoundError:
        return
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # written half: nothing was renamed yet
        _remove(journal)
        return
    if not alive:
        folder = os.path.dirname(journal)
        pairs = [(os.path.join(folder, os.path.basename(t)), os.path.join(folder, os.path.basename(p))) for t, p in pairs]
        _rename_all(journal, [(t, p) for t, p in pairs if os.path.lexists(t)])


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


def _as_write_error(e: BaseException, path: str, files, in_body: bool, what: str = "file"):
    """The :class:`WriteError` that ``e`` means for ``path``, or None (``e`` goes on as it is).

    An ``OSError`` of the commit itself, or of the writer's code when the disk
    is full; an error a writer raises its own way (MXNet's ``MXNetError``)
    when ``files`` show a full disk or a file at the size limit. Called before
    the temporaries go: their sizes tell.
    """
    if isinstance(e, (WriteError, KeyboardInterrupt, SystemExit, GeneratorExit)):
        return None
    if isinstance(e, OSError):
        return _write_error(path, e, what) if not in_body or e.errno in _FULL else None
    code = _full(files) if in_body else 0
    return _write_error(path, OSError(code, os.strerror(code)), what) if code else None


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


# ----------------------------------------------------------------- files
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
    with atomic_paths([path]) as (tmp,):
        yield tmp


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
    with _unit([os.fspath(p) for p in paths]) as (temps, _):
        yield list(temps)


@contextlib.contextmanager
def _unit(paths):
    """The commit of :func:`atomic_files` and :func:`atomic_paths`: yields ``(temps, files)``.

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
            raise _write_error(path, IsADirectoryError(errno.EISDIR, "a folder of that name is in the way", path))
    recover(paths)
    manifest, journal = manifest_path(paths[0]) if len(paths) > 1 else None, _journal(paths[0], ".commit")
    for path in paths + [journal] + ([manifest] if manifest else []):
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
                _write_journal(journal, zip(temps, targets))
                committing = True
                _rename_all(journal, list(zip(temps, targets)))
            _fsync_dir(os.path.dirname(os.path.abspath(paths[0])))
        except BaseException as e:
            for f in files:
                with contextlib.suppress(OSError):
                    f.close()
            err = _as_write_error(e, " + ".join(paths) if in_body else current, temps, in_body)
            if committing:
                with contextlib.suppress(OSError):
                    recover(paths)
            else:
                for tmp in temps:
                    _remove(tmp)
            if err is not None:
                raise err from e
            raise


def recover(paths) -> None:
    """Finish a commit of :func:`atomic_files` on ``paths`` that a kill interrupted (none under way: nothing).

    Called by :func:`atomic_files` itself and by :func:`settled`; readers of a multi-file output may call it first.
    """
    _finish(_journal(os.fspath(list(paths)[0]), ".commit"))


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
    if not (os.path.exists(_journal(paths[0], ".commit")) or os.path.exists(manifest_path(paths[0]))):
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


# ----------------------------------------------------------------- folders
def recover_dir(path) -> None:
    """Finish a folder swap of :func:`atomic_dir` on ``path`` that a kill interrupted.

    Does nothing when no swap was under way, or while the process that
    started it is still running. Readers of a folder written by
    :func:`atomic_dir` (``load_model``) call it first.
    """
    _finish(_journal(os.fspath(path), ".swap"))


@contextlib.contextmanager
def atomic_dir(path, *, what: str = "folder", kind: str | None = None):
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
        The folder to (re)place. It must be new, empty, or a folder finetune
        wrote as a ``kind`` folder holding nothing its marker does not list
        (:func:`finetune._outputs.claim_folder`): a user's file is never
        deleted.
    what : str
        How error messages call the folder ("model directory").
    kind : str, optional
        The kind written into the folder's marker (default: ``what``).

    Raises
    ------
    OutputExistsError
        ``path`` is a file or a folder finetune may not replace; nothing was written.
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
    >>> sorted(os.listdir(target))
    ['.finetune', 'a.txt']
    """
    path = os.path.abspath(os.fspath(path))
    kind = kind or what
    if path in _BUILDING:  # a folder this process is building for an outer atomic_dir: written in place
        yield path
        write_marker(path, kind)
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:
        raise _write_error(path, e, what) from e
    with _locked(path, what):
        recover_dir(path)
        claim_folder(path, kind, replace=True, what=what)
        yield from _swap(path, what, kind)


def _swap(path, what, kind):
    _sweep(path, (".tmpdir", ".old"))
    journal = _journal(path, ".swap")
    _sweep(journal)
    tmp, in_body, committing = None, False, False
    with _no_sigxfsz():
        try:
            tmp = _temp(path, folder=True)
            in_body = True
            _BUILDING.add(tmp)
            try:
                yield tmp
            finally:
                _BUILDING.discard(tmp)
            in_body = False
            write_marker(tmp, kind)
            for root, _, names in os.walk(tmp):
                for name in names:
                    with open(os.path.join(root, name), "rb+") as f:
                        os.fsync(f.fileno())
                _fsync_dir(root)
            _write_journal(journal, [(tmp, path)], pid=os.getpid())
            committing = True
            _rename_all(journal, [(tmp, path)])
        except BaseException as e:
            if committing:
                with contextlib.suppress(OSError):
                    recover_dir(path)
                raise
            failed = _newest(tmp) if tmp is not None else None
            shown = os.path.join(path, os.path.relpath(failed, tmp)) if failed else path
            if isinstance(e, OSError) and e.filename and tmp and os.fspath(e.filename).startswith(tmp):
                shown = os.path.join(path, os.path.relpath(os.fspath(e.filename), tmp))
            err = _as_write_error(e, shown, [failed], in_body, what)
            if tmp is not None:
                _remove(tmp)
            if err is not None:
                raise err from e
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
