"""Reading the ``.npy`` / ``.npz`` files finetune writes, checked before use.

``numpy.load`` on a damaged file raises whatever numpy's parser meets
(``ValueError``, ``EOFError``, ``zipfile.BadZipFile``, ``zlib.error``,
``OSError``), memory-maps a file shorter than its header says only to fail
later, and accepts any dtype and shape. :func:`read_npy` reads the header
first and checks the dtype (never an object array: those need pickle), the
number of dimensions and the file length against the shape, then loads;
:func:`read_npz` opens an archive and turns every failure into one
:class:`~finetune.errors.DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
import zlib

import numpy as np

from .errors import DataError, MissingFileError

__all__ = ["check_array", "read_npy", "read_npz", "write_npz"]

#: What numpy's parsers raise on damaged files.
DAMAGE = (ValueError, EOFError, OSError, KeyError, TypeError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError)


def check_array(array: np.ndarray, source: str, *, what: str = "array", kinds: str | None = None,
                ndim: int | None = None) -> np.ndarray:
    """Raise :class:`DataError` unless ``array`` has a dtype kind in ``kinds`` and ``ndim`` dimensions.

    Parameters
    ----------
    array : numpy.ndarray
        The array read.
    source : str
        The file, for the message.
    what : str
        What the array is, for the message (``"descriptors"``).
    kinds : str, optional
        Allowed ``dtype.kind`` letters: ``"f"`` float, ``"i"``/``"u"`` integers, ``"U"`` text.
    ndim : int, optional
        The number of dimensions required.
    """
    if array.dtype.hasobject:
        raise DataError(f"{source!r}: the {what} are Python objects (dtype object), which cannot be read "
                        "without running pickled code; finetune writes numbers.")
    if kinds is not None and array.dtype.kind not in kinds:
        raise DataError(f"{source!r}: the {what} have dtype {array.dtype}; expected "
                        f"{' or '.join(_KIND_NAMES.get(k, k) for k in kinds)}.")
    if ndim is not None and array.ndim != ndim:
        raise DataError(f"{source!r}: the {what} have {array.ndim} dimension(s), shape {array.shape}; "
                        f"expected {ndim}.")
    return array


_KIND_NAMES = {"f": "floats", "i": "signed integers", "u": "unsigned integers", "U": "text", "b": "booleans"}


def read_npy(path, *, what: str = "array", kinds: str | None = None, ndim: int | None = None,
             mmap: bool = False) -> np.ndarray:
    """Read an ``.npy`` file after checking its header, dtype, dimensions and length.

    Parameters
    ----------
    path : str or path-like
        The file.
    what, kinds, ndim
        As for :func:`check_array`.
    mmap : bool
        Memory-map the file (read-only) instead of reading it.

    Raises
    ------
    MissingFileError
        ``path`` does not exist.
    DataError
        The file is not an ``.npy`` file, is truncated, or holds another dtype or number of dimensions.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((2, 3), np.float32))
    >>> read_npy(path, kinds="f", ndim=2).shape
    (2, 3)
    >>> with open(path, "r+b") as f:
    ...     _ = f.truncate(148)
    >>> read_npy(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    finetune.errors.DataError: '...x.npy' is truncated: its header announces (2, 3) float32 (24 bytes of data) but 20 bytes follow it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"The {what} file {path!r} does not exist.")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(f)
            offset = f.tell()
        size = os.path.getsize(path)
    except DAMAGE as exc:
        raise DataError(f"{path!r} is not a readable .npy file: {_reason(exc)}") from None
    check_array(np.empty((0,) * len(shape), dtype), path, what=what, kinds=kinds, ndim=ndim)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size - offset < need:
        raise DataError(f"{path!r} is truncated: its header announces {tuple(shape)} {dtype} ({need} bytes of "
                        f"data) but {size - offset} bytes follow it.")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except DAMAGE as exc:
        raise DataError(f"{path!r} is not a readable .npy file: {_reason(exc)}") from None


@contextlib.contextmanager
def read_npz(path, *, what: str = "archive"):
    """Open an ``.npz`` file; any damage met inside the ``with`` block becomes a :class:`DataError` naming it.

    Yields the ``NpzFile`` (``f["name"]`` reads a member; ``allow_pickle`` is off).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"The {what} file {path!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as f:
            yield f
    except DataError:
        raise
    except DAMAGE as exc:
        raise DataError(f"{path!r} is not a readable {what} (.npz) file: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no detail'}"


def write_npz(f, **arrays) -> None:
    """``np.savez(f, **arrays)`` whose zip is closed even when a write fails.

    ``np.savez`` leaves its zip open when the disk fills; the zip's finaliser
    then failed on the closed file and printed a traceback ("Exception ignored
    in: ZipFile.__del__ ... seek of closed file") after the clean error.
    """
    z = zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
    try:
        for name, value in arrays.items():
            with z.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
        z.close()
    except BaseException:
        with contextlib.suppress(Exception):
            z.fp = None  # nothing more is written: the caller removes the file
        raise
