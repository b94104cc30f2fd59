"""Resume checks what it resumes: a checkpoint records its run's data and settings, a mismatch is refused."""

import shutil

import numpy as np
import pytest
from mxnet.gluon import nn

import finetune as ft
from finetune.errors import CheckpointError
from finetune.train import LabelSmoothingLoss, Trainer
from finetune.train._resume import check_fingerprint

from ._nets import data, mlp, params

BASE = dict(batch_size=10, optimizer="sgd", optimizer_params={"lr": 0.05, "momentum": 0.9}, schedule="cosine",
            seed=0, progress=False)

# every recorded setting, changed one at a time: (Trainer arguments, the name the refusal gives)
CHANGES = {
    "optimizer": (dict(optimizer="adam", optimizer_params={"lr": 0.05}), "optimizer"),
    "learning rate": (dict(optimizer_params={"lr": 0.01, "momentum": 0.9}), "optimizer_params.learning_rate"),
    "momentum": (dict(optimizer_params={"lr": 0.05, "momentum": 0.5}), "optimizer_params.momentum"),
    "weight decay": (dict(optimizer_params={"lr": 0.05, "momentum": 0.9, "wd": 1e-3}), "optimizer_params.wd"),
    "batch size": (dict(batch_size=8), "batch_size"),
    "schedule": (dict(schedule="step"), "schedule"),
    "seed": (dict(seed=1), "seed"),
    "loss": (dict(loss=LabelSmoothingLoss(0.1)), "loss"),
    "weight average": (dict(ema=0.9), "ema"),
    "mixup": (dict(mixup=0.2), "mixup"),
    "cutmix": (dict(cutmix=0.2), "cutmix"),
}


def _first_run(tmp_path, **kw):
    t = Trainer(mlp(), out_dir=str(tmp_path), **{**BASE, **kw})
    t.fit(data(40), val=data(12, seed=1), epochs=1)
    return t


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_resume_with_another_setting_is_refused_naming_it(tmp_path, change):
    _first_run(tmp_path)
    kw, name = CHANGES[change]
    t = Trainer(mlp(seed=2), **{**BASE, **kw})
    before = params(t.model)
    with pytest.raises(CheckpointError, match=r"What differs: .*" + name.replace(".", r"\.")) as e:
        t.fit(data(40), val=data(12, seed=1), epochs=2, resume=str(tmp_path))
    assert "Start afresh" in str(e.value) and "resume with the data and settings" in str(e.value)
    after = params(t.model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing was loaded or trained


@pytest.mark.parametrize("what, train, val", [
    ("more training items", data(46), data(12, seed=1)),
    ("other training labels", (data(40)[0], (data(40)[1] + 1) % 3), data(12, seed=1)),
    ("other validation data", data(40), data(15, seed=1)),
    ("no validation data", data(40), None),
])
def test_resume_on_other_arrays_is_refused(tmp_path, what, train, val):
    _first_run(tmp_path)
    with pytest.raises(CheckpointError, match="(train|val)"):
        Trainer(mlp(), **BASE).fit(train, val=val, epochs=2, resume=str(tmp_path))


def test_resume_with_the_same_data_and_settings_continues(tmp_path):
    _first_run(tmp_path)
    t = Trainer(mlp(), **BASE).fit(data(40), val=data(12, seed=1), epochs=2, resume=str(tmp_path))
    assert [r["epoch"] for r in t.history_] == [0, 1]


def _tiny_image_net():
    net = nn.HybridSequential(prefix="")
    net.add(nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(3, in_units=3, prefix="head_fc_"))
    net.initialize()
    return net


def test_resume_a_two_class_checkpoint_on_three_class_records_is_refused(image_folder, tmp_path):
    two = tmp_path / "two"
    for name in ("cat", "dog"):
        shutil.copytree(image_folder / name, two / name)
    pre = ft.Preprocess(size=(8, 8), resize=8)
    ft.pack(ft.ImageList.from_folder(two), tmp_path / "two", resize=16, workers=1)
    ft.pack(ft.ImageList.from_folder(image_folder), tmp_path / "three", resize=16, workers=1)
    run = tmp_path / "run"
    Trainer(_tiny_image_net(), workers=0, out_dir=str(run), **BASE).fit(
        ft.RecordDataset(tmp_path / "two", pre), epochs=1)
    with pytest.raises(CheckpointError) as e:
        Trainer(_tiny_image_net(), workers=0, **BASE).fit(ft.RecordDataset(tmp_path / "three", pre), epochs=2,
                                                            resume=str(run))
    msg = str(e.value)
    assert "train.classes" in msg and "'fish'" in msg and "train.items" in msg
    Trainer(_tiny_image_net(), workers=0, **BASE).fit(ft.RecordDataset(tmp_path / "two", pre), epochs=2,
                                                      resume=str(run))  # the same records resume


@pytest.mark.parametrize("saved, now", [(None, {"seed": 0}), ({"seed": 0}, None), (None, None)])
def test_checkpoints_without_a_fingerprint_still_resume(saved, now):
    check_fingerprint("last.ckpt", saved, now)  # written before runs were recorded, or loaded outside fit


def test_a_malformed_fingerprint_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="fingerprint"):
        check_fingerprint("last.ckpt", ["seed", 0], {"seed": 0})


