"""The constraint types of :mod:`finetune._validation`: predicates and their descriptions, nothing raised.

They import nothing from finetune, so :mod:`finetune.errors` (``check_range``,
``check_choice``) and :mod:`finetune._validation` (``validate``) can both use them.

Examples
--------
>>> from numbers import Real
>>> Interval(Real, 0, None, closed="neither").is_satisfied_by(float("nan"))
False
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

__all__ = ["Constraint", "InstanceOf", "Interval", "Options", "Sequence", "describe", "is_number", "satisfies",
           "show"]

_INT64 = 2 ** 63 - 1
#: The largest magnitude of a float parameter: MXNet computes in float32, so a larger value is infinite there
#: (a learning rate of ``1e39`` made every weight infinite; ``1e308`` crashed MXNet's optimizer).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def magnitude_note(value) -> str:
    """``" (the largest value it can take is ...)"`` when ``value`` is a number only too large to be held, else ``""``."""
    if not is_number(value):
        return ""
    if isinstance(value, (Integral, np.integer)) and abs(int(value)) > _INT64:
        return f" (the largest whole number it can take is {_INT64})"
    try:
        x = abs(float(value))
    except (OverflowError, ValueError, TypeError):
        return ""
    return f" (the largest value it can take is {FLOAT32_MAX:.4g})" if FLOAT32_MAX < x < math.inf else ""


def is_number(value, kind=Real) -> bool:
    """Whether ``value`` is a number of ``kind`` (``Real`` or ``Integral``); a bool is not a number.

    Examples
    --------
    >>> is_number(True), is_number(3), is_number(np.float32(1.5)), is_number("1"), is_number(3.0, Integral)
    (False, True, True, False, False)
    """
    if isinstance(value, (bool, np.bool_)):
        return False
    if kind is Integral:
        return isinstance(value, (Integral, np.integer))
    return isinstance(value, (Real, np.integer, np.floating))


class Constraint:
    """A rule a value must meet: :meth:`is_satisfied_by` and a description (``str``) for messages."""

    def is_satisfied_by(self, value) -> bool:
        raise NotImplementedError

    def __str__(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self}>"


class Interval(Constraint):
    """A number of a type (``Integral`` or ``Real``) between two bounds.

    Parameters
    ----------
    kind : {numbers.Integral, numbers.Real}
        ``Integral`` accepts Python and NumPy integers; ``Real`` also floats.
        A bool is neither.
    left, right : float or None
        The bounds; ``None`` is unbounded.
    closed : {"both", "left", "right", "neither"}
        Which bounds belong to the interval.
    allow_inf : bool
        Accept ``inf`` / ``-inf`` (when the bounds allow them). Default: only
        finite values. NaN never passes; neither does an integer that does
        not fit in 64 bits, or a float beyond float32's range (``FLOAT32_MAX``):
        MXNet computes in float32.

    Examples
    --------
    >>> str(Interval(Integral, 1, None))
    'an int in [1, inf)'
    >>> Interval(Real, 0, 1, closed="right").is_satisfied_by(1)
    True
    >>> Interval(Real, 0, None).is_satisfied_by(float("inf"))
    False
    """

    def __init__(self, kind, left=None, right=None, *, closed: str = "both", allow_inf: bool = False):
        if kind not in (Integral, Real):
            raise TypeError(f"Interval kind must be numbers.Integral or numbers.Real, not {kind!r}.")
        if closed not in ("both", "left", "right", "neither"):
            raise TypeError(f"Interval closed must be 'both', 'left', 'right' or 'neither', not {closed!r}.")
        self.kind, self.left, self.right, self.closed, self.allow_inf = kind, left, right, closed, allow_inf

    def is_satisfied_by(self, value) -> bool:
        if not is_number(value, self.kind):
            return False
        try:
            if self.kind is Integral:
                x = int(value)
                if abs(x) > _INT64:
                    return False
            else:
                x = float(value)
        except (OverflowError, ValueError, TypeError):
            return False
        if math.isnan(x) or (math.isinf(x) and not self.allow_inf):
            return False
        if self.kind is Real and FLOAT32_MAX < abs(x) < math.inf:  # infinite for MXNet's float32
            return False
        if self.left is not None:
            if x < self.left or (x == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if x > self.right or (x == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def bounds(self) -> str:
        """The interval as text, e.g. ``(0, 1]``."""
        left = "[" if self.closed in ("both", "left") and self.left is not None else "("
        right = "]" if self.closed in ("both", "right") and self.right is not None else ")"
        lo = "-inf" if self.left is None else _num(self.left)
        hi = "inf" if self.right is None else _num(self.right)
        return f"{left}{lo}, {hi}{right}"

    def __str__(self) -> str:
        what = "an int" if self.kind is Integral else "a float" if self.allow_inf else "a finite float"
        return f"{what} in {self.bounds()}"


class Options(Constraint):
    """One of a set of values, compared by type as well (``1`` is not ``True``, ``1.0`` is not ``"1"``).

    Examples
    --------
    >>> Options({"auto", True, False}).is_satisfied_by(1)
    False
    >>> str(Options({"max", "min"}))
    "one of 'max', 'min'"
    """

    def __init__(self, options):
        self.options = list(options)

    def is_satisfied_by(self, value) -> bool:
        return any(_same(value, o) for o in self.options)

    def __str__(self) -> str:
        shown = sorted(self.options, key=lambda o: (type(o).__name__, str(o)))
        if len(shown) == 1:
            return repr(shown[0])
        return "one of " + ", ".join(repr(o) for o in shown)


class Sequence(Constraint):
    """A list or tuple whose length is in ``lengths`` and whose items all meet ``item``.

    Examples
    --------
    >>> size = Sequence(Interval(Integral, 1, 4096), lengths=(2,))
    >>> size.is_satisfied_by((224, 224)), size.is_satisfied_by((224, "abc")), size.is_satisfied_by("ab")
    (True, False, False)
    >>> str(size)
    'a sequence of 2 items, each an int in [1, 4096]'
    """

    def __init__(self, item: Constraint, lengths=None):
        self.item, self.lengths = item, None if lengths is None else tuple(lengths)

    def is_satisfied_by(self, value) -> bool:
        if not isinstance(value, (list, tuple, np.ndarray)) or (isinstance(value, np.ndarray) and value.ndim != 1):
            return False
        if self.lengths is not None and len(value) not in self.lengths:
            return False
        return all(self.item.is_satisfied_by(v.item() if isinstance(v, np.generic) else v) for v in value)

    def __str__(self) -> str:
        n = "" if self.lengths is None else _alternatives([str(k) for k in self.lengths]) + " "
        return f"a sequence of {n}items, each {self.item}"


class InstanceOf(Constraint):
    """An instance of a type (or one of several), e.g. an ``Augment`` or an ``mx.init.Initializer``."""

    def __init__(self, *types, name: str | None = None):
        self.types, self.name = types, name

    def is_satisfied_by(self, value) -> bool:
        return isinstance(value, self.types)

    def __str__(self) -> str:
        return self.name or "an instance of " + " or ".join(t.__name__ for t in self.types)


def _num(x) -> str:
    """A bound as text: ``0`` rather than ``0.0``."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _same(value, option) -> bool:
    """``value == option`` for the same kind of value (bools only equal bools; NaN equals nothing)."""
    if isinstance(value, (bool, np.bool_)) or isinstance(option, (bool, np.bool_)):
        return isinstance(value, (bool, np.bool_)) and isinstance(option, (bool, np.bool_)) and \
            bool(value) == bool(option)
    if option is None or value is None:
        return value is option
    if isinstance(option, str) != isinstance(value, str):
        return False
    try:
        return bool(value == option)
    except (ValueError, TypeError):  # arrays and odd objects
        return False


def _as_constraint(c) -> Constraint:
    if isinstance(c, Constraint):
        return c
    if c is None:
        return Options([None])
    raise TypeError(f"Not a constraint: {c!r}")


def satisfies(value, constraints) -> bool:
    """Whether ``value`` meets one of ``constraints`` (a constraint, ``None``, or a list of those)."""
    if not isinstance(constraints, list):
        constraints = [constraints]
    return any(_as_constraint(c).is_satisfied_by(value) for c in constraints)


def describe(constraints) -> str:
    """The constraints as a phrase: ``"a finite float in (0, 1) or None"``."""
    if not isinstance(constraints, list):
        constraints = [constraints]
    return _alternatives(["None" if c is None else str(c) for c in constraints])


def _alternatives(parts) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def show(value) -> str:
    """A value as a message shows it: ``repr``, shortened when very long."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
