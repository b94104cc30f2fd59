"""A graph specialised to one input size: shape-dependent padding folded into a constant ``Pad``.

EfficientNet-Lite computes TensorFlow's SAME padding for any input size in
one graph: it pads wide and centre-crops to a size computed inside the graph
(``Crop(center_crop)``; older graphs used ``reverse`` / ``slice_like``). At
one fixed input size each such sub-graph is a plain zero padding.
:func:`fold_padding` finds those sub-graphs and replaces each by the
constant ``Pad`` it amounts to. Two users:

* the ONNX export, because MXNet's exporter cannot translate the crop;
* the networks themselves (:class:`~finetune.Backbone`,
  :class:`~finetune.Model`): a call with a batch runs the graph folded for
  that batch's size, which saves the crop, its probe and their gradients
  (about 8 % of an EfficientNet-Lite0 training step). The saved and
  exported graph stays the one for any size.

A replacement is accepted only if it reproduces the sub-graph exactly on a
random input of the given size, so the folded graph computes the same
numbers as the original at that size, and only at that size.

For inference, :func:`merge_padding` goes one step further: a ``Pad`` whose
only reader is a convolution becomes that convolution's own (symmetric)
padding, the kernel widened by zero taps where the padding was uneven (SAME
padding of a stride-2 layer pads one pixel more at the bottom and right). The
oneDNN convolution then reads its input directly; a ``Pad`` between two
oneDNN operators converts the blocked layout there and back and ran as
MXNet's own single-threaded kernel (in a oneDNN-fused EfficientNet-Lite0 at
224 px it took 46 % of the forward pass). Training keeps the ``Pad``: the
wider kernel's extra backward work cancels the gain there.
"""

from __future__ import annotations

import ast
import json
import warnings

import mxnet as mx
import numpy as np

from ._probe import CUT_INPUT, split_at

__all__ = ["fold_padding", "has_shape_tricks", "merge_padding"]

_TRICK_OPS = ("Crop", "slice_like", "reverse")
_CANDIDATE_OPS = _TRICK_OPS + ("Pad",)


def has_shape_tricks(symbol) -> bool:
    """Whether ``symbol`` has operators :func:`fold_padding` may fold (``Crop``, ``slice_like``, ``reverse``).

    Examples
    --------
    >>> import mxnet as mx
    >>> has_shape_tricks(mx.sym.relu(mx.sym.var("data")))
    False
    """
    return any(node["op"] in _TRICK_OPS for node in json.loads(symbol.tojson())["nodes"])


def _ancestors(nodes, k) -> set:
    seen, stack = set(), [k]
    while stack:
        for ref in nodes[stack.pop()]["inputs"]:
            if ref[0] not in seen:
                seen.add(ref[0])
                stack.append(ref[0])
    return seen


def _padding_widths(internals, shapes, p_entry, x_entry, x_is_var):
    """``(top, bottom, left, right)`` if the sub-graph ``x -> p`` is exactly a zero padding, else None."""
    in_shape, out_shape = shapes.get(x_entry), shapes.get(p_entry)
    if not in_shape or not out_shape or len(in_shape) != 4 or len(out_shape) != 4:
        return None
    if in_shape[:2] != out_shape[:2] or out_shape[2] < in_shape[2] or out_shape[3] < in_shape[3]:
        return None
    sub = internals[p_entry]
    if x_is_var:
        probe, arg = sub, x_entry
    else:
        _, probe = split_at(sub, x_entry)
        arg = CUT_INPUT
    if probe.list_arguments() != [arg] or probe.list_auxiliary_states():
        return None
    x = np.random.default_rng(0).normal(size=in_shape).astype(np.float32) + 3
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type")
        block = mx.gluon.SymbolBlock(probe, mx.sym.var(arg))
    with mx.autograd.pause():
        y = block(mx.nd.array(x, ctx=mx.cpu())).asnumpy()
    rows, cols = np.nonzero((y != 0).any(axis=(0, 1)))
    if not len(rows):
        return None
    top, left = int(rows.min()), int(cols.min())
    widths = (top, out_shape[2] - in_shape[2] - top, left, out_shape[3] - in_shape[3] - left)
    if min(widths) < 0 or not np.array_equal(np.pad(x, ((0, 0), (0, 0), widths[:2], widths[2:])), y):
        return None
    return widths


def fold_padding(symbol, shape, max_depth: int = 16) -> tuple:
    """Replace the shape-dependent padding sub-graphs of ``symbol`` by constant ``Pad`` nodes for one input shape.

    A candidate is a sub-graph with one input and no parameters that ends
    in ``Crop``, ``slice_like``, ``reverse`` or ``Pad``; it is replaced when
    it is a zero padding of its input at ``shape``, checked by running it.

    Parameters
    ----------
    symbol : mx.sym.Symbol
        The graph; input variable ``"data"``.
    shape : tuple of int
        The input shape ``(N, C, H, W)`` the result is valid for.
    max_depth : int
        How many of a candidate's nearest ancestors are tried as its input.

    Returns
    -------
    (mx.sym.Symbol, int)
        The folded graph and the number of sub-graphs folded (``symbol``
        itself when none was).

    Examples
    --------
    >>> import mxnet as mx
    >>> x = mx.sym.var("data")
    >>> wide = mx.sym.pad(x, mode="constant", pad_width=(0, 0, 0, 0, 1, 2, 1, 2))
    >>> ref = mx.sym.pad(x, mode="constant", pad_width=(0, 0, 0, 0, 0, 1, 0, 1))
    >>> same = mx.sym.Crop(wide, ref, num_args=2, center_crop=True)
    >>> folded, n = fold_padding(same, (1, 3, 8, 8))
    >>> n, [node["op"] for node in json.loads(folded.tojson())["nodes"]]
    (1, ['null', 'Pad'])
    """
    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape_partial(data=tuple(shape))
    shapes = dict(zip(internals.list_outputs(), out_shapes))

    def entry(i):
        return nodes[i]["name"] if nodes[i]["op"] == "null" else nodes[i]["name"] + "_output"

    dead, folded = set(), 0
    for k in range(len(nodes) - 1, -1, -1):
        node = nodes[k]
        if k in dead or node["op"] not in _CANDIDATE_OPS:
            continue
        ancestors = _ancestors(nodes, k)
        for x in sorted(ancestors, reverse=True)[:max_depth]:
            if node["op"] == "Pad" and [x, 0, 0] == node["inputs"][0][:1] + [0, 0]:
                break  # already a plain Pad of its input
            widths = _padding_widths(internals, shapes, entry(k), entry(x), nodes[x]["op"] == "null")
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


