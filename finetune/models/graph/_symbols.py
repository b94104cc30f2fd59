"""Graph surgery on MXNet symbols — the one mechanism behind features, cutting, BN freezing, export and Grad-CAM.

Every network in finetune is held as an MXNet symbol graph plus a dict of
parameters. A **layer name** is the name of an operator node of that graph
(variables — the input and the parameters — are not layers), in graph
(topological) order, input → output. Internally MXNet calls a node's output
``<name>_output``; layer names drop that suffix. Nodes with several visible
outputs (e.g. ``SliceChannel``) are listed as ``<name>_output0``,
``<name>_output1``, ...

The functions here take and return ``mx.sym.Symbol`` objects and never touch
parameter values (except :func:`strip_prefix`, which renames them). They are
written against the symbol JSON because MXNet's Python API has no public way
to edit operator attributes or to insert a node in the middle of a graph.

Gradients at a layer and splitting a graph at a layer are in ``_probe.py``; a Gluon
block becomes such a graph in ``_blocks.py``.
"""

from __future__ import annotations

import json

import mxnet as mx

from ...errors import ConfigError, ModelError, ShapeError, UnknownNameError

__all__ = [
    "batchnorm_global_stats",
    "batchnorm_layers",
    "cut",
    "data_var",
    "find_classifier",
    "infer_shape",
    "layer_output",
    "layer_ops",
    "list_layers",
    "rename_inputs",
    "set_batchnorm_global_stats",
    "strip_prefix",
    "strip_softmax",
]

_PARAMETRIC = ("FullyConnected", "Convolution")
_SOFTMAX = ("SoftmaxOutput", "softmax", "SoftmaxActivation", "log_softmax", "Softmax")


def _load(symbol) -> dict:
    return json.loads(symbol.tojson())


def _dump(graph: dict):
    graph = dict(graph)
    graph["arg_nodes"] = [i for i, n in enumerate(graph["nodes"]) if n["op"] == "null"]
    graph.pop("node_row_ptr", None)
    return mx.sym.load_json(json.dumps(graph))


def _variables(symbol) -> set:
    return set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())


def _layer_map(symbol) -> dict:
    """Ordered ``{layer name: internal output name}`` of every operator output."""
    variables = _variables(symbol)
    names = {}
    for out in symbol.get_internals().list_outputs():
        if out in variables:
            continue
        layer = out[: -len("_output")] if out.endswith("_output") else out
        names[layer] = out
    return names


def data_var(name: str = "data"):
    """The float32 input variable every finetune graph uses."""
    return mx.sym.var(name, dtype="float32")


def list_layers(symbol) -> list:
    """Names of the layers (operator nodes) of ``symbol`` in graph order, input → output.

    Parameters
    ----------
    symbol : mx.sym.Symbol

    Returns
    -------
    list of str

    Examples
    --------
    >>> import mxnet as mx
    >>> x = mx.sym.var("data")
    >>> y = mx.sym.FullyConnected(mx.sym.relu(x, name="relu1"), num_hidden=3, name="fc")
    >>> list_layers(y)
    ['relu1', 'fc']
    """
    return list(_layer_map(symbol))


def _check_layers(symbol, layers, kind: str = "layer") -> dict:
    mapping = _layer_map(symbol)
    for layer in layers:
        if layer not in mapping:
            raise UnknownNameError(kind, layer, mapping)
    return mapping


def layer_output(symbol, layers):
    """The output symbol of one named layer, or a group of several.

    Parameters
    ----------
    symbol : mx.sym.Symbol
    layers : str or list of str
        Layer names (see :func:`list_layers`).

    Returns
    -------
    mx.sym.Symbol
        A single output for a string, an ``mx.sym.Group`` in the given order for a list.

    Raises
    ------
    UnknownNameError
        A name that is not a layer of ``symbol`` (with "did you mean").
    """
    single = isinstance(layers, str)
    names = [layers] if single else list(layers)
    if not names:
        raise ConfigError("The 'layers' parameter must name at least one layer. Got an empty list.")
    mapping = _check_layers(symbol, names)
    internals = symbol.get_internals()
    outs = [internals[mapping[n]] for n in names]
    return outs[0] if single else mx.sym.Group(outs)


