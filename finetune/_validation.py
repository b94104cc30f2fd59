"""Typed constraints on parameter values, checked where values enter the library.

Every value that comes from a caller, a command-line flag or a file passes
one of these constraints at the boundary (a constructor, a flag parser, a
``config.json`` reader); the code behind it trusts the value. The idea is
scikit-learn's parameter validation (``Interval(Real, 0, None,
closed="neither")``, ``StrOptions``); written here because scikit-learn's
is private and we need a few things it does not do: NaN, infinities and
overflowing values never pass a numeric constraint unless asked for, a bool
is never a number, and a constraint can describe sequences of N numbers.

A failed check raises :class:`~finetune.errors.ConfigError` with the
scikit-learn style message::

    The 'lr' parameter of Trainer must be a finite float in (0, inf). Got nan instead.

Examples
--------
>>> from numbers import Integral, Real
>>> Interval(Real, 0, None, closed="neither").is_satisfied_by(float("nan"))
False
>>> validate("Trainer", {"lr": float("nan")}, {"lr": [Interval(Real, 0, None, closed="neither")]})
Traceback (most recent call last):
...
finetune.errors.ConfigError: The 'lr' parameter of Trainer must be a finite float in (0, inf). Got nan instead.
>>> validate("Trainer", {"ema": None}, {"ema": [Interval(Real, 0, 1, closed="neither"), None]})
"""

from __future__ import annotations

from numbers import Integral

from ._constraints import (Constraint, InstanceOf, Interval, Options, Sequence, _alternatives, describe, is_number,
                           magnitude_note, satisfies, show)
from .errors import ConfigError

__all__ = ["SEED", "Constraint", "InstanceOf", "Interval", "Options", "Sequence", "describe", "is_number",
           "satisfies", "show", "validate"]

#: A random seed, as NumPy's ``RandomState`` takes it.
SEED = Interval(Integral, 0, 2 ** 32 - 1)


def validate(owner: str, params: dict, constraints: dict) -> None:
    """Raise :class:`ConfigError` unless every value of ``params`` meets its constraints.

    Parameters
    ----------
    owner : str
        Who the parameters belong to, for the message (``"Trainer"``,
        ``"config.json of 'model'"``); ``""`` leaves it out.
    params : dict
        ``{name: value}``; names without a constraint are not checked.
    constraints : dict
        ``{name: constraint or list of constraints}``; a value passes when it
        meets one of them. ``None`` in a list allows ``None``.

    Raises
    ------
    ConfigError
        ``The 'lr' parameter of Trainer must be a finite float in (0, inf). Got nan instead.``;
        for a number of the right kind that is only out of range, the message
        gives the range alone: ``The 'decay' parameter of LayerLRPolicy must be
        in (0, 1]. Got 1.5 instead.``
    """
    of = f" of {owner}" if owner else ""
    for name, value in params.items():
        if name in constraints and not satisfies(value, constraints[name]):
            raise ConfigError(f"The {name!r} parameter{of} must be {_wanted(value, constraints[name])}. "
                              f"Got {show(value)} instead{magnitude_note(value)}.")


def _wanted(value, constraints) -> str:
    """What the value should be; an interval is given by its range alone when the value is a number of its kind."""
    constraints = constraints if isinstance(constraints, list) else [constraints]
    if not any(isinstance(c, Interval) and Interval(c.kind, allow_inf=c.allow_inf).is_satisfied_by(value)
               for c in constraints):
        return describe(constraints)
    return _alternatives(["None" if c is None else "in " + c.bounds() if isinstance(c, Interval) else str(c)
                          for c in constraints])
