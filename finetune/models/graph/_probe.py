"""Gradients at a layer and splitting a graph at a layer: :func:`probe_block`, :func:`split_at`.

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

from ...errors import ConfigError, ModelError
from ._symbols import _check_layers, _dump, _load, data_var, layer_output

__all__ = ["CUT_INPUT", "insert_probe", "probe_block", "split_at"]


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
