"""Descriptor files: an ``.npy`` of ``(N, D)`` descriptors and ``<name>.ids.txt``, one id per row.

Ids are per item, never per argument: :func:`descriptor_ids` names every
image an :class:`~finetune.data.ImageSource` lists (a file by its path, a
list entry by the path it resolves to, a record by its name in the ``.lst``
beside the records, else ``file.rec[i]``), and :func:`save_descriptors`, the
one writer of the pair, refuses ids that are not one per descriptor, so a
descriptor file and its ids cannot disagree in length. :func:`load_descriptors`
reads a pair back with the same checks.
"""

from __future__ import annotations

import os

import numpy as np

from .._arrays import check_array, read_npy
from .._file_writes import atomic_files, settled
from .._outputs import name_example
from .._text import TEXT, check_name, read_lines
from ..errors import ConfigError, DataError, MissingFileError, ShapeError

__all__ = ["check_file_name", "descriptor_ids", "ids_path", "image_inputs", "load_descriptors", "npy_path",
           "save_descriptors"]


def check_file_name(path, what: str) -> str:
    """``path`` as a string when it names a file; :class:`ConfigError` for a folder (``out/``, ``.``, ``..``, ``""``).

    Examples
    --------
    >>> check_file_name("out/db.npy", "The descriptor file")
    'out/db.npy'
    >>> check_file_name("out/", "The descriptor file")
    Traceback (most recent call last):
    ...
    finetune.errors.ConfigError: The descriptor file 'out/' needs a file name after the folder, e.g. 'out/result'.
    """
    path = os.fspath(path)
    example = name_example(path)
    if example is not None:
        raise ConfigError(f"{what} {path!r} needs a file name after the folder, e.g. {example!r}.")
    return path


def npy_path(path) -> str:
    """The file ``np.save`` writes for ``path``: ``path`` itself when it ends in ``.npy``, else ``path + ".npy"``."""
    path = os.fspath(path)
    return path if path.endswith(".npy") else path + ".npy"


def ids_path(path) -> str:
    """The ids file beside a descriptor file: ``db.npy`` → ``db.ids.txt``.

    Examples
    --------
    >>> ids_path("out/db.npy"), ids_path("out/db")
    ('out/db.ids.txt', 'out/db.ids.txt')
    """
    path = os.fspath(path)
    return (path[:-4] if path.endswith(".npy") else path) + ".ids.txt"


def descriptor_ids(source) -> list:
    """One id per item of an :class:`~finetune.data.ImageSource`, in its order.

    A file is named by its path (for a ``.lst`` / ``.csv`` entry, the path
    it resolves to), a record by its image's path in the ``.lst`` beside the
    records or else ``<file.rec>[i]``, other inputs by their source
    (``array[0]``, ``bytes[1]``).

    Examples
    --------
    >>> import numpy as np
    >>> from finetune.data import ImageSource
    >>> descriptor_ids(ImageSource([np.zeros((4, 4, 3), np.uint8), "a.jpg"], color="RGB"))
    ['array[0]', 'a.jpg']
    """
    ids = []
    for item in source:
        if item.kind == "record":
            dataset, i = item.value
            if item.source == f"record[{i}]":  # no list beside the records names it
                ids.append(f"{os.fspath(dataset.path)}[{i}]")
                continue
        ids.append(str(item.source))
    return ids


def save_descriptors(path, descriptors, ids) -> tuple:
    """Write ``descriptors`` to ``path`` (``.npy``) and their ids beside it, replacing both together.

    Parameters
    ----------
    path : str or path-like
        The descriptor file; ``.npy`` is added when missing.
    descriptors : numpy.ndarray
        ``(N, D)`` descriptors.
    ids : sequence of str
        One id per descriptor row; none may hold a tab, newline or carriage return.

    Returns
    -------
    tuple of str
        The descriptor file and the ids file written.

    Raises
    ------
    ShapeError
        ``descriptors`` are not 2-D, or ``ids`` are not one per row.
    ConfigError
        ``path`` names a folder.
    ListFormatError
        An id the one-per-line ids file cannot hold.
    """
    check_file_name(path, "The descriptor file")
    npy = npy_path(path)
    x = np.asarray(descriptors)
    ids = [str(i) for i in ids]
    if x.ndim != 2:
        raise ShapeError(f"Descriptors to write to {npy!r} must be (N, D). Got shape {x.shape}.")
    if len(ids) != len(x):
        raise ShapeError(f"{len(ids)} ids for {len(x)} descriptors to write to {npy!r}: every descriptor row "
                         "needs exactly one id.")
    where = ids_path(npy)
    ids = [check_name(i, f"The id of a descriptor (for {where!r})", "Rename the image") for i in ids]
    os.makedirs(os.path.dirname(os.path.abspath(npy)), exist_ok=True)
    with atomic_files([npy, where], ["wb", "w"], **TEXT) as (f, fi):
        np.save(f, x)
        fi.writelines(i + "\n" for i in ids)
    return npy, where


