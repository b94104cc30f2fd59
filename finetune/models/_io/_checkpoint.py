"""MXNet symbolic checkpoints: ``prefix-symbol.json`` + ``prefix-%04d.params``, and what finetune keeps beside them.

:meth:`~finetune.Backbone.export` (and :meth:`~finetune.models.CaffeNet.save`)
write ``prefix-preprocess.json`` beside the checkpoint and the class names into
``prefix-symbol.json``; earlier versions wrote ``prefix-classes.json``.
:func:`read_checkpoint` reads all of it, into what :meth:`~finetune.Backbone.from_checkpoint`
passes on to :meth:`~finetune.Backbone.from_symbol`.
"""

from __future__ import annotations

import json
import os

from ..._file_writes import settled
from ..._legacy import earlier_layout
from ...data import Preprocess
from ...errors import MissingFileError, ModelError
from ._modeldir import symbol_class_names

__all__ = ["read_checkpoint"]


def read_checkpoint(prefix, epoch: int, preprocess: Preprocess | None = None, class_names=None) -> dict:
    """The checkpoint ``prefix``, ``epoch`` as arguments of :meth:`~finetune.Backbone.from_symbol`.

    The keys are ``symbol``, ``arg_params``, ``aux_params``, ``preprocess``,
    ``class_names`` and ``name`` (the prefix's file name). ``preprocess``
    defaults to ``prefix-preprocess.json`` when it exists, else raw RGB pixels
    at 224 (``mean=0, std=1``, what MXNet's model-zoo ResNet checkpoints
    expect); ``class_names`` to those kept in ``prefix-symbol.json``, else
    ``prefix-classes.json``, else ``None``.

    Raises
    ------
    MissingFileError
        The symbol or the parameters file is missing.
    MixedOutputError
        The files do not belong together: their manifest (written by
        ``finetune export``) holds other fingerprints.
    ModelError
        MXNet cannot read them.
    """
    import mxnet as mx

    prefix = os.fspath(prefix)
    parts = [f"{prefix}-symbol.json", f"{prefix}-{int(epoch):04d}.params"]
    for path in parts:
        if not os.path.exists(path):
            raise MissingFileError(f"Checkpoint file {path!r} does not exist.")
    # an export's parts belong together: its manifest (.<prefix>-symbol.json.finetune) holds their fingerprints
    settled(parts + [f"{prefix}-preprocess.json"], what="MXNet export (finetune export)")
    try:
        symbol, arg_params, aux_params = mx.model.load_checkpoint(prefix, int(epoch))
    except mx.base.MXNetError as exc:
        raise ModelError(f"Cannot read checkpoint {prefix!r}: {str(exc).strip().splitlines()[0]}") from None
    if preprocess is None and os.path.exists(f"{prefix}-preprocess.json"):
        preprocess = Preprocess.load(f"{prefix}-preprocess.json")
    if preprocess is None:
        preprocess = Preprocess(mean=(0, 0, 0), std=(1, 1, 1))
    if class_names is None:
        class_names = symbol_class_names(f"{prefix}-symbol.json")
    if class_names is None and os.path.exists(f"{prefix}-classes.json"):
        earlier_layout(f"The class names in {prefix + '-classes.json'!r}",
                       "export the model again (finetune export) to keep them in its symbol file", stacklevel=4)
        with open(f"{prefix}-classes.json", encoding="utf-8") as f:
            class_names = json.load(f)
    return {"symbol": symbol, "arg_params": arg_params, "aux_params": aux_params, "preprocess": preprocess,
            "class_names": class_names, "name": os.path.basename(prefix)}
