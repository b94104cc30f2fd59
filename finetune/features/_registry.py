"""Every pooling by name: :func:`get_pooling` and :func:`pooling_names`."""

from __future__ import annotations

from ..errors import ConfigError, UnknownNameError
from ._mop import MOP
from ._pooling import RMAC, AvgPooling, CroW, GeM, MaxPooling, Pooling, SumPooling

__all__ = ["get_pooling", "pooling_names"]


_REGISTRY = {
    "sum": SumPooling, "spoc": SumPooling,
    "avg": AvgPooling, "mean": AvgPooling,
    "max": MaxPooling, "mac": MaxPooling,
    "gem": GeM, "crow": CroW, "rmac": RMAC,
}


def pooling_names() -> list:
    """Every name :func:`get_pooling` accepts."""
    return sorted([*_REGISTRY, "mop"])


def get_pooling(spec, **kwargs):
    """A pooling object from a name (``"sum"``, ``"avg"``, ``"max"``, ``"gem"``, ``"crow"``,
    ``"rmac"``, ``"mop"``; aliases ``"spoc"``, ``"mean"``, ``"mac"``) or an existing pooling.

    Parameters
    ----------
    spec : str or Pooling
        A name, or a pooling object returned as is.
    **kwargs
        Constructor arguments, e.g. ``p=3`` for GeM, ``levels=3`` for R-MAC.

    Examples
    --------
    >>> get_pooling("gem", p=4.0)
    GeM(p=4.0, learnable=False, eps=1e-06)
    >>> get_pooling("rmac")
    RMAC(levels=3, global_mac=False, overlap=0.4)
    """
    if isinstance(spec, Pooling):
        if kwargs:
            raise ConfigError("get_pooling: keyword arguments only go with a pooling name.")
        return spec
    name = str(spec).lower()
    if name == "mop":
        return MOP(**kwargs)
    if name not in _REGISTRY:
        raise UnknownNameError("pooling", spec, pooling_names())
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"Bad arguments for pooling {name!r}: {exc}") from None
