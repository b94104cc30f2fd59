"""The result of a Caffe conversion: :class:`CaffeNet`, an MXNet symbol with its weights and what the prototxt said."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import mxnet as mx

from ..._file_writes import atomic_paths
from ..._mxio import save_arrays
from ...data import Preprocess
from ...errors import UnknownNameError

__all__ = ["CaffeNet"]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class CaffeNet:
    """A converted Caffe network: MXNet symbol, weights and metadata.

    Attributes
    ----------
    symbol : mxnet.symbol.Symbol
        The whole network (up to its final Softmax, if any); input variable
        ``"data"``, ``(N, C, H, W)`` in the network's colour order. Every
        Caffe layer ``name`` is the node ``name`` in ``symbol.get_internals()``
        (output ``name + "_output"``).
    arg_params, aux_params : dict of str to mxnet.nd.NDArray
        Weights, named as ``symbol`` expects.
    preprocess : finetune.Preprocess
        Colour ``"BGR"`` (``"RGB"`` after ``to_rgb=True``), raw 0–255 pixels,
        mean from the prototxt or the caller, ``std=1``.
    input_shape : tuple of int
        ``(1, C, H, W)``.
    layer_names : list of str
        Converted layers in graph order (input excluded).
    layer_types : dict of str to str
        Caffe type of each converted layer.
    classifier : str or None
        The last InnerProduct layer (the last Convolution if there is none).
    logits_layer : str
        The output to use as logits: the input of a final Softmax, else the output.
    num_features : int or None
        Size of the classifier's (flattened) input.
    output_is_softmax : bool
        Whether ``symbol`` ends in a Softmax.
    name : str
        The net's ``name:`` in the prototxt.
    """

    symbol: mx.sym.Symbol
    arg_params: dict
    aux_params: dict
    preprocess: Preprocess
    input_shape: tuple
    layer_names: list
    layer_types: dict
    classifier: str | None
    logits_layer: str
    num_features: int | None
    output_is_softmax: bool
    name: str = ""

    def __repr__(self) -> str:
        return (f"CaffeNet(name={self.name!r}, layers={len(self.layer_names)}, "
                f"input_shape={self.input_shape}, classifier={self.classifier!r}, "
                f"logits_layer={self.logits_layer!r}, output_is_softmax={self.output_is_softmax})")

    def forward(self, x, layers=None) -> list:
        """Run the network on a batch (for checks; training uses a Gluon block).

        Parameters
        ----------
        x : numpy.ndarray
            ``(N, C, H, W)`` float32, already normalised by :attr:`preprocess`.
        layers : list of str or None
            Layer names whose outputs to return; ``None`` returns the final output(s).

        Returns
        -------
        list of numpy.ndarray
        """
        if layers is None:
            sym = self.symbol
        else:
            internals = self.symbol.get_internals()
            outputs = set(internals.list_outputs())
            missing = [n for n in layers if f"{n}_output" not in outputs]
            if missing:
                raise UnknownNameError("layer", missing[0], self.layer_names)
            sym = mx.sym.Group([internals[f"{n}_output"] for n in layers])
        with warnings.catch_warnings():  # Gluon warns about the unused input names of aux states
            warnings.simplefilter("ignore")
            block = mx.gluon.SymbolBlock(sym, mx.sym.var("data"))
        params = dict(self.arg_params, **self.aux_params)
        block.collect_params().load_dict(params, ctx=mx.cpu(), ignore_extra=True)
        out = block(mx.nd.array(x, dtype="float32"))
        return [o.asnumpy() for o in (out if isinstance(out, (list, tuple)) else [out])]

    def save(self, prefix) -> list:
        """Write ``prefix-symbol.json``, ``prefix-0000.params`` and ``prefix-preprocess.json``.

        The first two are an MXNet checkpoint (``mx.model.load_checkpoint(prefix, 0)``);
        the last is :meth:`finetune.Preprocess.save` output. The checkpoint and
        ``prefix-caffe.json`` are replaced together, as one unit, the
        preprocessing file on its own; each atomically. Returns the paths.
        """
        prefix = os.fspath(prefix)
        folder = os.path.dirname(prefix)
        if folder:
            os.makedirs(folder, exist_ok=True)
        meta = {k: getattr(self, k) for k in ("name", "input_shape", "layer_names", "layer_types",
                                              "classifier", "logits_layer", "num_features",
                                              "output_is_softmax")}
        # what mx.model.save_checkpoint writes, replaced together with the metadata as one unit
        arrays = {**{f"arg:{k}": v.as_in_context(mx.cpu()) for k, v in self.arg_params.items()},
                  **{f"aux:{k}": v.as_in_context(mx.cpu()) for k, v in self.aux_params.items()}}
        with atomic_paths([f"{prefix}-symbol.json", f"{prefix}-0000.params", f"{prefix}-caffe.json"]) as temps:
            self.symbol.save(temps[0], remove_amp_cast=False)
            save_arrays(temps[1], arrays)
            with open(temps[2], "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1)
        self.preprocess.save(f"{prefix}-preprocess.json")
        return [f"{prefix}-symbol.json", f"{prefix}-0000.params", f"{prefix}-preprocess.json",
                f"{prefix}-caffe.json"]
