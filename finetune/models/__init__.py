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
makes an INT8 :class:`QuantizedModel` for CPU inference (calibrated on
:func:`calibration_batch`); :func:`fuse` an fp32 :class:`FusedModel` with oneDNN operator
fusion. :func:`require_model` is the check every consumer runs where a model enters it
(:func:`missing_members` lists what an object lacks); :func:`convert_caffe` turns a Caffe
pair into a :class:`CaffeNet`. :class:`Inference` is how a model is meant to
be run for prediction (test-time augmentation), saved with it. :func:`export_for_deployment`
writes a deployment folder (a model directory plus the files that run the network without
finetune, described by a :class:`Deployment`), read back by :func:`load_deployment` and
checked by :func:`verify_deployment` (:mod:`finetune.use` offers the same three).
"""

from ._backbone import Backbone
from ._block import BlockModel
from .caffe import CaffeNet, convert_caffe
from ._create import create_model
from ._io._deployment import DeployedModel, Deployment
from ._io._export import export_for_deployment, load_deployment, verify_deployment
from ._head import HeadReplacer
from .architectures import InceptionResNetV2
from ._inference import Inference
from ._model import Model, load_model
from ._protocol import InferenceModel, ModelProtocol, missing_members, require_model
from ._quantize import FusedModel, QuantizedModel, calibration_batch, fuse, quantize
from ._zoo import list_backbones

__all__ = [
    "Backbone",
    "BlockModel",
    "CaffeNet",
    "DeployedModel",
    "Deployment",
    "FusedModel",
    "HeadReplacer",
    "InceptionResNetV2",
    "Inference",
    "InferenceModel",
    "Model",
    "ModelProtocol",
    "QuantizedModel",
    "calibration_batch",
    "convert_caffe",
    "create_model",
    "export_for_deployment",
    "fuse",
    "list_backbones",
    "load_deployment",
    "load_model",
    "missing_members",
    "quantize",
    "require_model",
    "verify_deployment",
]
