"""Tiny stand-in models that follow the model protocol (a HybridBlock with
``.preprocess``, ``.class_names`` and ``.inference``), so most tests of prediction, evaluation and plots run in
well under a second without the real backbones."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest

from finetune import Inference, Preprocess


class TinyNet(mx.gluon.HybridBlock):
    """conv(3->4) - relu - conv(4->8) - relu - global avg pool - dense(K): logits."""

    def __init__(self, classes=3, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv1 = mx.gluon.nn.Conv2D(4, 3, padding=1, in_channels=3)
            self.conv2 = mx.gluon.nn.Conv2D(8, 3, padding=1, in_channels=4)
            self.pool = mx.gluon.nn.GlobalAvgPool2D()
            self.fc = mx.gluon.nn.Dense(classes, in_units=8)

    def hybrid_forward(self, F, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(F.flatten(self.pool(x)))


def make_tiny(classes=("cat", "dog", "fish"), size=16, color="RGB", seed=0):
    mx.random.seed(seed)
    net = TinyNet(len(classes), prefix="tiny_")
    net.initialize(mx.init.Xavier(magnitude=3))
    # make the classes depend on colour: class c likes channel c (network colour order)
    net.conv1.weight.set_data(mx.nd.array(np.random.default_rng(seed).normal(0, 0.3, (4, 3, 3, 3))))
    net.preprocess = Preprocess(size=(size, size), resize=size, color=color,
                                mean=(127, 127, 127), std=(64, 64, 64))
    net.class_names = list(classes)
    net.inference = Inference()
    return net


@pytest.fixture
def tiny_model():
    return make_tiny()


@pytest.fixture
def plot_dir(tmp_path):
    """Where tests write their figures: a temporary folder, or ``docs/_static`` when
    ``FINETUNE_SAVE_DOC_PLOTS=1`` (how the pictures in the docs are made)."""
    import os
    from pathlib import Path

    if os.environ.get("FINETUNE_SAVE_DOC_PLOTS") == "1":
        out = Path(__file__).resolve().parents[2] / "docs" / "_static"
        out.mkdir(exist_ok=True)
        return out
    return tmp_path
