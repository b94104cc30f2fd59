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

Gradient with respect to an intermediate layer (Grad-CAM)
---------------------------------------------------------
:func:`insert_probe` rewrites ``layer`` as ``layer + delta``, where ``delta``
is a new input variable of the same shape as the layer's output. Feeding
``delta = 0`` leaves every output unchanged, and the gradient of any output
with respect to ``delta`` *is* the gradient with respect to that layer's
output. :func:`probe_block` wraps this into a Gluon block sharing the
network's parameters; the models expose it as ``model.layer_gradient``::

    block = probe_block(symbol, "stage4_activation1", params)
    act = block.activation(x)                  # (N, C, H, W), to size delta
    delta = mx.nd.zeros_like(act); delta.attach_grad()
    with mx.autograd.record(train_mode=False):
        logits, act = block(x, delta)
        score = mx.nd.pick(logits, mx.nd.array(class_index), axis=1).sum()
    score.backward()
    grad = delta.grad                          # d score / d activation
"""

from __future__ import annotations

import json

import mxnet as mx

from ..errors import ConfigError, ModelError, ShapeError, UnknownNameError

__all__ = [
    "batchnorm_layers",
    "cut",
    "data_var",
    "find_classifier",
    "gluon_to_graph",
    "infer_shape",
    "insert_probe",
    "layer_output",
    "layer_ops",
    "list_layers",
    "probe_block",
    "rename_inputs",
    "set_batchnorm_global_stats",
    "split_at",
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


def find_classifier(symbol):
    """Guess the classifier and the layer that feeds it.

    The classifier is the last ``FullyConnected`` or ``Convolution`` node in
    graph order (e.g. ``dense0_fwd``, ``fc8``, MobileNet-v2's 1x1 ``pred``
    convolution); the feature layer is that node's data input (e.g.
    ``pool1_fwd``, ``flatten0``, ``dropout1_fwd``).

    Returns
    -------
    (str or None, str or None)
        ``(classifier, feature_layer)``; ``(None, None)`` when the graph has no such node.
    """
    nodes = _load(symbol)["nodes"]
    for node in reversed(nodes):
        if node["op"] in _PARAMETRIC:
            src = nodes[node["inputs"][0][0]]
            if src["op"] == "null":
                return node["name"], None
            return node["name"], src["name"]
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


def insert_probe(symbol, layer: str, probe: str | None = None):
    """Rewrite ``layer``'s output ``y`` as ``y + probe`` where ``probe`` is a new input variable.

    Parameters
    ----------
    symbol : mx.sym.Symbol
    layer : str
        A layer name (see :func:`list_layers`).
    probe : str or None
        Name of the new variable; default ``"<layer>_probe"``.

    Returns
    -------
    (mx.sym.Symbol, str, str)
        The new symbol, the probe variable name, and the name of the layer
        ``y + probe`` (``"<layer>_probed"``), whose output equals ``y`` when
        the probe is zero. Every consumer of ``y`` (and the output, if ``y``
        was the output) now reads ``y + probe``, so the gradient with respect
        to the probe is the gradient with respect to ``y``.
    """
    mapping = _check_layers(symbol, [layer])
    out_name = mapping[layer]
    probe = probe or f"{layer}_probe"
    graph = _load(symbol)
    nodes = graph["nodes"]
    if probe in {n["name"] for n in nodes}:
        raise ConfigError(f"A node named {probe!r} already exists; choose another probe name.")
    base = out_name[: -len("_output")] if out_name.endswith("_output") else out_name.rsplit("_output", 1)[0]
    out_idx = 0 if out_name.endswith("_output") else int(out_name.rsplit("_output", 1)[1])
    k = next(i for i, n in enumerate(nodes) if n["name"] == base and n["op"] != "null")
    added = f"{layer}_probed"

    def shift(entry):
        i = entry[0]
        if i == k and entry[1] == out_idx:
            return [k + 2, 0, 0]
        return [i + 2 if i > k else i, *entry[1:]]

    new_nodes = nodes[: k + 1] + [
        {"op": "null", "name": probe, "inputs": []},
        {"op": "elemwise_add", "name": added, "inputs": [[k, out_idx, 0], [k + 1, 0, 0]]},
    ]
    for node in nodes[k + 1:]:
        node = dict(node)
        node["inputs"] = [shift(e) for e in node["inputs"]]
        new_nodes.append(node)
    graph["nodes"] = new_nodes
    graph["heads"] = [shift(h) for h in graph["heads"]]
    return _dump(graph), probe, added


class _ProbeBlock(mx.gluon.SymbolBlock):
    """``block(x, delta) -> (output, activation)``; see :func:`probe_block`."""

    def activation(self, x):
        """The probed layer's activation for ``x`` (to size the ``delta`` input)."""
        return self._activation_block(x)


