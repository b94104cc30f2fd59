"""Validation: loss, top-1 and top-5 accuracy of a network over a dataset, with optional mirror TTA.

:func:`batch_stats` is the one place the counts are computed, for training
batches and validation alike (with, for training, :func:`input_peak` — the
check that the inputs were finite — read in the same transfer from the
device); :func:`evaluate` runs a network in inference
mode over a dataset and, with ``tta``, averages the logits of each image and
of its left-right mirror.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..data import RecordDataset

__all__ = ["batch_stats", "evaluate", "input_peak"]


def input_peak(x):
    """The largest absolute value of a batch, as a ``(1,)`` float32 NDArray on the batch's device.

    It is finite exactly when every value of ``x`` is: MXNet's ``max``
    propagates NaN, an infinity stays one, and unlike a sum the maximum of
    finite values cannot overflow (float16 batches included). Computed on the
    device, without copying the batch to host memory; integer batches, which
    cannot hold NaN, give ``None``.

    Examples
    --------
    >>> x = mx.nd.array([[1.0, -3e38], [3e38, 2.0]])
    >>> float(input_peak(x).asscalar()) == float(np.float32(3e38))
    True
    >>> x[0, 0] = np.nan
    >>> bool(np.isnan(input_peak(x).asscalar()))
    True
    """
    if np.dtype(x.dtype).kind != "f":
        return None
    return mx.nd.abs(x).max().reshape((1,)).astype("float32")


def batch_stats(out, y, loss, peak=None) -> np.ndarray:
    """``[loss sum, top-1 hits, top-5 hits, count]`` of one device's batch, then ``peak`` if given.

    ``peak`` (an :func:`input_peak` on the same device) is read back in the
    same transfer as the counts, so checking the inputs costs no extra
    synchronisation.
    """
    y = y.astype("float32").reshape((-1, 1))
    out = out.astype("float32")
    k = min(5, out.shape[1])
    top = mx.nd.topk(out, k=k, axis=1)
    hits = mx.nd.broadcast_equal(top, y)
    fields = [loss.sum().reshape(1), hits[:, 0].sum().reshape(1), hits.sum().reshape(1)]
    if peak is not None:
        fields.append(peak.as_in_context(hits.context).astype(hits.dtype))
    values = mx.nd.concat(*fields, dim=0).asnumpy().astype(np.float64)
    return np.concatenate([values[:3], [out.shape[0]], values[3:]])


def evaluate(net, dataset, loss, split, batch_size: int, workers: int = 0, tta: bool = False, loader=None) -> dict:
    """``{"loss", "top1", "top5"}`` of ``net`` on ``dataset``.

    Parameters
    ----------
    net : callable
        Maps a device's images ``(n, C, H, W)`` (or features) to logits ``(n, K)``.
    dataset : Dataset
        Items ``(image, label)``; a :class:`~finetune.RecordDataset` is read by
        its shared-memory loader when ``workers > 0``.
    loss : gluon.loss.Loss
    split : callable
        ``split(x, y) -> (xs, ys)``: a batch spread over the devices.
    batch_size, workers : int
    tta : bool
        Average the logits of each image and of its left-right mirror (4-D inputs only).
    loader : iterable, optional
        Batches of ``dataset`` to read instead of opening a loader (it stays
        open: a Trainer keeps one for its validation set, so the worker
        processes are not started again every epoch).
    """
    own = loader is None
    if own and isinstance(dataset, RecordDataset) and workers > 0:
        loader = dataset.loader(batch_size, shuffle=False, workers=workers)
    elif own:
        loader = gluon.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    acc = np.zeros(4)
    try:
        for x, y in loader:
            xs, ys = split(x, y)
            for xi, yi in zip(xs, ys):
                out = net(xi)
                if tta and xi.ndim == 4:
                    out = (out + net(mx.nd.flip(xi, axis=3))) / 2
                acc += batch_stats(out, yi, loss(out, yi))
    finally:
        if own and hasattr(loader, "close"):
            loader.close()
    n = max(acc[3], 1)
    return {"loss": acc[0] / n, "top1": acc[1] / n, "top5": acc[2] / n}
