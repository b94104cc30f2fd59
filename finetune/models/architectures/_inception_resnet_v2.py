"""Inception-ResNet-v2 (Szegedy et al., 2016) as a Gluon ``HybridBlock`` with global pooling.

Faithful to the paper and to the reference implementations (TF-slim's
``inception_resnet_v2``, Cadene's ``pretrainedmodels`` and timm, which
share one layout):

=================  ============================================  ==============
stage              layers                                        output at 299
=================  ============================================  ==============
stem               conv 3×3/2 32 (valid), 3×3 32 (valid),        192 × 35 × 35
                   3×3 64 (same), max 3×3/2, 1×1 80, 3×3 192
                   (valid), max 3×3/2
mixed_5b           4 branches (96, 64, 96, avg-pool + 64)        320 × 35 × 35
block35_1..10      residual Inception-A, scale 0.17, ReLU        320 × 35 × 35
mixed_6a           reduction-A (384, 384, max-pool)              1088 × 17 × 17
block17_1..20      residual Inception-B, scale 0.10, ReLU        1088 × 17 × 17
mixed_7a           reduction-B (384, 288, 320, max-pool)         2080 × 8 × 8
block8_1..9        residual Inception-C, scale 0.20, ReLU        2080 × 8 × 8
block8_10          residual Inception-C, scale 1.0, no ReLU      2080 × 8 × 8
conv2d_7b          1×1 conv 1536                                 1536 × 8 × 8
pool, flatten      **global** average pooling                    1536
dropout, fc        dropout (0.2 = TF-slim's keep 0.8), dense     num_classes
=================  ============================================  ==============

Every convolution outside the residual ``conv`` is one factored unit:
Conv2D (no bias) → BatchNorm (eps 0.001) → ReLU. Padding is the
reference's: the stride-2 convolutions and pools are "valid" (no padding,
so TensorFlow's SAME/VALID asymmetry never arises); the others are "same",
i.e. symmetric ``k // 2`` (also for the 1×7, 7×1, 1×3, 3×1 kernels). The
3×3 average pool of ``mixed_5b`` excludes the padding from its count, as
TensorFlow does. Channel counts are static, so no ``infer_shape`` is
threaded through, and global pooling makes any input from 75×75 px work.

Parameters: **55,843,464** with 1000 classes (the count of timm's and
Cadene's ``inception_resnet_v2``; 55,845,001 for TF-slim's 1001 classes),
not counting BatchNorm running statistics.

Graph node names: ``stem_conv2d_1a_conv_fwd`` / ``_bn_fwd`` / ``_relu_fwd``,
``stem_maxpool_3a_fwd``, …, ``mixed_5b_concat``, ``block35_3_add`` /
``block35_3_relu``, ``mixed_6a_concat``, ``block17_20_relu``,
``mixed_7a_concat``, ``block8_10_add``, ``conv2d_7b_relu_fwd``,
``pool_fwd``, ``flatten_fwd`` (the feature layer), ``dropout_fwd``,
``fc_fwd`` (the classifier). :data:`STAGE_OUTPUTS` maps each stage to its
output node.

There are no ImageNet weights offline; :func:`load_inception_resnet_v2_torch`
loads a timm or Cadene PyTorch checkpoint (without torch) if you have one.
"""

from __future__ import annotations

from mxnet.gluon import HybridBlock, nn

from ...data import Preprocess
from ...errors import ConfigError, check_range

__all__ = [
    "STAGE_OUTPUTS",
    "InceptionResNetV2",
    "inception_resnet_v2_preprocess",
]

_BN_EPS = 1e-3

#: stage name -> graph node holding its output
STAGE_OUTPUTS = {
    "stem": "stem_maxpool_5a_fwd",
    "mixed_5b": "mixed_5b_concat",
    "block35": "block35_10_relu",
    "mixed_6a": "mixed_6a_concat",
    "block17": "block17_20_relu",
    "mixed_7a": "mixed_7a_concat",
    "block8": "block8_10_add",
    "conv2d_7b": "conv2d_7b_relu_fwd",
    "pool": "pool_fwd",
}


