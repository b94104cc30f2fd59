"""Policy rules: parameters chosen by name (glob, or a regular expression prefixed ``re:``).

A :class:`Rule` gives the parameters whose name matches its pattern a
learning-rate and weight-decay multiplier and says whether they train;
:class:`~finetune.train.LayerLRPolicy` is a list of them.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from numbers import Real

from .._validation import InstanceOf, Interval, Options, validate
from ..errors import ConfigError

__all__ = ["Rule"]


_RULE_CONSTRAINTS = {
    "pattern": InstanceOf(str, name="a glob pattern or 're:' regular expression (str)"),
    "lr_mult": Interval(Real, 0, None),
    "wd_mult": Interval(Real, 0, None),
    "trainable": Options([True, False]),
    "label": [InstanceOf(str, name="a str"), None],
}


@dataclass(frozen=True)
class Rule:
    """One line of a policy: parameters whose name matches ``pattern``.

    Parameters
    ----------
    pattern : str
        A glob pattern on the parameter name (``"head_*"``, ``"*_bias"``), or a
        regular expression prefixed with ``re:`` (``"re:^stage[12]_"``,
        matched with :func:`re.search`).
    lr_mult : float
        Multiplier of the optimizer's learning rate.
    wd_mult : float
        Multiplier of the optimizer's weight decay.
    trainable : bool
        ``False`` freezes the matching parameters (``grad_req='null'``).
    label : str, optional
        How the rule is shown in :meth:`LayerLRPolicy.plan` (default: the pattern).

    Examples
    --------
    >>> Rule("head_*_bias", lr_mult=20)
    Rule('head_*_bias', lr_mult=20)
    """

    pattern: str
    lr_mult: float = 1.0
    wd_mult: float = 1.0
    trainable: bool = True
    label: str | None = field(default=None, compare=False)

    def __post_init__(self):
        validate("Rule", vars(self), _RULE_CONSTRAINTS)
        if self.pattern.startswith("re:"):
            try:
                re.compile(self.pattern[3:])
            except re.error as exc:
                raise ConfigError(f"Rule pattern {self.pattern!r} is not a valid regular expression: {exc}.") from None

    def matches(self, name: str) -> bool:
        """Whether the parameter ``name`` matches this rule."""
        if self.pattern.startswith("re:"):
            return re.search(self.pattern[3:], name) is not None
        return fnmatch.fnmatchcase(name, self.pattern)

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={getattr(self, k)!r}" for k, d in (("lr_mult", 1.0), ("wd_mult", 1.0), ("trainable", True))
            if getattr(self, k) != d
        )
        if self.label:
            extra += f", label={self.label!r}"
        return f"Rule({self.pattern!r}{extra})"


def _as_rule(r) -> Rule:
    if isinstance(r, Rule):
        return r
    if isinstance(r, str):
        return Rule(r)
    if isinstance(r, dict):
        return Rule(**r)
    if isinstance(r, (tuple, list)):
        return Rule(*r)
    raise ConfigError(f"A policy rule must be a Rule, a pattern, a dict or a tuple. Got {r!r} instead.")


def _glob_to_re(pattern: str) -> str:
    if pattern.startswith("re:"):
        return pattern[3:].lstrip("^")
    return fnmatch.translate(pattern).replace("\\Z", "").replace("(?s:", "(?:")
