"""Per-parameter learning rates, weight decay, freezing and BatchNorm modes: :class:`LayerLRPolicy`.

A :class:`LayerLRPolicy` is a list of :class:`~finetune.Rule` objects matched against
parameter names (glob patterns, or regular expressions prefixed ``re:``), plus
"freeze everything up to layer X", "frozen BatchNorm statistics" and an
optional first stage during which only the new head trains. Applying it sets
the real Gluon attributes (``lr_mult``, ``wd_mult``, ``grad_req``,
``use_global_stats``) on the model's parameters and blocks, so what
:meth:`LayerLRPolicy.plan` reports (a :class:`~finetune.train.Plan`) is read
back from the live objects and stays true after ``hybridize()`` and kvstore set-up.
BatchNorm blocks are changed and read through :mod:`finetune.models.graph`.
"""

from __future__ import annotations

import re
import warnings
from numbers import Integral, Real

import numpy as np

from .._validation import InstanceOf, Interval, Options, Sequence, validate
from ..errors import ConfigError, UnknownNameError
from ..models import ModelProtocol
from ..models.graph import batchnorm_modes, fully_connected_params, set_block_batchnorm_global_stats
from ._plan import Plan
from ._rules import Rule, _as_rule, _glob_to_re

__all__ = ["LayerLRPolicy", "freeze_batchnorm"]

_ORIG = "_finetune_orig_grad_req"
_SUFFIXES = ("_fwd", "_output")


