"""Reading a deployment folder (written by :func:`~finetune.export_for_deployment`).

A deployment folder **is a model directory** (what ``save`` writes, read by
:func:`~finetune.load_model`) plus the runtime files: the MXNet graph
(``model-symbol.json``), whose ``model-0000.params`` are also the model
directory's weights, and optionally ``model.onnx``. Their names, the input
name and shape and the verification result are the ``"deployment"``
section of the folder's ``config.json``; the preprocessing and the class
names are the model directory's own.

Folders written before the two formats were one — the MXNet export files,
``model-preprocess.json`` and a ``deploy.json`` manifest, no
``config.json`` — are still read (:func:`read_deployment`,
:func:`load_legacy`).

The reader lives with the models so that :func:`~finetune.load_model` and
:func:`~finetune.create_model` can open a deployment folder like any other
model directory, and the writer (:func:`~finetune.export_for_deployment`) beside
it, so that the one format has one home. :class:`DeployedModel` is the folder's MXNet graph as an inference model (the inference level of the
model protocol), what :func:`~finetune.load_deployment` returns. Every file named in
``config.json`` or ``deploy.json`` must lie inside the folder
(:class:`~finetune.errors.UnsafePathError` otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from pathlib import Path

from ..._file_writes import recover
from ..._folder_swap import recover_dir
from ..._legacy import earlier_layout
from ..._mxio import load_arrays, load_symbol
from ...data import Preprocess
from ...errors import MissingFileError, ModelError
from ._modeldir import read_config, read_preprocess
from ._paths import inside
from .._inference import Inference
from .._inference_graph import InferenceGraph

__all__ = ["DeployedModel", "Deployment", "is_deployment", "load_legacy", "read_deployment", "read_deployment_preprocess"]

SECTION = "deployment"  # the key of config.json that makes a model directory a deployment folder
_MANIFEST = "deploy.json"  # the manifest of the earlier layout
_FORMAT = "finetune-deployment"


@dataclasses.dataclass(frozen=True)
class Deployment:
    """The files of a deployment folder and how well they reproduce the network.

    Attributes
    ----------
    directory : str
        The folder (a model directory).
    symbol, params : str
        Paths of ``model-symbol.json`` and ``model-0000.params`` (the MXNet
        graph and its weights, which are also the model directory's weights).
    preprocess : str
        The file holding the :class:`~finetune.Preprocess`: the folder's
        ``config.json`` (its ``"preprocess"`` section, with
        ``mean_image.npy`` for a mean image); in a folder of the earlier
        layout, ``model-preprocess.json``.
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


def _config_of(directory):
    """The folder's ``config.json`` as a dict, or None when it has none."""
    if not (Path(directory) / "config.json").is_file():
        return None
    return read_config(directory)


def is_deployment(directory) -> bool:
    """Whether ``directory`` is a deployment folder (of either layout)."""
    directory = Path(directory)
    if (directory / "config.json").is_file():
        with contextlib.suppress(OSError, ValueError):
            return isinstance(json.loads((directory / "config.json").read_text(encoding="utf-8")).get(SECTION),
                              dict)
        return False
    return (directory / _MANIFEST).is_file()


def read_deployment(directory) -> Deployment:
    """The :class:`Deployment` of a folder: ``config.json``'s ``"deployment"`` section, or ``deploy.json``."""
    directory = Path(directory)
    with contextlib.suppress(OSError):  # finish a write a kill interrupted (read-only: nothing to do)
        recover_dir(directory)
        recover([directory / _MANIFEST])
    config = _config_of(directory) if directory.is_dir() else None
    if config is None:
        return _read_manifest(directory)
    section = config.get(SECTION)
    if not isinstance(section, dict):
        raise MissingFileError(f"{str(directory)!r} is a model directory but not a deployment folder (its "
                               f"config.json has no {SECTION!r} section); write one with "
                               "finetune.export_for_deployment.")
    full = lambda n: inside(directory, n, what="deployment file") if n else None  # noqa: E731
    try:
        return Deployment(str(directory), full(section["symbol"]), full(section["params"]),
                          str(directory / "config.json"), full(section.get("onnx")), section["input_name"],
                          tuple(section["input_shape"]), config.get("class_names"), section.get("max_diff", {}))
    except (KeyError, TypeError) as exc:
        raise ModelError(f"The {SECTION!r} section of {str(directory / 'config.json')!r} is corrupt: "
                         f"{type(exc).__name__}: {exc}") from None


def _read_manifest(directory: Path) -> Deployment:
    """A folder of the earlier layout: MXNet export files and a ``deploy.json`` manifest."""
    path = directory / _MANIFEST
    if not path.is_file():
        raise MissingFileError(f"{str(directory)!r} is not a deployment folder (no config.json with a "
                               f"{SECTION!r} section, nor a {_MANIFEST}).")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        names = {k: m[k] for k in ("symbol", "params", "preprocess", "input_name", "input_shape")}
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"The manifest {str(path)!r} is corrupt: {type(exc).__name__}: {exc}") from None
    earlier_layout(f"The deployment folder {str(directory)!r} (deploy.json, no config.json)",
                   "load it and write it again with finetune.export_for_deployment (finetune export)", stacklevel=4)
    full = lambda n: inside(directory, n, what="deployment file") if n else None  # noqa: E731
    return Deployment(str(directory), full(names["symbol"]), full(names["params"]), full(names["preprocess"]),
                      full(m.get("onnx")), names["input_name"], tuple(names["input_shape"]),
                      m.get("class_names"), m.get("max_diff", {}))