def load_descriptors(path, *, row_ids: bool = True, allow_empty: bool = False, what: str = "descriptors"):
    """Read a descriptor file and its ids.

    Parameters
    ----------
    path : str or path-like
        The ``.npy`` file (or the name given to :func:`save_descriptors`).
    row_ids : bool
        Without an ids file, return the row numbers as ids (``True``) or ``None``.
    allow_empty : bool
        Accept a file of zero descriptors.
    what : str
        What they are, for messages (``"query descriptors"``).

    Returns
    -------
    x : numpy.ndarray
        ``(N, D)`` descriptors (floats or integers).
    ids : list of str or None

    Raises
    ------
    MissingFileError, DataError, ShapeError
        No such file, not a 2-D numeric ``.npy`` (the message gives its real
        shape), no descriptors, or an ids file of another length.
    """
    path = os.fspath(path)
    if not path.endswith(".npy") and not os.path.exists(path) and os.path.exists(path + ".npy"):
        path += ".npy"  # the name given to extract, which wrote NAME.npy
    settled([path, ids_path(path)], what="descriptors")  # finish a killed extract; never new descriptors with old ids
    if not os.path.exists(path):
        raise MissingFileError(f"Descriptor file {path!r} does not exist.")
    if path.endswith(".npz") or os.path.isdir(path):
        raise DataError(f"{path!r} is not a descriptor file (.npy): a saved index (.npz) or a folder is read "
                        "only where an index is expected; give the .npy that 'finetune extract' wrote.")
    x = check_array(read_npy(path, what=what, kinds="fiu"), path, what=what, ndim=2)  # the real shape if not 2-D
    if not len(x) and not allow_empty:
        raise DataError(f"{path!r} holds no {what} (shape {x.shape}); extract some images first.")
    ids = None
    if os.path.exists(ids_path(path)):
        ids = read_lines(ids_path(path))
        if len(ids) != len(x):
            raise ShapeError(f"{ids_path(path)!r} has {len(ids)} ids for {len(x)} descriptors in {path!r}.")
    elif row_ids:
        ids = [str(i) for i in range(len(x))]
    return x, ids


def image_inputs(inputs, *, what: str = "images"):
    """The images of several inputs (files, folders, records, ``.lst`` / ``.csv`` lists) as one source.

    Each input is listed as :class:`~finetune.data.ImageSource` lists it;
    a list none of whose images exists is refused, saying where its paths
    were looked for.

    Returns
    -------
    ImageSource
        Every item of every input, in order (see :func:`descriptor_ids` for their ids).

    Raises
    ------
    MissingFileError
        A ``.lst`` / ``.csv`` whose images are all missing.
    """
    from ..data import ImageSource

    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    items = []
    for x in inputs:
        source = ImageSource(x, what=what)
        if isinstance(x, (str, os.PathLike)) and os.path.isfile(x) and os.fspath(x).lower().endswith((".lst", ".csv")):
            _check_list_images(os.fspath(x), source)
        items += source.items
    combined = ImageSource([], what=what)
    combined.items = items
    return combined


def _check_list_images(lst: str, source) -> None:
    """Refuse a list none of whose image files exists, naming where its paths were looked for."""
    paths = [os.fspath(item.value) for item in source if item.kind == "path"]
    if not paths or any(os.path.exists(p) for p in paths):
        return
    folder = os.path.dirname(os.path.abspath(lst))
    first = paths[0]
    if os.path.isabs(first) and not first.startswith(folder + os.sep):
        raise MissingFileError(f"None of the {len(paths)} images of {lst!r} exists (e.g. {first!r}).")
    entry = os.path.relpath(first, folder)
    raise MissingFileError(
        f"None of the {len(paths)} images of {lst!r} exists: its relative paths are read from the list's folder "
        f"{os.path.dirname(lst) or '.'!r} (e.g. {entry!r} as {os.path.join(os.path.dirname(lst), entry)!r}). "
        "Extraction takes no image root: write the list with absolute paths (or put it in the image root), "
        "or pack it first ('finetune pack LIST --root ROOT --out PREFIX') and extract PREFIX.rec.")
