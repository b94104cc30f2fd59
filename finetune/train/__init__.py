"""Training: per-layer learning-rate policies, the data-parallel Trainer, callbacks, launcher.

- :class:`LayerLRPolicy` — LR/WD multipliers, freezing and BatchNorm modes per parameter.
- :class:`TrainConfig` — the Trainer's settings as one value (with a JSON form).
- :class:`Trainer` — fit over devices (``split_and_load`` + kvstore) or machines (``dist_sync``).
- schedules (:class:`StepSchedule`, :class:`CosineSchedule`, :class:`PlateauSchedule`).
- callbacks (:class:`Checkpoint`, :class:`EarlyStopping`, :class:`HistoryLogger`, :class:`StopTraining`).
- :class:`Recipe` — the default fine-tuning recipe (:class:`ManualRecipe`: the hand-set one); :func:`lr_find` — the LR range test.
- learning from unlabelled images: ``Recipe.fit(..., unlabeled=...)`` (self-training;
  :func:`pseudo_label`, :func:`select_pseudo_labels`, :class:`PseudoLabels`).
- :func:`launch` — start a local ``dist_sync`` cluster (scheduler, servers, workers);
  :func:`worker_rank` — this worker's rank (rank 0 writes the outputs).
"""

from ._callbacks import Callback, Checkpoint, EarlyStopping, HistoryLogger, StopTraining
from ._config import TrainConfig
from ._launch import launch, worker_rank
from ._losses import LabelSmoothingLoss
from ._lr_find import LRFinderResult, lr_find
from ._manual import ManualRecipe
from ._optim import AdamW
from ._plan import Plan
from ._policy import LayerLRPolicy
from ._rules import Rule
from ._presets import PRESETS
from ._probe import linear_probe
from ._recipe import Recipe, RecipePlan
from ._self_training import PseudoLabels, pseudo_label, select_pseudo_labels
from ._schedule import ConstantSchedule, CosineSchedule, PlateauSchedule, Schedule, StepSchedule
from ._trainer import Trainer
from ._weights import KeepBest, WeightAverage

__all__ = [
    "AdamW",
    "Callback",
    "Checkpoint",
    "ConstantSchedule",
    "CosineSchedule",
    "EarlyStopping",
    "HistoryLogger",
    "KeepBest",
    "LRFinderResult",
    "LabelSmoothingLoss",
    "LayerLRPolicy",
    "ManualRecipe",
    "PRESETS",
    "Plan",
    "PlateauSchedule",
    "PseudoLabels",
    "Recipe",
    "RecipePlan",
    "Rule",
    "Schedule",
    "StepSchedule",
    "StopTraining",
    "TrainConfig",
    "Trainer",
    "WeightAverage",
    "launch",
    "linear_probe",
    "lr_find",
    "pseudo_label",
    "select_pseudo_labels",
    "worker_rank",
]