def read_deployment_preprocess(dep: Deployment) -> Preprocess:
    """The :class:`~finetune.Preprocess` of a deployment (from ``config.json`` or ``model-preprocess.json``)."""
    if os.path.basename(dep.preprocess) == "config.json":
        config = read_config(dep.directory)
        return read_preprocess(dep.directory, config)
    if not os.path.isfile(dep.preprocess):
        raise MissingFileError(f"The deployment file {dep.preprocess!r} is missing.")
    return Preprocess.load(dep.preprocess)


def load_legacy(folder, *, ctx=None):
    """A :class:`~finetune.Backbone` from a deployment folder of the earlier layout (``deploy.json``)."""
    import mxnet as mx

    from .._backbone import Backbone

    dep = read_deployment(folder)
    for path in (dep.symbol, dep.params, dep.preprocess):
        if not os.path.isfile(path):
            raise MissingFileError(f"The deployment file {path!r} is missing.")
    try:
        symbol = load_symbol(dep.symbol)
        saved = load_arrays(dep.params)
    except mx.base.MXNetError as exc:
        raise ModelError(f"Cannot read the deployment {os.fspath(folder)!r}: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    arrays = {k.split(":", 1)[-1]: v for k, v in saved.items()}
    return Backbone.from_symbol(symbol, arrays, {}, Preprocess.load(dep.preprocess), class_names=dep.class_names,
                                input_name=dep.input_name, name=os.path.basename(os.path.abspath(folder)),
                                ctx=ctx)


def _imports(dep: Deployment, ctx, make=None):
    """``SymbolBlock.imports`` without its warning about the (float32) input type.

    ``make(symbol, input_name)`` builds the block (default: a plain ``SymbolBlock``).
    """
    import mxnet as mx

    for path in (dep.symbol, dep.params):
        if not os.path.isfile(path):
            raise MissingFileError(f"The deployment file {path!r} is missing.")
    symbol, arrays = load_symbol(dep.symbol), load_arrays(dep.params)  # any path, typed errors
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type")
        net = (make(symbol, dep.input_name) if make is not None
               else mx.gluon.SymbolBlock(symbol, [mx.sym.var(dep.input_name)]))
        try:
            net.collect_params().load_dict(arrays, ctx, cast_dtype=True, dtype_source="saved",
                                           filename=dep.params)
        except (AssertionError, mx.base.MXNetError, ValueError) as exc:
            raise ModelError(f"The weights {dep.params!r} do not fit the graph {dep.symbol!r}: "
                             f"{str(exc).strip().splitlines()[0]}") from None
    return net


class DeployedModel(InferenceGraph):
    """The MXNet files of a deployment folder as an inference model (what :func:`~finetune.load_deployment` returns).

    Meets the inference level of the model protocol
    (:class:`~finetune.InferenceModel`): ``model(x)`` gives the logits of a
    normalised ``(N, C, H, W)`` float32 batch, with :attr:`preprocess` and
    :attr:`class_names` from the folder; :meth:`save` writes a model
    directory that :func:`~finetune.load_model` reads (as a
    :class:`~finetune.Backbone` over the same graph). Layer access and
    training stay with :func:`~finetune.load_model` on the same folder.

    Attributes
    ----------
    preprocess : Preprocess
        The folder's preprocessing.
    class_names : list of str or None
        The folder's class names.
    inference : Inference
        The folder's inference record (plain for a folder of the earlier layout).
    deployment : Deployment
        The files it was read from.
    """

    def __init__(self, symbol, preprocess, class_names=None, *, input_name: str = "data", deployment=None,
                 inference=None):
        super().__init__(symbol, preprocess, class_names, input_name=input_name, inference=inference)
        self.deployment = deployment

    @classmethod
    def load(cls, directory, *, ctx=None) -> "DeployedModel":
        """Read a deployment folder (either layout) onto ``ctx`` (``None``: the current context)."""
        from ..._context import resolve_ctx

        dep = read_deployment(directory)
        preprocess = read_deployment_preprocess(dep)
        config = read_config(dep.directory) if os.path.basename(dep.preprocess) == "config.json" else {}
        inference = Inference.from_dict(config.get("inference"))  # checked by read_config
        return _imports(dep, resolve_ctx(ctx), lambda symbol, name: cls(
            symbol, preprocess, dep.class_names, input_name=name, deployment=dep, inference=inference))

    def __repr__(self) -> str:
        return f"DeployedModel({self.deployment.directory if self.deployment else None!r}, " \
               f"classes={len(self.class_names or [])})"
