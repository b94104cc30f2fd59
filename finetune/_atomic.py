"""Atomic writes: the one way finetune's writers put files and folders on disk.

Every writer imports from here; a reader (or a process killed half-way) sees
the previous output or the complete new one, never a part. One commit serves
every output: the new files are written as temporaries beside their targets,
fsynced, and renamed over them. One file (:func:`atomic_open`,
:func:`atomic_write`, :func:`atomic_path`) is simply renamed. Several files
(:func:`atomic_files`, :func:`atomic_paths`: a ``.rec`` with its ``.idx``,
descriptors with their ids) are committed under the lock of the first one,
with a manifest, by renames under a journal; a folder (:func:`atomic_dir`: a
model directory) is written as a hidden sibling and swapped in under a
journal, the previous folder set aside until the end. The next write,
:func:`recover` or :func:`recover_dir` finishes a commit a kill interrupted;
readers of several files call :func:`settled`, which also checks that the
parts belong together.

On every error the temporaries are removed (those of a process killed with
``kill -9`` by the next write of the same output); a full disk (``ENOSPC``)
or a file-size limit (``EFBIG``) raises :class:`~finetune.errors.WriteError`
naming the file, with the previous output intact, also for writers that
report a failed write their own way (MXNet raises ``MXNetError``).

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


# ----------------------------------------------------------------- the public writers
@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **kwargs):
    """Open a temporary file that replaces ``path`` when the ``with`` block succeeds.

    ``mode`` is ``"wb"`` or ``"w"``; ``kwargs`` (``encoding``, ``newline``) go
    to :func:`open`. Raises :class:`WriteError` when the file cannot be
    written; ``path`` then keeps its previous content and the temporary is removed.

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
    """Write several files (all in one folder) that replace ``paths`` together, as one unit.

    Yields one open file per path (``modes``: ``"wb"`` or ``"w"`` each, default
    binary; ``kwargs`` go to :func:`open` for text files). When the ``with``
    block ends without an error all files replace their targets; a kill at
    any moment leaves every previous file or every new one (the next call on
    ``paths``, or :func:`recover`, completes an interrupted commit). Raises
    :class:`WriteError` when a file cannot be written (disk full, size
    limit, ...); the previous files are then intact and every temporary removed.
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
    ``faiss.write_index``, ...). A writer that adds its own extension to the
    name it is given (``np.savez``) needs a file object: ``open`` the name.

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
def atomic_dir(path, *, what: str = "folder", kind: str | None = None):
    """Yield a temporary folder that replaces the folder ``path`` when the ``with`` block succeeds.

    The temporary folder is a hidden sibling of ``path``. On success its files
    are fsynced and it is swapped in under a journal (``path`` set aside, the
    new folder renamed to ``path``, the old one removed): a kill at any moment
    leaves the previous folder, or the complete new one once :func:`recover_dir`
    (called by the next :func:`atomic_dir` and by readers) has run. ``path``
    must be new, empty, or a folder finetune wrote as a ``kind`` folder
    (default: ``what``, how messages call it, e.g. "model directory") holding
    nothing its marker does not list (:func:`finetune._outputs.claim_folder`):
    a user's file is never deleted. Raises :class:`OutputExistsError` when
    ``path`` may not be replaced (nothing written), :class:`WriteError` when a
    file cannot be written, named as it would be inside ``path`` (the previous
    folder intact).

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
        with _unit([path], what=what, kind=kind) as (temps, _):
            yield temps[0]


def recover(paths) -> None:
    """Finish a commit of :func:`atomic_files` on ``paths`` that a kill interrupted (none under way: nothing).

    Called by :func:`atomic_files` itself and by :func:`settled`; readers of a multi-file output may call it first.
    """
    _finish(_journal(os.fspath(list(paths)[0]), ".commit"))


def recover_dir(path) -> None:
    """Finish a folder swap of :func:`atomic_dir` on ``path`` that a kill interrupted.

    Does nothing when no swap was under way, or while the process that
    started it is still running. Readers of a folder written by
    :func:`atomic_dir` (``load_model``) call it first.
    """
    _finish(_journal(os.fspath(path), ".swap"))


