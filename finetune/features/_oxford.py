"""Ground truth of Oxford5k / Paris6k and of the revisited ROxford / RParis.

Two formats exist:

* the **original** Oxford Buildings / Paris layout: a folder of text files
  ``<query>_good.txt``, ``<query>_ok.txt``, ``<query>_junk.txt`` (one image
  name per line, no extension) and ``<query>_query.txt`` holding
  ``oxc1_<image> x1 y1 x2 y2`` (Paris files have no ``oxc1_`` prefix);
  positives are good + ok, junk is ignored;
* the **revisited** protocol's ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl``:
  a dict with ``imlist``, ``qimlist`` and ``gnd``, a list of dicts with
  ``easy``, ``hard``, ``junk`` (database indices) and ``bbx``. It is read with
  a restricted unpickler that rebuilds plain containers and numpy arrays only
  (a pickle can otherwise run arbitrary code).

Queries are cropped to their bounding box before extraction (both protocols).
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass, field

import numpy as np

from .._text import read_lines
from ..errors import ConfigError, DataError, MissingFileError, ShapeError, UnsafeFileError
from ._evaluation import _positions, precision_at_k, ranked_ap

__all__ = ["OxfordGroundTruth", "RevisitedGroundTruth", "crop_query"]

_SUFFIXES = ("good", "ok", "junk", "query")


def crop_query(image: np.ndarray, bbox) -> np.ndarray:
    """Crop an ``(H, W[, C])`` image to a query box ``(x1, y1, x2, y2)`` in pixels.

    Coordinates are floats as in the ground-truth files; the box is rounded
    outwards (floor of the start, ceil of the end) and clipped to the image.

    Examples
    --------
    >>> import numpy as np
    >>> crop_query(np.zeros((10, 20, 3)), (2.5, 1.0, 7.2, 4.0)).shape
    (3, 6, 3)
    """
    x1, y1, x2, y2 = (float(v) for v in bbox)
    h, w = image.shape[:2]
    left, top = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    right, bottom = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
    if right <= left or bottom <= top:
        raise ShapeError(f"Query box {tuple(bbox)} is empty inside a {w}x{h} image.")
    return image[top:bottom, left:right]


@dataclass
class _Query:
    name: str
    image: str
    bbox: tuple
    positives: set = field(default_factory=set)
    junk: set = field(default_factory=set)


class OxfordGroundTruth:
    """Ground truth of Oxford5k / Paris6k in the original text-file layout.

    Parameters
    ----------
    queries : list
        Query records with ``name``, ``image``, ``bbox``, ``positives``, ``junk``;
        normally built by :meth:`from_folder`.

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for suffix, text in [("query", "oxc1_a 0 0 10 10"), ("good", "b"), ("ok", "c"), ("junk", "d")]:
    ...     with open(os.path.join(d, f"q_1_{suffix}.txt"), "w") as f:
    ...         _ = f.write(text + "\\n")
    >>> gt = OxfordGroundTruth.from_folder(d)
    >>> gt.query_names, gt.query_images
    (['q_1'], ['a'])
    >>> gt.evaluate({"q_1": ["d", "b", "x", "c"]})["mAP"]  # + - + once junk "d" is removed
    0.7916666666666666
    """

    def __init__(self, queries):
        self.queries = list(queries)

    def __repr__(self) -> str:
        return f"OxfordGroundTruth({len(self.queries)} queries)"

    @classmethod
    def from_folder(cls, path) -> "OxfordGroundTruth":
        """Read every ``<query>_{good,ok,junk,query}.txt`` quadruple in ``path``.

        Image names are kept byte-exact (UTF-8, other bytes as they are; only
        the line terminator is removed), as ``finetune extract`` writes its ids.
        """
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise MissingFileError(f"Ground-truth folder {path!r} does not exist.")
        names = sorted(f[: -len("_query.txt")] for f in os.listdir(path) if f.endswith("_query.txt"))
        if not names:
            raise DataError(f"No '<query>_query.txt' files in {path!r}; is this an Oxford/Paris ground-truth folder?")
        queries = []
        for name in names:
            lists = {}
            for suffix in _SUFFIXES:
                fname = os.path.join(path, f"{name}_{suffix}.txt")
                if not os.path.exists(fname):
                    raise MissingFileError(f"Ground-truth file {fname!r} is missing.")
                lists[suffix] = read_lines(fname)
            parts = lists["query"][0].split() if lists["query"] else []
            if len(parts) != 5:
                raise DataError(f"{name}_query.txt must hold '<image> x1 y1 x2 y2'. Got {lists['query']!r}.")
            image = parts[0][5:] if parts[0].startswith("oxc1_") else parts[0]
            try:
                bbox = tuple(float(v) for v in parts[1:])
            except ValueError:
                raise DataError(f"{name}_query.txt: the box must be 4 numbers. Got {parts[1:]!r}.") from None
            queries.append(_Query(name, image, bbox, set(lists["good"]) | set(lists["ok"]), set(lists["junk"])))
        return cls(queries)

    @property
    def query_names(self) -> list:
        """Query names (``all_souls_1``, ...)."""
        return [q.name for q in self.queries]

    @property
    def query_images(self) -> list:
        """Image name of every query (no extension, no ``oxc1_`` prefix)."""
        return [q.image for q in self.queries]

    @property
    def query_boxes(self) -> list:
        """Query boxes ``(x1, y1, x2, y2)``."""
        return [q.bbox for q in self.queries]

    def evaluate(self, rankings) -> dict:
        """mAP of ranked lists under the Oxford protocol (good+ok positive, junk ignored).

        Parameters
        ----------
        rankings : dict or sequence
            ``{query name: ranked image names}`` or one ranked list per query in
            :attr:`query_names` order.

        Returns
        -------
        dict
            ``{"mAP": float, "aps": {query name: AP}}``.
        """
        if isinstance(rankings, dict):
            missing = [n for n in self.query_names if n not in rankings]
            if missing:
                raise ConfigError(f"No ranked list for queries {missing[:5]}{'...' if len(missing) > 5 else ''}.")
            lists = [rankings[n] for n in self.query_names]
        else:
            lists = list(rankings)
            if len(lists) != len(self.queries):
                raise ShapeError(f"Expected {len(self.queries)} ranked lists, got {len(lists)}.")
        aps = {}
        for q, ranked in zip(self.queries, lists):
            ranked = [str(r) for r in ranked]
            aps[q.name] = ranked_ap(_positions(ranked, q.positives, q.junk - q.positives), len(q.positives))
        values = np.array([a for a in aps.values() if not np.isnan(a)])
        return {"mAP": float(values.mean()) if values.size else float("nan"), "aps": aps}


# ---------------------------------------------------------------------------- revisited
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "set"),
    ("builtins", "bytes"),
    ("__builtin__", "bytes"),
    ("__builtin__", "set"),
    ("builtins", "frozenset"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeFileError(
            f"The ground-truth pickle wants to build {module}.{name}; only plain containers and "
            "numpy arrays are allowed."
        )


def _safe_load(path) -> object:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafeFileError:
        raise
    except Exception as exc:  # truncated or not a pickle
        raise DataError(f"{path!r} is not a readable ground-truth pickle: {exc}") from None


def _names(values, what: str) -> list:
    """A list of image names; numpy string arrays and bytes (Python 2 pickles) are accepted."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "US" and values.ndim == 1:
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, (str, bytes)) for v in values):
        raise DataError(f"{what!r} must be a list of image names (str). Got {type(values).__name__}"
                        f"{'' if not isinstance(values, (list, tuple)) else ' with other items'}.")
    return [v.decode("latin1") if isinstance(v, bytes) else v for v in values]


