"""Display names for classes: :func:`load_name_map` reads a ``name -> display`` map."""

from __future__ import annotations

import json
import os

from .._text import read_text
from ..errors import DataError, MissingFileError

__all__ = ["load_name_map"]


def load_name_map(source) -> dict:
    """Load a map from class name to display name.

    Parameters
    ----------
    source : dict, str or path-like
        A dict, a JSON file holding an object, or a text file with one
        ``name<TAB>display`` pair per line (UTF-8; empty lines and lines
        starting with ``#`` are skipped). Names are kept byte-exact: nothing
        is stripped but the line terminator, and bytes that are not UTF-8
        (a Latin-1 file) stand for the same bytes in a class name, as
        :func:`os.listdir` reads them from folder names.

    Returns
    -------
    dict of str to str

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "zh.txt")
    >>> _ = open(path, "w", encoding="utf-8").write("cat\\t猫\\ndog\\t狗\\n")
    >>> load_name_map(path)
    {'cat': '猫', 'dog': '狗'}
    """
    if isinstance(source, dict):
        return {str(k): str(v) for k, v in source.items()}
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise MissingFileError(f"Name map file {path!r} does not exist.")
    text = read_text(path).read()
    if path.lower().endswith(".json") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"Name map {path!r} is not valid JSON: {exc}.") from None
        if not isinstance(data, dict):
            raise DataError(f"Name map {path!r} must hold a JSON object {{name: display}}.")
        return {str(k): str(v) for k, v in data.items()}
    names = {}
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): names may hold \x85, \u2028, ...
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(
                f"{path}:{number}: expected 'name<TAB>display', got {line!r}. "
                "Separate the class name and its display name by one tab."
            )
        names[parts[0]] = parts[1]
    return names
