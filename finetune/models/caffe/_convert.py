"""Convert a Caffe network (``deploy.prototxt`` + ``.caffemodel``) to an MXNet symbol and weights.

No Caffe and no ``protoc`` are needed: ``_proto`` reads both files.
Conversion is driven by the prototxt (the caffemodel often carries
training-only layers); weights are looked up by layer name. Every Caffe layer
becomes a graph node of the same name, so in-place chains stay reachable:
``fc6`` (pre-activation) and ``relu6`` (post-activation) are separate nodes.

Compared with MXNet's stock converter (``mxnet/tools/caffe_converter``), this
one keeps Eltwise PROD/MAX as products/maxima (not sums), converts a Scale
layer anywhere (not only right after a BatchNorm with a matching name), keeps
the network's BGR order and records it in the :class:`~finetune.Preprocess`
(or, with ``to_rgb=True``, permutes the channels of *every* layer reading the
input), reproduces Caffe's pooling output sizes exactly, and returns one
named value.
"""

from __future__ import annotations

import json
import logging
import os

import mxnet as mx
import numpy as np

from ...data import Preprocess
from ...errors import CaffeFormatError, ConfigError, UnsupportedLayerError
from ._layers import BUILDERS
from ._net import CaffeNet
from ._proto import CaffeNetDef, parse_prototxt, read_binaryproto, read_caffemodel

__all__ = ["convert_caffe"]

log = logging.getLogger(__name__)

