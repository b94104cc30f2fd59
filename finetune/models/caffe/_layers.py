"""One MXNet symbol builder per Caffe layer type (used by ``_convert``).

Each builder gets the conversion state, the ``CaffeLayer`` (``_proto``)
and its input symbols, and returns ``(output symbol, weight slots)``. A weight
slot says how to fill one MXNet argument or auxiliary state from the layer's
Caffe blobs: ``(param name, "arg" | "aux", fn(blobs) -> array)``; arrays are
reshaped to the shape MXNet infers after a size check. The node that carries
the layer's output is always named after the Caffe layer, so in-place chains
(``fc6`` -> ``relu6``) keep each step reachable.
"""

from __future__ import annotations

import logging
import math

import mxnet as mx
import numpy as np

from ...errors import CaffeFormatError, UnsupportedLayerError
from ._fields import at_least, bad, get_bool, get_enum, get_ints, get_num, pair, require

log = logging.getLogger(__name__)

_POOL = {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}
_ELTWISE = {"PROD": 0, "SUM": 1, "MAX": 2}
_LRN_REGION = {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}
# cuDNN refuses BatchNorm eps below this; smaller Caffe eps are folded into the variance
MIN_BN_EPS = 1e-5


def _blob(blobs, index, layer):
    if index >= len(blobs):
        raise CaffeFormatError(f"Layer {layer.name!r} ({layer.type}) has {len(blobs)} weight blobs in the "
                               f"caffemodel; expected at least {index + 1}.")
    return blobs[index]


# ------------------------------------------------------------------- builders
def conv(state, layer, inputs):
    """Convolution and Deconvolution (same parameters; MXNet's weight layouts match Caffe's)."""
    p = layer.param("convolution_param")
    if get_num(layer, p, "axis", 1, kind=int) != 1:
        raise UnsupportedLayerError(f"Layer {layer.name!r} ({layer.type}) uses axis != 1; not supported.")
    op = mx.sym.Deconvolution if layer.type == "Deconvolution" else mx.sym.Convolution
    bias = get_bool(layer, p, "bias_term", True)
    sym = op(inputs[0], num_filter=require(layer, p, "num_output"),
             kernel=pair(layer, p, "kernel_size", "kernel_h", "kernel_w", None),
             stride=pair(layer, p, "stride", "stride_h", "stride_w", 1),
             pad=pair(layer, p, "pad", "pad_h", "pad_w", 0, low=0),
             dilate=pair(layer, p, "dilation", "dilation_h", "dilation_w", 1),
             num_group=at_least(layer, p, "group", get_num(layer, p, "group", 1, kind=int), 1),
             no_bias=not bias, name=layer.name)
    flip = state.flip_input_channels(layer.name)
    slots = [(f"{layer.name}_weight", "arg",
              lambda b: _blob(b, 0, layer)[:, ::-1] if flip else _blob(b, 0, layer))]
    if bias:
        slots.append((f"{layer.name}_bias", "arg", lambda b: _blob(b, 1, layer)))
    return sym, slots


def crop(state, layer, inputs):
    """Crop bottom 0 to the shape of bottom 1 from ``axis`` on, at the given offsets."""
    p = layer.param("crop_param")
    if len(inputs) != 2:
        raise CaffeFormatError(f"line {layer.line}: layer {layer.name!r} (Crop) needs 2 bottoms.")
    big, ref = state.shape(inputs[0]), state.shape(inputs[1])
    axis = get_num(layer, p, "axis", 2, kind=int) % len(big)
    offsets = get_ints(layer, p, "offset") or [0]
    if len(offsets) == 1:
        offsets = offsets * (len(big) - axis)
    if len(offsets) != len(big) - axis:
        raise CaffeFormatError(f"line {p.line or layer.line}: layer {layer.name!r} (Crop) has {len(offsets)} "
                               f"offsets for {len(big) - axis} cropped axes.")
    begin = [None] * axis + offsets
    end = [None] * axis + [o + n for o, n in zip(offsets, ref[axis:])]
    if any(e > n for e, n in zip(end[axis:], big[axis:])):
        raise CaffeFormatError(f"Layer {layer.name!r} (Crop): shape {ref} at offsets {offsets} does not fit "
                               f"in the input of shape {big}.")
    return mx.sym.slice(inputs[0], begin=tuple(begin), end=tuple(end), name=layer.name), []


