"""Caffe pairs (``deploy.prototxt`` + ``.caffemodel``) read as backbones.

:func:`~finetune.models.convert_caffe` turns the pair into a
:class:`~finetune.models.CaffeNet`; :func:`read_caffe` makes that what
:meth:`~finetune.Backbone.from_caffe` passes on to
:meth:`~finetune.Backbone.from_symbol`: the graph cut at the logits (the input
of a final Softmax), the Caffe layer names still in it, the classifier and its
input as the feature layer.
"""

from __future__ import annotations

import os

from ..caffe import convert_caffe
from ..graph import cut, find_classifier, list_layers

__all__ = ["read_caffe"]


def read_caffe(prototxt, caffemodel, *, input_shape=None, mean=None, mean_file=None, to_rgb: bool = False) -> dict:
    """The Caffe pair as arguments of :meth:`~finetune.Backbone.from_symbol`.

    The keys are ``symbol``, ``arg_params``, ``aux_params``, ``preprocess``,
    ``classifier``, ``feature_layer``, ``layer_names`` and ``name`` (the
    prototxt's file name); the options are those of
    :func:`~finetune.models.convert_caffe`.
    """
    net = convert_caffe(os.fspath(prototxt), os.fspath(caffemodel), input_shape=input_shape, mean=mean,
                        mean_file=mean_file, to_rgb=to_rgb)
    symbol = cut(net.symbol, net.logits_layer) if net.output_is_softmax else net.symbol
    present = set(list_layers(symbol))
    return {"symbol": symbol, "arg_params": net.arg_params, "aux_params": net.aux_params,
            "preprocess": net.preprocess, "classifier": net.classifier,
            "feature_layer": find_classifier(symbol, net.classifier)[1] if net.classifier else None,
            "layer_names": [n for n in net.layer_names if n in present],
            "name": os.path.basename(os.fspath(prototxt))}
