"""Deprecated alias of :mod:`finetune.use`; import from ``finetune`` or ``finetune.use`` instead.

Kept so that code written for earlier versions (``from finetune.predict import ...``)
keeps working until finetune 0.3.0; every access warns with a :class:`DeprecationWarning`.
"""

from ._legacy import module_alias

__getattr__ = module_alias("finetune.predict", "finetune.use",
                           ("Prediction", "Predictions", "Predictor", "load_name_map"),
                           moved={"IMAGE_EXTENSIONS": "finetune.data"})
