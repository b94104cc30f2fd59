"""Live Gluon blocks: their graph (:func:`gluon_to_graph`), BatchNorm modes (:func:`set_block_batchnorm_global_stats`,
:func:`batchnorm_modes`) and the parameters of fully connected layers (:func:`fully_connected_params`).

:func:`~finetune.models.graph.set_batchnorm_global_stats` edits a symbol; the
functions here do the same for networks built from Gluon blocks
(``nn.BatchNorm`` inside any ``Block``) and read the mode back from both
kinds (``nn.BatchNorm`` blocks and the BatchNorm nodes of a ``SymbolBlock``'s
graph). Gluon keeps a BatchNorm block's operator attributes in a private
dict and has no public setter for ``use_global_stats`` once the block is
built, so this module is the one place that reaches into it.
"""

from __future__ import annotations

import json

import mxnet as mx
from mxnet.gluon import SymbolBlock, nn

from ._symbols import strip_prefix

__all__ = ["batchnorm_modes", "fully_connected_params", "gluon_to_graph", "set_block_batchnorm_global_stats"]


def _blocks(block) -> list:
    out = []
    block.apply(out.append)
    return out


def set_block_batchnorm_global_stats(block, match=None, value: bool = True) -> bool:
    """Set ``use_global_stats`` of the ``nn.BatchNorm`` blocks inside a Gluon block.

    With ``use_global_stats=True`` a BatchNorm layer normalises with its
    moving mean/variance even in training mode and does not update them.
    Cached graphs are cleared when anything changes, so a hybridized block
    picks the change up.

    Parameters
    ----------
    block : mxnet.gluon.Block
    match : callable or None
        ``match(parameter_name) -> bool``: a BatchNorm block changes when any
        of its parameters matches; ``None`` means every BatchNorm block.
    value : bool
        The new value.

    Returns
    -------
    bool
        Whether any block changed.

    Examples
    --------
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential(prefix="")
    >>> net.add(nn.Dense(4, in_units=3, prefix="fc_"), nn.BatchNorm(in_channels=4, prefix="bn_"))
    >>> set_block_batchnorm_global_stats(net), batchnorm_modes(net)["bn_gamma"]
    (True, 'frozen')
    """
    changed = False
    for b in _blocks(block):
        if isinstance(b, nn.BatchNorm):
            names = [p.name for p in b.params.values()]
            if match is None or any(match(n) for n in names):
                if bool(b._kwargs.get("use_global_stats")) != bool(value):
                    b._kwargs["use_global_stats"] = bool(value)
                    changed = True
    if changed:
        for b in _blocks(block):
            if hasattr(b, "_clear_cached_op"):
                b._clear_cached_op()
    return changed


def batchnorm_modes(block) -> dict:
    """``{parameter name: "frozen" | "batch"}`` for every BatchNorm parameter inside a Gluon block.

    Reads ``nn.BatchNorm`` blocks and the BatchNorm nodes of any symbol graph
    (``SymbolBlock``) inside ``block``; ``"frozen"`` means ``use_global_stats``.

    Parameters
    ----------
    block : mxnet.gluon.Block
        The network (or any part of it) to read.

    Returns
    -------
    dict
        Parameter name → ``"frozen"`` (running statistics used in training)
        or ``"batch"`` (batch statistics in training); empty when ``block``
        has no BatchNorm.

    Examples
    --------
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential(prefix="")
    >>> net.add(nn.Dense(4, in_units=3, prefix="fc_"), nn.BatchNorm(in_channels=4, prefix="bn_"))
    >>> sorted(set(batchnorm_modes(net).values()))
    ['batch']
    """
    modes = {}
    for b in _blocks(block):
        if isinstance(b, nn.BatchNorm):
            mode = "frozen" if b._kwargs.get("use_global_stats") else "batch"
            for p in b.params.values():
                modes[p.name] = mode
        elif isinstance(b, SymbolBlock) and b._cached_graph:
            graph = json.loads(b._cached_graph[1].tojson())
            nodes = graph["nodes"]
            prefix = b.params.prefix
            for node in nodes:
                if node["op"] != "BatchNorm":
                    continue
                attrs = node.get("attrs", node.get("param", {})) or {}
                frozen = str(attrs.get("use_global_stats", "False")).lower() in ("true", "1")
                for inp in node["inputs"][1:]:
                    src = nodes[inp[0]]
                    if src["op"] == "null":
                        modes[prefix + src["name"]] = "frozen" if frozen else "batch"
    return modes


def fully_connected_params(block) -> list:
    """``(weight name, bias name)`` of every fully connected layer with a bias inside a Gluon block.

    Reads ``nn.Dense`` blocks and the ``FullyConnected`` nodes of any symbol
    graph (``SymbolBlock``) inside ``block``.

    Examples
    --------
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential(prefix="")
    >>> net.add(nn.Dense(4, in_units=3, prefix="fc_"), nn.Dense(2, in_units=4, use_bias=False, prefix="out_"))
    >>> fully_connected_params(net)
    [('fc_weight', 'fc_bias')]
    """
    pairs = []
    for b in _blocks(block):
        if isinstance(b, nn.Dense) and b.bias is not None:
            pairs.append((b.weight.name, b.bias.name))
        elif isinstance(b, SymbolBlock) and b._cached_graph:
            nodes = json.loads(b._cached_graph[1].tojson())["nodes"]
            prefix = b.params.prefix
            for node in nodes:
                srcs = [nodes[i[0]] for i in node["inputs"][1:3]]
                if node["op"] == "FullyConnected" and len(srcs) == 2 and all(n["op"] == "null" for n in srcs):
                    pairs.append(tuple(prefix + n["name"] for n in srcs))
    return pairs


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
