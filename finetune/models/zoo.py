"""The registry of backbones and the builders of finetune's own architectures.

:func:`~finetune.list_backbones` lists the registered names (what
:func:`~finetune.create_model` builds); :func:`describe` tells what one of them
is; :func:`register_backbone` adds one (a duplicate name raises). Each
:class:`ZooEntry` carries a :class:`Weights` record: where its pretrained
weights come from, the preprocessing they expect, source, licence and top-1.
EfficientNet-Lite is built by :func:`efficientnet_lite` and gets its
ImageNet weights from :func:`load_efficientnet_lite_imagenet`;
:func:`read_torch_state_dict` reads PyTorch weights without torch and
without running pickled code.
"""

from .architectures import efficientnet_lite, load_efficientnet_lite_imagenet
from ._io._torch_pickle import read_torch_state_dict
from ._zoo import Weights, ZooEntry, describe, get_entry, list_backbones, register_backbone

__all__ = [
    "Weights",
    "ZooEntry",
    "describe",
    "efficientnet_lite",
    "get_entry",
    "list_backbones",
    "load_efficientnet_lite_imagenet",
    "read_torch_state_dict",
    "register_backbone",
]
