"""Export a network for deployment, and check the exported files.

A deployment folder is a **model directory** (what ``save`` writes, so
:func:`~finetune.load_model`, :func:`~finetune.create_model` and
:meth:`Predictor.load <finetune.Predictor.load>` read it like any other)
**plus** the files that run the network without finetune:

==========================  ====================================================
``config.json``             the model directory's config (preprocessing, class
                            names, graph metadata, head) with a
                            ``"deployment"`` section: the runtime files' names,
                            input name and shape, and the verification result
``symbol.json``             the graph finetune loads (for a :class:`~finetune.Model`
                            the cut backbone; the head is rebuilt from the config)
``model-symbol.json``       the whole MXNet graph (``mx.sym.load`` /
                            ``SymbolBlock.imports``), class names inside
``model-0000.params``       the weights, stored once: MXNet reads them with the
                            graph above, finetune as the model directory's weights
``mean_image.npy``          only when the preprocessing has a mean image
``model.onnx``              the same network in ONNX (optional; where MXNet's
                            exporter supports every operator)
==========================  ====================================================

The network's input is the *normalised* ``(N, C, H, W)`` float32 batch and
its output the logits, exactly as in the model protocol; apply the
preprocessing of ``config.json``'s ``"preprocess"`` section first (the
fields :meth:`Preprocess.save <finetune.Preprocess.save>` writes) and a
softmax after.

:func:`export_for_deployment` runs the original network, the re-imported MXNet
files (``SymbolBlock.imports``) and the ONNX file (through OpenCV's
``cv2.dnn``, an independent runtime, or ``onnxruntime`` when installed) on the
same batch and records the largest difference. Folders of the earlier layout
(``deploy.json``, ``model-preprocess.json``) are still read
(:func:`~finetune.load_model` and :func:`~finetune.load_deployment`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import numpy as np

from ..._folder_swap import atomic_dir
from ..._progress import RESULT
from ..._mxio import load_arrays, load_symbol
from ...errors import ConfigError, ModelError, check_range
from .._protocol import require_model
from ._deployment import SECTION, Deployment, _imports, read_deployment
from ._onnx import _export_onnx, _run_onnx

__all__ = ["Deployment", "export_for_deployment", "load_deployment", "verify_deployment"]

log = logging.getLogger(__name__)

DEPLOYMENT_VERSION = 2  # config.json's format_version in a deployment: a "deployment" section, prefixed weights


def _input_of(model):
    pre = model.preprocess
    return (1, pre.channels, pre.size[0], pre.size[1])


def _as_network(model):
    """A finetune network that writes a model directory: ``model`` itself, or a plain block wrapped."""
    import mxnet as mx

    from .._block import BlockModel
    from .._network import _Network
    from .._quantize import QuantizedModel

    if isinstance(model, (_Network, QuantizedModel)):
        return model
    if not isinstance(model, mx.gluon.HybridBlock):
        raise ModelError(f"export_for_deployment needs a Gluon HybridBlock; got a {type(model).__name__}.")
    return BlockModel(model)


def _export_mxnet(model, prefix: str, ctx) -> None:
    """``-symbol.json`` + ``-0000.params`` through the model's own ``export`` (or Gluon's)."""
    import mxnet as mx

    from .._network import _Network

    if isinstance(model, _Network):
        model.export(prefix)
    else:  # Gluon's export needs the cached graph of a forward pass
        model.hybridize()
        model(mx.nd.zeros(_input_of(model), ctx=ctx))
        mx.gluon.HybridBlock.export(model, prefix)
    sym_file, par_file = prefix + "-symbol.json", prefix + "-0000.params"
    if not (os.path.isfile(sym_file) and os.path.isfile(par_file)):
        raise ModelError(f"{type(model).__name__}.export({prefix!r}) did not write {sym_file} and {par_file}.")
    for extra in (prefix + "-preprocess.json", prefix + "-preprocess.json.mean.npy"):
        if os.path.exists(extra):  # config.json and mean_image.npy of the model directory hold it
            os.remove(extra)


def _share_weights(folder: str, config: dict, params_file: str) -> str:
    """The weights file of the deployment's model directory, stored once when possible.

    The model directory's ``weights.params`` and the export's ``-0000.params``
    hold the same arrays under the same names (for finetune's networks the
    Gluon parameter names are the graph's variable names), the export's
    with MXNet's ``arg:`` / ``aux:`` prefixes. When they agree exactly, the
    export's file becomes the model directory's weights and
    ``weights.params`` is removed; otherwise (a network whose saved names
    differ from its graph's) both are kept. Returns the file name for
    ``config["weights"]``.
    """
    from ._modeldir import _unprefixed, read_weights

    own = read_weights(folder, config)
    exported = {_unprefixed(k): v for k, v in load_arrays(params_file).items()}
    same = set(own) == set(exported) and all(
        own[k].dtype == exported[k].dtype and own[k].shape == exported[k].shape
        and np.array_equal(own[k].asnumpy(), exported[k].asnumpy()) for k in own)
    weights = config.get("weights", "weights.params")
    if not same:
        log.info("The exported parameters differ from the saved ones; keeping both weight files.")
        return weights
    os.remove(os.path.join(folder, weights))
    return os.path.basename(params_file)


def _input_name(symbol_file: str, params_file: str) -> str:
    sym = load_symbol(symbol_file)
    params = {k.split(":", 1)[-1] for k in load_arrays(params_file)}
    inputs = [n for n in sym.list_inputs() if n not in params]
    if len(inputs) != 1:
        raise ModelError(f"Expected one data input in {symbol_file}, found {inputs}.")
    return inputs[0]


def export_for_deployment(model, directory, *, onnx: bool = False, verify: bool = True,
                          atol: float = 1e-4, name: str = "model", ctx=None) -> Deployment:
    """Write a deployment folder — a model directory plus MXNet (and ONNX) files — and check it.

    The folder is what ``model.save(directory)`` writes, so
    :func:`~finetune.load_model` reads it, plus ``{name}-symbol.json``
    (written by the model's low-level ``export``), whose
    ``{name}-0000.params`` are the model directory's weights too (stored
    once), and optionally ``{name}.onnx``; their names, the input and the
    verification result go into ``config.json``'s ``"deployment"`` section.
    The folder is replaced as a whole: a kill or a failed check leaves the
    previous folder, or the complete new one.

    Parameters
    ----------
    model : mxnet.gluon.HybridBlock
        A network following the model protocol (``.preprocess``,
        ``.class_names``), e.g. a fine-tuned :class:`~finetune.Model`; a
        plain block is saved as a :class:`~finetune.Backbone` of its graph.
    directory : str or path-like
        Output folder (created; an existing model directory or deployment
        folder there is replaced, any other non-empty folder refused).
    onnx : bool
        Also write ``model.onnx`` with ``mx.onnx.export_model`` (batch size
        left dynamic). Raises :class:`~finetune.errors.ModelError` when MXNet's
        exporter does not support an operator of the network.
    verify : bool
        Run the exported files on a random normalised batch ``(2, C, H, W)``
        and compare the logits with the original network.
    atol : float
        Largest absolute difference of the logits accepted by the check.
    name : str
        Prefix of the MXNet and ONNX files inside ``directory``.
    ctx : None or mx.Context
        Device for the check; ``None`` is the current context.

    Returns
    -------
    Deployment

    Raises
    ------
    ModelError
        An export step failed, or the exported network disagrees with the
        original by more than ``atol``.
    ConfigError
        ``directory`` is a file or a non-empty folder of something else, or
        ``name`` is not a plain file name.

    Examples
    --------
    >>> import mxnet as mx, tempfile
    >>> from finetune import Preprocess, load_model
    >>> net = mx.gluon.nn.HybridSequential()
    >>> net.add(mx.gluon.nn.Conv2D(2, 3), mx.gluon.nn.GlobalAvgPool2D(), mx.gluon.nn.Flatten())
    >>> net.initialize()
    >>> net.preprocess, net.class_names = Preprocess(size=(8, 8), resize=8), ["a", "b"]
    >>> dep = export_for_deployment(net, tempfile.mkdtemp(), onnx=True)
    >>> sorted(dep.max_diff)
    ['mxnet', 'onnx']
    >>> load_model(dep.directory).class_names
    ['a', 'b']
    """
    import mxnet as mx

    from ..._context import resolve_ctx
    from .._block import as_inference_model
    from ._modeldir import KIND, read_config

    model = as_inference_model(model)  # a plain block with preprocess and class_names, wrapped
    require_model(model, "inference", "export_for_deployment")
    check_range("export_for_deployment", "atol", atol, 0)
    if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (".", ".."):
        raise ConfigError(f"The 'name' parameter of export_for_deployment must be a plain file name. "
                          f"Got {name!r} instead.")
    ctx = resolve_ctx(ctx)[0]
    shape = _input_of(model)
    model(mx.nd.zeros(shape, ctx=ctx))  # finishes a deferred initialisation before the weights are saved
    net = _as_network(model)
    out = os.path.abspath(os.fspath(directory))
    with atomic_dir(out, what="deployment folder", kind=KIND) as tmp:  # written and checked here, then swapped in
        net.save(tmp)
        config = read_config(tmp)
        prefix = os.path.join(tmp, name)
        _export_mxnet(net, prefix, ctx)
        sym_file, par_file = prefix + "-symbol.json", prefix + "-0000.params"
        config["weights"] = _share_weights(tmp, config, par_file)
        onnx_file = None
        if onnx:
            onnx_file = prefix + ".onnx"
            with _mxnet_info_silenced():  # its INFO lines name our temporary folder
                _export_onnx(sym_file, par_file, shape, onnx_file)
        class_names = model.class_names
        dep = Deployment(tmp, sym_file, par_file, os.path.join(tmp, "config.json"), onnx_file,
                         _input_name(sym_file, par_file), shape,
                         list(class_names) if class_names is not None else None, {})
        if verify:
            rng = np.random.default_rng(0)
            x = rng.normal(0, 1, (2,) + shape[1:]).astype(np.float32)
            reference = model(mx.nd.array(x, ctx=ctx))
            reference = (reference[0] if isinstance(reference, (list, tuple)) else reference).asnumpy()
            diffs = verify_deployment(dep, x, reference, atol=atol, ctx=ctx)
            dep = dataclasses.replace(dep, max_diff=diffs)
        _write_config(tmp, config, dep)
    final = lambda p: os.path.join(out, os.path.basename(p)) if p else None  # noqa: E731
    dep = dataclasses.replace(dep, directory=out, symbol=final(dep.symbol), params=final(dep.params),
                              preprocess=final(dep.preprocess), onnx=final(dep.onnx))
    log.info("Exported %s", dep, extra=RESULT)
    return dep


def _mxnet_silent_below_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


@contextlib.contextmanager
def _mxnet_info_silenced():
    """Drop MXNet's own INFO lines (it logs on the root logger: "Exported ONNX file <path> saved to disk")."""
    root = logging.getLogger()
    root.addFilter(_mxnet_silent_below_warning)
    try:
        yield
    finally:
        root.removeFilter(_mxnet_silent_below_warning)


def _write_config(folder: str, config: dict, dep: Deployment) -> None:
    """``config.json`` of the model directory, with the ``"deployment"`` section (written last)."""
    from ..._version import __version__

    rel = lambda p: os.path.basename(p) if p else None  # noqa: E731
    config = dict(config, format_version=DEPLOYMENT_VERSION)
    config[SECTION] = {"symbol": rel(dep.symbol), "params": rel(dep.params), "onnx": rel(dep.onnx),
                       "input_name": dep.input_name, "input_shape": list(dep.input_shape),
                       "max_diff": dep.max_diff, "finetune_version": __version__}
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8", errors="surrogateescape") as f:
        json.dump(config, f, indent=1, ensure_ascii=False)


def load_deployment(directory, *, ctx=None):
    """Load the MXNet files of a deployment folder as an inference model.

    What a service without finetune's classes runs. To load the network as
    the finetune model it was (a :class:`~finetune.Model` or
    :class:`~finetune.Backbone`), call :func:`~finetune.load_model` on the
    same folder.

    Parameters
    ----------
    directory : str or path-like
        A folder written by :func:`export_for_deployment` (also one of the
        earlier layout, with ``deploy.json``).
    ctx : None, mx.Context, str or list
        Where to load the weights.

    Returns
    -------
    DeployedModel
        A ``SymbolBlock`` meeting the inference level of the model protocol
        (:class:`~finetune.InferenceModel`: ``preprocess``, ``class_names``,
        ``save``), so a :class:`~finetune.Predictor` can wrap it.
    """
    from ._deployment import DeployedModel

    return DeployedModel.load(directory, ctx=ctx)


def verify_deployment(deployment, x: np.ndarray, reference: np.ndarray, *, atol: float = 1e-4, ctx=None) -> dict:
    """Run the exported files on ``x`` and compare with ``reference`` logits.

    Parameters
    ----------
    deployment : Deployment or path
        What :func:`export_for_deployment` returned, or its folder.
    x : numpy.ndarray
        ``(N, C, H, W)`` float32 normalised input.
    reference : numpy.ndarray
        ``(N, K)`` logits of the original network on ``x``.
    atol : float
        Largest absolute difference allowed.
    ctx : None or mx.Context
        Device for the MXNet check.

    Returns
    -------
    dict
        Largest absolute difference per runtime: ``"mxnet"`` and, with an
        ONNX file, ``"onnx"``.

    Raises
    ------
    ModelError
        A runtime disagrees with ``reference`` by more than ``atol``.
    """
    import mxnet as mx

    from ..._context import resolve_ctx

    dep = deployment if isinstance(deployment, Deployment) else read_deployment(deployment)
    ctx = resolve_ctx(ctx)[0]
    reference = np.asarray(reference, np.float32).reshape(len(x), -1)
    net = _imports(dep, ctx)
    outputs = {"mxnet": net(mx.nd.array(x, ctx=ctx)).asnumpy()}
    if dep.onnx:
        outputs["onnx"] = _run_onnx(dep.onnx, dep.input_name, x)
    diffs = {}
    for runtime, out in outputs.items():
        out = np.asarray(out, np.float32).reshape(len(x), -1)
        if out.shape != reference.shape:
            raise ModelError(f"The exported {runtime} network outputs shape {out.shape}, expected {reference.shape}.")
        diffs[runtime] = float(np.abs(out - reference).max())
        if not diffs[runtime] <= atol:
            raise ModelError(
                f"The exported {runtime} network differs from the original by {diffs[runtime]:.3g} "
                f"(allowed: {atol:g}). The exporter may not support an operator faithfully."
            )
    return diffs
