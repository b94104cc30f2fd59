"""Resolving a file name read from a model directory's ``config.json`` (or an earlier ``deploy.json``).

Such names come from files that may have been written by someone else; a
name is resolved inside its folder, and one that points outside it
(``../secret``, an absolute path, a symbolic link leading out) is refused.
"""

from __future__ import annotations

import os

from ...errors import UnsafePathError

__all__ = ["inside"]


def inside(folder, name, *, what: str = "file") -> str:
    """The path of ``name`` inside ``folder``; refuses a name that leads out of it.

    Parameters
    ----------
    folder : str or os.PathLike
        The model directory or deployment folder.
    name : str
        A file name read from the folder's ``config.json`` (or ``deploy.json``).
    what : str
        What the name is, for the error message (e.g. ``"weights file"``).

    Returns
    -------
    str
        ``folder/name``.

    Raises
    ------
    UnsafePathError
        ``name`` is not a string, is absolute, or resolves outside ``folder``.

    Examples
    --------
    >>> import os
    >>> inside("model", "weights.params") == os.path.join("model", "weights.params")
    True
    >>> inside("model", "../elsewhere.params", what="weights file")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    finetune.errors.UnsafePathError: The weights file '../elsewhere.params' named in 'model' lies outside ...
    """
    folder = os.fspath(folder)
    if not isinstance(name, str) or not name or os.path.isabs(name):
        raise UnsafePathError(f"The {what} {name!r} named in {folder!r} must be a file name inside the folder.")
    path = os.path.join(folder, name)
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise UnsafePathError(f"The {what} {name!r} named in {folder!r} lies outside the folder; refusing to "
                              "read it. Keep every file of a model inside its folder.")
    return path
