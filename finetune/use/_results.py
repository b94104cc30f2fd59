"""What a :class:`~finetune.Predictor` returns: :class:`Prediction` and :class:`Predictions`."""

from __future__ import annotations

import dataclasses
import json

from .._file_writes import atomic_write
from .._text import cell
from ..data import ImageItem

__all__ = ["Prediction", "Predictions"]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The top-k classes of one input image.

    Parameters
    ----------
    source : str
        Where the image came from: a file path, ``"array[3]"``, ``"record[12]"``.
    indices : tuple of int
        Class indices, most probable first.
    names : tuple of str
        The model's class names for ``indices`` (the index as a string when the
        model has no class names).
    probabilities : tuple of float
        Softmax probabilities for ``indices``.
    display : tuple of str
        Names for display (translated through a name map, else ``names``).
    error : str or None
        Why the image could not be classified; the other fields are then empty.
    label : int or None
        The true class, when the input carried one (record datasets).
    item : ImageItem or None
        The image the prediction was computed from, decoded on demand by
        ``item.read("RGB")`` (plots read pixels through it, whatever the
        input was: a file, an array, a record). Kept in memory only: it is
        not part of :meth:`to_dict`, equality or the ``repr``; ``None`` for a
        prediction built by hand.

    Examples
    --------
    >>> p = Prediction("cat.jpg", (3, 1), ("cat", "dog"), (0.9, 0.1))
    >>> p
    Prediction('cat.jpg', cat 0.900, dog 0.100)
    >>> p.index, p.name, round(p.probability, 2)
    (3, 'cat', 0.9)
    """

    source: str
    indices: tuple = ()
    names: tuple = ()
    probabilities: tuple = ()
    display: tuple = ()
    error: str | None = None
    label: int | None = None
    item: ImageItem | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "probabilities", tuple(float(p) for p in self.probabilities))
        object.__setattr__(self, "display", tuple(str(n) for n in self.display) or self.names)

    @property
    def ok(self) -> bool:
        """``True`` unless the image could not be classified."""
        return self.error is None

    @property
    def index(self) -> int | None:
        """The top-1 class index (``None`` on error)."""
        return self.indices[0] if self.indices else None

    @property
    def name(self) -> str | None:
        """The top-1 class name (``None`` on error)."""
        return self.names[0] if self.names else None

    @property
    def probability(self) -> float | None:
        """The top-1 probability (``None`` on error)."""
        return self.probabilities[0] if self.probabilities else None

    def to_dict(self) -> dict:
        """A JSON-ready dict: ``source``, ``error``, ``label`` and a ``top`` list."""
        d = {"source": self.source}
        if self.label is not None:
            d["label"] = self.label
        if self.error is not None:
            d["error"] = self.error
        d["top"] = [
            {"index": i, "name": n, "display": s, "probability": p}
            for i, n, s, p in zip(self.indices, self.names, self.display, self.probabilities)
        ]
        return d

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Prediction({self.source!r}, error={self.error!r})"
        shown = ", ".join(f"{n} {p:.3f}" for n, p in zip(self.display[:3], self.probabilities[:3]))
        more = ", ..." if len(self.indices) > 3 else ""
        return f"Prediction({self.source!r}, {shown}{more})"


class Predictions(list):
    """A list of :class:`Prediction`, one per input, in input order.

    Adds :meth:`to_table`, :meth:`to_json`, :meth:`to_records` and the
    :attr:`errors` that occurred.

    Examples
    --------
    >>> ps = Predictions([Prediction("a.jpg", (0, 1), ("cat", "dog"), (0.75, 0.25)),
    ...                   Prediction("b.jpg", error="not a decodable image")])
    >>> print(ps.to_table(top_k=1))
    source  rank  class  probability
    a.jpg      1  cat         0.7500
    b.jpg      -  ERROR: not a decodable image
    >>> len(ps.errors)
    1
    """

    @property
    def errors(self) -> list:
        """The predictions that failed (unreadable inputs)."""
        return [p for p in self if p.error is not None]

    def to_records(self, top_k: int | None = None) -> list:
        """Flat rows ``{source, rank, index, name, display, probability}`` (e.g. for pandas)."""
        rows = []
        for p in self:
            if p.error is not None:
                rows.append({"source": p.source, "rank": None, "index": None, "name": None,
                             "display": None, "probability": None, "error": p.error})
                continue
            k = len(p.indices) if top_k is None else top_k
            for rank, (i, n, s, pr) in enumerate(zip(p.indices[:k], p.names[:k], p.display[:k],
                                                     p.probabilities[:k]), 1):
                rows.append({"source": p.source, "rank": rank, "index": i, "name": n,
                             "display": s, "probability": pr, "error": None})
        return rows

    def to_table(self, top_k: int | None = None) -> str:
        """A plain-text table, one row per (image, rank)."""
        header = ("source", "rank", "class", "probability")
        lines = []
        for r in self.to_records(top_k):
            if r["error"] is not None:
                lines.append((cell(r["source"]), "-", "ERROR: " + cell(r["error"]), None))
            else:
                lines.append((cell(r["source"]), str(r["rank"]), cell(r["display"]), f"{r['probability']:.4f}"))
        w0 = max([len(header[0])] + [len(x[0]) for x in lines])
        w2 = max([len(header[2])] + [len(x[2]) for x in lines if x[3] is not None])
        out = [f"{header[0]:<{w0}}  {header[1]}  {header[2]:<{w2}}  {header[3]}"]
        for src, rank, name, prob in lines:
            if prob is None:
                out.append(f"{src:<{w0}}  {rank:>4}  {name}")
            else:
                out.append(f"{src:<{w0}}  {rank:>4}  {name:<{w2}}  {prob:>11}")
        return "\n".join(out)

    def to_json(self, path=None, *, indent: int = 2) -> str:
        """The predictions as JSON (a list of :meth:`Prediction.to_dict`); also written to ``path``."""
        text = json.dumps([p.to_dict() for p in self], indent=indent, ensure_ascii=False)
        if path is not None:
            atomic_write(path, text + "\n")
        return text

    def __repr__(self) -> str:
        return f"Predictions({list.__repr__(self)})"
