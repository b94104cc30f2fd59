"""The one encoding rule of every text file finetune writes or reads that can hold a file or class name.

Image lists (``.lst``, ``.csv``), ``<prefix>_classes.txt``, the ids files of
``finetune extract``, Oxford/Paris ground truth, name maps and the reports
of ``finetune check`` are UTF-8 with ``errors="surrogateescape"``: a name
that is not valid UTF-8 (a Latin-1 file name on Linux, ``b"\\xe9t\\xe9"``)
is held by Python as a ``str`` with lone surrogates (what :func:`os.listdir`
returns for it) and is written back as the very same bytes. Fields are never
stripped: only the line terminator (``\\n``, ``\\r\\n`` or ``\\r``) is
removed, so ``" lead"`` and ``"lead"`` stay two names.

A line-based format cannot hold a name with a tab, newline or carriage
return (its separators): :func:`check_name` refuses such a name, by name,
before anything is written, instead of writing a shifted file.
"""

from __future__ import annotations

import io
import re

from ._file_writes import atomic_open
from .errors import ListFormatError

__all__ = ["SEPARATORS", "TEXT", "atomic_text", "cell", "check_name", "read_lines", "read_text", "shown"]

#: Keyword arguments of :func:`open` for every name-holding text file.
TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}

#: Characters a name in a line-based list cannot hold, with a word for each.
SEPARATORS = {"\t": "a tab", "\n": "a newline", "\r": "a carriage return"}


def atomic_text(path, **kwargs):
    """:func:`~finetune._file_writes.atomic_open` of one name-holding text file: written whole or not at all.

    ``kwargs`` (e.g. ``newline=""`` for the csv module) go to :func:`open`.
    """
    return atomic_open(path, "w", **TEXT, **kwargs)


def read_text(path, newline=None) -> io.StringIO:
    """The text of ``path`` (a byte-order mark dropped) as a file object; ``newline`` as for :func:`open`."""
    with open(path, "rb") as f:
        data = f.read()
    return io.StringIO(data.decode("utf-8-sig", "surrogateescape"), newline=newline)


def read_lines(path) -> list:
    """The lines of ``path`` with only their terminator removed; empty lines are left out."""
    return [line[:-1] if line.endswith("\n") else line for line in read_text(path) if line not in ("", "\n")]


def check_name(name, what: str, fix: str = "Rename it") -> str:
    """``name`` when a line-based list can hold it; else :class:`ListFormatError` naming it.

    Parameters
    ----------
    name : str
        The file or class name about to be written.
    what : str
        What it is and where it goes, e.g. ``"The class name"`` or ``"The image path in 'x.lst'"``.
    fix : str
        What to do instead (default ``"Rename it"``).

    Examples
    --------
    >>> check_name(" lead", "The class name")
    ' lead'
    >>> check_name("a\\nb", "The class name")
    Traceback (most recent call last):
    ...
    finetune.errors.ListFormatError: The class name 'a\\nb' holds a newline, which the list format uses \
as a separator; written, every later name would shift. Rename it (no tab, newline or carriage return).
    """
    name = str(name)
    bad = [word for sep, word in SEPARATORS.items() if sep in name]
    if bad or not name:
        said = f"holds {' and '.join(bad)}, which the list format uses as a separator" if bad else "is empty"
        raise ListFormatError(f"{what} {name!r} {said}; written, every later name would shift. "
                              f"{fix} (no tab, newline or carriage return).")
    return name


def shown(text) -> str:
    """``text`` safe to print anywhere: bytes that are not UTF-8 become ``\\xNN`` escapes.

    Examples
    --------
    >>> shown(b"caf\\xe9".decode("utf-8", "surrogateescape"))
    'caf\\\\xe9'
    """
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def cell(text) -> str:
    r"""``text`` as one cell of a printed table or report line: :func:`shown`, and control characters
    (a newline, a tab in a file name) as their escapes, so one name stays one line.

    Examples
    --------
    >>> cell("two\nlines\t.png")
    'two\\nlines\\t.png'
    """
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], shown(text))
