"""Descriptor post-processing: L2 normalisation, PCA with whitening.

The usual retrieval recipe (Babenko & Lempitsky 2015; Jégou & Chum 2012):
L2-normalise, PCA-whiten to ``k`` dimensions with a PCA **learned on a
separate set** (never on the database under test), L2-normalise again. PCA is
scikit-learn's ``PCA(whiten=True)``; only its mean, components and explained
variance are saved, so loading needs no pickle.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from .._arrays import write_npz
from .._file_writes import atomic_open
from ..errors import ConfigError, DataError, MissingFileError, ShapeError, check_range

__all__ = ["PCAWhitening", "l2_normalize", "warn_zero_rows"]

log = logging.getLogger(__name__)


def l2_normalize(x, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Divide by the L2 norm along ``axis`` (zero vectors stay zero).

    Examples
    --------
    >>> [[round(float(v), 3) for v in row] for row in l2_normalize([[3.0, 4.0], [0.0, 0.0]])]
    [[0.6, 0.8], [0.0, 0.0]]
    """
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def warn_zero_rows(x: np.ndarray, what: str) -> int:
    """Warn when rows of ``x`` are all zero: they have no direction, so their cosine scores are all 0.

    Returns the number of such rows (a query among them ranks the database
    in an arbitrary order; a database item among them is never found).

    Examples
    --------
    >>> warn_zero_rows(np.array([[1.0, 0.0], [0.0, 0.0]]), "queries")
    1
    """
    zero = ~np.any(np.asarray(x) != 0, axis=1) if np.ndim(x) == 2 else np.zeros(0, bool)
    count = int(zero.sum())
    if count:
        rows = ", ".join(str(int(r)) for r in np.flatnonzero(zero)[:5]) + (", ..." if count > 5 else "")
        log.warning("%d of the %d %s are all zero (row %s): they have no direction for cosine "
                    "similarity, so they score 0 against everything%s.", count, len(x), what, rows,
                    " and their rankings are arbitrary" if what == "queries" else " and are never found")
    return count


class PCAWhitening:
    """PCA to ``n_components`` dimensions, optionally whitened, then L2-normalised.

    Parameters
    ----------
    n_components : int
        Output dimension (at most the number of training vectors and the input dimension).
    whiten : bool
        Divide each component by the square root of its variance.
    normalize : bool
        L2-normalise the inputs before the projection and the outputs after it.
    random_state : int or None
        Seed of scikit-learn's randomised solver.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    >>> pca = PCAWhitening(4).fit(x)
    >>> pca.transform(x).shape
    (50, 4)
    """

    def __init__(self, n_components: int = 128, *, whiten: bool = True, normalize: bool = True,
                 random_state: int | None = 0):
        check_range("PCAWhitening", "n_components", n_components, 1)
        self.n_components = int(n_components)
        self.whiten = bool(whiten)
        self.normalize = bool(normalize)
        self.random_state = random_state
        self.mean_ = self.components_ = self.explained_variance_ = None

    def __repr__(self) -> str:
        parts = [str(self.n_components)]
        if not self.whiten:
            parts.append("whiten=False")
        if not self.normalize:
            parts.append("normalize=False")
        return f"PCAWhitening({', '.join(parts)})"

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self.components_ is not None

    def fit(self, x) -> "PCAWhitening":
        """Learn the projection on ``(N, D)`` descriptors (a set separate from the database)."""
        from sklearn.decomposition import PCA

        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ShapeError(f"PCAWhitening.fit expects (N, D) descriptors. Got shape {x.shape}.")
        if self.n_components > min(x.shape):
            raise ConfigError(
                f"PCAWhitening: n_components={self.n_components} but the training set is {x.shape[0]}x{x.shape[1]}; "
                f"use at most {min(x.shape)} components or more training images."
            )
        if self.normalize:
            x = l2_normalize(x)
        pca = PCA(self.n_components, whiten=self.whiten, random_state=self.random_state).fit(x)
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        self.explained_variance_ = pca.explained_variance_.astype(np.float32)
        return self

    def transform(self, x) -> np.ndarray:
        """Project ``(N, D)`` descriptors to ``(N, n_components)``."""
        if not self.fitted:
            raise ConfigError("PCAWhitening is not fitted; call fit() on a separate training set first.")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.components_.shape[1]:
            raise ShapeError(f"PCAWhitening expects (N, {self.components_.shape[1]}) descriptors. Got {x.shape}.")
        if self.normalize:
            x = l2_normalize(x)
        y = (x - self.mean_) @ self.components_.T
        if self.whiten:
            y /= np.sqrt(np.maximum(self.explained_variance_, 1e-12))
        return l2_normalize(y) if self.normalize else y

    def fit_transform(self, x) -> np.ndarray:
        """:meth:`fit`, then :meth:`transform` the same data."""
        return self.fit(x).transform(x)

    def save(self, path) -> None:
        """Save to an ``.npz`` file (atomically)."""
        if not self.fitted:
            raise ConfigError("PCAWhitening: nothing to save, fit() it first.")
        path = os.fspath(path)
        with atomic_open(path if path.endswith(".npz") else path + ".npz") as f:  # np.savez's naming
            write_npz(f, **self._state())

    def _state(self) -> dict:
        """The arrays :meth:`save` writes."""
        return {"mean": self.mean_, "components": self.components_,
                "explained_variance": self.explained_variance_, "flags": np.array([self.whiten, self.normalize])}

    @classmethod
    def load(cls, path) -> "PCAWhitening":
        """Load what :meth:`save` wrote."""
        from .._arrays import check_array, read_npz

        path = os.fspath(path)
        if not os.path.exists(path):
            raise MissingFileError(f"PCA file {path!r} does not exist.")
        with read_npz(path, what="PCA") as f:  # damage inside the archive is a DataError naming the file
            flags = check_array(f["flags"], path, what="flags", kinds="bui", ndim=1)
            components = check_array(f["components"], path, what="components", kinds="f", ndim=2)
            mean = check_array(f["mean"], path, what="mean", kinds="f", ndim=1)
            variance = check_array(f["explained_variance"], path, what="explained variance", kinds="f", ndim=1)
        k, dim = components.shape
        if flags.shape != (2,) or mean.shape != (dim,) or variance.shape != (k,) or k == 0:
            raise DataError(f"{path!r} is not a PCAWhitening file: flags {flags.shape}, components {components.shape}, "
                            f"mean {mean.shape}, explained variance {variance.shape}; expected (2,), (k, d) with "
                            "k >= 1, (d,) and (k,).")
        obj = cls(k, whiten=bool(flags[0]), normalize=bool(flags[1]))
        obj.mean_, obj.components_, obj.explained_variance_ = mean, components, variance
        return obj
