"""List files: reading and writing im2rec ``.lst`` and ``path,label`` CSV rows, label parsing,
and the ``<prefix>_classes.txt`` class-name files.

:class:`~finetune.data.ImageList` builds on these (``from_lst``, ``from_csv``, ``write_lst``).
"""

from __future__ import annotations

import csv
import io
import math
import os

from .._atomic import atomic_open
from ..errors import ListFormatError, MissingFileError

__all__ = ["classes_path_for", "find_class_names", "read_class_names", "read_csv", "read_lst", "write_class_names",
           "write_lst"]


def _norm_label(values):
    values = [float(v) for v in values]
    if len(values) == 1:
        v = values[0]
        return int(v) if v.is_integer() else v
    return tuple(values)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def classes_path_for(path) -> str:
    """``<prefix>_classes.txt`` for ``<prefix>.lst`` / ``<prefix>.rec`` / ``<prefix>``."""
    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    if ext.lower() in (".lst", ".rec", ".idx", ".csv"):
        path = stem
    return path + "_classes.txt"


def write_class_names(path, names) -> None:
    """Write class names one per line (label order), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{n}\n" for n in names)


def read_class_names(path):
    """Read a class-names file; ``None`` if it does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


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


def _read_text_lines(path, newline=None):
    """The lines of a UTF-8 text file (a byte-order mark is dropped); non-UTF-8 raises ListFormatError.

    ``newline`` is as for :func:`open` (``""`` for the csv module).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ListFormatError(f"{path}, line {line}: not UTF-8 text (byte {data[e.start]:#04x} at offset "
                              f"{e.start}). Save the file as UTF-8.") from None
    return io.StringIO(text, newline=newline)


def read_lst(path: str) -> list:
    """The ``(index, path, label)`` rows of an im2rec ``.lst`` file; see :meth:`ImageList.from_lst`."""
    if not os.path.isfile(path):
        raise MissingFileError(f"List file {path!r} does not exist.")
    entries = []
    for n, line in enumerate(_read_text_lines(path), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.rstrip("\n").split("\t")]
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
        entries.append((index, parts[-1], label))
    return entries


def read_csv(path: str, class_names=None) -> tuple:
    """``(rows, class_names)`` of a ``path,label`` CSV file; see :meth:`ImageList.from_csv`."""
    if not os.path.isfile(path):
        raise MissingFileError(f"CSV file {path!r} does not exist.")
    try:
        rows = [r for r in csv.reader(_read_text_lines(path, newline="")) if r and any(c.strip() for c in r)]
    except csv.Error as e:
        raise ListFormatError(f"{path}: not a readable CSV file ({e}).") from None
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image"):
        rows = rows[1:]
    for n, row in enumerate(rows, 1):
        if len(row) < 2:
            raise ListFormatError(f"{path}, row {n}: expected 'path,label', got {row!r}.")
    raw = [row[1].strip() for row in rows]
    numeric = all(_is_number(r) for r in raw)
    if numeric:
        labels = [_norm_label([r]) for r in raw]
    else:
        if class_names is None:
            class_names = sorted(set(raw))
        lookup = {name: i for i, name in enumerate(class_names)}
        missing = sorted(set(raw) - set(lookup))
        if missing:
            raise ListFormatError(f"{path}: labels {missing} are not in class_names {class_names}.")
        labels = [lookup[r] for r in raw]
    entries = [(i, row[0].strip(), lab) for i, (row, lab) in enumerate(zip(rows, labels))]
    return entries, class_names


def write_lst(path: str, entries) -> None:
    """Write ``entries`` (:class:`ImageEntry` rows) as im2rec ``.lst`` lines (labels as ``%f``), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for e in entries:
            labels = e.label if isinstance(e.label, tuple) else (e.label,)
            f.write("%d\t" % e.index + "".join("%f\t" % float(v) for v in labels) + e.path + "\n")