class LayerLRPolicy:
    """Learning-rate / weight-decay multipliers, freezing and BN modes per parameter.

    Parameters
    ----------
    rules : list of Rule (or pattern str, dict, tuple)
        Every parameter that trains must match **exactly one** rule; otherwise
        :meth:`apply` raises :class:`~finetune.errors.ConfigError` listing the
        offenders. Default: one rule ``"*"`` (everything at 1×).
    freeze_until : str, optional
        Freeze (``grad_req='null'``) every parameter from the input up to and
        including this layer (a layer name such as ``"stage2_conv3"`` or
        ``"stage2_conv3_fwd"``; parameters are taken in model order). Frozen
        parameters need no rule.
    freeze_bn : bool or str or list of str
        ``True`` freezes every BatchNorm layer's statistics (they use and keep
        their running mean/variance, ``use_global_stats``); a pattern or list
        of patterns freezes the BatchNorm layers whose parameters match.
    head : str
        Pattern of the new head's parameters (``"head_*"``: the model protocol
        names them so). Used by ``head_epochs``.
    head_epochs : int
        Two-stage training: during the first ``head_epochs`` epochs only
        parameters matching ``head`` train; afterwards the rules apply.

    Examples
    --------
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential(prefix="")
    >>> net.add(nn.Dense(4, in_units=3, prefix="body_"), nn.Dense(2, in_units=4, prefix="head_"))
    >>> net.initialize()
    >>> policy = LayerLRPolicy.pretrained(backbone_lr_mult=0.01)
    >>> print(policy.apply(net).plan(net, lr=0.1))  # doctest: +NORMALIZE_WHITESPACE
    parameter    shape  lr     wd  trainable  batchnorm  rule
    body_weight  (4,3)  0.001  0   yes        -          not head
    body_bias    (4,)   0.001  0   yes        -          not head
    head_weight  (2,4)  0.1    0   yes        -          'head_*'
    head_bias    (2,)   0.1    0   yes        -          'head_*'
    """

    _parameter_constraints = {
        "freeze_until": [InstanceOf(str, name="a layer name (str)"), None],
        "freeze_bn": [Options([True, False]), InstanceOf(str, name="a pattern (str)"),
                      Sequence(InstanceOf(str, name="a pattern (str)"))],
        "head": InstanceOf(str, name="a pattern (str)"),
        "head_epochs": Interval(Integral, 0, None),
        "backbone_lr_mult": Interval(Real, 0, None),
        "weight_mult": Interval(Real, 0, None),
        "bias_mult": Interval(Real, 0, None),
        "decay": Interval(Real, 0, 1, closed="right"),
    }

    def __init__(self, rules=None, *, freeze_until: str | None = None, freeze_bn=False,
                 head: str = "head_*", head_epochs: int = 0):
        validate("LayerLRPolicy", {"freeze_until": freeze_until, "freeze_bn": freeze_bn, "head": head,
                                   "head_epochs": head_epochs}, self._parameter_constraints)
        self.rules = [_as_rule(r) for r in (rules if rules is not None else ["*"])]
        self.freeze_until = freeze_until
        self.freeze_bn = freeze_bn
        self.head = head
        self.head_epochs = int(head_epochs)
        self._head_rule = Rule(head)
        self.label = "all" if rules is None else None  # a preset's name, for messages (set by the presets)

    # ----------------------------------------------------------- presets
    @classmethod
    def pretrained(cls, backbone_lr_mult: float = 0.01, *, head: str = "head_*", **kw) -> "LayerLRPolicy":
        """The pretrained layers at ``backbone_lr_mult`` (0.01), the new head at 1×.

        The head rule takes precedence over the catch-all rule for the backbone.
        """
        validate("LayerLRPolicy.pretrained", {"backbone_lr_mult": backbone_lr_mult}, cls._parameter_constraints)
        rest = Rule(f"re:^(?!{_glob_to_re(head)})", lr_mult=backbone_lr_mult, label="not head")
        return _named(cls([Rule(head), rest], head=head, **kw), f"pretrained({backbone_lr_mult:g})")

    @classmethod
    def boosted_head(cls, weight_mult: float = 10.0, bias_mult: float = 20.0, *, head: str = "head_*",
                     **kw) -> "LayerLRPolicy":
        """The new head's weights at 10×, its biases at 20×, everything else at 1×."""
        validate("LayerLRPolicy.boosted_head", {"weight_mult": weight_mult, "bias_mult": bias_mult},
                 cls._parameter_constraints)
        h = _glob_to_re(head)
        return _named(cls([
            Rule(f"re:^(?!{h})", label="not head"),
            Rule(f"re:^(?={h}).*_bias$", lr_mult=bias_mult, label="head biases"),
            Rule(f"re:^(?={h})(?!.*_bias$)", lr_mult=weight_mult, label="head weights"),
        ], head=head, **kw), f"boosted-head({weight_mult:g}, {bias_mult:g})")

    @classmethod
    def head_only(cls, *, head: str = "head_*", freeze_bn=True, **kw) -> "LayerLRPolicy":
        """Train the new head only; every other parameter and BatchNorm statistic is frozen.

        With a frozen backbone and non-augmented data, :class:`Trainer`
        computes the backbone features once and trains the head on them.
        """
        rest = Rule(f"re:^(?!{_glob_to_re(head)})", trainable=False, label="not head")
        return _named(cls([Rule(head), rest], head=head, freeze_bn=freeze_bn, **kw), "head-only")

    @classmethod
    def discriminative(cls, stages, decay: float = 0.5, *, head: str = "head_*", **kw) -> "LayerLRPolicy":
        """Discriminative learning rates: geometric decay from the head towards the input.

        Parameters
        ----------
        stages : list of str
            Patterns of the backbone's stages, **input first**. Stage ``i`` of
            ``n`` gets ``lr_mult = decay ** (n - i)``; the head gets 1.
        decay : float
            In (0, 1].
        """
        validate("LayerLRPolicy", {"decay": decay}, cls._parameter_constraints)
        stages = list(stages)
        n = len(stages)
        rules = [Rule(p, lr_mult=decay ** (n - i)) for i, p in enumerate(stages)]
        return cls(rules + [Rule(head)], head=head, **kw)

    @classmethod
    def layer_decay(cls, model, groups: int = 5, decay: float | None = 0.8, *, frozen: int = 0,
                    lr_mult: float = 1.0, head: str = "head_*", **kw) -> "LayerLRPolicy":
        """Layer-wise LR decay: the backbone in ``groups`` consecutive groups, the LR shrinking towards the input.

        ``model``'s trainable parameters outside the head are cut, in model
        order, into ``groups`` groups of about equal parameter count (a layer's
        parameters are never split); group ``k`` of ``n`` (input first) gets
        ``lr_mult * decay ** (n - k)``, the head 1, and the first ``frozen``
        groups are not trained (one group always trains). With ``decay``
        ``None`` and nothing frozen, the backbone is one group at ``lr_mult``.

        Examples
        --------
        >>> import finetune as ft
        >>> net = ft.HeadReplacer(2).apply(ft.create_model("mobilenet0.25", weights=None))
        >>> policy = LayerLRPolicy.layer_decay(net, 3, 0.5, frozen=1)
        >>> [(r.label.split(" from")[0], r.lr_mult, r.trainable) for r in policy.rules[1:]]
        [('group 1/3', 1.0, False), ('group 2/3', 0.25, True), ('group 3/3', 0.5, True)]
        """
        head_rule = Rule(head)
        names = [n for n, p in model.collect_params().items()
                 if getattr(p, _ORIG, p.grad_req) != "null" and not head_rule.matches(n)]
        if decay is not None:
            validate("LayerLRPolicy.layer_decay", {"decay": decay}, cls._parameter_constraints)
        if (decay is None and not frozen) or not names:
            rest = Rule(f"re:^(?!{_glob_to_re(head)})", lr_mult=lr_mult, label="backbone")
            return _named(cls([head_rule, rest], head=head, **kw), f"one rate (backbone x{lr_mult:g})")
        split = _layer_groups(names, int(groups))
        frozen = min(int(frozen), len(split) - 1)  # something of the backbone always trains
        rules = [head_rule]
        for k, g in enumerate(split):
            pattern = "re:^(" + "|".join(re.escape(names[i]) for i in g) + ")$"
            label = f"group {k + 1}/{len(split)} from {names[g[0]]}"
            if k < frozen:
                rules.append(Rule(pattern, trainable=False, label=label + " (frozen)"))
                continue
            mult = lr_mult * (decay ** (len(split) - k) if decay else 1.0)
            rules.append(Rule(pattern, lr_mult=mult, label=label))
        return _named(cls(rules, head=head, **kw), f"layer decay {decay if decay else 'off'} over {len(split)} groups, "
                      f"{frozen} frozen, backbone x{lr_mult:g}")

    @classmethod
    def from_preset(cls, name: str, **kw) -> "LayerLRPolicy":
        """A policy by name: ``"all"``, ``"pretrained"``, ``"boosted-head"``, ``"head-only"``."""
        makers = {"all": cls, "pretrained": cls.pretrained, "boosted-head": cls.boosted_head,
                  "head-only": cls.head_only}
        if name not in makers:
            raise UnknownNameError("policy preset", name, makers)
        return makers[name](**kw)

    def __repr__(self) -> str:
        parts = [repr(self.rules)]
        for k, d in (("freeze_until", None), ("freeze_bn", False), ("head", "head_*"), ("head_epochs", 0)):
            if getattr(self, k) != d:
                parts.append(f"{k}={getattr(self, k)!r}")
        return f"LayerLRPolicy({', '.join(parts)})"

    # ----------------------------------------------------------- applying
    def resolve(self, model, epoch: int | None = None) -> dict:
        """Decide every parameter's setting without touching the model.

        Returns
        -------
        dict
            ``name -> (rule or None, lr_mult, wd_mult, trainable)``; aux
            parameters (BatchNorm running statistics) are left out.

        Raises
        ------
        ConfigError
            A trainable parameter matches no rule or several rules.
        """
        params = _params(model)
        frozen_upto = self._freeze_index(params)
        out, offenders = {}, []
        for i, (name, p) in enumerate(params.items()):
            if getattr(p, _ORIG, p.grad_req) == "null":
                continue
            if i <= frozen_upto:
                out[name] = (None, p.lr_mult, p.wd_mult, False)
                continue
            hits = [r for r in self.rules if r.matches(name)]
            if len(hits) != 1:
                offenders.append(f"{name} ({'no rule' if not hits else 'rules ' + ', '.join(repr(h.pattern) for h in hits)})")
                continue
            r = hits[0]
            trainable = r.trainable
            if epoch is not None and epoch < self.head_epochs and not self._head_rule.matches(name):
                trainable = False
            out[name] = (r, r.lr_mult, r.wd_mult, trainable)
        if offenders:
            shown = offenders[:20] + (["..."] if len(offenders) > 20 else [])
            raise ConfigError(
                f"Every trainable parameter must match exactly one rule of the LayerLRPolicy; "
                f"{len(offenders)} do not: {'; '.join(shown)}. Rules: {self.rules!r}."
            )
        return out

    def apply(self, model, epoch: int | None = None):
        """Set ``lr_mult``, ``wd_mult``, ``grad_req`` and BatchNorm modes on ``model``.

        Parameters
        ----------
        model : mxnet.gluon.HybridBlock
        epoch : int, optional
            With ``head_epochs``, the epoch being trained (0-based); ``None``
            applies the final (all-stages) setting.

        Returns
        -------
        LayerLRPolicy
            ``self``, to chain :meth:`plan`.
        """
        settings = self.resolve(model, epoch)
        for name, p in _params(model).items():
            if not hasattr(p, _ORIG):
                setattr(p, _ORIG, p.grad_req)
            if name not in settings:
                continue
            _, lr_mult, wd_mult, trainable = settings[name]
            p.lr_mult, p.wd_mult = lr_mult, wd_mult
            want = getattr(p, _ORIG) if trainable else "null"
            if p.grad_req != want:
                p.grad_req = want
        if self.freeze_bn:
            freeze_batchnorm(model, None if self.freeze_bn is True else self.freeze_bn)
        _warn_untrainable_biases(model)
        return self

    def trainable_names(self, model) -> list:
        """Names of the parameters that train in at least one stage."""
        return [n for n, s in self.resolve(model, None).items() if s[3]]

    def plan(self, model, lr: float = 1.0, wd: float = 0.0, optimizer=None) -> "Plan":
        """The table of every parameter: effective LR and WD, trainable, BN mode.

        Values are read from the live model (after :meth:`apply`), so the
        table is what training will use.

        Parameters
        ----------
        model : mxnet.gluon.HybridBlock
        lr, wd : float
            The optimizer's base learning rate and weight decay.
        optimizer : mxnet.optimizer.Optimizer, optional
            When given, its current ``learning_rate`` and ``wd`` are used.
        """
        if optimizer is not None:
            lr, wd = optimizer.learning_rate, optimizer.wd
        rate = Interval(Real, 0, None)
        validate("LayerLRPolicy.plan", {"lr": lr, "wd": wd}, {"lr": rate, "wd": rate})
        settings = self.resolve(model, None)
        modes = batchnorm_modes(model)
        rows = []
        for name, p in _params(model).items():
            aux = getattr(p, _ORIG, p.grad_req) == "null"
            trainable = p.grad_req != "null"
            rule = settings.get(name, (None,))[0]
            rows.append({
                "parameter": name, "shape": tuple(p.shape) if p.shape else None,
                "lr": lr * p.lr_mult if trainable else 0.0, "wd": wd * p.wd_mult if trainable else 0.0,
                "trainable": "aux" if aux else ("yes" if trainable else "frozen"),
                "batchnorm": modes.get(name, "-"),
                "rule": (rule.label or repr(rule.pattern)) if rule else ("-" if aux or name not in settings else "freeze_until"),
            })
        return Plan(rows)

    def _freeze_index(self, params) -> int:
        if not self.freeze_until:
            return -1
        layer = self.freeze_until
        for s in _SUFFIXES:
            if layer.endswith(s):
                layer = layer[: -len(s)]
        idx = -1
        for i, name in enumerate(params):
            if name == layer or name.startswith(layer + "_"):
                idx = i
        if idx < 0:
            layers = sorted({n.rsplit("_", 1)[0] for n in params})
            raise UnknownNameError("layer", self.freeze_until, layers)
        return idx


