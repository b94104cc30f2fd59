"""Atomic writes: the one way finetune's writers put files and folders on disk.

Every writer imports from here. Files — one at a time (:func:`atomic_open`,
:func:`atomic_write`, :func:`atomic_path`) or several committed as one unit
under a journal (:func:`atomic_files`, :func:`atomic_paths`, :func:`recover`)
— are written by :mod:`finetune._atomic_files`, re-exported here: a reader
sees the previous output or the complete new one, never a part.
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
import json
import os
import shutil
import tempfile

from ._atomic_files import (_FULL, _alive, _fsync_dir, _locked, _native_error, _no_sigxfsz, _remove, _sweep,
                            _temp, _write_error, atomic_files, atomic_open, atomic_path, atomic_paths, atomic_write,
                            recover, settled)
from ._outputs import apply_umask, claim_folder, write_marker
from .errors import WriteError

__all__ = ["atomic_dir", "atomic_files", "atomic_open", "atomic_path", "atomic_paths", "atomic_write", "recover",
           "recover_dir", "scratch_dir", "settled"]


# ----------------------------------------------------------------- folders
_BUILDING = set()  # the temporary folders this process's atomic_dir calls are filling
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
    parent, name = os.path.split(path)
    kind = kind or what
    if path in _BUILDING:  # a folder this process is building for an outer atomic_dir: written in place
        yield path
        write_marker(path, kind)
        return
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise _write_error(path, e, what) from e
    with _locked(path, what):
        recover_dir(path)
        claim_folder(path, kind, replace=True, what=what)
        yield from _swap(path, parent, name, what, kind)


def _swap(path, parent, name, what, kind):
    _sweep_dirs(path)
    _sweep(_dir_journal(path))
    tmp, in_body, committing = None, False, False
    with _no_sigxfsz():
        try:
            tmp = tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmpdir", dir=parent)
            in_body = True
            apply_umask(tmp, folder=True)
            _BUILDING.add(tmp)
            try:
                yield tmp
            finally:
                _BUILDING.discard(tmp)
            in_body = False
            write_marker(tmp, kind)
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