def _gnd_entry(g, i: int, n_images: int) -> dict:
    """One query's ground truth, checked: index arrays within the database, a box of 4 numbers."""
    if not isinstance(g, dict) or not {"easy", "hard", "junk"} <= set(g):
        raise DataError(f"gnd[{i}] must be a dict with 'easy', 'hard', 'junk' (and 'bbx').")
    entry = {}
    for k in ("easy", "hard", "junk"):
        values = g[k]
        if isinstance(values, np.ndarray) and values.dtype.kind not in "iu" and values.size:
            raise DataError(f"gnd[{i}][{k!r}] must hold image indices (integers). Got dtype {values.dtype}.")
        try:
            arr = np.asarray(values, dtype=np.int64).ravel()
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"gnd[{i}][{k!r}] must be a list of image indices. Got {values!r:.80}.") from None
        if arr.size and (arr.min() < 0 or arr.max() >= n_images):
            raise DataError(f"gnd[{i}][{k!r}] holds index {int(arr.max() if arr.max() >= n_images else arr.min())}, "
                            f"outside the {n_images} database images.")
        entry[k] = arr
    bbx = g.get("bbx")
    try:
        entry["bbx"] = None if bbx is None else tuple(float(v) for v in bbx)
    except (TypeError, ValueError):
        raise DataError(f"gnd[{i}]['bbx'] must be 4 numbers (x1, y1, x2, y2). Got {bbx!r:.80}.") from None
    if entry["bbx"] is not None and len(entry["bbx"]) != 4:
        raise DataError(f"gnd[{i}]['bbx'] must be 4 numbers (x1, y1, x2, y2). Got {len(entry['bbx'])}.")
    return entry


