"""The base of the networks held as a graph for inference only: quantized, fused and deployed ones.

:class:`InferenceGraph` is a ``SymbolBlock`` that carries the members of the
inference level of the model protocol (:class:`~finetune.InferenceModel`):
the preprocessing, the class names, the inference record, ``save``; and the
one input size its graph was specialised to, when it was.
"""

from __future__ import annotations

import warnings

import mxnet as mx

from ..errors import ShapeError
from ._inference import CarriesInference

__all__ = ["InferenceGraph"]


class InferenceGraph(CarriesInference, mx.gluon.SymbolBlock):
    """A ``SymbolBlock`` for CPU inference that carries preprocessing, class names, inference record and input size."""

    def __init__(self, symbol, preprocess, class_names=None, input_size=None, *, input_name: str = "data",
                 inference=None):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot decide type")
            super().__init__(symbol, mx.sym.var(input_name))
        self._input_name = input_name
        self.preprocess = preprocess
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.input_size = None if input_size is None else tuple(int(v) for v in input_size)
        self.inference = inference

    def forward(self, x, *args):
        if self.input_size is not None and isinstance(x, mx.nd.NDArray) and tuple(x.shape[2:]) != self.input_size:
            h, w = self.input_size
            raise ShapeError(f"This {type(self).__name__} was made for {h}x{w} inputs (its preprocessing's size): "
                             f"its graph has the padding for that size folded in. Got a batch of shape "
                             f"{tuple(x.shape)} instead; resize the images to {h}x{w} (Predictor does), or "
                             f"make it from a model whose preprocess.size is the size you need.")
        return super().forward(x, *args)

    def save(self, path) -> str:
        """Write a model directory that :func:`~finetune.load_model` reads (a :class:`~finetune.Backbone`
        over this graph and weights); returns its path."""
        from ._backbone import Backbone

        arrays = {name: p.data(p.list_ctx()[0]).copyto(mx.cpu()) for name, p in self.collect_params().items()}
        backbone = Backbone.from_symbol(self._cached_graph[1], arrays, {}, self.preprocess,
                                        class_names=self.class_names, input_name=self._input_name,
                                        name=type(self).__name__)
        backbone.inference = self.inference
        return backbone.save(path)