def test_resuming_a_finished_run_says_there_is_nothing_left_to_train(tmp_path, caplog):
    import logging

    import numpy as np

    import finetune as ft
    from finetune.testing import TinyNet

    x, y = np.random.rand(8, 3, 16, 16).astype("float32"), np.arange(8) % 2
    out = str(tmp_path / "run")
    ft.Trainer(TinyNet(classes=2), batch_size=4, progress=False, out_dir=out, seed=0).fit((x, y), epochs=2)
    with caplog.at_level(logging.WARNING, logger="finetune"):
        trainer = ft.Trainer(TinyNet(classes=2), batch_size=4, progress=False, out_dir=out, seed=0)
        trainer.fit((x, y), epochs=2, resume=out)
    assert "nothing is left to train" in caplog.text and len(trainer.history_) == 2


# ------------------------------------------------------------------ every setting is recorded or may change
def test_every_train_config_field_is_recorded_or_listed_as_resumable():
    """A new TrainConfig field must be added to RUN_SETTINGS (compared on resume) or RESUMABLE_SETTINGS."""
    import dataclasses

    from finetune.train import TrainConfig
    from finetune.train._resume import RESUMABLE_SETTINGS, RUN_SETTINGS

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields == set(RUN_SETTINGS) | set(RESUMABLE_SETTINGS)
    assert not set(RUN_SETTINGS) & set(RESUMABLE_SETTINGS)


@pytest.mark.parametrize("recipe_class", ["Recipe", "ManualRecipe"])
def test_every_recipe_field_but_the_resumable_ones_is_recorded(recipe_class):
    """Changing any recipe field (but epochs) changes what a checkpoint records, so resume refuses it."""
    import dataclasses

    from finetune.train import ManualRecipe, Recipe
    from finetune.train._resume import RESUMABLE_RECIPE_FIELDS, recipe_settings

    cls = {"Recipe": Recipe, "ManualRecipe": ManualRecipe}[recipe_class]
    base = cls()
    recorded = recipe_settings(base)["recipe"]
    for f in dataclasses.fields(cls):
        assert (f.name in recorded) != (f.name in RESUMABLE_RECIPE_FIELDS), f.name


def _policy_run(tmp_path, policy, net=None, **kw):
    t = Trainer(net or mlp(), out_dir=str(tmp_path), policy=policy, **{**BASE, **kw})
    return t.fit(data(40), val=data(12, seed=1), epochs=1)


@pytest.mark.parametrize("policy, names", [
    (lambda: ft.LayerLRPolicy.pretrained(0.5), ["policy: checkpoint 'all', now 'pretrained(0.5)'",
                                                "how parameters train"]),
    (lambda: ft.LayerLRPolicy(freeze_until="body"), ["freeze_until: checkpoint None, now 'body'"]),
    (lambda: ft.LayerLRPolicy(head_epochs=1), ["head_epochs: checkpoint 0, now 1"]),
    (lambda: ft.LayerLRPolicy(freeze_bn=True), ["freeze_bn: checkpoint False, now True"]),
])
def test_resume_with_another_policy_is_refused_in_user_terms(tmp_path, policy, names):
    _policy_run(tmp_path, None)
    with pytest.raises(CheckpointError) as e:
        Trainer(mlp(), policy=policy(), **BASE).fit(data(40), val=data(12, seed=1), epochs=2, resume=str(tmp_path))
    for name in names:
        assert name in str(e.value)
    assert "damaged" not in str(e.value)


def test_a_checkpoint_of_another_model_is_refused_without_mxnet_text(tmp_path):
    """Loaded outside fit (no run to compare), the weights' names and shapes are compared in our words."""
    from mxnet.gluon import nn

    _policy_run(tmp_path, None)
    other = nn.HybridSequential(prefix="")
    other.add(nn.Dense(8, in_units=5, prefix="body_"), nn.Dense(4, in_units=8, prefix="head_"))
    other.initialize()
    with pytest.raises(CheckpointError) as e:
        Trainer(other, **BASE).load_checkpoint(str(tmp_path))
    text = str(e.value)
    assert "another model" in text and "other shapes" in text
    for leak in ("allow_miss", "/tmp", "damaged", "MXNet", "Parameter '"):
        assert leak not in text.replace(str(tmp_path), "")


def test_resume_with_other_augmentation_is_refused(tmp_path, image_folder):
    from finetune.data import Augment, RecordDataset

    records = tmp_path / "all"
    ft.pack(ft.ImageList.from_folder(image_folder), records, resize=16, workers=1)
    pre = ft.Preprocess(size=(8, 8), resize=8)
    net = _tiny_image_net()
    cfg = dict(BASE, batch_size=4, workers=0)
    tmp_path = tmp_path / "run"
    Trainer(net, out_dir=str(tmp_path), **cfg).fit(RecordDataset(records, pre, train=True), epochs=1)
    again = RecordDataset(records, pre, train=True, augment=Augment(mirror=False))
    with pytest.raises(CheckpointError, match="augment: checkpoint 'Augment\\(\\)', now 'Augment\\(mirror=False\\)'"):
        Trainer(_tiny_image_net(), **cfg).fit(again, epochs=2, resume=str(tmp_path))
