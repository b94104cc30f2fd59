"""Named recipes: the explicit recipes of the classic tutorials, beside the default.

``finetune.train.PRESETS`` holds each as the :class:`~finetune.train.Recipe`
fields it changes; ``Recipe.preset(name, **changes)`` builds it and
``finetune train --recipe NAME`` runs it:

- ``"default"``: :class:`~finetune.train.Recipe` as it is;
- ``"sgd-pretrained"``: the MXNet tutorial's (SGD 0.01, momentum 0.9, the
  pretrained layers at 0.01x, step schedule, live BatchNorm, plain crop and
  mirror);
- ``"adam-plateau"``: Adam 1e-4 with the LR divided by 5 whenever validation
  accuracy drops, stopping after the third drop;
- ``"head-only"``: the head warm-up only (a linear probe on the pretrained
  features).

``"manual"`` (a :class:`~finetune.train.ManualRecipe`: one Trainer with
exactly the settings given) is the one preset that is not a Recipe.
"""

from __future__ import annotations

__all__ = ["PRESETS"]

#: What the tutorials' recipes leave out of the default: warm-up, smoothing, averaging, TTA, erasing.
_PLAIN = dict(batch_size=32, head_epochs=0, label_smoothing=0.0, ema=None, tta=False, layer_decay=None, erasing=0.0,
              dropout=0.0, warmup_epochs=0.0, crop_scale=(0.08, 1.0), frozen_groups=0)

PRESETS = {
    "default": {},
    "sgd-pretrained": dict(_PLAIN, optimizer="sgd", lr=0.01, wd=1e-4, backbone_lr_mult=0.01, batchnorm="live",
                           schedule="step", epochs=8),
    "adam-plateau": dict(_PLAIN, optimizer="adam", lr=1e-4, schedule="plateau", epochs=30, keep_best=True),
    "head-only": dict(epochs=0),
}
