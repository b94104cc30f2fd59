"""finetune — transfer learning of image CNNs on Apache MXNet / Gluon.

Take an ImageNet-pretrained network, adapt it to a small image data set, and
use it to classify images or to extract features for retrieval::

    import finetune as ft

    images = ft.ImageList.from_folder("photos/")
    train, val = images.split(ratios=(0.8, 0.2), seed=0)

The public API is the sorted ``__all__`` below (a literal list, so that tools
can read it; a test keeps it equal to the lazy import table ``_API``). Names are imported lazily, so
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
    "BlockModel": "finetune.models",
    "CaffeNet": "finetune.models",
    "Callback": "finetune.train",
    "CheckReport": "finetune.data",
    "Checkpoint": "finetune.train",
    "CosineSchedule": "finetune.train",
    "DeployedModel": "finetune.models",
    "Deployment": "finetune.use",
    "EarlyStopping": "finetune.train",
    "EvaluationReport": "finetune.use",
    "FeatureExtractor": "finetune.features",
    "FusedModel": "finetune.models",
    "GradCAM": "finetune.use",
    "GradCAMResult": "finetune.use",
    "HeadReplacer": "finetune.models",
    "HistoryLogger": "finetune.train",
    "ImageList": "finetune.data",
    "InceptionResNetV2": "finetune.models",
    "Inference": "finetune.models",
    "InferenceModel": "finetune.models",
    "LayerLRPolicy": "finetune.train",
    "MeanImage": "finetune.data",
    "Model": "finetune.models",
    "ModelProtocol": "finetune.models",
    "OxfordGroundTruth": "finetune.features",
    "PCAWhitening": "finetune.features",
    "PackReport": "finetune.data",
    "PlateauSchedule": "finetune.train",
    "Prediction": "finetune.use",
    "Predictions": "finetune.use",
    "Predictor": "finetune.use",
    "Preprocess": "finetune.data",
    "QuantizedModel": "finetune.models",
    "Recipe": "finetune.train",
    "RecordDataset": "finetune.data",
    "RetrievalIndex": "finetune.features",
    "RevisitedGroundTruth": "finetune.features",
    "Rule": "finetune.train",
    "StepSchedule": "finetune.train",
    "StopTraining": "finetune.train",
    "TrainConfig": "finetune.train",
    "Trainer": "finetune.train",
    "average_precision": "finetune.features",
    "balance": "finetune.data",
    "calibration_batch": "finetune.models",
    "check": "finetune.data",
    "class_retrieval_map": "finetune.features",
    "convert_caffe": "finetune.models",
    "create_model": "finetune.models",
    "decode_image": "finetune.data",
    "errors": "finetune.errors",
    "evaluate": "finetune.use",
    "export_for_deployment": "finetune.use",
    "fuse": "finetune.models",
    "get_pooling": "finetune.features",
    "launch": "finetune.train",
    "list_backbones": "finetune.models",
    "load_deployment": "finetune.use",
    "load_model": "finetune.models",
    "lr_find": "finetune.train",
    "missing_members": "finetune.models",
    "pack": "finetune.data",
    "parse_ctx": "finetune._context",
    "plot_confusion_matrix": "finetune.use",
    "plot_errors": "finetune.use",
    "plot_gradcam": "finetune.use",
    "plot_history": "finetune.use",
    "plot_predictions": "finetune.use",
    "quantize": "finetune.models",
    "read_image": "finetune.data",
    "require_model": "finetune.models",
    "resolve_ctx": "finetune._context",
    "verify_deployment": "finetune.models",
}

__all__ = [
    "Augment",
    "Backbone",
    "BlockModel",
    "CaffeNet",
    "Callback",
    "CheckReport",
    "Checkpoint",
    "CosineSchedule",
    "DeployedModel",
    "Deployment",
    "EarlyStopping",
    "EvaluationReport",
    "FeatureExtractor",
    "FusedModel",
    "GradCAM",
    "GradCAMResult",
    "HeadReplacer",
    "HistoryLogger",
    "ImageList",
    "InceptionResNetV2",
    "Inference",
    "InferenceModel",
    "LayerLRPolicy",
    "MeanImage",
    "Model",
    "ModelProtocol",
    "OxfordGroundTruth",
    "PCAWhitening",
    "PackReport",
    "PlateauSchedule",
    "Prediction",
    "Predictions",
    "Predictor",
    "Preprocess",
    "QuantizedModel",
    "Recipe",
    "RecordDataset",
    "RetrievalIndex",
    "RevisitedGroundTruth",
    "Rule",
    "StepSchedule",
    "StopTraining",
    "TrainConfig",
    "Trainer",
    "__version__",
    "average_precision",
    "balance",
    "calibration_batch",
    "check",
    "class_retrieval_map",
    "convert_caffe",
    "create_model",
    "decode_image",
    "errors",
    "evaluate",
    "export_for_deployment",
    "fuse",
    "get_pooling",
    "launch",
    "list_backbones",
    "load_deployment",
    "load_model",
    "lr_find",
    "missing_members",
    "pack",
    "parse_ctx",
    "plot_confusion_matrix",
    "plot_errors",
    "plot_gradcam",
    "plot_history",
    "plot_predictions",
    "quantize",
    "read_image",
    "require_model",
    "resolve_ctx",
    "verify_deployment",
]


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
