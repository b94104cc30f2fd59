"""Reading a deployment folder (written by :func:`~finetune.export_for_deployment`).

The reader lives with the models so that :func:`~finetune.create_model` can
open a deployment folder like any other source; the writer is in
:mod:`finetune.use`. Every file named in the manifest must lie inside the
folder (:class:`~finetune.errors.UnsafePathError` otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from pathlib import Path

from .._atomic import recover
from ..errors import MissingFileError, ModelError
from ._paths import inside

__all__ = ["Deployment", "read_deployment"]

_MANIFEST = "deploy.json"
_FORMAT = "finetune-deployment"


@dataclasses.dataclass(frozen=True)
class Deployment:
    """The files of a deployment folder and how well they reproduce the network.

    Attributes
    ----------
    directory : str
        The folder.
    symbol, params, preprocess : str
        Paths of ``-symbol.json``, ``-0000.params`` and ``-preprocess.json``.
    onnx : str or None
        Path of the ONNX file, if one was written.
    input_name : str
        Name of the graph's input (``"data"``).
    input_shape : tuple of int
        ``(1, C, H, W)``.
    class_names : list of str or None
        The classes of the outputs.
    max_diff : dict
        Largest absolute difference of the logits against the original
        network, per runtime (``"mxnet"``, ``"onnx"``), when verified.
    """

    directory: str
    symbol: str
    params: str
    preprocess: str
    onnx: str | None
    input_name: str
    input_shape: tuple
    class_names: list | None
    max_diff: dict

    def __repr__(self) -> str:
        files = "symbol+params" + ("+onnx" if self.onnx else "")
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.max_diff.items())
        return f"Deployment({self.directory!r}, {files}, max_diff: {diffs or 'not verified'})"


def _is_deployment(directory) -> bool:
    return (Path(directory) / _MANIFEST).is_file()


def read_deployment(directory) -> Deployment:
    """Read the manifest of a deployment folder."""
    directory = Path(directory)
    path = directory / _MANIFEST
    with contextlib.suppress(OSError):  # finish an export a kill interrupted (read-only: nothing to do)
        recover([path])
    if not path.is_file():
        raise MissingFileError(f"{str(directory)!r} is not a deployment folder (no {_MANIFEST}).")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(f"The manifest {str(path)!r} is corrupt: {exc}") from None
    full = lambda n: inside(directory, n, what="deployment file") if n else None  # noqa: E731
    return Deployment(str(directory), full(m["symbol"]), full(m["params"]), full(m["preprocess"]),
                      full(m.get("onnx")), m["input_name"], tuple(m["input_shape"]),
                      m.get("class_names"), m.get("max_diff", {}))


def _imports(dep: Deployment, ctx):
    """``SymbolBlock.imports`` without its warning about the (float32) input type."""
    import mxnet as mx

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type")
        return mx.gluon.SymbolBlock.imports(dep.symbol, [dep.input_name], dep.params, ctx=ctx)
