"""Training losses beyond Gluon's own: softmax cross-entropy with label smoothing."""

from __future__ import annotations

from mxnet import gluon

from ..errors import check_range

__all__ = ["LabelSmoothingLoss"]


class LabelSmoothingLoss(gluon.loss.Loss):
    """Softmax cross-entropy against targets smoothed towards the uniform distribution.

    The target of an image of class ``y`` among ``K`` classes is
    ``(1 - smoothing)`` on ``y`` plus ``smoothing / K`` on every class, which
    keeps the network from driving its logits to extremes on a small data set.
    ``smoothing=0`` is plain softmax cross-entropy.

    Parameters
    ----------
    smoothing : float
        In ``[0, 1)``.

    Examples
    --------
    >>> import mxnet as mx
    >>> logits, y = mx.nd.array([[2.0, 0.0, 0.0]]), mx.nd.array([0])
    >>> plain = gluon.loss.SoftmaxCrossEntropyLoss()(logits, y).asscalar()
    >>> abs(LabelSmoothingLoss(0.0)(logits, y).asscalar() - plain) < 1e-6
    True
    >>> LabelSmoothingLoss(0.1)(logits, y).asscalar() > plain
    True
    """

    def __init__(self, smoothing: float = 0.1, weight=None, batch_axis: int = 0, **kwargs):
        check_range("LabelSmoothingLoss", "smoothing", smoothing, 0, 1, high_open=True)
        super().__init__(weight, batch_axis, **kwargs)
        self.smoothing = float(smoothing)

    def __repr__(self) -> str:
        return f"LabelSmoothingLoss(smoothing={self.smoothing})"

    def hybrid_forward(self, F, pred, label, sample_weight=None):
        logp = F.log_softmax(pred, axis=-1)
        nll = -F.pick(logp, label, axis=-1, keepdims=False)
        loss = (1.0 - self.smoothing) * nll - self.smoothing * F.mean(logp, axis=-1)
        if sample_weight is not None:
            loss = F.broadcast_mul(loss, sample_weight)
        return loss
