"""Caffe import: a ``deploy.prototxt`` + ``.caffemodel`` pair as an MXNet graph, without Caffe or ``protoc``.

:func:`convert_caffe` gives a :class:`CaffeNet` (symbol, weights, the
preprocessing the prototxt declares); :meth:`finetune.Backbone.from_caffe` and
:func:`finetune.create_model` build on it. Inside: a text-format parser
(``_text``), the reader of both files with ``finetune._protobuf``'s wire decoder
(``_proto``), typed layer parameters (``_fields``), one symbol builder per
layer type (``_layers``), the result (``_net``) and the conversion (``_convert``).
"""

from ._convert import convert_caffe
from ._net import CaffeNet

__all__ = ["CaffeNet", "convert_caffe"]