class _Unit(HybridBlock):
    """Conv2D (no bias) → BatchNorm (eps 0.001) → ReLU: the network's factored unit.

    ``same=True`` pads ``k // 2`` per axis (stride-1 "same"); ``False`` is "valid".
    """

    def __init__(self, in_channels: int, channels: int, kernel, stride: int = 1,
                 same: bool = True, **kwargs):
        super().__init__(**kwargs)
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        padding = tuple(k // 2 for k in kernel) if same else (0, 0)
        with self.name_scope():
            self.conv = nn.Conv2D(channels, kernel, strides=stride, padding=padding, use_bias=False,
                                  in_channels=in_channels, prefix="conv_")
            self.bn = nn.BatchNorm(epsilon=_BN_EPS, in_channels=channels, prefix="bn_")
            self.relu = nn.Activation("relu", prefix="relu_")

    def hybrid_forward(self, F, x):
        return self.relu(self.bn(self.conv(x)))


def _branch(name: str, in_channels: int, *units) -> nn.HybridSequential:
    """A chain named ``<name>_<j>`` of units ``(channels, kernel[, stride, same])`` or ``"avg"`` pools."""
    seq = nn.HybridSequential(prefix=f"{name}_")
    with seq.name_scope():
        channels = in_channels
        for j, unit in enumerate(units):
            if unit == "avg":
                seq.add(_pool("avg", str(j)))
                continue
            out, kernel, *rest = unit
            seq.add(_Unit(channels, out, kernel, *rest, prefix=f"{j}_"))
            channels = out
    return seq


def _pool(kind: str, name: str) -> HybridBlock:
    if kind == "avg":  # 3x3/1 "same", padding not counted (TensorFlow)
        return nn.AvgPool2D(3, strides=1, padding=1, count_include_pad=False, prefix=f"{name}_")
    return nn.MaxPool2D(3, strides=2, prefix=f"{name}_")  # 3x3/2 "valid"


class _Mixed(HybridBlock):
    """Parallel branches concatenated along channels (node ``<prefix>concat``)."""

    def __init__(self, make_branches, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.branches = nn.HybridSequential(prefix="")
            with self.branches.name_scope():
                for branch in make_branches():
                    self.branches.add(branch)

    def hybrid_forward(self, F, x):
        return F.concat(*[branch(x) for branch in self.branches], dim=1, name="concat")


class _Residual(_Mixed):
    """Residual Inception block: ``act(x + scale * conv1x1(concat(branches)))``."""

    def __init__(self, make_branches, concat_channels: int, channels: int, scale: float,
                 relu: bool = True, **kwargs):
        super().__init__(make_branches, **kwargs)
        self.scale, self.use_relu = float(scale), relu
        with self.name_scope():
            self.conv = nn.Conv2D(channels, 1, in_channels=concat_channels, prefix="conv_")

    def hybrid_forward(self, F, x):
        up = self.conv(super().hybrid_forward(F, x))
        out = F.elemwise_add(x, F._internal._mul_scalar(up, scalar=self.scale, name="scale"), name="add")
        return F.relu(out, name="relu") if self.use_relu else out


def _mixed_5b():
    return [_branch("branch0", 192, (96, 1)),
            _branch("branch1", 192, (48, 1), (64, 5)),
            _branch("branch2", 192, (64, 1), (96, 3), (96, 3)),
            _branch("branch3", 192, "avg", (64, 1))]


def _block35():
    return [_branch("branch0", 320, (32, 1)),
            _branch("branch1", 320, (32, 1), (32, 3)),
            _branch("branch2", 320, (32, 1), (48, 3), (64, 3))]


def _mixed_6a():
    return [_branch("branch0", 320, (384, 3, 2, False)),
            _branch("branch1", 320, (256, 1), (256, 3), (384, 3, 2, False)),
            _pool("max", "branch2")]


def _block17():
    return [_branch("branch0", 1088, (192, 1)),
            _branch("branch1", 1088, (128, 1), (160, (1, 7)), (192, (7, 1)))]


def _mixed_7a():
    return [_branch("branch0", 1088, (256, 1), (384, 3, 2, False)),
            _branch("branch1", 1088, (256, 1), (288, 3, 2, False)),
            _branch("branch2", 1088, (256, 1), (288, 3), (320, 3, 2, False)),
            _pool("max", "branch3")]


def _block8():
    return [_branch("branch0", 2080, (192, 1)),
            _branch("branch1", 2080, (192, 1), (224, (1, 3)), (256, (3, 1)))]


class _Flatten(HybridBlock):
    def hybrid_forward(self, F, x):
        return F.flatten(x, name="fwd")


class InceptionResNetV2(HybridBlock):
    """Inception-ResNet-v2 with global average pooling: ``(N, 3, H, W)`` → logits ``(N, num_classes)``.

    Input: RGB scaled to [-1, 1] (:func:`inception_resnet_v2_preprocess`),
    299×299 natively, any size from 75×75. Features before the classifier:
    ``(N, 1536)``; the last feature map is ``(N, 1536, 8, 8)`` at 299.
    55,843,464 parameters with 1000 classes, as in timm / Cadene.

    Parameters
    ----------
    num_classes : int
        Size of the classifier ``fc``.
    dropout : float
        Dropout rate before ``fc`` (TF-slim: keep probability 0.8).
    prefix : str
        Prefix of every parameter and graph node; ``""`` keeps the names
        stable across builds (``stem_conv2d_1a_conv_weight``, ``fc_bias``).

    Attributes
    ----------
    classifier_layer : str
        ``"fc"``.
    feature_layer : str
        ``"flatten"``, the ``(N, 1536)`` pooled features.

    Examples
    --------
    >>> import mxnet as mx
    >>> net = InceptionResNetV2(num_classes=3)
    >>> net.initialize()
    >>> net(mx.nd.zeros((1, 3, 75, 75))).shape
    (1, 3)
    """

    classifier_layer = "fc"
    feature_layer = "flatten"

    def __init__(self, num_classes: int = 1000, *, dropout: float = 0.2, prefix: str = "", **kwargs):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ConfigError(f"The 'num_classes' parameter of InceptionResNetV2 must be a positive int. "
                              f"Got {num_classes!r} instead.")
        check_range("InceptionResNetV2", "dropout", dropout, 0.0, 1.0, high_open=True)
        super().__init__(prefix=prefix, **kwargs)
        self.num_classes, self.dropout_rate = num_classes, float(dropout)
        with self.name_scope():
            self.stem = nn.HybridSequential(prefix="stem_")
            with self.stem.name_scope():
                self.stem.add(_Unit(3, 32, 3, 2, False, prefix="conv2d_1a_"),
                              _Unit(32, 32, 3, 1, False, prefix="conv2d_2a_"),
                              _Unit(32, 64, 3, prefix="conv2d_2b_"),
                              _pool("max", "maxpool_3a"),
                              _Unit(64, 80, 1, prefix="conv2d_3b_"),
                              _Unit(80, 192, 3, 1, False, prefix="conv2d_4a_"),
                              _pool("max", "maxpool_5a"))
            self.mixed_5b = _Mixed(_mixed_5b, prefix="mixed_5b_")
            self.block35 = self._repeat("block35", 10, _block35, 128, 320, 0.17)
            self.mixed_6a = _Mixed(_mixed_6a, prefix="mixed_6a_")
            self.block17 = self._repeat("block17", 20, _block17, 384, 1088, 0.10)
            self.mixed_7a = _Mixed(_mixed_7a, prefix="mixed_7a_")
            self.block8 = self._repeat("block8", 9, _block8, 448, 2080, 0.20)
            self.block8.add(_Residual(_block8, 448, 2080, 1.0, relu=False, prefix="block8_10_"))
            self.conv2d_7b = _Unit(2080, 1536, 1, prefix="conv2d_7b_")
            self.pool = nn.GlobalAvgPool2D(prefix="pool_")
            self.flatten = _Flatten(prefix="flatten_")
            self.drop = nn.Dropout(self.dropout_rate, prefix="dropout_")
            self.fc = nn.Dense(num_classes, in_units=1536, prefix="fc_")

    @staticmethod
    def _repeat(name, count, make_branches, concat_channels, channels, scale) -> nn.HybridSequential:
        seq = nn.HybridSequential(prefix="")
        for i in range(1, count + 1):
            seq.add(_Residual(make_branches, concat_channels, channels, scale, prefix=f"{name}_{i}_"))
        return seq

    def hybrid_forward(self, F, x):
        x = self.mixed_5b(self.stem(x))
        x = self.mixed_6a(self.block35(x))
        x = self.mixed_7a(self.block17(x))
        x = self.conv2d_7b(self.block8(x))
        return self.fc(self.drop(self.flatten(self.pool(x))))

    def __repr__(self) -> str:
        extra = "" if self.dropout_rate == 0.2 else f", dropout={self.dropout_rate}"
        return f"InceptionResNetV2(num_classes={self.num_classes}{extra})"


def inception_resnet_v2_preprocess() -> Preprocess:
    """The reference (TensorFlow / Cadene) preprocessing of Inception-ResNet-v2.

    RGB, ``(x - 127.5) / 127.5`` (i.e. [-1, 1]); evaluation: shorter side to
    342 (= 299 / 0.875, the reference central crop), centre crop 299×299.

    Examples
    --------
    >>> inception_resnet_v2_preprocess().size
    (299, 299)
    """
    return Preprocess(size=(299, 299), resize=342, color="RGB",
                      mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5), scale=1.0)
