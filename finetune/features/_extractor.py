"""FeatureExtractor: retrieval descriptors from named layers of any protocol model.

The folder it saves to (settings, PCA and MOP states) is ``_extractor_io.py``'s.
"""

from __future__ import annotations

import logging
import os

import mxnet as mx
import numpy as np

from .._context import resolve_ctx
from .._version import __version__
from ..data import ImageSource
from ..errors import ConfigError, ShapeError, UnknownNameError, check_choice, check_range
from ..models import ModelProtocol, create_model, require_model
from ..use import feature_map_layers
from ._extractor_io import load_states, read_config, save_folder
from ._geometry import resize_keep_aspect
from ._mop import MOP
from ._pooling import Pooling
from ._registry import get_pooling
from ._postprocess import PCAWhitening, l2_normalize

__all__ = ["FeatureExtractor"]

log = logging.getLogger(__name__)


def _as_model(model):
    """The network behind ``model``: a model meeting the full protocol as it is, else what
    :func:`~finetune.create_model` makes of it (zoo names with their ImageNet weights)."""
    if isinstance(model, ModelProtocol):
        return model
    return require_model(create_model(model), "full", "FeatureExtractor")


class FeatureExtractor:
    """Descriptors of images from one or several named layers, pooled and post-processed.

    Parameters
    ----------
    model : model, HybridBlock, str, path or (prototxt, caffemodel)
        A network meeting the full model protocol
        (:class:`~finetune.ModelProtocol`: a :class:`~finetune.Backbone`, a
        fine-tuned :class:`~finetune.Model`, ...), or anything
        :func:`~finetune.create_model` accepts: a model directory, a
        deployment folder, a Caffe pair, a plain ``HybridBlock`` (its layers
        are those of its traced graph) or a zoo name (with its ImageNet weights).
    layers : str, list of str or None
        Layer names from ``model.layer_names`` (e.g. ``"fc6"`` pre-activation and
        ``"relu6"`` post-activation for a Caffe VGG16, or a conv stage).
        ``None``: the last convolutional block
        (:func:`~finetune.use.feature_map_layers`).
    pooling : str, Pooling, list or dict
        How 4-D maps become vectors: a name of :func:`get_pooling` (``"sum"``,
        ``"avg"``, ``"max"``, ``"gem"``, ``"crow"``, ``"rmac"``, ``"mop"``), a
        pooling object, a list (their descriptors are concatenated) or a dict
        ``{layer: pooling(s)}``. 2-D (fully connected) outputs are used as they are.
    ctx : None, mx.Context, str or list
        Device(s); ``None`` is the current context when :meth:`extract` runs.
    batch_size : int
        Images per forward pass (images of equal size are batched together).
    scales : sequence of float
        Multi-scale extraction: the image is resized by each factor and the
        L2-normalised descriptors are averaged, e.g. ``(1, 2 ** -0.5, 0.5)``.
    resize : int or None
        Size (pixels) of the input's ``resize_side`` at scale 1; ``None`` uses
        the model's ``preprocess.resize`` (or its input size).
    resize_side : {"shorter", "longer"}
        Which side ``resize`` sets when whole images are used (retrieval
        papers often fix the longer side, e.g. 1024).
    keep_aspect : bool or None
        ``True`` feeds the whole image with its aspect ratio (no centre crop),
        ``False`` the model's resize + centre crop; ``None`` decides from the
        layers: whole images unless a layer is fully connected or the model
        uses a mean image.
    pca : int or None
        Reduce to this many dimensions with :class:`PCAWhitening`, learned by
        :meth:`fit` on a separate set.
    whiten : bool
        Whiten in the PCA.
    normalize : bool
        L2-normalise each layer/pooling part and the final descriptor.

    Examples
    --------
    >>> import mxnet as mx, numpy as np
    >>> from finetune.testing import TinyNet
    >>> fx = FeatureExtractor(TinyNet(), "conv2", pooling=["max", "gem"])
    >>> fx.extract(np.zeros((2, 20, 30, 3), np.uint8)).shape
    (2, 16)
    """

    def __init__(self, model, layers=None, pooling="gem", *, ctx=None, batch_size: int = 32,
                 scales=(1.0,), resize: int | None = None, resize_side: str = "shorter",
                 keep_aspect: bool | None = None,
                 pca: int | None = None, whiten: bool = True, normalize: bool = True):
        self.model = model = _as_model(model)
        if layers is None:
            maps = feature_map_layers(model)
            if not maps:
                raise ConfigError(f"{type(model).__name__} has no layer with a 4-D feature map to pool; name the "
                                  "layers (see model.layer_names).")
            layers = maps[-1][0]
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers:
            raise ConfigError("The 'layers' parameter of FeatureExtractor must name at least one layer.")
        known = list(model.layer_names)
        for layer in self.layers:
            if layer not in known:
                raise UnknownNameError("layer", layer, known)
        self.poolings = self._parse_pooling(pooling)
        self.pooling = pooling
        self.ctx = ctx
        check_range("FeatureExtractor", "batch_size", batch_size, 1)
        self.batch_size = int(batch_size)
        self.scales = tuple(float(s) for s in np.atleast_1d(scales))
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError(f"The 'scales' parameter of FeatureExtractor must be positive. Got {scales!r}.")
        if resize is not None:
            check_range("FeatureExtractor", "resize", resize, 1)
        self.resize = None if resize is None else int(resize)
        check_choice("FeatureExtractor", "resize_side", resize_side, ("shorter", "longer"))
        self.resize_side = resize_side
        self.keep_aspect = keep_aspect
        self.normalize = bool(normalize)
        self.whiten = bool(whiten)
        self.pca = None if pca is None else PCAWhitening(int(pca), whiten=whiten, normalize=normalize)
        self._kinds = None

    def __repr__(self) -> str:
        parts = [type(self.model).__name__, repr(self.layers if len(self.layers) > 1 else self.layers[0])]
        parts.append(f"pooling={self._pooling_config()!r}")
        if self.scales != (1.0,):
            parts.append(f"scales={self.scales!r}")
        if self.pca is not None:
            parts.append(f"pca={self.pca.n_components}")
        return f"FeatureExtractor({', '.join(parts)})"

    # ------------------------------------------------------------------ config
    def _parse_pooling(self, pooling) -> dict:
        if isinstance(pooling, dict):
            unknown = set(pooling) - set(self.layers)
            if unknown:
                raise ConfigError(f"Pooling given for layers {sorted(unknown)} that are not in 'layers' {self.layers}.")
            return {layer: self._pooling_list(pooling.get(layer, "gem")) for layer in self.layers}
        if isinstance(pooling, Pooling) and len(self.layers) > 1:
            raise ConfigError("One pooling object cannot serve several layers; pass a name or a dict.")
        return {layer: self._pooling_list(pooling) for layer in self.layers}

    @staticmethod
    def _pooling_list(spec) -> list:
        if spec is None:
            return []
        specs = spec if isinstance(spec, (list, tuple)) else [spec]
        return [get_pooling(s) for s in specs]

    def _pooling_config(self):
        out = {layer: [{"name": p.name, **p.get_config()} for p in pools] for layer, pools in self.poolings.items()}
        return out

    @property
    def preprocess(self):
        """The model's :class:`~finetune.Preprocess`."""
        return self.model.preprocess

    def layer_kinds(self) -> dict:
        """``{layer: "conv" | "fc"}`` found by one forward pass at the model's input size."""
        if self._kinds is None:
            pre = self.preprocess
            x = mx.nd.zeros((1, pre.channels, *pre.size), ctx=self._ctxs()[0])
            outs = self.model.features(x, self.layers)
            self._kinds = {layer: ("conv" if len(o.shape) == 4 else "fc") for layer, o in zip(self.layers, outs)}
        return self._kinds

    def _keep_aspect(self) -> bool:
        if self.keep_aspect is not None:
            if self.keep_aspect and self.preprocess.mean_image is not None:
                raise ConfigError("keep_aspect=True is impossible with a mean image (it fixes the input size).")
            return bool(self.keep_aspect)
        return self.preprocess.mean_image is None and all(k == "conv" for k in self.layer_kinds().values())

    def _ctxs(self) -> list:
        ctxs = resolve_ctx(self.ctx)
        params = self.model.collect_params()
        for p in params.values():
            try:
                current = set(p.list_ctx())
            except RuntimeError:  # not initialised: the model's business
                break
            if current != set(ctxs):
                log.info("Moving the model's parameters to %s.", ctxs)
                params.reset_ctx(ctxs)
            break
        for pools in self.poolings.values():
            for pool in pools:
                if isinstance(pool, mx.gluon.Block) and pool.collect_params():
                    pool.collect_params().reset_ctx(ctxs)
        return ctxs

    # --------------------------------------------------------------- geometry
    def prepare(self, image: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """One ``(H, W, 3)`` uint8 image (network colour order) → normalised ``(C, H, W)`` input."""
        pre = self.preprocess
        if self._keep_aspect():
            target = self.resize or pre.resize or max(pre.size)
            img = resize_keep_aspect(image, max(1.0, target * scale), self.resize_side)
        else:
            if self.resize is not None:
                pre = pre.replace(resize=self.resize)
            img = pre.resize_crop(image)
            if scale != 1.0:
                img = resize_keep_aspect(img, max(1.0, min(img.shape[:2]) * scale))
        chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
        return pre.normalize(chw)

    # ----------------------------------------------------------------- forward
    def iter_layer_outputs(self, images, *, scale: float = 1.0, color: str = "RGB", progress: bool = False):
        """Run the network; yield ``(indices, [NDArray per layer])`` batch by batch.

        Images of equal prepared size are batched together (up to
        ``batch_size``); the others run alone. ``indices`` are positions in ``images``.
        """
        source = images if isinstance(images, ImageSource) else ImageSource(images, color=color)
        ctxs = self._ctxs()
        if scale != 1.0 and not self._keep_aspect() and "fc" in self.layer_kinds().values():
            raise ConfigError("Multi-scale extraction needs convolutional layers; a fully connected "
                              "layer takes one input size only.")
        order = range(len(source))
        if progress:
            from .._progress import progress_bar

            order = progress_bar(order, desc="extract", unit="img", leave=True)
        pending = {}
        window = self.batch_size * 4
        for i in order:
            x = self.prepare(source.read(i, self.preprocess.color), scale)
            pending.setdefault(x.shape, []).append((i, x))
            if sum(len(v) for v in pending.values()) >= window or len(pending[x.shape]) >= self.batch_size:
                full = [s for s, v in pending.items() if len(v) >= self.batch_size] or list(pending)
                for shape in full:
                    yield from self._run(pending.pop(shape), ctxs)
        for group in pending.values():
            yield from self._run(group, ctxs)

    def _run(self, group, ctxs):
        for start in range(0, len(group), self.batch_size):
            part = group[start:start + self.batch_size]
            idx = [i for i, _ in part]
            batch = np.stack([x for _, x in part])
            if len(ctxs) == 1 or len(batch) < len(ctxs):
                outs = self.model.features(mx.nd.array(batch, ctx=ctxs[0]), self.layers)
            else:
                pieces = mx.gluon.utils.split_and_load(batch, ctxs, even_split=False)
                per_ctx = [self.model.features(p, self.layers) for p in pieces]
                outs = [mx.nd.concat(*[o[j].as_in_context(ctxs[0]) for o in per_ctx], dim=0)
                        for j in range(len(self.layers))]
            if len(outs) != len(self.layers):
                raise ShapeError(f"model.features returned {len(outs)} outputs for {len(self.layers)} layers.")
            yield idx, outs

    def _pool(self, outs) -> np.ndarray:
        parts = []
        for layer, out in zip(self.layers, outs):
            if len(out.shape) != 4:
                parts.append(out.reshape((out.shape[0], -1)).asnumpy())
                continue
            pools = self.poolings[layer]
            if not pools:
                raise ConfigError(f"Layer {layer!r} gives (N, C, H, W) maps; choose a pooling for it.")
            for pool in pools:
                parts.append(pool.transform(out.asnumpy()) if isinstance(pool, MOP) else pool(out).asnumpy())
        if self.normalize:
            parts = [l2_normalize(p) for p in parts]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _raw(self, images, color: str, progress: bool) -> np.ndarray:
        source = ImageSource(images, color=color)
        result = None
        for scale in self.scales:
            for idx, outs in self.iter_layer_outputs(source, scale=scale, progress=progress):
                desc = self._pool(outs)
                if result is None:
                    result = np.zeros((len(source), desc.shape[1]), np.float32)
                result[idx] += desc
        if result is None:
            raise ConfigError("FeatureExtractor: no images were given.")
        result /= len(self.scales)
        return l2_normalize(result) if self.normalize else result

    # --------------------------------------------------------------- public API
    def fit(self, images, *, color: str = "RGB", max_images: int | None = 2000, progress: bool = False):
        """Learn what needs learning (MOP codebooks, PCA) on a training set.

        Parameters
        ----------
        images : see :meth:`extract`
            A set separate from the database and queries you evaluate on.
        color : {"RGB", "BGR"}
            Colour order of in-memory images.
        max_images : int or None
            Use at most this many images (evenly spaced) for the MOP codebooks.

        Returns
        -------
        FeatureExtractor
            ``self``.
        """
        source = ImageSource(images, color=color)
        mops = {layer: [p for p in pools if isinstance(p, MOP)] for layer, pools in self.poolings.items()}
        if any(mops.values()):
            n = len(source)
            pick = np.unique(np.linspace(0, n - 1, min(n, max_images or n)).astype(int))
            subset = ImageSource([source.read(int(i), self.preprocess.color) for i in pick],
                                 color=self.preprocess.color)
            maps = {layer: [] for layer in self.layers}
            for _, outs in self.iter_layer_outputs(subset, progress=progress):
                for layer, out in zip(self.layers, outs):
                    if mops[layer]:
                        maps[layer].append(out.asnumpy())
            for layer, pools in mops.items():
                for pool in pools:
                    pool.fit(maps[layer])
        if self.pca is not None:
            pca, self.pca = self.pca, None
            try:
                raw = self.extract(source, progress=progress)
            finally:
                self.pca = pca
            self.pca.fit(raw)
        return self

    def extract(self, images, *, color: str = "RGB", progress: bool = False) -> np.ndarray:
        """Descriptors ``(N, D)`` float32 of images.

        Parameters
        ----------
        images : str, path-like, bytes, numpy.ndarray, sequence, ImageList, RecordDataset or dataset
            A folder (every image below it, sorted by path, as
            :func:`finetune.data.list_images` lists it), an image file,
            encoded bytes, an array ``(H, W[, C])`` / ``(N, H, W, C)`` uint8,
            a list of these, an :class:`~finetune.ImageList`, a
            :class:`~finetune.RecordDataset` (its stored images, raw), or a
            dataset returning images or ``(image, label)``.
        color : {"RGB", "BGR"}
            Colour order of in-memory arrays (files are decoded in the right order).
        progress : bool
            Show a tqdm bar.
        """
        for pools in self.poolings.values():
            for pool in pools:
                if isinstance(pool, MOP) and not pool.fitted:
                    raise ConfigError("MOP pooling needs codebooks: call FeatureExtractor.fit(training_images) first.")
        if self.pca is not None and not self.pca.fitted:
            raise ConfigError(f"pca={self.pca.n_components} needs a learned projection: call "
                              "FeatureExtractor.fit(training_images) on a separate set first.")
        desc = self._raw(images, color, progress)
        return self.pca.transform(desc) if self.pca is not None else desc

    __call__ = extract

    # ------------------------------------------------------------ persistence
    def get_config(self) -> dict:
        """The JSON-ready settings that :meth:`save` writes."""
        return {
            "layers": self.layers, "pooling": self._pooling_config(), "batch_size": self.batch_size,
            "scales": list(self.scales), "resize": self.resize, "resize_side": self.resize_side,
            "keep_aspect": self.keep_aspect,
            "pca": None if self.pca is None else self.pca.n_components, "whiten": self.whiten,
            "normalize": self.normalize, "version": __version__,
        }

    def save(self, path, *, save_model: bool = True) -> None:
        """Save settings, learned PCA / MOP state and (if it can save itself) the model to a folder.

        The model directory is replaced atomically first, then the settings
        and the learned states together, as one unit.
        """
        save_folder(self, path, save_model=save_model)

    @classmethod
    def load(cls, path, model=None, *, ctx=None) -> "FeatureExtractor":
        """Load a saved extractor; pass ``model`` when the folder holds none."""
        path = os.fspath(path)
        cfg = read_config(path)
        if model is None:
            if not cfg.get("model"):
                raise ConfigError(f"{path!r} holds no model; pass 'model=' to FeatureExtractor.load.")
            model = create_model(os.path.join(path, cfg["model"]))
        pooling = {layer: [get_pooling(p["name"], **{k: v for k, v in p.items() if k != "name"}) for p in pools]
                   for layer, pools in cfg["pooling"].items()}
        obj = cls(model, cfg["layers"], pooling, ctx=ctx, batch_size=cfg["batch_size"], scales=cfg["scales"],
                  resize=cfg["resize"], resize_side=cfg.get("resize_side", "shorter"), keep_aspect=cfg["keep_aspect"], pca=cfg["pca"], whiten=cfg["whiten"],
                  normalize=cfg["normalize"])
        load_states(obj, path)
        return obj
