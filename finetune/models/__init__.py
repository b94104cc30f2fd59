"""Models: the model protocol, pretrained backbones, head replacement, model directories.

:class:`ModelProtocol` is what every network offers (:class:`InferenceModel`, its
inference level, what quantized, fused and deployed networks offer); :func:`create_model` makes
one from any source (zoo name, model directory, deployment folder, Caffe pair,
MXNet checkpoint, Gluon block). :class:`Backbone` — a pretrained network
(gluoncv zoo, Caffe, MXNet checkpoint, our own architectures) held as a symbol
graph + parameters, carrying its :class:`~finetune.Preprocess`.
:class:`HeadReplacer` cuts it at a named layer and adds a new head, giving a
fine-tunable :class:`Model`. :func:`load_model` reads what ``save`` writes.
:class:`BlockModel` gives a plain Gluon block the members of the protocol. :func:`quantize`
makes an INT8 :class:`QuantizedModel` for CPU inference; :func:`fuse` an fp32
:class:`FusedModel` with oneDNN operator fusion. :class:`Inference` is how a model is meant to
be run for prediction (test-time augmentation), saved with it.
"""

from ._backbone import Backbone
from ._block import BlockModel
from ._create import create_model
from ._deployment import DeployedModel
from ._head import HeadReplacer
from ._inception_resnet_v2 import InceptionResNetV2
from ._inference import Inference
from ._model import Model, load_model
from ._protocol import InferenceModel, ModelProtocol
from ._quantize import FusedModel, QuantizedModel, fuse, quantize
from ._zoo import list_backbones

__all__ = [
    "Backbone",
    "BlockModel",
    "DeployedModel",
    "FusedModel",
    "HeadReplacer",
    "InceptionResNetV2",
    "Inference",
    "InferenceModel",
    "Model",
    "ModelProtocol",
    "QuantizedModel",
    "create_model",
    "fuse",
    "list_backbones",
    "load_model",
    "quantize",
]
