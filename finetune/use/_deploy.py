"""Export a network for deployment, and check the exported files.

A deployment folder holds everything needed to run the network without
finetune's Python classes:

==========================  ====================================================
``model-symbol.json``       the MXNet graph (``mx.sym.load`` /
                            ``SymbolBlock.imports``)
``model-0000.params``       the weights
``model-preprocess.json``   the :class:`~finetune.Preprocess` config: colour
                            order, resize/crop, mean/std (and
                            ``model-preprocess.json.mean.npy`` for a mean image)
``model.onnx``              the same network in ONNX (optional; where MXNet's
                            exporter supports every operator)
``deploy.json``             manifest: file names, input name and shape, class
                            names, and the verification result
==========================  ====================================================

The network's input is the *normalised* ``(N, C, H, W)`` float32 batch and
its output the logits, exactly as in the model protocol; apply the
preprocessing from ``model-preprocess.json`` first (and a softmax after).

:func:`export_for_deployment` runs the original network, the re-imported MXNet
files (``SymbolBlock.imports``) and the ONNX file (through OpenCV's
``cv2.dnn``, an independent runtime, or ``onnxruntime`` when installed) on the
same batch and records the largest difference.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from .._atomic import atomic_paths, scratch_dir
from ..errors import ModelError, check_range
from ..models import graph as _graph
from ..models._deployment import _FORMAT, _MANIFEST, Deployment, _imports, read_deployment

__all__ = ["Deployment", "export_for_deployment", "load_deployment", "verify_deployment"]

log = logging.getLogger(__name__)

def _input_of(model):
    pre = model.preprocess
    return (1, pre.channels, pre.size[0], pre.size[1])


def _export_mxnet(model, prefix: str, ctx) -> None:
    """``-symbol.json`` + ``-0000.params`` through the model's own ``export`` (or Gluon's)."""
    import mxnet as mx

    model.hybridize()
    model(mx.nd.zeros(_input_of(model), ctx=ctx))  # builds the cached graph Gluon exports
    try:
        model.export(prefix)
    except TypeError:  # a HybridBlock.export with a different signature
        mx.gluon.HybridBlock.export(model, prefix)
    sym_file, par_file = prefix + "-symbol.json", prefix + "-0000.params"
    if not (os.path.isfile(sym_file) and os.path.isfile(par_file)):
        raise ModelError(f"{type(model).__name__}.export({prefix!r}) did not write {sym_file} and {par_file}.")


def _input_name(symbol_file: str, params_file: str) -> str:
    import mxnet as mx

    sym = mx.sym.load(symbol_file)
    params = {k.split(":", 1)[-1] for k in mx.nd.load(params_file)}
    inputs = [n for n in sym.list_inputs() if n not in params]
    if len(inputs) != 1:
        raise ModelError(f"Expected one data input in {symbol_file}, found {inputs}.")
    return inputs[0]


def _ancestors(nodes, k) -> set:
    seen, stack = set(), [k]
    while stack:
        for ref in nodes[stack.pop()]["inputs"]:
            if ref[0] not in seen:
                seen.add(ref[0])
                stack.append(ref[0])
    return seen


def _as_padding(symbol, internals, shapes, p_entry, x_entry, x_is_var):
    """The zero-padding widths ``(top, bottom, left, right)`` if ``x -> p`` is exactly a padding, else None."""
    import mxnet as mx

    in_shape, out_shape = shapes.get(x_entry), shapes.get(p_entry)
    if not in_shape or not out_shape or len(in_shape) != 4 or len(out_shape) != 4:
        return None
    if in_shape[:2] != out_shape[:2] or out_shape[2] < in_shape[2] or out_shape[3] < in_shape[3]:
        return None
    sub = internals[p_entry]
    if x_is_var:
        probe, arg = sub, x_entry
    else:
        _, probe = _graph.split_at(sub, x_entry)
        arg = _graph.CUT_INPUT
    if probe.list_arguments() != [arg] or probe.list_auxiliary_states():
        return None
    x = np.random.default_rng(0).normal(size=in_shape).astype(np.float32) + 3
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type")
        block = mx.gluon.SymbolBlock(probe, mx.sym.var(arg))
    y = block(mx.nd.array(x, ctx=mx.cpu())).asnumpy()
    rows, cols = np.nonzero((y != 0).any(axis=(0, 1)))
    if not len(rows):
        return None
    top, left = int(rows.min()), int(cols.min())
    widths = (top, out_shape[2] - in_shape[2] - top, left, out_shape[3] - in_shape[3] - left)
    if min(widths) < 0 or not np.array_equal(np.pad(x, ((0, 0), (0, 0), widths[:2], widths[2:])), y):
        return None
    return widths


def _fold_padding(symbol, shape, max_depth: int = 16):
    """Replace shape-dependent padding sub-graphs by the constant ``Pad`` they amount to.

    EfficientNet-Lite computes TensorFlow's SAME padding for any input size
    with ``reverse`` / ``slice_like`` / ``Crop(center_crop)`` tricks that
    MXNet's ONNX exporter cannot translate. At the fixed deployment input
    size such a sub-graph (one input, no parameters, ending in one of those
    operators) is a plain zero padding: the widths are found by running it,
    and the replacement is accepted only if it reproduces the sub-graph
    exactly on a random input. Returns ``(symbol, number folded)``.
    """
    import mxnet as mx

    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(data=shape)
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    entry = lambda i: nodes[i]["name"] if nodes[i]["op"] == "null" else nodes[i]["name"] + "_output"  # noqa: E731
    dead, folded = set(), 0
    for k in range(len(nodes) - 1, -1, -1):
        node = nodes[k]
        if k in dead or node["op"] not in ("Crop", "slice_like", "reverse", "Pad"):
            continue
        ancestors = _ancestors(nodes, k)
        for x in sorted(ancestors, reverse=True)[:max_depth]:
            if node["op"] == "Pad" and [x, 0, 0] == node["inputs"][0][:1] + [0, 0]:
                break  # already a plain Pad of its input
            widths = _as_padding(symbol, internals, shapes, entry(k), entry(x), nodes[x]["op"] == "null")
            if widths is None:
                continue
            nodes[k] = {"op": "Pad", "name": node["name"], "inputs": [[x, 0, 0]],
                        "attrs": {"mode": "constant", "constant_value": "0",
                                  "pad_width": str((0, 0, 0, 0) + widths)}}
            dead |= ancestors - _ancestors(nodes, x) - {x}
            folded += 1
            break
    if not folded:
        return symbol, 0
    pruned = mx.sym.load_json(json.dumps(graph))
    return mx.sym.load_json(pruned.tojson()), folded


def _export_onnx(symbol_file, params_file, shape, onnx_file) -> None:
    import mxnet as mx

    symbol, folded = _fold_padding(mx.sym.load(symbol_file), shape)
    if folded:
        log.info("ONNX: %d shape-dependent padding sub-graphs folded into constant Pad at input %s.", folded, shape)
    params = {k.split(":", 1)[-1]: v for k, v in mx.nd.load(params_file).items()}
    try:
        mx.onnx.export_model(symbol, params, in_shapes=[shape], in_types=[np.float32],
                             onnx_file_path=onnx_file, dynamic=True,
                             dynamic_input_shapes=[(None,) + tuple(shape[1:])])
    except Exception as exc:  # MXNet's exporter raises plain errors for unsupported operators
        if os.path.exists(onnx_file):
            os.remove(onnx_file)
        raise ModelError(f"MXNet's ONNX exporter cannot convert this network: {type(exc).__name__}: {exc}") from exc


def export_for_deployment(model, directory, *, onnx: bool = False, verify: bool = True,
                          atol: float = 1e-4, name: str = "model", ctx=None) -> Deployment:
    """Write the deployment files of a network and check that they give its outputs.

    Parameters
    ----------
    model : mxnet.gluon.HybridBlock
        A network following the model protocol (``.preprocess``,
        ``.class_names``), e.g. a fine-tuned :class:`~finetune.Model`.
    directory : str or path-like
        Output folder (created).
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
        File prefix inside ``directory``.
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

    Examples
    --------
    >>> import mxnet as mx, tempfile
    >>> from finetune import Preprocess
    >>> net = mx.gluon.nn.HybridSequential()
    >>> net.add(mx.gluon.nn.Conv2D(2, 3), mx.gluon.nn.GlobalAvgPool2D(), mx.gluon.nn.Flatten())
    >>> net.initialize()
    >>> net.preprocess, net.class_names = Preprocess(size=(8, 8), resize=8), ["a", "b"]
    >>> dep = export_for_deployment(net, tempfile.mkdtemp(), onnx=True)
    >>> sorted(dep.max_diff)
    ['mxnet', 'onnx']
    """
    import mxnet as mx

    from .._context import resolve_ctx

    if getattr(model, "preprocess", None) is None:
        raise ModelError("export_for_deployment needs a model with .preprocess (a finetune.Preprocess).")
    check_range("export_for_deployment", "atol", atol, 0)
    ctx = resolve_ctx(ctx)[0]
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out / name) as scratch:  # written and checked here, then moved in as one unit
        prefix = os.path.join(scratch, name)
        _export_mxnet(model, prefix, ctx)
        sym_file, par_file, pre_file = prefix + "-symbol.json", prefix + "-0000.params", prefix + "-preprocess.json"
        model.preprocess.save(pre_file)
        shape = _input_of(model)
        onnx_file = None
        if onnx:
            onnx_file = prefix + ".onnx"
            _export_onnx(sym_file, par_file, shape, onnx_file)
        class_names = getattr(model, "class_names", None)
        dep = Deployment(scratch, sym_file, par_file, pre_file, onnx_file, _input_name(sym_file, par_file),
                         shape, list(class_names) if class_names is not None else None, {})
        if verify:
            rng = np.random.default_rng(0)
            x = rng.normal(0, 1, (2,) + shape[1:]).astype(np.float32)
            reference = model(mx.nd.array(x, ctx=ctx))
            reference = (reference[0] if isinstance(reference, (list, tuple)) else reference).asnumpy()
            diffs = verify_deployment(dep, x, reference, atol=atol, ctx=ctx)
            dep = dataclasses.replace(dep, max_diff=diffs)
        _write_manifest(dep)
        names = [_MANIFEST] + sorted(n for n in os.listdir(scratch) if n != _MANIFEST)
        with atomic_paths([out / n for n in names]) as temps:
            for n, tmp in zip(names, temps):
                os.replace(os.path.join(scratch, n), tmp)
    final = lambda p: str(out / os.path.basename(p)) if p else None  # noqa: E731
    dep = dataclasses.replace(dep, directory=str(out), symbol=final(dep.symbol), params=final(dep.params),
                              preprocess=final(dep.preprocess), onnx=final(dep.onnx))
    log.info("Exported %s", dep)
    return dep


def _write_manifest(dep: Deployment) -> None:
    rel = lambda p: os.path.basename(p) if p else None  # noqa: E731
    manifest = {
        "format": _FORMAT,
        "symbol": rel(dep.symbol), "params": rel(dep.params), "preprocess": rel(dep.preprocess),
        "onnx": rel(dep.onnx), "input_name": dep.input_name, "input_shape": list(dep.input_shape),
        "class_names": dep.class_names, "max_diff": dep.max_diff,
    }
    from .._version import __version__

    manifest["finetune_version"] = __version__
    with open(os.path.join(dep.directory, _MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)


def load_deployment(directory, *, ctx=None):
    """Load the MXNet files of a deployment folder as a ``SymbolBlock`` following the model protocol.

    Parameters
    ----------
    directory : str or path-like
        A folder written by :func:`export_for_deployment`.
    ctx : None, mx.Context, str or list
        Where to load the weights.

    Returns
    -------
    mxnet.gluon.SymbolBlock
        With ``.preprocess`` and ``.class_names`` set, so a
        :class:`~finetune.Predictor` can wrap it.
    """
    from .._context import resolve_ctx
    from ..data import Preprocess

    dep = read_deployment(directory)
    net = _imports(dep, resolve_ctx(ctx))
    net.preprocess = Preprocess.load(dep.preprocess)
    net.class_names = dep.class_names
    return net


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

    from .._context import resolve_ctx

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


def _run_onnx(onnx_file: str, input_name: str, x: np.ndarray) -> np.ndarray:
    """Run an ONNX file with onnxruntime if installed, else OpenCV's dnn module."""
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import cv2

    net = cv2.dnn.readNetFromONNX(onnx_file)
    outs = []
    for row in x:  # OpenCV fixes the batch size of ONNX graphs at the first run
        net.setInput(row[None])
        outs.append(net.forward().reshape(1, -1))
    return np.concatenate(outs)
