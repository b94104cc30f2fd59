"""A tiny network that follows the model protocol, for examples and tests.

It lets the features code (and its docstring examples) run in milliseconds
without pretrained weights: two ReLU conv layers, global average pooling and
a fully connected classifier, with named layers like a real backbone.
"""

from __future__ import annotations

import mxnet as mx
from mxnet import gluon

from ..data import Preprocess

__all__ = ["TinyNet"]


class TinyNet(gluon.HybridBlock):
    """Protocol stand-in: ``conv1 relu1 conv2 relu2 pool fc`` (``fc`` gives the logits).

    Parameters
    ----------
    classes : int
        Number of outputs of ``fc``.
    channels : int
        Channels of both conv layers.
    seed : int
        Seed of the random initialisation.

    Examples
    --------
    >>> import mxnet as mx
    >>> net = TinyNet()
    >>> [o.shape for o in net.features(mx.nd.zeros((1, 3, 16, 20)), ["relu2", "fc"])]
    [(1, 8, 8, 10), (1, 4)]
    """

    layer_names = ["conv1", "relu1", "conv2", "relu2", "pool", "fc"]

    def __init__(self, classes: int = 4, channels: int = 8, seed: int = 0):
        super().__init__(prefix="tiny_")
        self.preprocess = Preprocess(size=(16, 16), resize=16, mean=(127, 127, 127), std=(128, 128, 128))
        self.class_names = [f"c{i}" for i in range(classes)]
        with self.name_scope():
            self.conv1 = gluon.nn.Conv2D(channels, 3, padding=1, in_channels=3)
            self.conv2 = gluon.nn.Conv2D(channels, 3, strides=2, padding=1, in_channels=channels)
            self.fc = gluon.nn.Dense(classes, in_units=channels)
        mx.random.seed(seed)
        self.initialize(mx.init.Xavier())

    def _all(self, F, x):
        outs = {}
        outs["conv1"] = x = self.conv1(x)
        outs["relu1"] = x = F.relu(x)
        outs["conv2"] = x = self.conv2(x)
        outs["relu2"] = x = F.relu(x)
        outs["pool"] = x = F.mean(x, axis=(2, 3))
        outs["fc"] = self.fc(x)
        return outs

    def hybrid_forward(self, F, x):
        return self._all(F, x)["fc"]

    def features(self, x, layers):
        """Outputs of the named layers, in the order asked."""
        outs = self._all(mx.nd, x)
        return [outs[name] for name in layers]
