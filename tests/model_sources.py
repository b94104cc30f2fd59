"""Tiny networks of every kind :func:`finetune.create_model` accepts, written in a temporary folder.

A plain Gluon block (:func:`finetune.testing.tiny_block`), a Caffe pair (prototxt + caffemodel written without
Caffe), a deployment folder (and one of the earlier ``deploy.json``
layout) and an MXNet checkpoint — all the same small
conv net on 16x16 images with three classes, so consumer tests run in
well under a second per source.
"""

from __future__ import annotations

import json
import os

import mxnet as mx
import numpy as np

import finetune as ft
from finetune.testing import TINY_CLASSES, TinyBlock, tiny_block  # noqa: F401 - the stand-in, for the tests
from tests.models.test_caffe_encoder import caffemodel_bytes

CLASSES = list(TINY_CLASSES)

CAFFE_PROTOTXT = """\
name: "tiny"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool1" top: "fc1" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc1" top: "prob" }
"""


def caffe_pair(folder) -> tuple:
    """``(prototxt, caffemodel)`` of a tiny Caffe network (BGR, mean subtraction)."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    proto = os.path.join(folder, "deploy.prototxt")
    with open(proto, "w") as f:
        f.write(CAFFE_PROTOTXT)
    layers = [("conv1", "Convolution", [rng.normal(0, 0.3, (4, 3, 3, 3)), rng.normal(0, 0.1, (4,))]),
              ("fc1", "InnerProduct", [rng.normal(0, 0.3, (3, 4 * 8 * 8)), rng.normal(0, 0.1, (3,))])]
    model = os.path.join(folder, "model.caffemodel")
    with open(model, "wb") as f:
        f.write(caffemodel_bytes(layers))
    return proto, model


def deployment_folder(folder) -> str:
    """A deployment folder of :func:`tiny_block` (MXNet files, verified)."""
    return ft.export_for_deployment(tiny_block(), os.fspath(folder)).directory


def legacy_deployment_folder(folder, block=None, *, onnx: bool = False) -> str:
    """A deployment folder of the earlier layout, written by hand as ``export_for_deployment`` wrote it.

    ``model-symbol.json`` + ``model-0000.params`` (Gluon's ``HybridBlock.export``),
    ``model-preprocess.json``, optionally ``model.onnx``, and the ``deploy.json``
    manifest; no ``config.json``. Readers must keep loading such folders.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    net = block if block is not None else tiny_block()
    prefix = os.path.join(folder, "model")
    net.hybridize()
    net(mx.nd.zeros((1, 3) + tuple(net.preprocess.size)))
    mx.gluon.HybridBlock.export(net, prefix)
    net.preprocess.save(prefix + "-preprocess.json")
    if onnx:
        from finetune.models._io._onnx import _export_onnx

        _export_onnx(prefix + "-symbol.json", prefix + "-0000.params", (1, 3) + tuple(net.preprocess.size),
                     prefix + ".onnx")
    manifest = {"format": "finetune-deployment", "symbol": "model-symbol.json", "params": "model-0000.params",
                "preprocess": "model-preprocess.json", "onnx": "model.onnx" if onnx else None,
                "input_name": "data", "input_shape": [1, 3] + list(net.preprocess.size),
                "class_names": list(net.class_names), "max_diff": {"mxnet": 0.0}, "finetune_version": "0.1.0"}
    with open(os.path.join(folder, "deploy.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    return folder


def checkpoint_prefix(folder) -> str:
    """An MXNet checkpoint (``prefix-symbol.json`` + ``prefix-0000.params``) of :func:`tiny_block`."""
    os.makedirs(os.fspath(folder), exist_ok=True)
    prefix = os.path.join(os.fspath(folder), "tiny")
    ft.create_model(tiny_block()).to_backbone().export(prefix)
    return prefix


def source(kind: str, folder):
    """The ``create_model`` spec of one kind: ``"block"``, ``"caffe"``, ``"deployment"``, ``"legacy_deployment"``
    or ``"checkpoint"``."""
    if kind == "block":
        return tiny_block()
    if kind == "caffe":
        return caffe_pair(folder)
    if kind == "deployment":
        return deployment_folder(os.path.join(os.fspath(folder), "deploy"))
    if kind == "legacy_deployment":
        return legacy_deployment_folder(os.path.join(os.fspath(folder), "legacy"))
    return checkpoint_prefix(folder)
