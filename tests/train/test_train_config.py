import dataclasses
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from finetune.errors import ConfigError
from finetune.train import (CosineSchedule, LabelSmoothingLoss, ManualRecipe, PlateauSchedule, Recipe, StepSchedule,
                            TrainConfig, Trainer)
from finetune.train._config import TRAIN_CONFIG_CONSTRAINTS, make_schedule, schedule_spec

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
# a value each field accepts that is not its default
GOOD = {"optimizer": "adam", "optimizer_params": {"learning_rate": 0.1, "wd": 0.0}, "batch_size": 7,
        "kvstore": "local", "schedule": {"name": "step", "factor": 0.5, "epochs": [1, 3]},
        "loss": {"name": "label_smoothing", "smoothing": 0.2}, "seed": 5, "workers": 0, "out_dir": "runs/a",
        "checkpoint_every": 3, "cache_features": False, "mixed_precision": True, "hybridize": False,
        "progress": False, "ema": 0.9, "tta": True, "mixup": 0.2, "cutmix": 1.0}
# a value each field refuses
BAD = {"optimizer": 3, "optimizer_params": [1], "batch_size": 0, "kvstore": "nope", "schedule": 3, "loss": 2.5,
       "seed": 1.5, "workers": -1, "out_dir": 3, "checkpoint_every": -1, "cache_features": "yes",
       "mixed_precision": 1, "hybridize": "no", "progress": None, "ema": 1.0, "tta": 0, "mixup": float("nan"),
       "cutmix": -1}


def test_every_field_has_a_constraint_and_test_values():
    assert sorted(TRAIN_CONFIG_CONSTRAINTS) == sorted(FIELDS) == sorted(GOOD) == sorted(BAD)


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_round_trips_through_json(name):
    config = TrainConfig(**{name: GOOD[name]})
    d = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(d) == config
    assert f"{name}=" in repr(config)


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_refuses_a_bad_value_naming_it(name):
    with pytest.raises(ConfigError, match=repr(name)):
        TrainConfig(**{name: BAD[name]})
    with pytest.raises(ConfigError, match=f"{name!r} parameter of TrainConfig"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), name: BAD[name]})
    with pytest.raises(ConfigError, match=f"{name!r} parameter of Trainer"):
        Trainer(_net(), **{name: BAD[name]})


def test_from_dict_refuses_unknown_keys_and_specs_with_suggestions():
    with pytest.raises(ConfigError, match="Did you mean 'batch_size'"):
        TrainConfig.from_dict({"batch_sise": 3})
    with pytest.raises(ConfigError, match="Did you mean 'cosine'"):
        TrainConfig(schedule="cosin")
    with pytest.raises(ConfigError, match="'factor'"):
        TrainConfig(schedule={"name": "step", "factor": 2.0})
    with pytest.raises(ConfigError, match="Did you mean 'adamw'"):
        TrainConfig(optimizer="adamww")


