"""Reading the ``.npz`` file :meth:`RetrievalIndex.save <finetune.RetrievalIndex.save>` writes, checked first.

A saved index is a zip of three members, ``meta`` (the settings as JSON),
``vectors`` and ``ids``. Anything else given to
:meth:`~finetune.RetrievalIndex.load` (a descriptor ``.npy``, another
archive, a pickle, an MXNet ``mean.bin``) is told apart before numpy parses
it, and refused by what it is, with how to make an index, instead of the
parser's ``TypeError`` or ``KeyError``.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np

from .._arrays import check_array, read_npz
from ..errors import DataError

__all__ = ["read_index_file"]

_MEMBERS = ("meta.npy", "vectors.npy", "ids.npy")
_SETTINGS = ("metric", "chunk_size", "query_batch")
_MAKE = ("make one with RetrievalIndex.save(path) or 'finetune index DESCRIPTORS.npy --out INDEX.npz', "
         "or give descriptors (.npy) where they are accepted")


def _kind(path: str) -> str | None:
    """What ``path`` is when it is not a saved index (``None`` when it looks like one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        return f"an unreadable file ({exc.strerror or exc})"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy array (.npy), such as descriptors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "a Python pickle"
    if not zipfile.is_zipfile(path):
        if not head:
            return "an empty file"
        return "not an .npz archive"
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return None  # damage: read_npz names it
    missing = [m[:-4] for m in _MEMBERS if m not in names]
    if missing:
        shown = ", ".join(sorted(n[:-4] if n.endswith(".npy") else n for n in names)[:6]) or "nothing"
        return f"an .npz archive without the index's {' and '.join(missing)} (it holds {shown})"
    return None


def read_index_file(path: str):
    """The settings, descriptors and ids of a saved index file.

    Returns
    -------
    meta : dict
        The settings (``metric``, ``chunk_size``, ``query_batch`` at least).
    vectors : numpy.ndarray
        ``(N, D)`` floats (``(0, 0)`` for an approximate index).
    ids : numpy.ndarray
        ``(N,)`` integers or text.

    Raises
    ------
    DataError
        ``path`` is not a saved finetune index (says what it is and how to
        make one), or one of its members is damaged or of the wrong kind.
    """
    kind = _kind(path)
    if kind is not None:
        raise DataError(f"{path!r} is not a saved finetune index: it is {kind}; {_MAKE}.")
    with read_npz(path, what="RetrievalIndex") as f:
        text = str(check_array(f["meta"], path, what="settings", kinds="U", ndim=0))
        try:
            meta = json.loads(text)
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise DataError(f"{path!r}: the index settings are not a JSON object: {text[:80]!r}. The file is "
                            "damaged; rebuild the index.")
        missing = [k for k in _SETTINGS if k not in meta]
        if missing:
            raise DataError(f"{path!r}: the index settings lack {', '.join(missing)}. The file is damaged; "
                            "rebuild the index.")
        vectors = check_array(f["vectors"], path, what="descriptors", kinds="f", ndim=2)
        ids = check_array(f["ids"], path, what="ids", kinds="iuU", ndim=1)
        return meta, np.asarray(vectors), np.asarray(ids)
