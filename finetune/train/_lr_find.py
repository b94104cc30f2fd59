"""The learning-rate range test: train briefly with an exponentially growing LR and watch the loss.

The loss of a network trained with a learning rate rising from tiny to huge
first stays flat, then falls steeply, then explodes. A good learning rate lies
on the steep descent; :func:`lr_find` suggests the point of steepest descent of
the smoothed loss (in log-LR), before its minimum. Everything the test changes
on the model — weights, BatchNorm statistics and modes, gradients, ``lr_mult``,
``wd_mult``, ``grad_req``, devices, the Gluon trainer the parameters are tied
to (recorded by ``_model_state.py``) — and the ``numpy`` and ``random``
generator states are put back afterwards, so the test leaves no
trace (MXNet's own generator, which it reseeds, cannot be read back).
"""

from __future__ import annotations

import json
import logging
import math
import random

import numpy as np

from .._file_writes import atomic_open
from ..errors import ConfigError, check_range
from ._callbacks import Callback, StopTraining
from ._model_state import ModelState
from ._schedule import Schedule

__all__ = ["LRFinderResult", "lr_find"]

log = logging.getLogger(__name__)


class _Exponential(Schedule):
    """Factor ``(end / start) ** (t / total)`` where ``t`` counts epochs (fractional)."""

    def __init__(self, ratio: float, total_epochs: float):
        self.ratio, self.total = ratio, total_epochs

    def factor(self, epoch: float) -> float:
        return self.ratio ** min(epoch / self.total, 1.0)


class _Record(Callback):
    def __init__(self, num_steps, diverge):
        self.num_steps, self.diverge = num_steps, diverge
        self.lrs, self.losses = [], []
        self._prev = np.zeros(4)

    def on_epoch_begin(self, trainer, epoch):
        self._prev = np.zeros(4)

    def on_batch_end(self, trainer, epoch, batch, logs):
        acc = np.asarray(trainer._acc, dtype=float)
        d = acc - self._prev
        self._prev = acc.copy()
        loss = d[0] / max(d[3], 1)
        self.lrs.append(float(trainer._trainer.learning_rate))
        self.losses.append(float(loss))
        smooth = _smooth(self.losses)
        if len(self.losses) >= self.num_steps:
            raise StopTraining("LR range covered")
        if len(smooth) > 5 and (not math.isfinite(smooth[-1]) or smooth[-1] > self.diverge * np.nanmin(smooth)):
            raise StopTraining("loss diverged")