def reshape(state, layer, inputs):
    p = layer.param("reshape_param")
    if get_num(layer, p, "axis", 0, kind=int) != 0 or get_num(layer, p, "num_axes", -1, kind=int) != -1:
        raise UnsupportedLayerError(f"Layer {layer.name!r} (Reshape) uses axis/num_axes; only whole-shape "
                                    "reshapes are supported.")
    shape = p.get("shape")
    dims = get_ints(layer, shape, "dim") if shape is not None else []
    if not dims:
        raise CaffeFormatError(f"line {p.line or layer.line}: layer {layer.name!r} (Reshape) needs shape {{ dim: ... }}.")
    return mx.sym.reshape(inputs[0], shape=tuple(dims), name=layer.name), []  # 0 copies, -1 infers: as Caffe


def inner_product(state, layer, inputs):
    p = layer.param("inner_product_param")
    axis = get_num(layer, p, "axis", 1, kind=int)
    bias = get_bool(layer, p, "bias_term", True)
    transpose = get_bool(layer, p, "transpose", False)
    n_out = require(layer, p, "num_output")
    data = inputs[0]
    if axis < 0:
        axis += len(state.shape(data))
    if axis == 1:
        sym = mx.sym.FullyConnected(data, num_hidden=n_out, no_bias=not bias, flatten=True, name=layer.name)
    else:
        flat = mx.sym.reshape(data, shape=(0,) * axis + (-1,), name=f"{layer.name}_reshape")
        sym = mx.sym.FullyConnected(flat, num_hidden=n_out, no_bias=not bias, flatten=False, name=layer.name)

    def weight(blobs):
        w = _blob(blobs, 0, layer)
        return w.reshape(-1, n_out).T if transpose else w

    slots = [(f"{layer.name}_weight", "arg", weight)]
    if bias:
        slots.append((f"{layer.name}_bias", "arg", lambda b: _blob(b, 1, layer)))
    return sym, slots


