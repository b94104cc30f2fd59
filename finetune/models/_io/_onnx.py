"""The ONNX side of a deployment: MXNet's exporter, made to work on shape tricks, and an independent runtime.

:func:`_export_onnx` writes ``model.onnx`` with ``mx.onnx.export_model``
after :func:`~finetune.models.graph.fold_padding` has replaced the
shape-dependent padding sub-graphs the exporter cannot translate; :func:`_run_onnx` runs the file
with ``onnxruntime`` when installed, else OpenCV's ``cv2.dnn``, for the
check of :func:`~finetune.export_for_deployment`.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..._mxio import load_arrays, load_symbol
from ...errors import ModelError
from ..graph import fold_padding

log = logging.getLogger("finetune.models._io._export")


def _export_onnx(symbol_file, params_file, shape, onnx_file) -> None:
    import mxnet as mx

    symbol, folded = fold_padding(load_symbol(symbol_file), shape)
    if folded:
        log.info("ONNX: %d shape-dependent padding sub-graphs folded into constant Pad at input %s.", folded, shape)
    params = {k.split(":", 1)[-1]: v for k, v in load_arrays(params_file).items()}
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
