"""Small helpers for list files: label parsing and the ``<prefix>_classes.txt`` class-name files."""

from __future__ import annotations

import os

from .._atomic import atomic_open

__all__ = ["classes_path_for", "find_class_names", "read_class_names", "write_class_names"]


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
