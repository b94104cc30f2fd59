"""The per-parameter table of a policy as training uses it: :class:`Plan`."""

from __future__ import annotations

import json
import logging

__all__ = ["Plan"]

log = logging.getLogger(__name__)


class Plan:
    """The per-parameter table returned by :meth:`LayerLRPolicy.plan`.

    ``rows`` is a list of dicts with keys ``parameter``, ``shape``, ``lr``,
    ``wd``, ``trainable`` (``"yes"``, ``"frozen"`` or ``"aux"`` for
    BatchNorm statistics), ``batchnorm`` (``"frozen"``, ``"batch"`` or
    ``"-"``) and ``rule``. ``str(plan)`` is a text table; :meth:`log` writes
    it to the ``finetune`` logger.
    """

    COLUMNS = ("parameter", "shape", "lr", "wd", "trainable", "batchnorm", "rule")

    def __init__(self, rows):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, name: str) -> dict:
        for r in self.rows:
            if r["parameter"] == name:
                return r
        raise KeyError(name)

    def __repr__(self) -> str:
        n = sum(r["trainable"] == "yes" for r in self.rows)
        return f"<Plan: {len(self.rows)} parameters, {n} trainable>"

    def __str__(self) -> str:
        cells = [list(self.COLUMNS)]
        for r in self.rows:
            cells.append([
                r["parameter"], str(r["shape"]).replace(" ", "") if r["shape"] else "?",
                f"{r['lr']:.4g}", f"{r['wd']:.4g}", r["trainable"], r["batchnorm"], r["rule"],
            ])
        widths = [max(len(c[i]) for c in cells) for i in range(len(self.COLUMNS))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)

    def to_json(self) -> str:
        """The rows as JSON."""
        return json.dumps(self.rows, indent=1, default=str)

    def log(self, logger=None, level=logging.INFO) -> None:
        """Write the table to ``logger`` (default: this module's logger)."""
        (logger or log).log(level, "Learning-rate plan:\n%s", self)