#: The ground-truth lists that are positive, and those ignored as junk, in each setup.
_SETUPS = {"easy": (("easy",), ("junk", "hard")), "medium": (("easy", "hard"), ("junk",)),
           "hard": (("hard",), ("junk", "easy"))}


class RevisitedGroundTruth:
    """The revisited Oxford/Paris protocol (Radenović et al., CVPR 2018).

    Three setups, each scored by mAP and mP@k:

    ========  ===============  =====================
    setup     positives        junk (ignored)
    ========  ===============  =====================
    easy      easy             junk + hard
    medium    easy + hard      junk
    hard      hard             junk + easy
    ========  ===============  =====================

    Parameters
    ----------
    imlist : list of str
        Database image names.
    qimlist : list of str
        Query image names.
    gnd : list of dict
        Per query: ``easy``, ``hard``, ``junk`` (database indices), ``bbx``.

    Examples
    --------
    >>> import numpy as np
    >>> gt = RevisitedGroundTruth(["a", "b", "c", "d"], ["q"],
    ...     [{"easy": [0], "hard": [2], "junk": [1], "bbx": [0, 0, 5, 5]}])
    >>> res = gt.evaluate(np.array([[3, 1, 2, 0]]))
    >>> res["easy"]["mAP"], round(res["medium"]["mAP"], 6), res["hard"]["mAP"]
    (0.25, 0.416667, 0.25)
    """

    SETUPS = ("easy", "medium", "hard")

    def __init__(self, imlist, qimlist, gnd):
        self.imlist = _names(imlist, "imlist")
        self.qimlist = _names(qimlist, "qimlist")
        if not isinstance(gnd, (list, tuple)) or len(gnd) != len(self.qimlist):
            got = f"{len(gnd)} entries" if isinstance(gnd, (list, tuple)) else type(gnd).__name__
            raise DataError(f"'gnd' must be a list of one entry per query ({len(self.qimlist)}). Got {got}.")
        self.gnd = [_gnd_entry(g, i, len(self.imlist)) for i, g in enumerate(gnd)]

    def __repr__(self) -> str:
        return f"RevisitedGroundTruth({len(self.qimlist)} queries, {len(self.imlist)} images)"

    @classmethod
    def load(cls, path) -> "RevisitedGroundTruth":
        """Read a ``gnd_r{oxford5k,paris6k}.pkl`` file with the restricted unpickler."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise MissingFileError(f"Ground-truth file {path!r} does not exist.")
        cfg = _safe_load(path)
        if not isinstance(cfg, dict) or not {"gnd", "imlist", "qimlist"} <= set(cfg):
            raise DataError(f"{path!r} must hold a dict with 'gnd', 'imlist' and 'qimlist'.")
        try:
            return cls(cfg["imlist"], cfg["qimlist"], cfg["gnd"])
        except DataError as exc:
            raise DataError(f"{path!r}: {exc}") from None

    def setup(self, name: str) -> list:
        """Positive and junk index arrays of every query for ``easy``/``medium``/``hard``."""
        if name not in _SETUPS:
            raise ConfigError(f"Unknown setup {name!r}; use 'easy', 'medium' or 'hard'.")
        return [tuple(np.concatenate([g[k] for k in keys]) for keys in _SETUPS[name]) for g in self.gnd]

    def evaluate(self, ranks, ks=(1, 5, 10)) -> dict:
        """Score rankings in the three setups.

        Parameters
        ----------
        ranks : numpy.ndarray
            ``(Q, N)`` database indices, most similar first, one row per query
            (the transpose of the ``(N, Q)`` array of the original code).
        ks : sequence of int
            The k of mP@k.

        Returns
        -------
        dict
            ``{setup: {"mAP": float, "mP@k": {k: float}, "aps": (Q,) array}}``;
            queries without positives in a setup are skipped in its means.
        """
        ranks = np.asarray(ranks)
        if ranks.ndim != 2 or ranks.shape[0] != len(self.gnd):
            raise ShapeError(f"'ranks' must be (Q={len(self.gnd)}, N). Got shape {ranks.shape}.")
        result = {}
        for name in self.SETUPS:
            aps = np.full(len(self.gnd), np.nan)
            prs = np.full((len(self.gnd), len(ks)), np.nan)
            for i, (pos, junk) in enumerate(self.setup(name)):
                if pos.size == 0:
                    continue
                where = _positions(ranks[i], set(pos.tolist()), set(junk.tolist()) - set(pos.tolist()))
                aps[i] = ranked_ap(where, pos.size)
                prs[i] = precision_at_k(where, ks)
            valid = ~np.isnan(aps)
            result[name] = {
                "mAP": float(aps[valid].mean()) if valid.any() else float("nan"),
                "mP@k": {int(k): float(prs[valid, j].mean()) if valid.any() else float("nan")
                         for j, k in enumerate(ks)},
                "aps": aps,
            }
        return result