def _literal(attrs, key, default):
    return tuple(ast.literal_eval(attrs[key])) if key in attrs else default


def _mergeable(pad, conv) -> tuple | None:
    """``(top, bottom, left, right)`` if ``pad`` (constant zero, spatial only) can become ``conv``'s padding."""
    pad_attrs, attrs = pad.get("attrs", {}), conv.get("attrs", {})
    if pad_attrs.get("mode", "constant") != "constant" or float(pad_attrs.get("constant_value", 0)) != 0:
        return None
    widths = _literal(pad_attrs, "pad_width", ())
    if len(widths) != 8 or any(widths[:4]) or len(_literal(attrs, "kernel", ())) != 2:
        return None
    if attrs.get("layout", "NCHW") != "NCHW" or any(_literal(attrs, "dilate", (1, 1))[i] != 1 for i in (0, 1)):
        return None
    if any(_literal(attrs, "pad", (0, 0))):
        return None
    return widths[4:]


def merge_padding(symbol) -> tuple:
    """Make each zero ``Pad`` read only by a convolution that convolution's own padding (for inference).

    The convolution gets the symmetric padding ``max(top, bottom)`` by
    ``max(left, right)``; where the ``Pad`` was uneven its kernel grows by
    zero taps on the short side, so every output is the same sum of the same
    products. The caller pads those weights with zeros (``taps`` says where).

    Parameters
    ----------
    symbol : mx.sym.Symbol
        A graph, e.g. one folded for an input size by :func:`fold_padding`.

    Returns
    -------
    (mx.sym.Symbol, dict)
        The graph, and for each widened convolution's weight name its zero
        taps ``(top, bottom, left, right)`` (apply with ``numpy.pad`` on the
        last two axes of the ``(O, I, kH, kW)`` weight). ``symbol`` itself and
        ``{}`` when there was nothing to merge.

    Examples
    --------
    >>> import mxnet as mx, numpy as np
    >>> x = mx.sym.var("data")
    >>> same = mx.sym.pad(x, mode="constant", pad_width=(0, 0, 0, 0, 0, 1, 0, 1))
    >>> net = mx.sym.Convolution(same, kernel=(3, 3), stride=(2, 2), num_filter=4, name="conv")
    >>> merged, taps = merge_padding(net)
    >>> [node["op"] for node in json.loads(merged.tojson())["nodes"]], taps
    (['null', 'null', 'null', 'Convolution'], {'conv_weight': (1, 0, 1, 0)})
    >>> rng = np.random.default_rng(0)
    >>> args = {"data": rng.normal(size=(1, 3, 8, 8)), "conv_weight": rng.normal(size=(4, 3, 3, 3)),
    ...         "conv_bias": np.zeros(4)}
    >>> wide = dict(args, conv_weight=np.pad(args["conv_weight"], ((0, 0), (0, 0), (1, 0), (1, 0))))
    >>> run = lambda sym, a: sym.eval(ctx=mx.cpu(), **{k: mx.nd.array(v) for k, v in a.items()})[0].asnumpy()
    >>> bool(np.allclose(run(net, args), run(merged, wide), atol=1e-5))
    True
    """
    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]
    readers = {}
    for k, node in enumerate(nodes):
        for ref in node["inputs"]:
            readers.setdefault(ref[0], []).append(k)
    heads = {ref[0] for ref in graph["heads"]}
    taps, merged = {}, 0
    for k, node in enumerate(nodes):
        if node["op"] != "Pad" or k in heads or len(readers.get(k, [])) != 1:
            continue
        conv = nodes[readers[k][0]]
        if conv["op"] != "Convolution" or conv["inputs"][0][0] != k or len(conv["inputs"]) < 2:
            continue
        widths = _mergeable(node, conv)
        if widths is None:
            continue
        top, bottom, left, right = widths
        p, q = max(top, bottom), max(left, right)
        extra = (p - top, p - bottom, q - left, q - right)
        kh, kw = _literal(conv["attrs"], "kernel", ())
        weight = nodes[conv["inputs"][1][0]]
        if weight["op"] != "null" or len(readers.get(conv["inputs"][1][0], [])) != 1:
            continue
        conv["inputs"][0] = node["inputs"][0]
        conv["attrs"] = {**conv["attrs"], "pad": str((p, q)),
                         "kernel": str((kh + extra[0] + extra[1], kw + extra[2] + extra[3]))}
        merged += 1
        if any(extra):
            taps[weight["name"]] = extra
            weight.get("attrs", {}).pop("__shape__", None)  # the widened shape is inferred from the kernel
    if not merged:
        return symbol, {}
    # the Pad nodes are now read by nothing; a round trip through a symbol drops them
    pruned = mx.sym.load_json(json.dumps(graph))
    return mx.sym.load_json(pruned.tojson()), taps
