"""finetune — transfer learning of image CNNs on Apache MXNet / Gluon.

Take an ImageNet-pretrained network, adapt it to a small image data set, and
use it to classify images or to extract features for retrieval::

    import finetune as ft

    images = ft.ImageList.from_folder("photos/")
    train, val = images.split(ratios=(0.8, 0.2), seed=0)

The public API is the sorted ``__all__`` below. Names are imported lazily, so
``import finetune`` does not import MXNet; this lets the command line set
MXNet's thread count before MXNet starts.
"""

from __future__ import annotations

import importlib

from ._version import __version__

# public name -> the subpackage or module that defines it
_API = {
    "Augment": "finetune.data",
    "Backbone": "finetune.models",
    "Callback": "finetune.train",
    "CheckReport": "finetune.data",
    "Checkpoint": "finetune.train",
    "CosineSchedule": "finetune.train",
    "Deployment": "finetune.deploy",
    "EarlyStopping": "finetune.train",
    "EvaluationReport": "finetune.evaluation",
    "FeatureExtractor": "finetune.features",
    "FusedModel": "finetune.models",
    "GradCAM": "finetune.interpret",
    "GradCAMResult": "finetune.interpret",
    "HeadReplacer": "finetune.models",
    "HistoryLogger": "finetune.train",
    "ImageList": "finetune.data",
    "InceptionResNetV2": "finetune.models",
    "LayerLRPolicy": "finetune.train",
    "MeanImage": "finetune.data",
    "Model": "finetune.models",
    "OxfordGroundTruth": "finetune.features",
    "PCAWhitening": "finetune.features",
    "PackReport": "finetune.data",
    "PlateauSchedule": "finetune.train",
    "Prediction": "finetune.predict",
    "Predictions": "finetune.predict",
    "Predictor": "finetune.predict",
    "Preprocess": "finetune.data",
    "QuantizedModel": "finetune.models",
    "RecordDataset": "finetune.data",
    "RetrievalIndex": "finetune.features",
    "RevisitedGroundTruth": "finetune.features",
    "Rule": "finetune.train",
    "StepSchedule": "finetune.train",
    "StopTraining": "finetune.train",
    "Trainer": "finetune.train",
    "average_precision": "finetune.features",
    "balance": "finetune.data",
    "check": "finetune.data",
    "class_retrieval_map": "finetune.features",
    "decode_image": "finetune.data",
    "errors": "finetune.errors",
    "evaluate": "finetune.evaluation",
    "export_for_deployment": "finetune.deploy",
    "fuse": "finetune.models",
    "get_pooling": "finetune.features",
    "launch": "finetune.train",
    "list_backbones": "finetune.models",
    "load_deployment": "finetune.deploy",
    "load_model": "finetune.models",
    "pack": "finetune.data",
    "plot_confusion_matrix": "finetune.plots",
    "plot_gradcam": "finetune.plots",
    "plot_history": "finetune.plots",
    "plot_predictions": "finetune.plots",
    "quantize": "finetune.models",
    "read_image": "finetune.data",
    "resolve_ctx": "finetune._context",
}

__all__ = sorted(["__version__", *_API])


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'finetune' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module.endswith("." + name) else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