def _smooth(losses, beta: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average of the per-batch losses."""
    out, avg = [], 0.0
    for i, v in enumerate(losses):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return np.asarray(out)


class LRFinderResult:
    """The learning rates tried, their batch losses and the suggested learning rate.

    Attributes
    ----------
    lrs, losses : numpy.ndarray
        One entry per training step.
    smoothed : numpy.ndarray
        The losses' bias-corrected moving average.
    suggestion : float
        The learning rate of steepest descent of ``smoothed`` before its minimum.

    Examples
    --------
    >>> lrs = np.logspace(-6, 0, 60)
    >>> losses = 2 - np.tanh(np.log10(lrs) + 3) + np.where(lrs > 0.1, 50 * lrs, 0)
    >>> r = LRFinderResult(lrs, losses)
    >>> 1e-4 < r.suggestion < 1e-2
    True
    """

    def __init__(self, lrs, losses):
        self.lrs = np.asarray(lrs, dtype=float)
        self.losses = np.asarray(losses, dtype=float)
        if len(self.lrs) != len(self.losses) or len(self.lrs) < 3:
            raise ConfigError(f"An LR range test needs at least 3 steps; got {len(self.lrs)}. "
                              "Use more training data, a smaller batch_size or more num_steps.")
        self.smoothed = _smooth(self.losses)
        self.suggestion = self._suggest()

    def __repr__(self) -> str:
        return f"LRFinderResult({len(self.lrs)} steps, {self.lrs[0]:.2g}..{self.lrs[-1]:.2g}, suggestion={self.suggestion:.3g})"

    def _suggest(self) -> float:
        s = np.where(np.isfinite(self.smoothed), self.smoothed, np.inf)
        stop = int(np.argmin(s)) + 1
        if stop < 3:
            return float(self.lrs[0])
        x, y = np.log10(self.lrs[:stop]), s[:stop]
        slope = np.gradient(y, x)
        return float(self.lrs[int(np.argmin(slope))])

    def plot(self, ax=None):
        """Loss against learning rate (log scale), the suggestion marked; returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, alpha=0.3, label="batch loss")
        ax.plot(self.lrs, self.smoothed, label="smoothed")
        ax.axvline(self.suggestion, color="C3", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        lo, hi = np.nanmin(self.smoothed), np.nanmax(self.smoothed[: max(3, len(self.smoothed) // 2)])
        if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
            ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.5 * (hi - lo))
        ax.legend()
        return ax

    def to_dict(self) -> dict:
        return {"lrs": self.lrs.tolist(), "losses": self.losses.tolist(), "suggestion": self.suggestion}

    def save(self, path) -> None:
        """Write the result as JSON (``lrs``, ``losses``, ``suggestion``), atomically."""
        with atomic_open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)


def lr_find(model, train, *, start_lr: float = 1e-7, end_lr: float = 1.0, num_steps: int = 100,
            diverge: float = 4.0, policy=None, optimizer: str = "adam", optimizer_params=None,
            batch_size: int = 32, ctx=None, loss=None, seed: int = 0, progress: bool = True) -> LRFinderResult:
    """Run the LR range test on ``model`` and ``train``; the model is left exactly as it was.

    The test trains ``model`` itself for up to ``num_steps`` steps, with
    ``policy`` applied and on ``ctx``; afterwards its weights, BatchNorm
    statistics and modes, gradients, per-parameter ``lr_mult`` / ``wd_mult``
    / ``grad_req`` and devices are put back, and so are the ``numpy`` and
    ``random`` generator states. The model is run as it is: hybridized only if
    it already was.

    Parameters
    ----------
    model : mxnet.gluon.HybridBlock
    train : Dataset or (images, labels)
        As for :meth:`Trainer.fit`.
    start_lr, end_lr : float
        The range, covered exponentially in ``num_steps`` steps.
    num_steps : int
    diverge : float
        Stop early once the smoothed loss exceeds ``diverge`` times its minimum.
    policy, optimizer, optimizer_params, batch_size, ctx, loss, seed, progress
        As for :class:`Trainer`; use the ones training will use.

    Returns
    -------
    LRFinderResult

    Raises
    ------
    ModelError
        A parameter of ``model`` has no value yet (initialise the model first).

    Examples
    --------
    >>> import mxnet as mx
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential(prefix=""); net.add(nn.Dense(3, in_units=5, prefix="head_"))
    >>> net.initialize(mx.init.Xavier())
    >>> rng = np.random.RandomState(0); x = rng.rand(256, 5).astype("float32"); y = (x[:, 0] * 3).astype(int)
    >>> r = lr_find(net, (x, y), start_lr=1e-4, end_lr=10, num_steps=40, batch_size=16, progress=False)
    >>> 1e-4 <= r.suggestion <= 10
    True
    """
    from ._config import TrainConfig
    from ._trainer import Trainer

    check_range("lr_find", "start_lr", start_lr, 0, None, low_open=True)
    if not end_lr > start_lr:
        raise ConfigError(f"lr_find needs end_lr > start_lr. Got start_lr={start_lr!r}, end_lr={end_lr!r}.")
    check_range("lr_find", "num_steps", num_steps, 3)
    check_range("lr_find", "diverge", diverge, 1, None, low_open=True)
    opt = dict(optimizer_params or {})
    opt["learning_rate"] = start_lr
    n = len(train[0]) if isinstance(train, tuple) else len(train)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    epochs = math.ceil(num_steps / steps_per_epoch)
    record = _Record(num_steps, diverge)
    config = TrainConfig(optimizer=optimizer, optimizer_params=opt, batch_size=batch_size, loss=loss, seed=seed,
                         progress=progress, cache_features=False, hybridize=False,
                         schedule=_Exponential(end_lr / start_lr, num_steps / steps_per_epoch))
    trainer = Trainer(model, config, policy=policy, ctx=ctx)
    saved, np_rng, py_rng = ModelState.capture(model), np.random.get_state(), random.getstate()
    try:
        trainer.fit(train, epochs=epochs, callbacks=[record])
    finally:
        saved.restore()
        np.random.set_state(np_rng)
        random.setstate(py_rng)
    result = LRFinderResult(record.lrs, record.losses)
    log.info("LR range test: %d steps from %.2g to %.2g, suggestion %.3g", len(result.lrs), result.lrs[0],
             result.lrs[-1], result.suggestion)
    return result
