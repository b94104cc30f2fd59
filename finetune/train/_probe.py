"""The linear probe: the baseline every fine-tuning run must beat.

Frozen backbone features (the pooled output a new head would see) and a
scikit-learn logistic regression, its regularisation chosen on validation
data. Written here, not by hand elsewhere, so the main job, the command line
and the benchmarks all quote the same baseline.
"""

from __future__ import annotations

import numpy as np

from .._context import resolve_ctx
from ..data import RecordDataset
from ..errors import ConfigError
from ._cache import compute_features

__all__ = ["linear_probe"]


def _features(model, data, size, batch_size, workers):
    pre = model.preprocess.replace(size=(size, size), resize=size) if size else model.preprocess
    path = data.path if isinstance(data, RecordDataset) else data
    from .._progress import progress_bar

    ds = compute_features(model.body, RecordDataset(path, pre), resolve_ctx(None)[:1], batch_size, workers,
                          progress=lambda it: progress_bar(it, desc="probe features", unit="batch"))
    x = np.stack([ds[i][0] for i in range(len(ds))])
    return x.reshape(len(x), -1), np.asarray([ds[i][1] for i in range(len(ds))], int)


def linear_probe(model, train, val, test=None, *, size: int | None = None, Cs=(0.01, 0.1, 1.0, 10.0),
                 batch_size: int = 64, workers: int | None = None) -> dict:
    """Fit logistic regression on frozen features of ``model``'s backbone; score it.

    Parameters
    ----------
    model : finetune.Model
        A model with a ``body`` (its backbone); only the backbone is used, in
        inference mode.
    train, val, test : RecordDataset or str
        Records. ``C`` is chosen on ``val``; the classifier is then refitted
        on ``train`` and scored on ``test`` (when given) and ``val``.
    size : int, optional
        Square input size (default: the model's preprocessing).
    Cs : tuple of float
        Inverse regularisation strengths tried.

    Returns
    -------
    dict
        ``C``, ``val_top1``, ``test_top1`` (or ``None``) and ``classifier``
        (the fitted scikit-learn pipeline).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..models import Model

    if not isinstance(model, Model):
        raise ConfigError(f"linear_probe needs a finetune.Model with a backbone (.body); got {type(model).__name__}.")
    workers = 2 if workers is None else workers
    xtr, ytr = _features(model, train, size, batch_size, workers)
    xva, yva = _features(model, val, size, batch_size, workers)

    def fit(c):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(xtr, ytr)

    scores = {c: fit(c).score(xva, yva) for c in Cs}
    best = max(Cs, key=lambda c: (scores[c], -Cs.index(c)))
    clf = fit(best)
    out = {"C": best, "val_top1": float(scores[best]), "test_top1": None, "classifier": clf}
    if test is not None:
        xte, yte = _features(model, test, size, batch_size, workers)
        out["test_top1"] = float(clf.score(xte, yte))
    return out