def probe_block(symbol, layer: str, params, input_name: str = "data"):
    """A Gluon block computing ``(output, activation of layer)`` with a zero-able probe input.

    Parameters
    ----------
    symbol : mx.sym.Symbol
        The whole network (output = logits).
    layer : str
        The layer whose gradient is wanted.
    params : mx.gluon.ParameterDict
        The network's parameters (shared, not copied).
    input_name : str
        The data input variable.

    Returns
    -------
    SymbolBlock
        Called as ``block(x, delta)`` it returns ``(output, activation)``;
        ``block.activation(x)`` gives the activation alone (to build a zero
        ``delta`` of the right shape). See the module docstring for the
        gradient recipe.
    """
    probed, probe, added = insert_probe(symbol, layer)
    internals = probed.get_internals()
    outputs = [probed, internals[added + "_output"]]
    block = _ProbeBlock(outputs, [data_var(input_name), data_var(probe)], params=params)
    block._activation_block = mx.gluon.SymbolBlock(layer_output(symbol, layer), data_var(input_name),
                                                   params=params)
    return block


_RANDOM_INIT = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


def gluon_to_graph(block, input_shape, init=None):
    """Convert a Gluon ``HybridBlock`` to ``(symbol, params)`` with stable names.

    Parameters that are not initialised yet are initialised with ``init``
    (default: He/MSRA Gaussian). The block's top-level prefix (e.g.
    ``resnetv10_``) is stripped from node and parameter names. Build the
    block inside ``with mx.name.NameManager():`` so that nested blocks
    without their own prefix are numbered from zero too.

    Parameters
    ----------
    block : mx.gluon.HybridBlock
    input_shape : tuple of int
        ``(N, C, H, W)`` of one forward pass used to finish deferred shapes.
    init : mx.init.Initializer or None

    Returns
    -------
    (mx.sym.Symbol, dict of str to NDArray)
        Graph with input ``"data"``; the parameter arrays on the CPU.
    """
    params = block.collect_params()
    if any(p._data is None and p._deferred_init == () for p in params.values()):
        block.initialize(init or _RANDOM_INIT, ctx=mx.cpu())
    with mx.autograd.pause():
        block(mx.nd.zeros(tuple(input_shape), ctx=mx.cpu()))
    with mx.name.NameManager():
        symbol = block(mx.sym.var("data"))
    if isinstance(symbol, (list, tuple)):
        symbol = symbol[0]
    arrays = {name: p.data(mx.cpu()).copy() for name, p in params.items()}
    used = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    arrays = {k: v for k, v in arrays.items() if k in used}
    return strip_prefix(symbol, arrays, block.prefix)


CUT_INPUT = "finetune_cut_input"


def split_at(symbol, entry: str):
    """Split ``symbol`` at internal output ``entry``: ``(input -> A, A -> output)``.

    In the second graph ``A`` is the input variable :data:`CUT_INPUT`.

    Parameters
    ----------
    symbol : mx.sym.Symbol
    entry : str
        An internal output name, e.g. ``"conv1_output"``.

    Returns
    -------
    (mx.sym.Symbol, mx.sym.Symbol)

    Examples
    --------
    >>> import mxnet as mx
    >>> y = mx.sym.relu(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=2, name="fc"), name="act")
    >>> feature, head = split_at(y, "fc_output")
    >>> head.list_inputs()
    ['finetune_cut_input']
    """
    feature = symbol.get_internals()[entry]
    graph = json.loads(symbol.tojson())
    node_name = entry[: -len("_output")] if entry.endswith("_output") else entry
    ids = [i for i, n in enumerate(graph["nodes"]) if n["name"] == node_name]
    if len(ids) != 1:
        raise ModelError(f"Cannot cut the graph at {entry!r}: {len(ids)} nodes are named {node_name!r}.")
    node = graph["nodes"][ids[0]]
    if node["op"] == "null":
        raise ConfigError(f"{node_name!r} is an input or a parameter, not a layer.")
    graph["nodes"][ids[0]] = {"op": "null", "name": CUT_INPUT, "inputs": []}
    graph["arg_nodes"] = sorted(set(graph["arg_nodes"]) | {ids[0]})
    for n in graph["nodes"]:  # every consumer must read output 0 of the cut node
        for ref in n["inputs"]:
            if ref[0] == ids[0] and ref[1] != 0:
                raise ModelError(f"Cannot cut at {node_name!r}: later layers use its output {ref[1]}.")
    head = mx.sym.load_json(json.dumps(graph))
    return feature, head