_DATA_TYPES = {"Data", "ImageData", "MemoryData", "WindowData", "HDF5Data", "DummyData"}
_SKIPPED = {"Accuracy", "Silence", "EuclideanLoss", "HingeLoss", "InfogainLoss",
            "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "ContrastiveLoss"}


class _State:
    """What the layer builders may ask while the graph grows."""

    def __init__(self, input_shape, flip_layers):
        self.input_shape = input_shape
        self._flip = flip_layers

    def shape(self, sym) -> tuple:
        _, out, _ = sym.infer_shape_partial(data=self.input_shape)
        if not out or not out[0]:
            raise CaffeFormatError(f"Cannot infer the shape of {sym.name!r} from input {self.input_shape}.")
        return tuple(out[0])

    def flip_input_channels(self, layer_name: str) -> bool:
        return layer_name in self._flip


def convert_caffe(prototxt, caffemodel, *, input_shape=None, mean=None, mean_file=None,
                  to_rgb: bool = False) -> CaffeNet:
    """Convert a Caffe model to an MXNet symbol, weights and preprocessing config.

    Parameters
    ----------
    prototxt : str or os.PathLike
        Network definition (``deploy.prototxt``), old V1 (``layers {}``) or new
        (``layer {}``) format.
    caffemodel : str or os.PathLike
        Trained weights (binary, V1 or new format). Looked up by layer name.
    input_shape : tuple of int, optional
        ``(C, H, W)`` or ``(N, C, H, W)``; overrides the prototxt's input shape
        (required when the prototxt declares none).
    mean : sequence of float, optional
        Per-channel mean in raw pixel units, **BGR** (Caffe order), e.g.
        ``(104, 117, 123)``; overrides the prototxt's ``transform_param``.
    mean_file : str or os.PathLike, optional
        A ``mean.binaryproto`` (BGR mean image); overrides the prototxt's.
    to_rgb : bool
        Permute the input channels of every layer reading the input (one
        weight flip per convolution, or a ``reverse`` node otherwise) so the
        network takes RGB; the returned preprocess then says ``"RGB"``.

    Returns
    -------
    CaffeNet

    Raises
    ------
    MissingFileError
        A file does not exist.
    CaffeFormatError
        A file is malformed, a field has a wrong value, or weights are missing
        or have the wrong size.
    UnsupportedLayerError
        A layer type (or option) that cannot be converted; names the layer.

    Examples
    --------
    >>> net = convert_caffe("deploy.prototxt", "model.caffemodel",
    ...                     mean=(104, 117, 123))  # doctest: +SKIP
    >>> net.preprocess.color, net.logits_layer  # doctest: +SKIP
    ('BGR', 'fc_nsfw')
    """
    netdef = parse_prototxt(prototxt)
    weights = read_caffemodel(caffemodel)
    layers = [l for l in netdef.layers if l.phase() != "TRAIN"]
    data_blob, shape, transform = _find_input(netdef, layers, input_shape)
    flip = _flip_plan(layers, data_blob) if to_rgb else set()
    data = mx.sym.Variable("data")
    if flip is None:  # something other than plain convolutions reads the input
        data, flip = mx.sym.reverse(data, axis=1, name="data_rgb_to_bgr"), set()
    state = _State(shape, flip)
    graph = _build_graph(layers, {data_blob: data}, state, netdef.path)
    outputs, slots, names, types, softmax_bottom = graph
    if not outputs:
        raise CaffeFormatError(f"{netdef.path}: the network has no layers to convert.")
    symbol = outputs[0] if len(outputs) == 1 else mx.sym.Group(outputs)
    present = {node["name"] for node in json.loads(symbol.tojson())["nodes"]}
    dropped = [n for n in names if n not in present]
    if dropped:
        log.info("Caffe layers %s do not feed any output (only their shapes are used); dropped.", dropped)
        names = [n for n in names if n in present]
        types = {n: types[n] for n in names}
    arg_params, aux_params = _fill_weights(symbol, shape, slots, weights)
    last = outputs[-1].name
    is_softmax = types.get(last) == "Softmax"
    classifier, num_features = _classifier(state, symbol, names, types)
    return CaffeNet(symbol=symbol, arg_params=arg_params, aux_params=aux_params,
                    preprocess=_preprocess(netdef, transform, shape, mean, mean_file, to_rgb),
                    input_shape=shape, layer_names=names, layer_types=types, classifier=classifier,
                    logits_layer=softmax_bottom[last] if is_softmax else last,
                    num_features=num_features, output_is_softmax=is_softmax, name=netdef.name)


def _build_graph(layers, blobs: dict, state: _State, path: str):
    """Chain the layer builders; returns (outputs, weight slots, names, types, softmax inputs)."""
    unused, labels = {}, set()
    slots, names, types, softmax_bottom = [], [], {}, {}
    for layer in layers:
        if layer.type == "Input" or layer.type in _DATA_TYPES:
            labels.update(layer.tops[1:])
            continue
        if layer.type in _SKIPPED or (layer.type.endswith("Loss") and layer.type != "SoftmaxWithLoss"):
            log.info("Skipping Caffe layer %r (%s): not needed for inference.", layer.name, layer.type)
            continue
        if layer.name in types:
            raise CaffeFormatError(f"line {layer.line}: a second layer is named {layer.name!r}; "
                                   "layer names must be unique (weights are looked up by name).")
        kind = "Softmax" if layer.type == "SoftmaxWithLoss" else layer.type
        bottoms = layer.bottoms[:1] if layer.type == "SoftmaxWithLoss" else layer.bottoms
        builder = BUILDERS.get(kind)
        if builder is None:
            raise UnsupportedLayerError(
                f"Caffe layer {layer.name!r} has type {layer.type!r}, which cannot be converted "
                f"(line {layer.line} of {path}). Supported: {', '.join(sorted(BUILDERS))}.")
        inputs = []
        for b in bottoms:
            if b not in blobs:
                raise CaffeFormatError(f"line {layer.line}: layer {layer.name!r} reads blob {b!r}, "
                                       "which no earlier layer produces.")
            inputs.append(blobs[b])
            unused.pop(b, None)
        sym, layer_slots = builder(state, layer, inputs)
        for top in layer.tops or [layer.name]:
            blobs[top] = sym
            unused[top] = sym
        if kind == "Softmax":
            softmax_bottom[layer.name] = inputs[0].name
        slots += [(layer.name, *s) for s in layer_slots]
        names.append(layer.name)
        types[layer.name] = kind
    outputs = [sym for blob, sym in unused.items() if blob not in labels]
    return outputs, slots, names, types, softmax_bottom


def _find_input(netdef: CaffeNetDef, layers, input_shape):
    """(input blob name, (N, C, H, W), transform_param or None)."""
    names, shapes, transform = list(netdef.inputs), list(netdef.input_shapes), None
    for layer in layers:
        if layer.type == "Input":
            names += layer.tops
            shapes += [[int(d) for d in s.all("dim")] for s in layer.param("input_param").all("shape")]
        elif layer.type in _DATA_TYPES:
            names.append(layer.tops[0] if layer.tops else layer.name)
            transform = layer.params.get("transform_param")
            crop = int(transform.get("crop_size", 0)) if transform is not None else 0
            mem = layer.param("memory_data_param")
            if "height" in mem:
                shapes.append([1, int(mem.get("channels", 3)), int(mem.get("height")), int(mem.get("width"))])
            elif crop:
                shapes.append([1, 3, crop, crop])
    if not names:
        raise CaffeFormatError(f"{netdef.path}: no input found (no 'input:' field, Input or Data layer).")
    if len(set(names)) > 1:
        raise UnsupportedLayerError(f"{netdef.path}: the network has {len(set(names))} inputs "
                                    f"({', '.join(dict.fromkeys(names))}); only single-input networks are supported.")
    if input_shape is not None:
        shape = [int(d) for d in input_shape]
        shape = [1] + shape if len(shape) == 3 else shape
        if len(shape) != 4 or min(shape) < 1:
            raise ConfigError(f"The 'input_shape' parameter of convert_caffe must be (C, H, W) or "
                              f"(N, C, H, W). Got {input_shape!r} instead.")
    elif shapes and len(shapes[0]) == 4:
        shape = shapes[0]
    else:
        raise ConfigError(f"{netdef.path} declares no 4-D input shape; pass input_shape=(C, H, W).")
    return names[0], (1, *shape[1:]), transform


def _flip_plan(layers, data_blob):
    """Layers whose weights to flip for RGB input, or None when a ``reverse`` node is needed."""
    readers = [l for l in layers if data_blob in l.bottoms]
    if readers and all(l.type == "Convolution" and int(l.param("convolution_param").get("group", 1)) == 1
                       for l in readers) and not any(data_blob in l.tops for l in readers):
        return {l.name for l in readers}
    return None


def _fill_weights(symbol, shape, slots, weights: CaffeNetDef):
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=shape)
    expected = dict(zip(symbol.list_arguments(), arg_shapes))
    expected.update(zip(symbol.list_auxiliary_states(), aux_shapes))
    aux_names = set(symbol.list_auxiliary_states())
    by_name = {}
    for layer in weights.layers:
        if layer.blobs or layer.name not in by_name:
            by_name[layer.name] = layer
    arg_params, aux_params = {}, {}
    for layer_name, pname, kind, fn in slots:
        if pname not in expected:  # a layer whose output the network never uses (e.g. a Crop reference)
            continue
        source = by_name.get(layer_name)
        if source is None or not source.blobs:
            raise CaffeFormatError(f"{weights.path} has no weights for layer {layer_name!r}; "
                                   "does the caffemodel belong to this prototxt?")
        array = np.ascontiguousarray(fn(source.blobs), dtype=np.float32)
        want = tuple(expected[pname])
        if array.size != int(np.prod(want)):
            raise CaffeFormatError(f"Layer {layer_name!r}: {pname} has {array.size} values "
                                   f"(stored shape {array.shape}) in {weights.path}, but the prototxt "
                                   f"needs shape {want}.")
        if _squeezed(array.shape) != _squeezed(want):  # same count, other layout: loading would scramble it
            raise CaffeFormatError(f"Layer {layer_name!r}: {pname} is stored with shape {array.shape} in "
                                   f"{weights.path}, but the prototxt needs shape {want}; the number of "
                                   "values agrees, the layout does not. Does the caffemodel belong to "
                                   "this prototxt?")
        target = aux_params if kind == "aux" or pname in aux_names else arg_params
        target[pname] = mx.nd.array(array.reshape(want), dtype="float32")
    missing = [n for n in symbol.list_arguments() if n != "data" and n not in arg_params]
    if missing:
        raise CaffeFormatError(f"No weights for {missing[:5]} in {weights.path}.")
    return arg_params, aux_params