def _named(policy, label: str):
    policy.label = label
    return policy


def _layer_groups(names, n_groups) -> list:
    """``names`` (parameter names in model order) in ``n_groups`` consecutive groups of index arrays.

    Groups are about equal in parameter count, and a layer's parameters (the
    names up to their last ``_``: ``conv1_weight`` and ``conv1_bias``) are
    never split: a boundary inside a layer moves to the layer's end.
    """
    layer = [n.rsplit("_", 1)[0] for n in names]
    bounds = []
    for g in np.array_split(np.arange(len(names)), min(n_groups, len(names))):
        end = int(g[-1]) + 1 if len(g) else 0
        while 0 < end < len(names) and layer[end] == layer[end - 1]:
            end += 1
        if end > (bounds[-1] if bounds else 0):
            bounds.append(end)
    starts = [0] + bounds[:-1]
    return [np.arange(a, b) for a, b in zip(starts, bounds)]


def _warn_untrainable_biases(model) -> None:
    """Warn about fully connected biases that are meant to train while their weight is frozen.

    MXNet 1.9's oneDNN backward of a fully connected layer computes no bias
    gradient when the weight has none, so such a bias would silently stay as it is.
    """
    params = _params(model)
    for w, b in fully_connected_params(model):
        if w in params and b in params and params[w].grad_req == "null" and params[b].grad_req != "null":
            warnings.warn(f"The bias {b!r} is set to train while its layer's weight {w!r} is frozen; MXNet "
                          "computes no gradient for it then, so it stays as it is. Freeze the bias too, or "
                          "train the weight.", UserWarning, stacklevel=3)


def _params(model) -> dict:
    return dict(model.collect_params().items())


# --------------------------------------------------------------- BatchNorm
def freeze_batchnorm(model, patterns=None) -> None:
    """Freeze BatchNorm statistics: the model's own ``freeze_batchnorm`` when it meets the full protocol.

    For plain Gluon networks, ``nn.BatchNorm`` blocks (whose parameters match
    one of ``patterns``, or all) get ``use_global_stats=True`` through
    :func:`finetune.models.graph.set_block_batchnorm_global_stats`, which
    clears cached graphs so a hybridized model picks the change up.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    rules = [Rule(p) for p in patterns] if patterns else None
    if isinstance(model, ModelProtocol):
        if rules is None:
            model.freeze_batchnorm()
        else:
            model.freeze_batchnorm([n for n in model.layer_names if any(r.matches(n) for r in rules)])
        return
    match = None if rules is None else (lambda name: any(r.matches(name) for r in rules))
    set_block_batchnorm_global_stats(model, match)
