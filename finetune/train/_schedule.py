"""Learning-rate schedules: step, cosine with warm-up, reduce on plateau.

A schedule gives a **multiplier** of the optimizer's base learning rate as a
function of the (fractional) epoch, and may react to the metrics at the end of
each epoch. Its state is a small dict saved in checkpoints, so a resumed run
continues on the same curve. MXNet's own ``lr_scheduler`` objects count
updates, not epochs, and have no plateau logic, hence these few lines.
"""

from __future__ import annotations

import logging
import math
from numbers import Integral, Real

from .._validation import InstanceOf, Interval, Options, Sequence, validate
from ..errors import ConfigError

__all__ = ["ConstantSchedule", "CosineSchedule", "PlateauSchedule", "Schedule", "StepSchedule"]

log = logging.getLogger(__name__)


class Schedule:
    """Base class: a constant learning rate.

    Subclasses override :meth:`factor` and, to react to metrics,
    :meth:`epoch_end`.
    """

    def setup(self, epochs: int) -> None:
        """Called by :meth:`Trainer.fit` with the total number of epochs.

        Warns when the multiplier stays below 0.1 % for the whole run (a
        warm-up longer than the run trains every step at a learning rate of ~0).
        """
        self.epochs = int(epochs)
        peak = max((self.factor(e + f) for e in range(self.epochs) for f in (0.0, 0.5, 0.999)), default=1.0)
        if peak < 1e-3:
            log.warning("The learning rate stays below %.2g times its base value for the whole run of %d epoch(s) "
                        "(%r): training will change almost nothing. Shorten the warm-up or train longer.",
                        peak, self.epochs, self)

    def factor(self, epoch: float) -> float:
        """Multiplier of the base learning rate at fractional epoch ``epoch`` (0-based)."""
        return 1.0

    def epoch_end(self, epoch: int, logs: dict) -> bool:
        """Update from the metrics of the epoch just finished; return ``True`` to stop training."""
        return False

    def state_dict(self) -> dict:
        """The mutable state (JSON-ready)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "epochs")
        return f"{type(self).__name__}({args})"


class ConstantSchedule(Schedule):
    """The base learning rate throughout.

    Examples
    --------
    >>> ConstantSchedule().factor(3.5)
    1.0
    """


class StepSchedule(Schedule):
    """Multiply the learning rate by ``factor`` at given epochs (or every ``step`` epochs).

    Parameters
    ----------
    factor : float
        In (0, 1], e.g. 0.1.
    epochs : int or list of int
        An int ``n``: every ``n`` epochs; a list: at those epochs (0-based,
        the drop takes effect at the start of that epoch).

    Examples
    --------
    >>> s = StepSchedule(factor=0.1, epochs=[2, 4])
    >>> [s.factor(e) for e in range(6)]
    [1.0, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002]
    """

    _parameter_constraints = {
        "factor": Interval(Real, 0, 1, closed="right"),
        "epochs": [Interval(Integral, 1, None), Sequence(Interval(Integral, 0, None))],
    }

    def __init__(self, factor: float = 0.1, epochs=10):
        validate("StepSchedule", {"factor": factor, "epochs": epochs}, self._parameter_constraints)
        self.factor_ = float(factor)
        self.epochs_at = epochs

    def factor(self, epoch: float) -> float:
        e = int(math.floor(epoch + 1e-9))
        if not isinstance(self.epochs_at, (list, tuple)):
            n = e // max(1, self.epochs_at)
        else:
            n = sum(e >= m for m in self.epochs_at)
        return self.factor_ ** n

    def __repr__(self) -> str:
        return f"StepSchedule(factor={self.factor_!r}, epochs={self.epochs_at!r})"


class CosineSchedule(Schedule):
    """Linear warm-up, then cosine decay to ``final`` (a fraction of the base LR).

    Parameters
    ----------
    warmup_epochs : float
        Epochs of linear warm-up from ``warmup_start`` to 1.
    final : float
        Multiplier reached at the last epoch.
    warmup_start : float
        Multiplier at the very start of warm-up.

    Examples
    --------
    >>> s = CosineSchedule(warmup_epochs=1)
    >>> s.setup(epochs=5)
    >>> [round(s.factor(e), 3) for e in (0, 0.5, 1, 3, 5)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """

    _parameter_constraints = {
        "warmup_epochs": Interval(Real, 0, None),
        "final": Interval(Real, 0, 1),
        "warmup_start": Interval(Real, 0, 1),
    }

    def __init__(self, warmup_epochs: float = 0.0, final: float = 0.0, warmup_start: float = 0.0):
        validate("CosineSchedule", {"warmup_epochs": warmup_epochs, "final": final, "warmup_start": warmup_start},
                 self._parameter_constraints)
        self.warmup_epochs = float(warmup_epochs)
        self.final = float(final)
        self.warmup_start = float(warmup_start)
        self.epochs = None

    def setup(self, epochs: int) -> None:
        """As :meth:`Schedule.setup`; also warns when the warm-up is not shorter than the run."""
        super().setup(epochs)
        if self.warmup_epochs and self.epochs and self.warmup_epochs >= self.epochs:
            log.warning("The warm-up of %g epoch(s) is not shorter than the run of %d epoch(s) (%r): the learning "
                        "rate never reaches its base value. Shorten the warm-up or train longer.",
                        self.warmup_epochs, self.epochs, self)

    def factor(self, epoch: float) -> float:
        if self.epochs is None:
            raise ConfigError("CosineSchedule needs the number of epochs; Trainer.fit calls setup(epochs).")
        if epoch < self.warmup_epochs:
            return self.warmup_start + (1 - self.warmup_start) * epoch / self.warmup_epochs
        span = max(self.epochs - self.warmup_epochs, 1e-9)
        t = min(max((epoch - self.warmup_epochs) / span, 0.0), 1.0)
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t))


class PlateauSchedule(Schedule):
    """Reduce the learning rate when a metric stops improving; optionally stop after N reductions.

    The classic small-data recipe "divide by 5 whenever validation accuracy
    drops, stop after the third drop" is
    ``PlateauSchedule(factor=0.2, patience=0, monitor="val_top1", stop_after=3)``.

    Parameters
    ----------
    factor : float
        In (0, 1): multiply the LR by this on a plateau.
    patience : int
        Epochs without improvement tolerated before reducing (0: reduce at
        the first epoch that does not improve on the best so far).
    monitor : str
        A key of the epoch logs, e.g. ``"val_top1"``, ``"val_loss"``.
    mode : {"auto", "max", "min"}
        ``"auto"``: ``max`` for accuracies, ``min`` for losses.
    stop_after : int, optional
        Stop training when the number of reductions reaches this (the
        reduction that reaches it is not trained with).
    min_delta : float
        Smallest change that counts as an improvement.

    Examples
    --------
    >>> s = PlateauSchedule(factor=0.2, monitor="val_top1", stop_after=2)
    >>> [s.epoch_end(e, {"val_top1": a}) for e, a in enumerate([0.5, 0.6, 0.55, 0.7, 0.65])]
    [False, False, False, False, True]
    >>> round(s.factor(5), 4)
    0.04
    """

    _parameter_constraints = {
        "factor": Interval(Real, 0, 1, closed="neither"),
        "patience": Interval(Integral, 0, None),
        "monitor": InstanceOf(str, name="a key of the epoch logs (str)"),
        "mode": Options(["auto", "max", "min"]),
        "stop_after": [Interval(Integral, 1, None), None],
        "min_delta": Interval(Real, 0, None),
    }

    def __init__(self, factor: float = 0.1, patience: int = 0, monitor: str = "val_top1", mode: str = "auto",
                 stop_after: int | None = None, min_delta: float = 0.0):
        validate("PlateauSchedule", {"factor": factor, "patience": patience, "monitor": monitor, "mode": mode,
                                     "stop_after": stop_after, "min_delta": min_delta}, self._parameter_constraints)
        self.factor_ = float(factor)
        self.patience = int(patience)
        self.monitor = monitor
        self.mode = mode
        self.stop_after = stop_after
        self.min_delta = float(min_delta)
        self._state = {"best": None, "bad": 0, "reductions": 0}

    def _mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "min" if "loss" in self.monitor else "max"

    def factor(self, epoch: float) -> float:
        return self.factor_ ** self._state["reductions"]

    @property
    def reductions(self) -> int:
        """How many times the learning rate was reduced so far."""
        return self._state["reductions"]

    def epoch_end(self, epoch: int, logs: dict) -> bool:
        value = logs.get(self.monitor)
        if value is None:
            raise ConfigError(
                f"PlateauSchedule monitors {self.monitor!r}, which the epoch logs do not have "
                f"(they have {sorted(logs)}). Pass validation data or monitor a training metric."
            )
        st = self._state
        sign = 1 if self._mode() == "max" else -1
        if st["best"] is None or sign * (value - st["best"]) > self.min_delta:
            st["best"], st["bad"] = value, 0
            return False
        st["bad"] += 1
        if st["bad"] > self.patience:
            st["reductions"] += 1
            st["bad"] = 0
            log.info("%s did not improve (%.4g, best %.4g): learning rate x%g (reduction %d)",
                     self.monitor, value, st["best"], self.factor_, st["reductions"])
            if self.stop_after is not None and st["reductions"] >= self.stop_after:
                log.info("Stopping after %d learning-rate reductions.", st["reductions"])
                return True
        return False

    def state_dict(self) -> dict:
        return dict(self._state)

    def load_state_dict(self, state: dict) -> None:
        self._state = dict(state)

    def __repr__(self) -> str:
        return (f"PlateauSchedule(factor={self.factor_!r}, patience={self.patience!r}, monitor={self.monitor!r}, "
                f"stop_after={self.stop_after!r})")


_SCHEDULES = {"constant": ConstantSchedule, "step": StepSchedule, "cosine": CosineSchedule,
              "plateau": PlateauSchedule}
