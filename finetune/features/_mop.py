"""Multi-scale orderless pooling (MOP; Gong, Wang, Guo & Lazebnik, ECCV 2014).

MOP-CNN concatenates three levels: the global activation of the whole image,
and the VLAD encodings of activations of square patches at two finer scales
(in the paper 128-px and 64-px patches of a 256-px image, strides 32 and 16,
k-means codebooks of 100 centres on PCA-reduced patch features).

Here the patches are windows **of the convolutional feature map** (of side
1/2 and 1/4 of its shorter side, strides 1/8 and 1/16, at least one cell),
max-pooled, instead of crops sent through the network again: the same
construction at a fraction of the cost, as R-MAC does for its regions. Patch
vectors are L2-normalised and optionally PCA-reduced; each level's VLAD is
power- (signed square root) and L2-normalised. The codebooks are learned with
scikit-learn's ``KMeans`` on a training set (:meth:`MOP.fit`).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ConfigError, ShapeError, check_range
from ._pooling import Pooling
from ._postprocess import l2_normalize

__all__ = ["MOP"]

log = logging.getLogger(__name__)


class MOP(Pooling):
    """Multi-scale orderless VLAD pooling of ``(N, C, H, W)`` maps (numpy).

    Parameters
    ----------
    n_clusters : int
        VLAD codebook size per level (the paper uses 100).
    patch_dim : int or None
        PCA dimension of patch vectors before VLAD (the paper: 500); ``None``
        keeps all ``C`` channels.
    levels : sequence of (float, float)
        ``(window, stride)`` as fractions of the map's shorter side, one pair
        per VLAD level.
    max_patches : int
        Patch vectors sampled per level to fit PCA and k-means.
    random_state : int
        Seed of the sampling, PCA and k-means.

    Examples
    --------
    >>> import numpy as np
    >>> maps = np.random.default_rng(0).random((6, 8, 8, 8), dtype=np.float32)
    >>> mop = MOP(n_clusters=4, patch_dim=None).fit(maps)
    >>> mop.transform(maps).shape  # 8 global + 2 levels x 4 centres x 8 channels
    (6, 72)
    """

    name = "mop"

    def __init__(self, n_clusters: int = 32, *, patch_dim: int | None = 128,
                 levels=((0.5, 0.125), (0.25, 0.0625)), max_patches: int = 20000,
                 random_state: int = 0):
        check_range("MOP", "n_clusters", n_clusters, 1)
        if patch_dim is not None:
            check_range("MOP", "patch_dim", patch_dim, 1)
        levels = [tuple(float(v) for v in lv) for lv in levels]
        for win, stride in levels:
            check_range("MOP", "levels (window)", win, 0, 1, low_open=True)
            check_range("MOP", "levels (stride)", stride, 0, 1, low_open=True)
        self.n_clusters = int(n_clusters)
        self.patch_dim = None if patch_dim is None else int(patch_dim)
        self.levels = levels
        self.max_patches = int(max_patches)
        self.random_state = int(random_state)
        self.pcas_ = None
        self.centers_ = None

    def get_config(self) -> dict:
        return {"n_clusters": self.n_clusters, "patch_dim": self.patch_dim,
                "levels": [list(lv) for lv in self.levels], "max_patches": self.max_patches,
                "random_state": self.random_state}

    @property
    def fitted(self) -> bool:
        """Whether the codebooks have been learned."""
        return self.centers_ is not None

    def output_dim(self, channels: int) -> int:
        d = channels if self.patch_dim is None else min(self.patch_dim, channels)
        return channels + len(self.levels) * self.n_clusters * d

    # ---------------------------------------------------------------- patches
    def patches(self, maps: np.ndarray, level: int) -> np.ndarray:
        """Max-pooled window vectors of one level: ``(N, P, C)``, L2-normalised."""
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim != 4:
            raise ShapeError(f"MOP expects feature maps (N, C, H, W). Got shape {maps.shape}.")
        win_f, stride_f = self.levels[level]
        side = min(maps.shape[2:])
        win = max(1, int(round(win_f * side)))
        stride = max(1, int(round(stride_f * side)))
        view = sliding_window_view(maps, (win, win), axis=(2, 3))[:, :, ::stride, ::stride]
        pooled = view.max(axis=(-1, -2))  # (N, C, nh, nw)
        n, c = pooled.shape[:2]
        return l2_normalize(pooled.reshape(n, c, -1).transpose(0, 2, 1))

    # -------------------------------------------------------------------- fit
    def fit(self, maps) -> "MOP":
        """Learn the patch PCA and k-means codebook of each level.

        Parameters
        ----------
        maps : numpy.ndarray or iterable of numpy.ndarray
            Feature maps ``(N, C, H, W)`` of a training set (an iterable of
            batches of possibly different spatial sizes is accepted).

        Returns
        -------
        MOP
            ``self``.
        """
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        batches = [maps] if isinstance(maps, np.ndarray) else list(maps)
        rng = np.random.default_rng(self.random_state)
        self.pcas_, self.centers_ = [], []
        for level in range(len(self.levels)):
            vecs = np.concatenate([self.patches(b, level).reshape(-1, b.shape[1]) for b in batches])
            if len(vecs) > self.max_patches:
                vecs = vecs[rng.choice(len(vecs), self.max_patches, replace=False)]
            if len(vecs) < self.n_clusters:
                raise ConfigError(f"MOP.fit: {len(vecs)} patches for {self.n_clusters} clusters; "
                                  "give more training images or fewer clusters.")
            pca = None
            if self.patch_dim is not None and self.patch_dim < vecs.shape[1]:
                pca = PCA(self.patch_dim, random_state=self.random_state).fit(vecs)
                vecs = pca.transform(vecs)
            km = KMeans(self.n_clusters, n_init=3, random_state=self.random_state).fit(vecs)
            log.info("MOP level %d: codebook of %d centres on %d patches.", level + 1, self.n_clusters, len(vecs))
            self.pcas_.append(pca)
            self.centers_.append(km.cluster_centers_.astype(np.float32))
        return self

    # -------------------------------------------------------------- transform
    def vlad(self, vectors: np.ndarray, level: int) -> np.ndarray:
        """VLAD of ``(N, P, d)`` patch vectors with the level's codebook: ``(N, k·d)``."""
        centers = self.centers_[level]
        n, p, _ = vectors.shape
        flat = vectors.reshape(n * p, -1)
        if self.pcas_[level] is not None:
            flat = self.pcas_[level].transform(flat).astype(np.float32)
        d2 = (flat ** 2).sum(1)[:, None] - 2 * flat @ centers.T + (centers ** 2).sum(1)[None]
        assign = d2.argmin(1).reshape(n, p)
        flat = flat.reshape(n, p, -1)
        k, d = centers.shape
        out = np.zeros((n, k, d), np.float32)
        for c in range(k):
            mask = (assign == c)[:, :, None]
            out[:, c] = np.sum(np.where(mask, flat - centers[c], 0.0), axis=1)
        out = out.reshape(n, k * d)
        return l2_normalize(np.sign(out) * np.sqrt(np.abs(out)))

    def transform(self, maps) -> np.ndarray:
        """MOP descriptors ``(N, C + levels·k·d)`` of maps ``(N, C, H, W)``."""
        if not self.fitted:
            raise ConfigError("MOP must be fitted on training maps first: call fit() "
                              "(FeatureExtractor.fit does it for you).")
        maps = np.asarray(maps, dtype=np.float32)
        if maps.ndim != 4:
            raise ShapeError(f"MOP expects feature maps (N, C, H, W). Got shape {maps.shape}.")
        parts = [l2_normalize(maps.max(axis=(2, 3)))]
        parts += [self.vlad(self.patches(maps, lv), lv) for lv in range(len(self.levels))]
        return np.concatenate(parts, axis=1)

    __call__ = transform

    # ------------------------------------------------------------ persistence
    def state(self) -> dict:
        """Learned arrays, for saving (``npz``-ready)."""
        out = {}
        for lv, (pca, centers) in enumerate(zip(self.pcas_ or [], self.centers_ or [])):
            out[f"centers_{lv}"] = centers
            if pca is not None:
                out[f"pca_mean_{lv}"] = pca.mean_.astype(np.float32)
                out[f"pca_components_{lv}"] = pca.components_.astype(np.float32)
        return out

    def set_state(self, arrays) -> "MOP":
        """Restore what :meth:`state` returned."""
        if "centers_0" not in arrays:
            return self
        self.pcas_, self.centers_ = [], []
        for lv in range(len(self.levels)):
            self.centers_.append(np.asarray(arrays[f"centers_{lv}"], np.float32))
            if f"pca_mean_{lv}" in arrays:
                self.pcas_.append(_FixedPCA(arrays[f"pca_mean_{lv}"], arrays[f"pca_components_{lv}"]))
            else:
                self.pcas_.append(None)
        return self


class _FixedPCA:
    """A loaded PCA projection (``(x - mean) @ components.T``)."""

    def __init__(self, mean, components):
        self.mean_ = np.asarray(mean, np.float32)
        self.components_ = np.asarray(components, np.float32)

    def transform(self, x):
        return (np.asarray(x, np.float32) - self.mean_) @ self.components_.T
