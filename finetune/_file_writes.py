"""Atomic file writes: one file, or several (a ``.rec`` with its ``.idx``) replaced together as one unit.

Every file writer imports from here; the commit is :func:`finetune._commit.commit`.
Readers of several files call :func:`settled` (an interrupted commit
finished, the parts checked to belong together).
"""

from __future__ import annotations

import contextlib
import os

from ._commit import commit, finish, journal_path
from ._locks import hold
from ._units import check_parts, manifest_path
from .errors import MixedOutputError

__all__ = ["atomic_files", "atomic_open", "atomic_paths", "atomic_write", "recover", "settled"]


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
    with commit(paths) as (temps, opened):
        for tmp, mode in zip(temps, modes):
            opened.append(open(tmp, mode, **({} if "b" in mode else kwargs)))
        yield list(opened)


@contextlib.contextmanager
def atomic_paths(paths):
    """Yield temporary file names that replace ``paths`` together, as one unit (one file: a unit of one).

    :func:`atomic_files` for writers that take a file name (``mx.nd.save``,
    ``faiss.write_index``, ``cv2.imwrite``, ...). A writer that adds its own extension to the
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
    with commit([os.fspath(p) for p in paths]) as (temps, _):
        yield list(temps)


def recover(paths) -> None:
    """Finish a commit of :func:`atomic_files` on ``paths`` that a kill interrupted (none under way: nothing).

    Called by :func:`atomic_files` itself and by :func:`settled`; readers of a multi-file output may call it first.
    """
    finish(journal_path(list(paths)[0]))


def settled(paths, *, what: str = "output") -> None:
    """Make the multi-file output ``paths`` readable: finish an interrupted commit, check the parts belong together.

    Readers call it before reading. A commit is finished only when no writer
    holds the output's lock (a writer that died released it); while a writer
    is at work, a reader that finds the parts mixed waits for it to finish.
    A read-only folder needs no finishing. Raises :class:`MixedOutputError`
    when the files come from different writes (:func:`finetune._units.check_parts`).
    """
    paths = [os.fspath(p) for p in paths]
    if not (os.path.exists(journal_path(paths[0])) or os.path.exists(manifest_path(paths[0]))):
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
