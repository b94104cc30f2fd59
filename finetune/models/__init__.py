"""Models: pretrained backbones, head replacement, model directories.

:class:`Backbone` — a pretrained network (gluoncv zoo, Caffe, MXNet
checkpoint, our own architectures) held as a symbol graph + parameters,
carrying its :class:`~finetune.Preprocess`. :class:`HeadReplacer` cuts it at
a named layer and adds a new head, giving a fine-tunable :class:`Model`.
:func:`load_model` reads what ``save`` writes; :func:`quantize` makes an INT8
:class:`QuantizedModel` for CPU inference. Graph surgery used by all of
them (and by feature extraction and Grad-CAM) is in
:mod:`finetune.models._graph`.
"""

from ._backbone import Backbone
from ._head import HeadReplacer
from ._inception_resnet_v2 import InceptionResNetV2
from ._model import Model, load_model
from ._quantize import FusedModel, QuantizedModel, fuse, quantize
from ._zoo import list_backbones

__all__ = sorted(["Backbone", "FusedModel", "HeadReplacer", "fuse", "InceptionResNetV2", "Model", "QuantizedModel", "list_backbones",
                  "load_model", "quantize"])
