"""Any Gluon ``HybridBlock`` as a protocol model: :class:`BlockModel`.

A plain block that maps a normalised batch to logits lacks the members the
rest of the library uses (``layer_names``, ``features``, ``layer_gradient``,
``save``, ...). Tracing it with a symbol gives its whole graph, so the graph
surgery of :mod:`finetune.models` provides them. The wrapper shares the
block's parameters: training the block later changes what the wrapper
computes. A block that already meets the full protocol keeps its own
``layer_names`` and ``features``.
"""

from __future__ import annotations

import mxnet as mx

from ..data import Preprocess
from ..errors import ModelError
from ._backbone import Backbone
from ._network import _Network
from ._protocol import ModelProtocol, missing_members

__all__ = ["BlockModel", "as_inference_model"]


class BlockModel(_Network):
    """A ``HybridBlock`` returning logits, wrapped to meet :class:`~finetune.ModelProtocol` (the full level).

    Made by :func:`~finetune.create_model` for blocks that lack members of
    the protocol; rarely built directly. Its :attr:`inference` record is the
    block's when the block carries one, else the plain one.

    Parameters
    ----------
    block : mx.gluon.HybridBlock
        ``block(x)`` gives the logits ``(N, K)`` (or a tuple whose first item
        is the logits) for a normalised ``(N, C, H, W)`` batch.
    preprocess : Preprocess or None
        Default: ``block.preprocess`` (a plain block may carry it as an attribute).
    class_names : list of str or None
        Default: ``block.class_names`` when it has them.

    Examples
    --------
    >>> import mxnet as mx
    >>> from finetune import Preprocess
    >>> net = mx.gluon.nn.HybridSequential(prefix="net_")
    >>> with net.name_scope():
    ...     net.add(mx.gluon.nn.Conv2D(4, 3, in_channels=3), mx.gluon.nn.GlobalAvgPool2D(),
    ...             mx.gluon.nn.Dense(2, in_units=4))
    >>> net.initialize()
    >>> model = BlockModel(net, preprocess=Preprocess(size=(8, 8), resize=8))
    >>> model.layer_names[0], model.features(mx.nd.ones((1, 3, 8, 8)), "net_conv0_fwd")[0].shape
    ('net_conv0_fwd', (1, 4, 6, 6))
    """

    def __init__(self, block: mx.gluon.HybridBlock, *, preprocess: Preprocess | None = None, class_names=None):
        if not isinstance(block, mx.gluon.HybridBlock):
            raise ModelError(f"BlockModel wraps a Gluon HybridBlock; got {type(block).__name__}.")
        preprocess = preprocess if preprocess is not None else getattr(block, "preprocess", None)
        if not isinstance(preprocess, Preprocess):
            raise ModelError(
                f"A model must carry its preprocessing (.preprocess, a finetune.Preprocess); "
                f"{type(block).__name__} has none. Set block.preprocess = Preprocess(...) or pass "
                "preprocess=Preprocess(...)."
            )
        if class_names is None:
            class_names = getattr(block, "class_names", None)
        super().__init__(preprocess, class_names)
        self.block = block
        self.inference = getattr(block, "inference", None)  # a plain block may carry it, as preprocess

    def hybrid_forward(self, F, x):
        out = self.block(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    def to_symbol(self):
        """The block traced with a symbol (input ``"data"``, output the logits)."""
        if "symbol" not in self._caches:
            with mx.name.NameManager():
                self._caches["symbol"] = self(mx.sym.var("data"))
        return self._caches["symbol"]

    @property
    def layer_names(self) -> list:
        """The block's own ``layer_names`` if it meets the full protocol, else the traced graph's layers."""
        if isinstance(self.block, ModelProtocol):
            return list(self.block.layer_names)
        return super().layer_names

    def features(self, x, layers) -> list:
        """Outputs of the named layers (through the block's own ``features`` if it meets the full protocol)."""
        if isinstance(self.block, ModelProtocol):
            return list(self.block.features(x, [layers] if isinstance(layers, str) else list(layers)))
        return super().features(x, layers)

    @property
    def num_classes(self) -> int:
        """Number of outputs (of the traced graph, for an input of the preprocessing's size)."""
        pre = self.preprocess
        _, out, _ = self.to_symbol().infer_shape(data=(1, pre.channels, *pre.size))
        return int(out[0][-1])

    def freeze_batchnorm(self, layers=None, frozen: bool = True) -> "BlockModel":
        """Make the block's ``nn.BatchNorm`` layers (``None``: all) use and keep their moving statistics.

        Parameters
        ----------
        layers : list of str or None
            BatchNorm layer names of :attr:`layer_names` (e.g.
            ``"net_batchnorm0_fwd"``); ``None`` means all of them.
        frozen : bool
            ``False`` undoes it.
        """
        from .graph import set_block_batchnorm_global_stats

        match = None
        if layers is not None:
            wanted = {n[:-len("_fwd")] if n.endswith("_fwd") else n for n in layers}
            match = lambda name: any(name.startswith(w + "_") for w in wanted)  # noqa: E731
        set_block_batchnorm_global_stats(self.block, match, frozen)
        self._invalidate()
        return self

    def to_backbone(self) -> Backbone:
        """A :class:`~finetune.Backbone` holding a copy of the traced graph and parameters."""
        backbone = Backbone.from_symbol(self.to_symbol(), self._param_arrays(), {}, self.preprocess,
                                        class_names=self.class_names, name=type(self.block).__name__)
        backbone.inference = self.inference
        return backbone

    def save(self, path) -> str:
        """Write a model directory (as a :class:`~finetune.Backbone`, which :func:`~finetune.load_model` reads)."""
        return self.to_backbone().save(path)

    def __repr__(self) -> str:
        return f"BlockModel({type(self.block).__name__}, preprocess={self.preprocess!r})"


def as_inference_model(model):
    """``model``, or a plain Gluon block carrying ``preprocess`` and ``class_names`` wrapped in a :class:`BlockModel`.

    A block that meets the inference level of the model protocol but for its
    ``inference`` record (a hand-made network with ``.preprocess`` and
    ``.class_names``) is wrapped, sharing its parameters, so the consumers that
    take such blocks (:func:`~finetune.use.export_for_deployment`,
    :func:`~finetune.models.quantize`, :func:`~finetune.models.fuse`) keep
    taking them; anything else is returned as it is, for the consumer's own
    protocol check.

    Examples
    --------
    >>> import mxnet as mx
    >>> from finetune import Preprocess
    >>> net = mx.gluon.nn.Dense(2, in_units=3)
    >>> net.preprocess, net.class_names = Preprocess(size=(1, 1), resize=1), ["a", "b"]
    >>> type(as_inference_model(net)).__name__, as_inference_model(net).inference.tta
    ('BlockModel', None)
    """
    if isinstance(model, mx.gluon.HybridBlock) and missing_members(model, "inference") == ["inference"]:
        return BlockModel(model)
    return model

