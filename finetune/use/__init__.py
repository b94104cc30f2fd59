"""Using a trained network: prediction, evaluation, Grad-CAM, plots and deployment.

Every object here reads the preprocessing from the model (its
:class:`~finetune.Preprocess`), so it cannot differ from training.

- :class:`Predictor` classifies images and returns :class:`Predictions`
  (a list of :class:`Prediction`); :func:`load_name_map` reads display names.
- :func:`evaluate` measures a classifier on labelled images and returns an
  :class:`EvaluationReport`.
- :class:`GradCAM` shows where a network looks (:class:`GradCAMResult`).
- ``plot_*`` draw training histories, confusion matrices, predictions and
  heat maps.
- :func:`export_for_deployment` writes a :class:`Deployment` folder that
  :func:`load_deployment` reads back and :func:`verify_deployment` checks.
"""

from ..models import Deployment, export_for_deployment, load_deployment, verify_deployment
from ._confusion_plot import plot_confusion_matrix
from ._evaluation import EvaluationReport, evaluate
from ._history_plot import load_history, plot_history
from ._interpret import GradCAM, GradCAMResult, feature_map_layers
from ._names import load_name_map
from ._plots import plot_errors, plot_gradcam, plot_predictions
from ._predictor import Predictor
from ._results import Prediction, Predictions

__all__ = [
    "Deployment",
    "EvaluationReport",
    "GradCAM",
    "GradCAMResult",
    "Prediction",
    "Predictions",
    "Predictor",
    "evaluate",
    "export_for_deployment",
    "feature_map_layers",
    "load_deployment",
    "load_history",
    "load_name_map",
    "plot_confusion_matrix",
    "plot_errors",
    "plot_gradcam",
    "plot_history",
    "plot_predictions",
    "verify_deployment",
]