def cut(symbol, layer: str):
    """The sub-graph from the input up to (and including) ``layer``; ``layer`` becomes the output.

    Examples
    --------
    >>> import mxnet as mx
    >>> x = mx.sym.var("data")
    >>> y = mx.sym.FullyConnected(mx.sym.relu(x, name="relu1"), num_hidden=3, name="fc")
    >>> list_layers(cut(y, "relu1"))
    ['relu1']
    """
    return layer_output(symbol, layer)


def layer_ops(symbol) -> dict:
    """``{layer name: operator name}`` (e.g. ``"Convolution"``, ``"BatchNorm"``) in graph order."""
    ops = {}
    for node in _load(symbol)["nodes"]:
        if node["op"] != "null":
            ops[node["name"]] = node["op"]
    return {layer: ops.get(layer, ops.get(layer.rsplit("_output", 1)[0], "?")) for layer in list_layers(symbol)}


def set_batchnorm_global_stats(symbol, layers=None, value: bool = True):
    """Set ``use_global_stats`` of BatchNorm layers (all of them, or the named ones).

    With ``use_global_stats=True`` a BatchNorm layer normalises with its
    moving mean/variance even in training mode and does not update them.

    Parameters
    ----------
    symbol : mx.sym.Symbol
    layers : list of str or None
        BatchNorm layer names; ``None`` means every BatchNorm layer.
    value : bool
        The new value.

    Returns
    -------
    mx.sym.Symbol
        A new symbol; ``symbol`` is unchanged.

    Raises
    ------
    UnknownNameError
        A name that is not a layer.
    ConfigError
        A named layer that is not a BatchNorm layer.
    """
    graph = _load(symbol)
    bn_nodes = {n["name"]: n for n in graph["nodes"] if n["op"] == "BatchNorm"}
    if layers is None:
        chosen = list(bn_nodes)
    else:
        chosen = [layers] if isinstance(layers, str) else list(layers)
        _check_layers(symbol, chosen)
        other = [name for name in chosen if name not in bn_nodes]
        if other:
            raise ConfigError(f"Layers {other} are not BatchNorm layers; BatchNorm layers: {sorted(bn_nodes)[:20]}...")
    for name in chosen:
        bn_nodes[name].setdefault("attrs", {})["use_global_stats"] = str(bool(value))
    return _dump(graph)


def batchnorm_global_stats(symbol) -> dict:
    """``{BatchNorm layer name: use_global_stats}`` of ``symbol``, in graph order.

    The reader of :func:`set_batchnorm_global_stats`: ``True`` means the layer
    normalises with its moving statistics in training too (frozen).

    Parameters
    ----------
    symbol : mx.sym.Symbol

    Returns
    -------
    dict of str to bool
        Empty when ``symbol`` has no BatchNorm layer.

    Examples
    --------
    >>> import mxnet as mx
    >>> x = mx.sym.BatchNorm(mx.sym.var("data"), name="bn1")
    >>> batchnorm_global_stats(x), batchnorm_global_stats(set_batchnorm_global_stats(x, ["bn1"]))
    ({'bn1': False}, {'bn1': True})
    """
    return {n["name"]: str((n.get("attrs") or n.get("param") or {}).get("use_global_stats", "False")).lower()
            in ("true", "1") for n in _load(symbol)["nodes"] if n["op"] == "BatchNorm"}


def batchnorm_layers(symbol) -> list:
    """Names of the BatchNorm layers of ``symbol``, in graph order."""
    return [name for name, op in layer_ops(symbol).items() if op == "BatchNorm"]


def strip_prefix(symbol, params: dict, prefix: str):
    """Remove a builder prefix (e.g. gluon's ``resnetv10_``) from node and parameter names.

    Gluon numbers its blocks per process (``resnetv10_``, ``resnetv11_``, ...);
    stripping the top-level prefix makes names stable across builds.

    Parameters
    ----------
    symbol : mx.sym.Symbol
    params : dict of str to NDArray
    prefix : str

    Returns
    -------
    (mx.sym.Symbol, dict)
        The renamed symbol and parameter dict. The input variable is unchanged.

    Raises
    ------
    ModelError
        Stripping would make two names equal.
    """
    if not prefix:
        return symbol, dict(params)

    def strip(name):
        return name[len(prefix):] if name.startswith(prefix) and len(name) > len(prefix) else name

    graph = _load(symbol)
    names = [strip(n["name"]) for n in graph["nodes"]]
    if len(set(names)) != len(names):
        raise ModelError(f"Cannot strip the prefix {prefix!r}: node names would collide.")
    for node, name in zip(graph["nodes"], names):
        node["name"] = name
    return _dump(graph), {strip(k): v for k, v in params.items()}


