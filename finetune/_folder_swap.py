"""Folder swaps: a folder finetune replaces as a whole (a model directory, a deployment), atomically.

A hidden sibling is filled and swapped in by :func:`finetune._commit.commit`.
"""

from __future__ import annotations

import contextlib
import os

from ._commit import commit, finish, journal_path, locked
from ._outputs import claim_folder, write_marker
from ._write_errors import write_error

__all__ = ["atomic_dir", "recover_dir"]

_BUILDING = set()  # the temporary folders this process's atomic_dir calls are filling


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
        raise write_error(path, e, what) from e
    with locked(path, what):
        recover_dir(path)
        claim_folder(path, kind, replace=True, what=what)
        with commit([path], what=what, kind=kind) as ((tmp,), _):
            _BUILDING.add(tmp)
            try:
                yield tmp
            finally:
                _BUILDING.discard(tmp)


def recover_dir(path) -> None:
    """Finish a folder swap of :func:`atomic_dir` on ``path`` that a kill interrupted.

    Does nothing when no swap was under way, or while the process that
    started it is still running. Readers of a folder written by
    :func:`atomic_dir` (``load_model``) call it first.
    """
    finish(journal_path(path, folder=True))