def _pooled(size, kernel, stride, pad):
    """Caffe's output size: rounded up, minus a last window starting in the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pooling(state, layer, inputs):
    p = layer.param("pooling_param")
    method = get_enum(layer, p, "pool", _POOL, "MAX")
    if method == "STOCHASTIC":
        raise UnsupportedLayerError(f"Layer {layer.name!r} (Pooling) uses STOCHASTIC pooling; not supported.")
    pool_type = "max" if method == "MAX" else "avg"
    if get_bool(layer, p, "global_pooling", False):
        return mx.sym.Pooling(inputs[0], kernel=(1, 1), global_pool=True, pool_type=pool_type,
                              name=layer.name), []
    kernel = pair(layer, p, "kernel_size", "kernel_h", "kernel_w", None)
    stride = pair(layer, p, "stride", "stride_h", "stride_w", 1)
    pad = pair(layer, p, "pad", "pad_h", "pad_w", 0, low=0)
    sizes = state.shape(inputs[0])[2:4]
    geometry = list(zip(sizes, kernel, stride, pad))
    want = tuple(_pooled(n, k, s, q) for n, k, s, q in geometry)
    full = tuple(int(math.ceil((n + 2 * q - k) / s)) + 1 for n, k, s, q in geometry)
    clipped = want != full
    pooled = mx.sym.Pooling(inputs[0], kernel=kernel, stride=stride, pad=pad, pool_type=pool_type,
                            pooling_convention="full", count_include_pad=True,
                            name=f"{layer.name}_full" if clipped else layer.name)
    if not clipped:
        return pooled, []
    # Caffe drops a last window that would start inside the padding: same windows, one fewer
    return mx.sym.slice(pooled, begin=(None, None, 0, 0), end=(None, None) + want, name=layer.name), []


def relu(state, layer, inputs):
    slope = get_num(layer, layer.param("relu_param"), "negative_slope", 0.0)
    if slope:
        return mx.sym.LeakyReLU(inputs[0], act_type="leaky", slope=slope, name=layer.name), []
    return mx.sym.Activation(inputs[0], act_type="relu", name=layer.name), []


def prelu(state, layer, inputs):
    shared = get_bool(layer, layer.param("prelu_param"), "channel_shared", False)
    channels = 1 if shared else state.shape(inputs[0])[1]
    gamma = mx.sym.Variable(f"{layer.name}_gamma", shape=(channels,))
    sym = mx.sym.LeakyReLU(inputs[0], gamma=gamma, act_type="prelu", name=layer.name)
    return sym, [(f"{layer.name}_gamma", "arg", lambda b: _blob(b, 0, layer))]


def activation(act_type):
    def build(state, layer, inputs):
        return mx.sym.Activation(inputs[0], act_type=act_type, name=layer.name), []
    return build


def lrn(state, layer, inputs):
    p = layer.param("lrn_param")
    if get_enum(layer, p, "norm_region", _LRN_REGION, "ACROSS_CHANNELS") != "ACROSS_CHANNELS":
        raise UnsupportedLayerError(f"Layer {layer.name!r} (LRN) uses WITHIN_CHANNEL normalisation; "
                                    "only ACROSS_CHANNELS is supported.")
    return mx.sym.LRN(inputs[0], nsize=at_least(layer, p, "local_size", get_num(layer, p, "local_size", 5, kind=int), 1),
                      alpha=get_num(layer, p, "alpha", 1.0), beta=get_num(layer, p, "beta", 0.75),
                      knorm=get_num(layer, p, "k", 1.0), name=layer.name), []


def dropout(state, layer, inputs):
    p = layer.param("dropout_param")
    ratio = get_num(layer, p, "dropout_ratio", 0.5)
    if not 0 <= ratio < 1:
        raise bad(layer, p, "dropout_ratio", "in [0, 1)", ratio)
    return mx.sym.Dropout(inputs[0], p=ratio, name=layer.name), []


def batch_norm(state, layer, inputs):
    p = layer.param("batch_norm_param")
    eps = get_num(layer, p, "eps", 1e-5)
    use_global = get_bool(layer, p, "use_global_stats", False)
    sym_eps = max(eps, MIN_BN_EPS)
    sym = mx.sym.BatchNorm(inputs[0], eps=sym_eps, fix_gamma=True, use_global_stats=use_global,
                           momentum=get_num(layer, p, "moving_average_fraction", 0.999), name=layer.name)

    def factor(blobs):
        s = float(_blob(blobs, 2, layer).ravel()[0]) if len(blobs) > 2 else 1.0
        return 0.0 if s == 0 else 1.0 / s

    return sym, [
        (f"{layer.name}_moving_mean", "aux", lambda b: _blob(b, 0, layer) * factor(b)),
        (f"{layer.name}_moving_var", "aux",
         lambda b: _blob(b, 1, layer) * factor(b) + (eps - sym_eps)),
        (f"{layer.name}_gamma", "arg", lambda b: np.ones_like(_blob(b, 0, layer))),
        (f"{layer.name}_beta", "arg", lambda b: np.zeros_like(_blob(b, 0, layer))),
    ]


def _broadcast_shape(state, layer, data, p):
    shape = state.shape(data)
    axis = get_num(layer, p, "axis", 1, kind=int)
    axis = axis + len(shape) if axis < 0 else axis
    num_axes = get_num(layer, p, "num_axes", 1, kind=int)
    end = len(shape) if num_axes == -1 else axis + num_axes
    if not 0 <= axis <= end <= len(shape):
        raise CaffeFormatError(f"line {p.line or layer.line}: layer {layer.name!r} ({layer.type}): "
                               f"axis={axis}, num_axes={num_axes} do not fit an input of shape {shape}.")
    return (1,) * axis + tuple(shape[axis:end]) + (1,) * (len(shape) - end)


def scale(state, layer, inputs):
    """Caffe Scale (optionally with bias): anywhere in the net, no name matching."""
    p = layer.param("scale_param")
    bias = get_bool(layer, p, "bias_term", False)
    pshape = _broadcast_shape(state, layer, inputs[0], p)
    slots = []
    if len(inputs) > 1:
        factor = mx.sym.reshape(inputs[1], shape=pshape, name=f"{layer.name}_factor")
    else:
        factor = mx.sym.Variable(f"{layer.name}_gamma", shape=pshape)
        slots.append((f"{layer.name}_gamma", "arg", lambda b: _blob(b, 0, layer)))
    sym = mx.sym.broadcast_mul(inputs[0], factor, name=f"{layer.name}_mul" if bias else layer.name)
    if bias:
        index = 0 if len(inputs) > 1 else 1
        beta = mx.sym.Variable(f"{layer.name}_beta", shape=pshape)
        slots.append((f"{layer.name}_beta", "arg", lambda b: _blob(b, index, layer)))
        sym = mx.sym.broadcast_add(sym, beta, name=layer.name)
    return sym, slots


def bias_layer(state, layer, inputs):
    pshape = _broadcast_shape(state, layer, inputs[0], layer.param("bias_param"))
    if len(inputs) > 1:
        beta = mx.sym.reshape(inputs[1], shape=pshape, name=f"{layer.name}_term")
        return mx.sym.broadcast_add(inputs[0], beta, name=layer.name), []
    beta = mx.sym.Variable(f"{layer.name}_beta", shape=pshape)
    return (mx.sym.broadcast_add(inputs[0], beta, name=layer.name),
            [(f"{layer.name}_beta", "arg", lambda b: _blob(b, 0, layer))])


def eltwise(state, layer, inputs):
    p = layer.param("eltwise_param")
    op = get_enum(layer, p, "operation", _ELTWISE, "SUM")
    coeff = [float(c) for c in p.all("coeff")]
    if len(inputs) < 2:
        raise CaffeFormatError(f"line {layer.line}: layer {layer.name!r} (Eltwise) needs at least 2 bottoms.")
    if coeff and (op != "SUM" or len(coeff) != len(inputs)):
        raise CaffeFormatError(f"line {p.line or layer.line}: layer {layer.name!r} (Eltwise): 'coeff' needs "
                               f"operation SUM and one value per bottom ({len(inputs)}). Got {coeff}.")
    if op == "SUM":
        terms = inputs
        if coeff and any(c != 1.0 for c in coeff):
            terms = [mx.sym._internal._MulScalar(x, scalar=c, name=f"{layer.name}_coeff{i}")
                     for i, (x, c) in enumerate(zip(inputs, coeff))]
        return mx.sym.add_n(*terms, name=layer.name), []
    combine = mx.sym.broadcast_mul if op == "PROD" else mx.sym.broadcast_maximum
    out = inputs[0]
    for i, x in enumerate(inputs[1:], start=1):
        out = combine(out, x, name=layer.name if i == len(inputs) - 1 else f"{layer.name}_{i}")
    return out, []


def concat(state, layer, inputs):
    p = layer.param("concat_param")
    axis = get_num(layer, p, "axis", None, kind=int)
    if axis is None:
        axis = get_num(layer, p, "concat_dim", 1, kind=int)
    return mx.sym.concat(*inputs, dim=axis, name=layer.name), []


def flatten(state, layer, inputs):
    p = layer.param("flatten_param")
    shape = state.shape(inputs[0])
    axis = get_num(layer, p, "axis", 1, kind=int) % len(shape)
    end = get_num(layer, p, "end_axis", -1, kind=int) % len(shape)
    if axis == 1 and end == len(shape) - 1:
        return mx.sym.flatten(inputs[0], name=layer.name), []
    if axis == 0:
        raise UnsupportedLayerError(f"Layer {layer.name!r} (Flatten) flattens the batch axis; not supported.")
    target = (0,) * axis + (-1,) + tuple(shape[end + 1:])
    return mx.sym.reshape(inputs[0], shape=target, name=layer.name), []


def split(state, layer, inputs):
    return mx.sym.identity(inputs[0], name=layer.name), []


def softmax(state, layer, inputs):
    axis = get_num(layer, layer.param("softmax_param"), "axis", 1, kind=int)
    return mx.sym.softmax(inputs[0], axis=axis, name=layer.name), []


def power(state, layer, inputs):
    p = layer.param("power_param")
    pw, sc, sh = (get_num(layer, p, "power", 1.0), get_num(layer, p, "scale", 1.0),
                  get_num(layer, p, "shift", 0.0))
    x = inputs[0]
    if sc != 1.0:
        x = mx.sym._internal._MulScalar(x, scalar=sc, name=f"{layer.name}_scale")
    if sh != 0.0:
        x = mx.sym._internal._PlusScalar(x, scalar=sh, name=f"{layer.name}_shift")
    if pw == 1.0:
        return mx.sym.identity(x, name=layer.name), []
    return mx.sym._internal._PowerScalar(x, scalar=pw, name=layer.name), []


def absval(state, layer, inputs):
    return mx.sym.abs(inputs[0], name=layer.name), []


BUILDERS = {
    "Convolution": conv, "InnerProduct": inner_product, "Pooling": pooling, "ReLU": relu, "PReLU": prelu,
    "Sigmoid": activation("sigmoid"), "TanH": activation("tanh"), "BNLL": activation("softrelu"),
    "LRN": lrn, "Dropout": dropout, "BatchNorm": batch_norm, "Scale": scale, "Bias": bias_layer,
    "Eltwise": eltwise, "Concat": concat, "Flatten": flatten, "Split": split, "Softmax": softmax,
    "Deconvolution": conv, "Crop": crop, "Reshape": reshape,
    "Power": power, "AbsVal": absval,
}
