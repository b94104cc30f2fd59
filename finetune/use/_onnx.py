"""The ONNX side of a deployment: MXNet's exporter, made to work on shape tricks, and an independent runtime.

:func:`_export_onnx` writes ``model.onnx`` with ``mx.onnx.export_model``
after :func:`_fold_padding` has replaced the shape-dependent padding
sub-graphs the exporter cannot translate; :func:`_run_onnx` runs the file
with ``onnxruntime`` when installed, else OpenCV's ``cv2.dnn``, for the
check of :func:`~finetune.export_for_deployment`.
"""

from __future__ import annotations

import json
import logging
import os
import warnings

import numpy as np

from ..errors import ModelError
from ..models import graph as _graph

log = logging.getLogger("finetune.use._deploy")


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