def _squeezed(shape) -> tuple:
    """``shape`` without its size-1 axes (V1 caffemodels store biases as (1, 1, 1, N))."""
    return tuple(int(d) for d in shape if int(d) != 1)


def _classifier(state, symbol, names, types):
    ips = [n for n in names if types[n] == "InnerProduct"] or [n for n in names if types[n] == "Convolution"]
    if not ips:
        return None, None
    classifier = ips[-1]
    internals = symbol.get_internals()
    node = internals[f"{classifier}_output"]
    data_input = node.get_children()[0]
    in_shape = state.shape(data_input)
    if types[classifier] == "Convolution":
        return classifier, int(in_shape[1])
    return classifier, int(np.prod(in_shape[1:]))


def _preprocess(netdef, transform, shape, mean, mean_file, to_rgb) -> Preprocess:
    channels, height, width = shape[1:]
    mean_image, scale = None, 1.0
    if transform is not None:
        scale = float(transform.get("scale", 1.0))
    if mean is None and mean_file is None and transform is not None:
        if transform.all("mean_value"):
            mean = [float(v) for v in transform.all("mean_value")]
        elif transform.get("mean_file"):
            candidate = os.path.join(os.path.dirname(netdef.path), str(transform.get("mean_file")))
            if os.path.isfile(candidate):
                mean_file = candidate
            else:
                log.warning("The prototxt's mean_file %r is not beside it; pass mean_file= or mean=.",
                            transform.get("mean_file"))
    if mean_file is not None:
        mean_image = read_binaryproto(mean_file)
        mean = [float(m) for m in mean_image.reshape(mean_image.shape[0], -1).mean(axis=1)]
    if mean is None:
        log.info("No mean in %s; pass mean=(B, G, R) if the network expects mean subtraction.", netdef.path)
        mean = [0.0] * channels
    mean = [float(m) for m in np.atleast_1d(mean)]
    if len(mean) == 1:
        mean = mean * channels
    if len(mean) != channels:
        raise ConfigError(f"The 'mean' of convert_caffe must have {channels} values (B, G, R). Got {mean!r} instead.")
    if to_rgb:
        mean = mean[::-1]
        mean_image = None if mean_image is None else mean_image[::-1].copy()
    return Preprocess(size=(height, width), resize=int(round(max(height, width) * 256 / 224)),
                      color="RGB" if to_rgb else "BGR", mean=tuple(mean), std=(1.0,) * channels,
                      scale=scale, mean_image=mean_image)
