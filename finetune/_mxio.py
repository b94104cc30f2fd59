"""MXNet's array and graph files, read and written for any path and any content.

MXNet's file functions (``mx.nd.save``, ``mx.nd.load``, ``mx.sym.load``)
take a path they encode as UTF-8, so a folder name holding bytes that are
not UTF-8 (which Python keeps as lone surrogates) raises
``UnicodeEncodeError``; and a damaged file can make MXNet's own error
message undecodable (``UnicodeDecodeError``). Here Python opens the files
(any path it can name) and MXNet parses bytes (``mx.nd.load_frombuffer``,
``mx.sym.load_json``); a save to a path MXNet cannot name goes through a
temporary file it can. Every failure to parse is a
:class:`~finetune.errors.ModelError` naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

__all__ = ["load_arrays", "load_symbol", "save_arrays"]


def _nameable(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    """What MXNet's error says, without its C++ traceback: the last line of substance ("ends early" for a short file)."""
    lines = [line.strip() for line in str(exc).splitlines()
             if line.strip() and not line.strip().startswith(("Traceback", "File ", "[bt]", "Stack trace"))]
    text = lines[-1].split("MXNetError: ", 1)[-1] if lines else type(exc).__name__
    return "it ends early (truncated, or not an MXNet file)" if "buffer_size_" in text else text


def load_arrays(path, *, what: str = "weights file"):
    """The arrays of an MXNet ``.params`` file (``mx.nd.save``): a dict, or a list for unnamed arrays.

    Raises
    ------
    ModelError
        The file is not one MXNet can read (truncated, damaged, another format).
    """
    import mxnet as mx

    from .errors import ModelError

    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return mx.nd.load_frombuffer(data)
    except (mx.base.MXNetError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ModelError(f"The {what} {path!r} is corrupt: {_first_line(exc)}") from None


def load_symbol(path, *, what: str = "graph file"):
    """The MXNet graph (``mx.sym.Symbol``) of a ``-symbol.json`` file.

    Raises
    ------
    ModelError
        The file is not an MXNet graph.
    """
    import mxnet as mx

    from .errors import ModelError

    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        graph = json.loads(data.decode("utf-8", "surrogateescape"))
        attrs = graph.get("attrs") if isinstance(graph, dict) else None
        if isinstance(attrs, dict):  # finetune's own graph attributes (class names) mean nothing to MXNet
            for key in [k for k in attrs if k.startswith("finetune_")]:
                del attrs[key]
        return mx.sym.load_json(json.dumps(graph, ensure_ascii=False))
    except (mx.base.MXNetError, UnicodeError, ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"The {what} {path!r} is corrupt: {_first_line(exc)}") from None


def non_finite(arrays: dict) -> list:
    """The names of the floating-point arrays in ``arrays`` (name -> NDArray or numpy array) holding NaN or infinity."""
    import numpy as np

    bad = []
    for name, value in arrays.items():
        a = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad.append(name)
    return bad


def save_arrays(path, arrays) -> None:
    """``mx.nd.save(path, arrays)`` for any ``path`` (through a temporary file MXNet can name when needed)."""
    import mxnet as mx

    path = os.fspath(path)
    if _nameable(path):
        mx.nd.save(path, arrays)
        return
    with tempfile.TemporaryDirectory() as folder:
        tmp = os.path.join(folder, "arrays.params")
        mx.nd.save(tmp, arrays)
        shutil.copyfile(tmp, path)