def settled(paths, *, what: str = "output") -> None:
    """Make the multi-file output ``paths`` readable: finish an interrupted commit, check the parts belong together.

    Readers call it before reading. A commit is finished only when no writer
    holds the output's lock (a writer that died released it); while a writer
    is at work, a reader that finds the parts mixed waits for it to finish.
    A read-only folder needs no finishing. Raises :class:`MixedOutputError`
    when the files come from different writes (:func:`finetune._outputs.check_parts`).
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


# ----------------------------------------------------------------- the commit
@contextlib.contextmanager
def _unit(paths, *, what: str = "file", kind: str | None = None):
    """Write ``paths`` through temporaries renamed over them at the end: yields ``(temps, files)``.

    The body may append open file objects to ``files`` (flushed, fsynced and
    closed before the renames). Several files (under the lock of the first)
    with their manifest (:func:`finetune._outputs.write_manifest`, renamed
    last), or one folder (``kind``: the temporary is a folder marked so), are
    renamed under a journal.
    """
    if len({os.path.dirname(os.path.abspath(p)) for p in paths}) != 1:
        raise ValueError("atomic_files needs every path in the same folder.")
    with (_locked(paths[0]) if len(paths) > 1 else contextlib.nullcontext()):
        yield from _commit(paths, what, kind)


def _commit(paths, what, kind):
    folder = kind is not None
    for path in paths:
        if os.path.isdir(path) and not folder:
            raise _write_error(path, IsADirectoryError(errno.EISDIR, "a folder of that name is in the way", path))
    journal = _journal(paths[0], ".swap" if folder else ".commit")
    _finish(journal)
    manifest = manifest_path(paths[0]) if len(paths) > 1 else None
    for path in paths + [journal] + ([manifest] if manifest else []):
        _sweep(path)
    temps, files = [], []
    current, in_body, committing = paths[0], False, False
    with _no_sigxfsz():
        try:
            for path in paths:
                current = path
                temps.append(_temp(path, folder=folder))
            in_body = True
            _BUILDING.update(temps if folder else [])
            try:
                yield temps, files
            finally:
                _BUILDING.difference_update(temps)
            in_body = False
            for path, f in zip(paths, files):
                current = path
                f.flush()
                os.fsync(f.fileno())
                f.close()
            if folder:
                write_marker(temps[0], kind)
            for path, tmp in zip(paths[len(files):], temps[len(files):]):  # written by name
                current = path
                _fsync_all(tmp)
            current = paths[0]
            if manifest is None and not folder:
                os.replace(temps[0], paths[0])
            else:
                if manifest is not None:  # the manifest last: it names the new generation
                    temps.append(_temp(manifest))
                    write_manifest(temps[-1], dict(zip(paths, temps)))
                pairs = list(zip(temps, paths + [manifest]))
                _write_journal(journal, pairs, **({"pid": os.getpid()} if folder else {}))
                committing = True
                _rename_all(journal, pairs)
            _fsync_dir(os.path.dirname(os.path.abspath(paths[0])))
        except BaseException as e:
            for f in files:
                with contextlib.suppress(OSError):
                    f.close()
            if folder:
                shown, failed = _failed_in(paths[0], temps[0] if temps else None, e)
                err = _as_write_error(e, shown, [failed], in_body, what)
            else:
                err = _as_write_error(e, " + ".join(paths) if in_body else current, temps, in_body, what)
            if committing:
                with contextlib.suppress(OSError):
                    _finish(journal)
            else:
                for tmp in temps:
                    _remove(tmp)
            if err is not None:
                raise err from e
            raise


def _journal(path, suffix: str) -> str:
    """The journal of a commit on ``path``: ``.name.commit`` (files) or ``.name.swap`` (a folder)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{suffix}")


def _aside(tmp: str) -> str:
    """Where the folder that the temporary folder ``tmp`` replaces is set aside until the commit ends."""
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


def _rename_all(journal: str, pairs, *, finishing: bool = False) -> None:
    """The renames of a commit, in order (``finishing``: those not done yet); a folder in the way is set aside
    first and removed at the end."""
    for tmp, path in pairs:
        if finishing and not os.path.lexists(tmp):
            continue
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
        _rename_all(journal, pairs, finishing=True)


# ----------------------------------------------------------------- temporaries and the file system
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
        pass
    return True


def _sweep(path: str) -> None:
    """Remove the temporaries of ``path`` (and folders set aside for it) left by writer processes that were killed."""
    folder, name = os.path.split(os.path.abspath(path))
    start = f".{name}."
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            pid = entry[len(start):].split(".", 1)[0]
            if (entry.startswith(start) and entry.endswith((".tmp", ".tmpdir", ".old")) and pid.isdigit()
                    and int(pid) != os.getpid() and not _alive(int(pid))):
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


def _fsync_all(path: str) -> None:
    """fsync the file ``path``, or every file and folder under the folder ``path``."""
    for root, _, names in os.walk(path) if os.path.isdir(path) else [(None, None, [path])]:
        for name in names:
            with open(name if root is None else os.path.join(root, name), "rb+") as f:
                os.fsync(f.fileno())
        if root is not None:
            _fsync_dir(root)


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


def _failed_in(path: str, tmp, e: BaseException) -> tuple:
    """``(name shown, file)``: the file a write into the temporary folder ``tmp`` of ``path`` failed on."""
    failed = _newest(tmp) if tmp is not None else None
    if isinstance(e, OSError) and e.filename and tmp and os.fspath(e.filename).startswith(tmp):
        return os.path.join(path, os.path.relpath(os.fspath(e.filename), tmp)), failed
    return (os.path.join(path, os.path.relpath(failed, tmp)) if failed else path), failed


# ----------------------------------------------------------------- errors
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


def _as_write_error(e: BaseException, path: str, files, in_body: bool, what: str = "file"):
    """The :class:`WriteError` that ``e`` means for ``path`` (an ``OSError`` of the commit, or any error of the
    writer when ``files``, before their removal, show a full disk or the size limit), or None: ``e`` as it is."""
    if isinstance(e, (WriteError, KeyboardInterrupt, SystemExit, GeneratorExit)):
        return None
    if isinstance(e, OSError):
        return _write_error(path, e, what) if not in_body or e.errno in _FULL else None
    code = _full(files) if in_body else 0
    return _write_error(path, OSError(code, os.strerror(code)), what) if code else None


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