def rename_inputs(symbol, mapping: dict):
    """Rename variables (e.g. the input ``{"input_1": "data"}``)."""
    graph = _load(symbol)
    for node in graph["nodes"]:
        if node["op"] == "null" and node["name"] in mapping:
            node["name"] = mapping[node["name"]]
    return _dump(graph)


def strip_softmax(symbol):
    """If the output is a softmax (``SoftmaxOutput``, ``softmax``, ...), return its input (the logits).

    Returns ``symbol`` unchanged otherwise. A ``SoftmaxOutput``'s label
    variable disappears with it.
    """
    graph = _load(symbol)
    heads = graph["heads"]
    if len(heads) != 1:
        return symbol
    node = graph["nodes"][heads[0][0]]
    if node["op"] not in _SOFTMAX:
        return symbol
    src, idx = node["inputs"][0][0], node["inputs"][0][1]
    graph["heads"] = [[src, idx, 0]]
    return _prune(graph)


def _prune(graph: dict):
    """Drop nodes the heads do not depend on and renumber."""
    nodes = graph["nodes"]
    keep = set()
    stack = [h[0] for h in graph["heads"]]
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        keep.add(i)
        stack.extend(e[0] for e in nodes[i]["inputs"])
    order = sorted(keep)
    new_index = {old: new for new, old in enumerate(order)}
    new_nodes = []
    for old in order:
        node = dict(nodes[old])
        node["inputs"] = [[new_index[e[0]], *e[1:]] for e in node["inputs"]]
        new_nodes.append(node)
    graph = dict(graph, nodes=new_nodes)
    graph["heads"] = [[new_index[h[0]], *h[1:]] for h in graph["heads"]]
    return _dump(graph)


def find_classifier(symbol, classifier: str | None = None):
    """Guess the classifier and the layer that feeds it.

    The classifier is the last ``FullyConnected`` or ``Convolution`` node in
    graph order (e.g. ``dense0_fwd``, ``fc8``, MobileNet-v2's 1x1 ``pred``
    convolution); the feature layer is that node's data input (e.g.
    ``pool1_fwd``, ``flatten0``, ``dropout1_fwd``).

    Parameters
    ----------
    symbol : mx.sym.Symbol
    classifier : str or None
        The classifier layer, when known: only its input is looked up.

    Returns
    -------
    (str or None, str or None)
        ``(classifier, feature_layer)``; ``(None, None)`` when the graph has no such node;
        the feature layer is ``None`` when the classifier reads an input variable.

    Raises
    ------
    UnknownNameError
        ``classifier`` is not a layer of ``symbol``.
    """
    nodes = _load(symbol)["nodes"]
    for node in reversed(nodes):
        if node["op"] != "null" and (node["name"] == classifier if classifier else node["op"] in _PARAMETRIC):
            src = nodes[node["inputs"][0][0]]
            return node["name"], None if src["op"] == "null" else src["name"]
    if classifier:
        raise UnknownNameError("layer", classifier, list_layers(symbol))
    return None, None


def infer_shape(symbol, input_shape, input_name: str = "data") -> tuple:
    """Output shape of ``symbol`` for an input of ``input_shape``.

    Raises
    ------
    ShapeError
        The graph cannot take that input shape.
    """
    try:
        _, out_shapes, _ = symbol.infer_shape(**{input_name: tuple(input_shape)})
    except mx.base.MXNetError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ShapeError(f"The network cannot take an input of shape {tuple(input_shape)}: {first}") from None
    if out_shapes is None or out_shapes[0] is None:
        raise ShapeError(f"Cannot infer the output shape for an input of shape {tuple(input_shape)}.")
    return tuple(out_shapes[0])
