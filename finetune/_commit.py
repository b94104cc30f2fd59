"""The one commit of every atomic writer: temporaries renamed over their targets, under a journal.

A reader (or a process killed half-way) sees the previous output or the
complete new one, never a part. One file is simply renamed; several files
and a folder (the previous one set aside until the end) are renamed under a
journal that the next commit or a reader finishes after a kill
(:func:`finish`). What is not a regular file is never replaced: a single
file written to a device, pipe or socket (``/dev/null``, ``/dev/stdout``) is
written through, a symbolic link is followed to the file it names, and a unit
of several files or a folder refuses a device in the way. Temporaries are
removed on every error, those of a process killed with ``kill -9`` by the
next commit of the same output.

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
import stat
import tempfile

from ._locks import hold, sidecar_stem
from ._outputs import apply_umask, write_marker
from ._formats import mark_image_file
from ._units import manifest_path, refuse_foreign_part, refuse_replacing_an_image, write_manifest
from ._write_errors import as_write_error, failed_in, no_sigxfsz, write_error

__all__ = ["commit", "finish", "journal_path", "locked"]


@contextlib.contextmanager
def commit(paths, *, what: str = "file", kind: str | None = None):
    """Write ``paths`` (all in one folder) through temporaries renamed over them when the block succeeds.

    Yields ``(temps, files)``: a temporary per path, and a list for the open
    files of the first temporaries (flushed, fsynced and closed before the
    renames; the others are written by name). Several files (under the lock of
    the first, their manifest renamed last) or one folder (``kind`` given: a
    temporary folder, marked at the end) are renamed under a journal. Raises
    :class:`WriteError` naming the file (``what``: how it calls the output).
    """
    folder = kind is not None
    if len(paths) == 1 and not folder:
        if _special(paths[0]):
            with _write_through(paths[0], what) as handles:
                yield handles
            return
        paths = [_followed(paths[0])]
    for path in paths:
        if _special(path):
            raise write_error(path, OSError(errno.EINVAL, "it is a device, pipe or socket, not a file; give a "
                                                          "path in a folder", path), what)
        if len(os.fsencode(os.path.basename(path))) > _name_max(path):  # found before anything is written
            raise write_error(path, OSError(errno.ENAMETOOLONG, f"its name is longer than the file system's "
                                                                f"{_name_max(path)} bytes; give a shorter one", path), what)
    if len({os.path.dirname(os.path.abspath(p)) for p in paths}) != 1:
        raise ValueError("atomic_files needs every path in the same folder.")
    with (locked(paths[0]) if len(paths) > 1 else contextlib.nullcontext()), no_sigxfsz():
        for path in paths:
            if os.path.isdir(path) and not folder:
                raise write_error(path, IsADirectoryError(errno.EISDIR, "a folder of that name is in the way", path))
        journal = journal_path(paths[0], folder=folder)
        finish(journal)
        manifest = manifest_path(paths[0]) if len(paths) > 1 else None
        for path in paths + [journal] + ([manifest] if manifest else []):
            _sweep(path)
        temps, files = [], []
        current, in_body, committing = paths[0], False, False
        try:
            for path in paths:
                current = path
                temps.append(_temp(path, folder=folder))
            in_body = True
            yield temps, files
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
            if not folder:
                for path, tmp in zip(paths, temps):
                    mark_image_file(tmp)  # an image finetune writes may later be replaced by finetune
                    refuse_replacing_an_image(path, tmp)
                    refuse_foreign_part(path, tmp, manifest_path(paths[0]) if manifest else None)
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
                shown, failed = failed_in(paths[0], temps[0] if temps else None, e)
                err = as_write_error(e, shown, [failed], in_body, what)
            else:
                err = as_write_error(e, " + ".join(paths) if in_body else current, temps, in_body, what)
            if committing:
                with contextlib.suppress(OSError):
                    finish(journal)
            else:
                for tmp in temps:
                    _remove(tmp)
            if err is not None:
                raise err from e
            raise


@contextlib.contextmanager
def locked(path, what: str = "file"):
    """:func:`finetune._locks.hold` of ``path``, waiting for another writer; a lock that cannot be made is a
    :class:`WriteError`."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(hold(path))
        except OSError as e:
            raise write_error(path, e, what) from e
        yield


# ----------------------------------------------------------------- the journal
def journal_path(path, *, folder: bool = False) -> str:
    """The journal of a commit on ``path``: ``.name.commit`` beside it (files) or ``.name.swap`` (a ``folder``)."""
    parent, stem = sidecar_stem(path)
    return os.path.join(parent, stem + (".swap" if folder else ".commit"))


def finish(journal: str) -> None:
    """Finish the commit of ``journal`` that a kill interrupted; nothing when none was under way, or while the
    process that started it (a folder swap's) still runs."""
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


def _name_max(path: str) -> int:
    """The longest file name (bytes) the file system of ``path``'s folder takes (255 when it cannot say)."""
    folder = os.path.dirname(os.path.abspath(path))
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        return int(os.pathconf(folder or "/", "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


# ----------------------------------------------------------------- what is not a regular file
def _special(path: str) -> bool:
    """Whether ``path`` (a link followed) is a device, pipe or socket: something a rename must never replace."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))


def _followed(path: str) -> str:
    """The file a symbolic link ``path`` names (so that the link stays a link); any other path as it is."""
    return os.path.realpath(path) if os.path.islink(path) else path


@contextlib.contextmanager
def _write_through(path: str, what: str):
    """Yield ``([path], files)`` like :func:`commit`, for a device, pipe or socket: written in place, never renamed."""
    files = []
    try:
        yield [path], files
        for f in files:
            f.flush()
            f.close()
    except BaseException as e:
        for f in files:
            with contextlib.suppress(OSError):
                f.close()
        err = as_write_error(e, path, [], False, what) if isinstance(e, OSError) else None
        if err is not None:
            raise err from e
        raise


# ----------------------------------------------------------------- temporaries and the file system
def _temp(path: str, *, folder: bool = False) -> str:
    """A new temporary beside ``path``: ``.name.<pid>.<random>.tmp`` (a folder: ``.tmpdir``), with the umask's mode."""
    parent, stem = sidecar_stem(path)
    os.makedirs(parent, exist_ok=True)  # an output's folder is created like the output itself
    prefix = f"{stem}.{os.getpid()}."
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
    folder, stem = sidecar_stem(path)
    start = stem + "."
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
        fd = os.open(folder, os.O_RDONLY)
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