def test_repr_shows_only_the_non_defaults_and_the_config_is_frozen():
    assert repr(TrainConfig()) == "TrainConfig()"
    assert repr(TrainConfig(batch_size=8, ema=0.99)) == "TrainConfig(batch_size=8, ema=0.99)"
    config = TrainConfig(optimizer_params={"lr": 0.1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 3
    with pytest.raises(TypeError):
        config.optimizer_params["lr"] = 1.0


@pytest.mark.parametrize("schedule", [StepSchedule(0.5, epochs=[2, 4]), StepSchedule(0.1, epochs=3),
                                      CosineSchedule(warmup_epochs=1.5, final=0.1), PlateauSchedule(0.2, stop_after=2)])
def test_the_library_schedules_write_a_spec_that_builds_the_same_schedule(schedule):
    assert repr(make_schedule(schedule_spec(schedule))) == repr(schedule)
    d = TrainConfig(schedule=schedule, loss=LabelSmoothingLoss(0.3)).to_dict()
    assert d["loss"] == {"name": "label_smoothing", "smoothing": 0.3}
    json.dumps(d)


def test_a_custom_schedule_is_used_but_has_no_json_form():
    class Halve(StepSchedule):
        pass

    config = TrainConfig(schedule=Halve(0.5, 1))
    assert Trainer(_net(), config).schedule is config.schedule
    with pytest.raises(ConfigError, match="no JSON form"):
        config.to_dict()


def _net():
    net = nn.HybridSequential(prefix="")
    net.add(nn.Dense(8, activation="relu", prefix="body_"), nn.Dense(3, prefix="head_"))
    net.initialize(mx.init.Xavier(rnd_type="gaussian", magnitude=2), ctx=mx.cpu())
    return net


def _data():
    rng = np.random.RandomState(0)
    x = rng.rand(24, 5).astype("float32")
    return x, (x[:, 0] * 3).astype(int).clip(0, 2)


SETTINGS = dict(optimizer="adam", optimizer_params={"lr": 0.01}, batch_size=8, schedule="cosine",
                loss={"name": "label_smoothing", "smoothing": 0.1}, seed=3, ema=0.9, mixup=0.2, progress=False)


def test_a_config_and_the_same_keywords_train_identically():
    runs = []
    for make in (lambda net: Trainer(net, TrainConfig(**SETTINGS)), lambda net: Trainer(net, **SETTINGS),
                 lambda net: Trainer(net, TrainConfig(**SETTINGS).replace(seed=0), seed=3)):
        mx.random.seed(0)
        net = _net()
        t = make(net)
        assert t.config == TrainConfig(**SETTINGS)
        t.fit(_data(), val=_data(), epochs=2)
        runs.append([(r["train_loss"], r["val_loss"]) for r in t.history_])
    assert runs[0] == runs[1] == runs[2]


def test_trainer_reads_its_settings_from_the_config_and_takes_callbacks():
    from finetune.train import Callback

    class Count(Callback):
        n = 0

        def on_epoch_end(self, trainer, epoch, logs):
            Count.n += 1

    t = Trainer(_net(), TrainConfig(batch_size=8, progress=False), callbacks=[Count()])
    assert (t.batch_size, t.progress, t.optimizer) == (8, False, "sgd")
    with pytest.raises(AttributeError):
        t.batch_size = 4
    t.fit(_data(), epochs=2)
    assert Count.n == 2
    with pytest.raises(ConfigError, match="'config' parameter of Trainer"):
        Trainer(_net(), {"batch_size": 8})
    with pytest.raises(ConfigError, match="Did you mean 'batch_size'"):
        Trainer(_net(), batch_sise=8)


def test_manual_recipe_keeps_the_command_line_defaults_and_checks_its_fields():
    manual = Recipe.preset("manual")
    assert isinstance(manual, ManualRecipe) and manual == Recipe.manual()
    config = manual.train_config(has_val=False)
    assert (config.optimizer, config.batch_size, config.schedule, manual.epochs) == ("sgd", 32, "constant", 10)
    plateau = Recipe.manual(schedule="plateau", stop_after=2)
    assert plateau.train_config(has_val=True).schedule["monitor"] == "val_top1"
    assert plateau.train_config(has_val=False).schedule["monitor"] == "train_loss"
    for bad in ({"policy": "everything"}, {"factor": 0.0}, {"step_epochs": (0,)}, {"optimizer": "adamww"}):
        with pytest.raises(ConfigError):
            Recipe.manual(**bad)


def test_every_settings_object_refuses_an_unknown_field_in_replace():
    for settings in (Recipe(), Recipe.manual(), TrainConfig()):
        with pytest.raises(ConfigError, match=f"Unknown {type(settings).__name__} field 'epoch'"):
            settings.replace(epoch=3)
        assert settings.replace(seed=7).seed == 7 and repr(settings.replace(seed=7)).endswith("seed=7)")


def test_every_named_recipe_builds_and_an_unknown_name_lists_them():
    from finetune.errors import UnknownNameError
    from finetune.train import PRESETS

    assert list(PRESETS) == ["default", "sgd-pretrained", "adam-plateau", "head-only"]
    for name, fields in PRESETS.items():
        recipe = Recipe.preset(name)
        assert all(getattr(recipe, k) == v for k, v in fields.items())
    with pytest.raises(UnknownNameError, match="head-only, manual"):
        Recipe.preset("head_only")
