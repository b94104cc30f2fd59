"""List files: reading and writing im2rec ``.lst`` and ``path,label`` CSV rows, label parsing,
and the ``<prefix>_classes.txt`` class-name files.

:class:`~finetune.data.ImageList` builds on these (``from_lst``, ``from_csv``, ``write_lst``).
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import random

from .._file_writes import atomic_files
from .._text import TEXT, atomic_text, check_name, read_lines, read_text
from ..errors import ListFormatError, MissingFileError

__all__ = ["check_labels", "classes_path_for", "find_class_names", "read_class_names", "read_csv", "read_lst",
           "write_class_names", "write_lists", "write_lst", "write_texts"]


def _norm_label(values):
    values = [float(v) for v in values]
    if len(values) == 1:
        v = values[0]
        return int(v) if v.is_integer() else v
    return tuple(values)


def _is_class(label, num_classes: int) -> bool:
    whole = isinstance(label, numbers.Integral) or isinstance(label, numbers.Real) and float(label).is_integer()
    return whole and 0 <= label < num_classes


def check_labels(labels, class_names, where) -> None:
    """Refuse a label that is not the index of one of ``class_names``.

    With class names, a single label must be an integer in ``[0, len(class_names))``.
    Multi-value labels (MXNet's free-form tuples) and lists without class names are not checked.

    Parameters
    ----------
    labels : sequence
        One label per entry.
    class_names : sequence of str or None
        The classes; ``None`` checks nothing.
    where : callable
        ``where(position)`` names an entry in the error message (file and line).

    Raises
    ------
    ListFormatError
        The first label that is not a class, named with ``where``.

    Examples
    --------
    >>> check_labels([0, 2, 1.0], ["a", "b", "c"], str)
    >>> check_labels([0, 7], ["a", "b", "c"], lambda i: f"x.lst, line {i + 1}")
    Traceback (most recent call last):
    ...
    finetune.errors.ListFormatError: x.lst, line 2: label 7 is not a class: with 3 class names a label \
must be an integer in [0, 3). Fix the label or the class names.
    """
    if class_names is None:
        return
    n = len(class_names)
    for pos, label in enumerate(labels):
        if not isinstance(label, tuple) and not _is_class(label, n):
            raise ListFormatError(f"{where(pos)}: label {label!r} is not a class: with {n} class names a label "
                                  f"must be an integer in [0, {n}). Fix the label or the class names.")


def classes_path_for(path) -> str:
    """``<prefix>_classes.txt`` for ``<prefix>.lst`` / ``<prefix>.rec`` / ``<prefix>``."""
    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    if ext.lower() in (".lst", ".rec", ".idx", ".csv"):
        path = stem
    return path + "_classes.txt"


def class_names_text(names, path) -> str:
    """The text of a class-names file: one name per line, each checked by :func:`check_name`."""
    return "".join(check_name(n, f"The class name #{i} (for {os.fspath(path)!r})") + "\n"
                   for i, n in enumerate(names))


def write_class_names(path, names) -> None:
    """Write class names one per line (label order), atomically; names are kept byte-exact.

    Raises
    ------
    ListFormatError
        A name is empty or holds a tab, newline or carriage return (nothing is written).
    """
    text = class_names_text(names, path)
    with atomic_text(path) as f:
        f.write(text)


def read_class_names(path):
    """Read a class-names file (one name per line, kept exactly); ``None`` if it does not exist."""
    if not os.path.isfile(path):
        return None
    return read_lines(path)


def find_class_names(path):
    """Class names for ``<prefix>.lst`` / ``.rec``: ``<prefix>_classes.txt``, else the file
    of a shorter prefix (``data_train`` falls back to ``data_classes.txt``, as written by
    ``finetune im2rec`` / ``finetune split``); ``None`` when there is none."""
    stem = classes_path_for(path)[: -len("_classes.txt")]
    while True:
        names = read_class_names(stem + "_classes.txt")
        if names is not None or "_" not in os.path.basename(stem):
            return names
        stem = stem.rsplit("_", 1)[0]


def read_lst(path: str, class_names=None) -> list:
    """The ``(index, path, label)`` rows of an im2rec ``.lst`` file; see :meth:`ImageList.from_lst`.

    The path (last field) is kept exactly, spaces included; only the line terminator is removed.
    An index used by an earlier line is refused (:class:`ListFormatError` naming both lines): it is the
    record's key in the ``.idx`` file. With ``class_names``, every single label must be one of their indices (:func:`check_labels`).
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"List file {path!r} does not exist.")
    entries, lines, first_line = [], [], {}
    for n, line in enumerate(read_text(path), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3:
            raise ListFormatError(
                f"{path}, line {n}: expected 'index<TAB>label<TAB>path' (at least 3 "
                f"tab-separated fields), got {len(parts)}: {line.strip()!r:.200}.")
        try:
            index, label = int(parts[0]), _norm_label(parts[1:-1])
        except ValueError:
            raise ListFormatError(
                f"{path}, line {n}: index must be an integer and labels numbers; "
                f"got {line.strip()!r:.200}.") from None
        labels = label if isinstance(label, tuple) else (label,)
        if not 0 <= index < 2 ** 63 or not all(math.isfinite(v) for v in labels):
            raise ListFormatError(
                f"{path}, line {n}: the index must be in [0, 2**63) and labels finite numbers; "
                f"got {line.strip()!r:.200}.")
        if index in first_line:
            raise ListFormatError(
                f"{path}, line {n}: index {index} is already the index of line {first_line[index]}. Each line "
                "needs its own index (it is the record's key in the .idx file: MXNet would read one image for "
                "both); renumber the first column.")
        first_line[index] = n
        entries.append((index, parts[-1], label))
        lines.append(n)
    check_labels([e[2] for e in entries], class_names, lambda i: f"{path}, line {lines[i]}")
    return entries


def read_csv(path: str, class_names=None) -> tuple:
    """``(rows, class_names)`` of a ``path,label`` CSV file; see :meth:`ImageList.from_csv`.

    Fields are kept exactly as the CSV holds them (spaces included).
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"CSV file {path!r} does not exist.")
    try:
        rows = [r for r in csv.reader(read_text(path, newline="")) if r and any(c.strip() for c in r)]
    except csv.Error as e:
        raise ListFormatError(f"{path}: not a readable CSV file ({e}).") from None
    first = 1
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows, first = rows[1:], 2
    for n, row in enumerate(rows, first):
        if len(row) < 2:
            raise ListFormatError(f"{path}, row {n}: expected 'path,label', got {row!r}.")
    raw = [row[1] for row in rows]
    try:
        labels = [_norm_label([r]) for r in raw]
    except ValueError:  # class names, not numbers
        if class_names is None:
            class_names = sorted(set(raw))
        lookup = {name: i for i, name in enumerate(class_names)}
        missing = sorted(set(raw) - set(lookup))
        if missing:
            raise ListFormatError(f"{path}: labels {missing} are not in class_names {class_names}.") from None
        labels = [lookup[r] for r in raw]
    else:
        check_labels(labels, class_names, lambda i: f"{path}, row {i + first}")
    entries = [(i, row[0], lab) for i, (row, lab) in enumerate(zip(rows, labels))]
    return entries, class_names


def lst_text(path: str, entries) -> str:
    """``entries`` (:class:`ImageEntry` rows) as the text of im2rec ``.lst`` lines (labels as ``%f``).

    Raises
    ------
    ListFormatError
        An image path is empty or holds a tab, newline or carriage return.
    """
    lines = []
    for e in entries:
        check_name(e.path, f"The image path of entry {e.index} (for {os.fspath(path)!r})", "Rename the file")
        labels = e.label if isinstance(e.label, tuple) else (e.label,)
        lines.append("%d\t" % e.index + "".join("%f\t" % float(v) for v in labels) + e.path + "\n")
    return "".join(lines)


def write_texts(texts) -> None:
    """Write ``{path: text}`` name-holding text files together: in one folder as one unit, else one by one."""
    paths = [os.fspath(p) for p in texts]
    if len({os.path.dirname(os.path.abspath(p)) for p in paths}) == 1:
        with atomic_files(paths, ["w"] * len(paths), **TEXT) as files:
            for f, text in zip(files, texts.values()):
                f.write(text)
        return
    for path, text in zip(paths, texts.values()):
        with atomic_text(path) as f:
            f.write(text)


def write_lst(path: str, entries) -> None:
    """Write ``entries`` as im2rec ``.lst`` lines (:func:`lst_text`), atomically; nothing is written on a bad path."""
    text = lst_text(path, entries)
    with atomic_text(path) as f:
        f.write(text)

def write_lists(lists, classes_path, *, shuffle: bool = True, seed: int = 100) -> None:
    """Write several ``.lst`` files and their one class-names file together: all of them or none.

    The parts of a split (``x_train.lst``, ``x_val.lst``, ``x_classes.txt``)
    are one output: every name is checked before anything is written, and the
    files in one folder replace the previous ones as one unit, so a failure
    never leaves a new training list beside an old validation list.

    Parameters
    ----------
    lists : dict
        ``{path: ImageList}``, written as :meth:`ImageList.write_lst` writes one.
    classes_path : str or path-like
        The class names of the first list (its labels' names), one per line.
    shuffle, seed
        As for :meth:`ImageList.write_lst`.

    Raises
    ------
    ListFormatError
        A path or class name holds a tab, newline or carriage return: named,
        and nothing is written.

    Examples
    --------
    >>> import os, tempfile
    >>> from finetune.data import ImageList
    >>> images = ImageList([(0, "a.jpg", 0), (1, "b.jpg", 1)], class_names=["cat", "dog"])
    >>> train, val = images.split([0.5, 0.5], seed=0)
    >>> root = tempfile.mkdtemp()
    >>> write_lists({os.path.join(root, "x_train.lst"): train, os.path.join(root, "x_val.lst"): val},
    ...             os.path.join(root, "x_classes.txt"))
    >>> sorted(n for n in os.listdir(root) if not n.startswith("."))
    ['x_classes.txt', 'x_train.lst', 'x_val.lst']
    """
    first = next(iter(lists.values()))
    names = first.class_names
    if names is None:
        names = [str(i) for i in range(max(first.single_labels(), default=-1) + 1)]
    classes = class_names_text(names, classes_path)  # a bad class name is named as such, before its paths
    texts = {}
    for path, images in lists.items():
        entries = list(images.entries)
        if shuffle:
            random.Random(seed).shuffle(entries)
        texts[os.fspath(path)] = lst_text(path, entries)
    write_texts({**texts, os.fspath(classes_path): classes})

