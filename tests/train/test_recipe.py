"""The default recipe and each of its ingredients: every test fails if its ingredient is silently off."""

from __future__ import annotations

import json
import logging
import os
import random
import zipfile

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.data import Augment, RecordDataset
from finetune.data._augment import train_crop
from finetune.errors import ConfigError, ModelError, UnknownNameError
from finetune.models.graph import batchnorm_modes
from finetune.train import (KeepBest, LabelSmoothingLoss, LayerLRPolicy, LRFinderResult, Recipe, Trainer,
                            WeightAverage, lr_find)

from ._nets import data, graph_model, mlp, params


# ---------------------------------------------------------------- the recipe object
def test_recipe_repr_replace_presets_and_validation():
    assert repr(Recipe()) == "Recipe()"
    assert repr(Recipe(ema=None)) == "Recipe(ema=None)"
    assert Recipe().replace(epochs=3).epochs == 3
    with pytest.raises(UnknownNameError, match="Did you mean 'epochs'"):
        Recipe().replace(epoch=3)
    with pytest.raises(ConfigError, match="layer_decay"):
        Recipe(layer_decay=1.5)
    with pytest.raises(UnknownNameError, match="adamw"):
        Recipe(optimizer="adamww")
    with pytest.raises(ConfigError):
        Recipe(lr="fast")
    sgd = Recipe.preset("sgd-pretrained")
    assert (sgd.optimizer, sgd.backbone_lr_mult, sgd.batchnorm, sgd.ema, sgd.tta) == ("sgd", 0.01, "live", None, False)
    plateau = Recipe.preset("adam-plateau")
    assert (plateau.schedule, plateau.plateau_factor, plateau.plateau_stop_after) == ("plateau", 0.2, 3)
    with pytest.raises(UnknownNameError):
        Recipe.preset("magic")


def test_input_size_comes_from_the_backbone_and_the_images():
    r = Recipe()
    assert r.choose_input_size(224, 28)[0] == 96        # small images: 3x, at least 96
    assert r.choose_input_size(224, 50)[0] == 160       # 150 -> 160 (multiple of 32)
    assert r.choose_input_size(224, 500)[0] == 224      # large images: native
    assert r.choose_input_size(224, 200)[0] == 224      # within 75 % of native: native
    assert Recipe(input_size=64).choose_input_size(224, 28)[0] == 64


def test_epochs_come_from_the_number_of_training_images():
    r = Recipe()
    assert r.epochs == "auto" and repr(r) == "Recipe()"
    assert [r.choose_epochs(n)[0] for n in (None, 100, 900, 3600, 5400, 54000, 10 ** 7)] == [30, 30, 30, 15, 12, 6, 6]
    assert "sqrt" in r.choose_epochs(5400)[1]
    assert Recipe(epochs=7).choose_epochs(54000) == (7, "set")
    assert Recipe(epochs=0).choose_epochs(10) == (0, "set")
    with pytest.raises(ConfigError, match="epochs"):
        Recipe(epochs=-1)
    with pytest.raises(ConfigError, match="whole number or 'auto'"):
        Recipe(epochs="Auto")
    assert Recipe().make_schedule().warmup_epochs == 1.0  # "auto" schedules as for 30 epochs
    assert Recipe(epochs=1).make_schedule().warmup_epochs == 0  # no warm-up longer than the run


def test_fit_trains_the_epochs_the_plan_chose(image_folder, tmp_path, monkeypatch):
    import finetune.train._recipe as recipe_module

    images = ft.ImageList.from_folder(image_folder)
    ft.pack(images, tmp_path / "r", workers=1)
    rec = str(tmp_path / "r.rec")
    # a rule scaled down to test size: 2 epochs up to 1 image, then 2 * sqrt(1 / n), at least 1
    monkeypatch.setattr(recipe_module, "_AUTO_EPOCHS", 2)
    monkeypatch.setattr(recipe_module, "_AUTO_EPOCHS_IMAGES", 1)
    monkeypatch.setattr(recipe_module, "_AUTO_EPOCHS_MIN", 1)
    recipe = Recipe(input_size=32, head_epochs=0, batch_size=8)
    model = recipe.build_model(ft.Backbone.from_zoo("mobilenetv2_0.25", weights=None), images.class_names)
    plan = recipe.plan(model, rec)
    assert plan.epochs == 1 and f"{len(images)} training images" in str(plan)
    trainer = recipe.fit(model, rec, workers=0, progress=False)
    assert len(trainer.history_) == 1 and trainer.recipe_plan_.epochs == 1


def test_plan_lists_every_ingredient_and_follows_switches(image_folder, tmp_path):
    images = ft.ImageList.from_folder(image_folder)
    ft.pack(images, tmp_path / "r", workers=1)
    model = Recipe().build_model(ft.Backbone.from_zoo("mobilenetv2_0.25", weights=None), images.class_names)
    text = str(Recipe().plan(model, str(tmp_path / "r.rec"), str(tmp_path / "r.rec")))
    for word in ("input size", "head warm-up", "layer-wise LR", "BatchNorm", "cosine", "label smoothing",
                 "erasing", "EMA", "mirror", "best validation epoch", "1 of 5 groups, nearest"):
        assert word in text
    off = str(Recipe(ema=None, tta=False, layer_decay=None, label_smoothing=0, head_epochs=0, frozen_groups=0).plan(
        model, str(tmp_path / "r.rec")))
    assert "EMA" not in off and "mirror" not in off and "last epoch" in off
    assert "frozen layers" not in off
    assert "2 of 5 groups" in str(Recipe(frozen_groups=2).plan(model, str(tmp_path / "r.rec")))


# ---------------------------------------------------------------- ingredients
def test_layer_decay_lowers_the_rate_towards_the_input():
    net = mlp(bn=True)  # body: fc1 (weight, bias), bn1 (gamma, beta)
    policy = Recipe(layer_decay=0.5, layer_groups=2, frozen_groups=0).policy(net)
    settings = policy.resolve(net)
    assert settings["head_fc_weight"][1] == 1.0
    assert settings["body_fc1_weight"][1] == pytest.approx(0.25)  # the group nearest the input
    assert settings["body_fc1_bias"][1] == pytest.approx(0.25)  # a layer is never split
    assert settings["body_bn1_gamma"][1] == pytest.approx(0.5)
    flat = Recipe(layer_decay=None, frozen_groups=0).policy(net).resolve(net)
    assert flat["body_fc1_weight"][1] == 1.0


def test_frozen_groups_keep_the_layers_nearest_the_input_unchanged():
    net = mlp(bn=True)
    settings = Recipe(layer_decay=0.5, layer_groups=2).policy(net).resolve(net)  # frozen_groups=1 by default
    assert not settings["body_fc1_weight"][3] and not settings["body_fc1_bias"][3]  # group 1 of 2 frozen
    assert settings["body_bn1_gamma"][3] and settings["body_bn1_gamma"][1] == pytest.approx(0.5)
    flat = Recipe(layer_decay=None, layer_groups=2).policy(net).resolve(net)
    assert not flat["body_fc1_weight"][3] and flat["body_bn1_beta"][1] == 1.0
    one_layer = mlp()  # a single body layer is one group, and it trains
    assert all(s[3] for s in Recipe().policy(one_layer).resolve(one_layer).values())
    before = params(net)
    x, y = data()
    Trainer(net, policy=Recipe(layer_groups=2).policy(net), progress=False, batch_size=10,
            cache_features=False).fit((x, y), epochs=1)
    after = params(net)
    assert np.array_equal(before["body_fc1_weight"], after["body_fc1_weight"])
    assert not np.array_equal(before["body_bn1_beta"], after["body_bn1_beta"])
    with pytest.raises(ConfigError, match="frozen_groups"):
        Recipe(layer_groups=2, frozen_groups=3)
    for kw in ({"layer_groups": 2, "frozen_groups": 2}, {"layer_groups": 1}):  # the last group always trains
        settings = Recipe(**kw).policy(net).resolve(net)
        assert settings["body_bn1_gamma"][3] and (settings["body_fc1_weight"][3] == ("frozen_groups" not in kw))


def test_frozen_batchnorm_keeps_statistics_and_live_updates_them():
    x, y = data()
    for mode, same in (("frozen", True), ("live", False)):
        net = mlp(bn=True)
        before = params(net)["body_bn1_running_mean"]
        Trainer(net, policy=Recipe(batchnorm=mode).policy(net), progress=False, batch_size=10,
                cache_features=False).fit((x, y), epochs=1)
        mx.nd.waitall()
        after = params(net)["body_bn1_running_mean"]
        assert np.array_equal(before, after) == same


def test_label_smoothing_loss_matches_its_formula():
    logits = mx.nd.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    y = mx.nd.array([0, 2])
    logp = np.log(np.exp(logits.asnumpy()) / np.exp(logits.asnumpy()).sum(1, keepdims=True))
    want = 0.8 * -logp[[0, 1], [0, 2]] + 0.2 * -logp.mean(1)
    np.testing.assert_allclose(LabelSmoothingLoss(0.2)(logits, y).asnumpy(), want, rtol=1e-5)
    with pytest.raises(ConfigError):
        LabelSmoothingLoss(1.0)


def test_random_erasing_changes_a_rectangle_only_when_on():
    import cv2

    img = np.full((40, 40, 3), 128, np.uint8)
    buf = cv2.imencode(".png", img)[1].tobytes()
    pre = ft.Preprocess(size=(40, 40), resize=40)
    plain = Augment(random_resized_crop=False, mirror=False)
    erased = Augment(random_resized_crop=False, mirror=False, erasing=1.0)
    assert np.array_equal(train_crop(buf, plain, pre, np.random.RandomState(0)), img)
    out = train_crop(buf, erased, pre, np.random.RandomState(0))
    changed = (out != 128).any(axis=2)
    assert 0.01 < changed.mean() < 0.3
    rows, cols = np.nonzero(changed)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert changed.sum() > 0.9 * box  # one rectangle
    with pytest.raises(ConfigError):
        Augment(erasing=1.5)


def test_weight_average_differs_from_the_raw_weights_and_is_what_fit_leaves():
    x, y = data()
    net = mlp()
    t = Trainer(net, optimizer="sgd", optimizer_params={"lr": 0.5}, ema=0.9, batch_size=10, progress=False)
    raw = {}

    class Grab(ft.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            raw.update(params(trainer.model))

    t.fit((x, y), epochs=2, callbacks=[Grab()])
    final = params(net)
    avg = {n: a.asnumpy() for n, a in t._ema.average.items()}
    assert not np.allclose(final["head_fc_weight"], raw["head_fc_weight"])   # not the raw weights
    np.testing.assert_array_equal(final["head_fc_weight"], avg["head_fc_weight"])  # the average
    # and it is the saved model
    t.model.save_parameters(str(_tmp := __import__("tempfile").mktemp()))
    back = mlp(seed=5)
    back.load_parameters(_tmp)
    np.testing.assert_array_equal(params(back)["head_fc_weight"], avg["head_fc_weight"])


def test_weight_average_warm_up_and_swap():
    net = mx.gluon.nn.Dense(1, in_units=1)
    net.initialize(mx.init.Zero())
    ema = WeightAverage(net.collect_params(), decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    net.weight.set_data(mx.nd.array([[10.0]]))
    ema.update()
    with ema.swapped():
        assert net.weight.data().asscalar() == pytest.approx(9.0)  # 0.1 * 0 + 0.9 * 10
    assert net.weight.data().asscalar() == 10.0


def test_weight_average_update_is_the_formula_for_many_parameters_of_each_dtype():
    # more float32 parameters than one fused operator call takes, and some that go one by one
    rng = np.random.RandomState(0)
    params = {}
    for i in range(130):
        dtype = "float16" if i % 40 == 7 else "float64" if i % 40 == 9 else "float32"
        p = mx.gluon.Parameter(f"p{i}", shape=(rng.randint(1, 5), 3), dtype=dtype)
        p.initialize(mx.init.Normal(1.0))
        params[p.name] = p
    ema = WeightAverage(params, decay=0.9)
    start = {n: a.asnumpy().astype(np.float64) for n, a in ema.average.items()}
    for p in params.values():
        p.set_data(mx.nd.array(rng.normal(size=p.shape), dtype=p.dtype))
    d = ema.current_decay()
    ema.update()
    for n, p in params.items():
        want = d * start[n] + (1 - d) * p.data().asnumpy().astype(np.float64)
        tol = 3e-3 if np.dtype(p.dtype) == np.float16 else 1e-6
        np.testing.assert_allclose(ema.average[n].asnumpy(), want, rtol=tol, atol=tol, err_msg=n)
    assert ema.steps == 1


def test_ema_state_is_checkpointed_and_resumes_identically(tmp_path):
    x, y = data()
    kw = dict(optimizer="sgd", optimizer_params={"lr": 0.2}, ema=0.9, batch_size=10, progress=False)
    full = Trainer(mlp(), **kw, out_dir=str(tmp_path / "a")).fit((x, y), epochs=3)
    part = Trainer(mlp(), **kw, out_dir=str(tmp_path / "b")).fit((x, y), epochs=2)
    resumed = Trainer(mlp(seed=9), **kw, out_dir=str(tmp_path / "b"))
    resumed.fit((x, y), epochs=3, resume=str(tmp_path / "b"))
    np.testing.assert_array_equal(params(full.model)["head_fc_weight"], params(resumed.model)["head_fc_weight"])
    assert part.epoch_ == 2


def test_tta_averages_the_logits_of_the_image_and_its_mirror():
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Conv2D(3, 3, in_channels=3, padding=1), mx.gluon.nn.Flatten(), mx.gluon.nn.Dense(2))
    net.initialize(mx.init.Xavier())
    net.preprocess, net.class_names = ft.Preprocess(size=(8, 8), resize=8), ["a", "b"]
    img = np.random.RandomState(0).randint(0, 255, (8, 8, 3)).astype(np.uint8)
    plain = ft.Predictor(net, workers=1).logits(img, color="RGB")
    mirror = ft.Predictor(net, workers=1).logits(img[:, ::-1].copy(), color="RGB")
    tta = ft.Predictor(net, workers=1, tta=True).logits(img, color="RGB")
    np.testing.assert_allclose(tta, (plain + mirror) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(tta, plain)


def test_trainer_tta_validation_uses_the_mirror():
    x, y = data()
    x = np.random.RandomState(1).normal(size=x.shape).astype("float32")
    net = mlp()
    a = Trainer(net, progress=False).evaluate((x, y))
    b = Trainer(net, progress=False, tta=True).evaluate((x, y))
    flipped = Trainer(net, progress=False).evaluate((x[:, :, :, ::-1].copy(), y))
    assert a["loss"] != b["loss"]
    assert a["loss"] != flipped["loss"]


def test_keep_best_restores_the_best_epoch():
    x, y = data()
    net = mlp()
    snaps = {}

    class Scores(ft.Callback):  # validation score forced: best at epoch 1 of 4
        def on_epoch_end(self, trainer, epoch, logs):
            logs["val_top1"] = [0.2, 0.9, 0.5, 0.9 - 1e-3][epoch]
            snaps[epoch] = params(trainer.model)

    best = KeepBest("val_top1")
    Trainer(net, optimizer_params={"lr": 0.3}, batch_size=10, progress=False).fit(
        (x, y), epochs=4, callbacks=[Scores(), best])
    assert best.best_epoch_ == 1
    np.testing.assert_array_equal(params(net)["head_fc_weight"], snaps[1]["head_fc_weight"])


# ---------------------------------------------------------------- LR finder
def test_lr_finder_suggestion_lies_on_the_steep_descent():
    lrs = np.logspace(-6, 0, 80)
    loss = 2.3 - 2 / (1 + np.exp(-(np.log10(lrs) + 3.5) * 3)) + np.where(lrs > 0.05, 30 * (lrs - 0.05), 0)
    r = LRFinderResult(lrs, loss)
    slope = np.gradient(r.smoothed, np.log10(lrs))
    i = int(np.argmin(np.abs(lrs - r.suggestion)))
    assert slope[i] < 0.8 * slope.min()           # near the steepest descent
    assert r.suggestion < lrs[np.argmin(r.smoothed)]  # before the minimum
    assert 1e-5 < r.suggestion < 1e-2


def test_lr_find_runs_restores_the_weights_and_plots(tmp_path):
    x, y = data(n=160)
    net = mlp()
    before = params(net)
    r = lr_find(net, (x, y), start_lr=1e-5, end_lr=10, num_steps=30, batch_size=8, optimizer="sgd",
                progress=False)
    assert 3 <= len(r.lrs) <= 30 and r.lrs[0] < r.lrs[-1]
    for k, v in params(net).items():
        np.testing.assert_array_equal(v, before[k])
    ax = r.plot()
    ax.figure.savefig(tmp_path / "lr.png")
    r.save(tmp_path / "lr.json")
    assert json.loads((tmp_path / "lr.json").read_text())["suggestion"] == r.suggestion
    with pytest.raises(ConfigError):
        lr_find(net, (x, y), start_lr=1.0, end_lr=0.1)
    lazy = mx.gluon.nn.Dense(3, prefix="head_")  # deferred initialisation: no values yet
    lazy.initialize()
    with pytest.raises(ModelError, match="head_weight"):
        lr_find(lazy, (x.reshape(len(x), -1), y), progress=False)


def _state(net, user_trainer) -> tuple:
    """Everything lr_find could leave changed on ``net``, and the global generators."""
    rows = {n: {"value": p.data(p.list_ctx()[0]).asnumpy().tobytes(),
                "grad": p.list_grad()[0].asnumpy().tobytes() if p.grad_req != "null" else None,
                "lr_mult": p.lr_mult, "wd_mult": p.wd_mult, "grad_req": p.grad_req, "ctx": p.list_ctx(),
                "user's trainer": p._trainer is user_trainer, "policy mark": hasattr(p, "_finetune_orig_grad_req")}
            for n, p in net.collect_params().items()}
    return rows, batchnorm_modes(net), net._active, np.random.get_state()[1].tobytes(), random.getstate()


def _train_mode_logits(net, x):
    with mx.autograd.train_mode():  # BatchNorm uses batch or running statistics, as its mode says
        return net(mx.nd.array(x)).asnumpy()


@pytest.mark.parametrize("make,channels", [(lambda: mlp(bn=True), 2), (graph_model, 3)],
                         ids=["gluon-batchnorm", "graph-batchnorm"])
def test_lr_find_leaves_the_model_exactly_as_it_was(make, channels):
    net = make()
    x, y = data(n=80, channels=channels)
    ps = net.collect_params()
    first, second = list(ps.values())[:2]
    first.lr_mult, first.wd_mult = 0.5, 2.0  # the user's settings, which the policy overrides
    second.grad_req = "null"
    user_trainer = mx.gluon.Trainer(ps, "sgd")
    with mx.autograd.record():  # gradients the user has not used yet
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(net(mx.nd.array(x[:8])), mx.nd.array(y[:8]))
    loss.backward()
    np.random.seed(3)
    random.seed(3)
    logits = _train_mode_logits(net, x[:8])
    before = _state(net, user_trainer)
    lr_find(net, (x, y), policy=LayerLRPolicy.pretrained(0.1, freeze_bn=True), start_lr=1e-4, end_lr=1,
            num_steps=12, batch_size=8, optimizer="adam", ctx=[mx.cpu(0), mx.cpu(1)], progress=False)
    after = _state(net, user_trainer)
    for name in before[0]:
        assert after[0][name] == before[0][name], name
    assert after[1:] == before[1:]  # BatchNorm modes, hybridization, numpy and random states
    np.testing.assert_array_equal(_train_mode_logits(net, x[:8]), logits)


# ---------------------------------------------------------------- end to end, tiny
def test_recipe_fit_end_to_end_on_records(image_folder, tmp_path):
    images = ft.ImageList.from_folder(image_folder)
    ft.pack(images, tmp_path / "r", workers=1)
    rec = str(tmp_path / "r.rec")
    recipe = Recipe(input_size=32, head_epochs=2, epochs=2, batch_size=8)
    model = recipe.build_model(ft.Backbone.from_zoo("mobilenetv2_0.25", weights=None), images.class_names)
    trainer = recipe.fit(model, rec, rec, out_dir=str(tmp_path / "run"), workers=0, progress=False)
    assert model.preprocess.size == (32, 32)
    assert len(trainer.head_history_) == 2 and len(trainer.history_) == 2
    assert (tmp_path / "run" / "plan.txt").read_text().startswith("input size")
    assert (tmp_path / "run" / "fine_tune" / "checkpoints" / "last.ckpt").exists()
    report = ft.evaluate(model, RecordDataset(rec, model.preprocess), tta=True)
    assert report.num_images == len(images)


def test_keep_best_ignores_differences_within_min_delta():
    x, y = data()
    net = mlp()
    last = {}

    class Scores(ft.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            logs["val_top1"] = [0.5, 0.9, 0.86][epoch]
            last.update(params(trainer.model))

    best = KeepBest("val_top1", min_delta=0.05)
    Trainer(net, optimizer_params={"lr": 0.3}, batch_size=10, progress=False).fit(
        (x, y), epochs=3, callbacks=[Scores(), best])
    assert best.best_epoch_ == 1
    np.testing.assert_array_equal(params(net)["head_fc_weight"], last["head_fc_weight"])  # the last epoch's


_SCORES = [0.2, 0.9, 0.5, 0.9 - 1e-3]  # validation score forced: best at epoch 1 of 4


class _Scores(ft.Callback):
    def __init__(self):
        self.snaps = {}

    def on_epoch_end(self, trainer, epoch, logs):
        logs["val_top1"] = _SCORES[epoch]
        self.snaps[epoch] = params(trainer.model)


class _Crash(ft.Callback):
    def on_batch_end(self, trainer, epoch, batch, logs):
        if epoch == 2 and batch == 1:
            raise KeyboardInterrupt


def _interrupt_after_the_best_epoch(out_dir):
    """Train towards 4 epochs, killed in epoch 2: last.ckpt is the end of epoch 1, the best one."""
    with pytest.raises(KeyboardInterrupt):
        Trainer(mlp(), optimizer_params={"lr": 0.3}, batch_size=10, progress=False, out_dir=out_dir).fit(
            data(), epochs=4, callbacks=[_Scores(), KeepBest("val_top1"), _Crash()])
    return os.path.join(out_dir, "checkpoints", "last.ckpt")


def _resume(out_dir):
    best = KeepBest("val_top1")
    trainer = Trainer(mlp(seed=9), optimizer_params={"lr": 0.3}, batch_size=10, progress=False, out_dir=out_dir)
    trainer.fit(data(), epochs=4, callbacks=[_Scores(), best], resume=out_dir)
    return trainer, best


def test_keep_best_weights_are_checkpointed_and_restored_after_a_resume(tmp_path):
    scores, full_best = _Scores(), KeepBest("val_top1")
    full = Trainer(mlp(), optimizer_params={"lr": 0.3}, batch_size=10, progress=False,
                   out_dir=str(tmp_path / "full")).fit(data(), epochs=4, callbacks=[scores, full_best])
    assert full_best.restored_ and full_best.best_epoch_ == 1
    last = _interrupt_after_the_best_epoch(str(tmp_path / "cut"))
    with zipfile.ZipFile(last) as z:
        assert "callbacks.arrays" in z.namelist()
    resumed, best = _resume(str(tmp_path / "cut"))
    assert [r["epoch"] for r in resumed.history_] == [0, 1, 2, 3]
    assert best.best_epoch_ == 1 and best.best_ == 0.9 and best.restored_
    for k, v in params(resumed.model).items():  # the best epoch's weights, trained before the interruption
        np.testing.assert_array_equal(v, scores.snaps[1][k], err_msg=k)
        np.testing.assert_array_equal(v, params(full.model)[k], err_msg=k)


def test_keep_best_resumes_from_a_checkpoint_without_its_weights(tmp_path, caplog):
    last = _interrupt_after_the_best_epoch(str(tmp_path))
    with zipfile.ZipFile(last) as z:  # a checkpoint of the earlier layout: no callbacks.arrays member
        members = {n: z.read(n) for n in z.namelist() if n != "callbacks.arrays"}
    with zipfile.ZipFile(last, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    with caplog.at_level(logging.WARNING, logger="finetune.train._weights"):
        resumed, best = _resume(str(tmp_path))
    assert best.best_epoch_ == 1 and not best.restored_
    assert "does not hold its weights" in caplog.text
    assert [r["epoch"] for r in resumed.history_] == [0, 1, 2, 3]


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_batch_mixing_changes_the_images_and_mixes_the_labels(kind):
    x, y = data(n=20)
    t = Trainer(mlp(), progress=False, **{kind: 1.0})
    xb, yb = mx.nd.array(x), mx.nd.array(y)
    mixed, partner, lam = t._mix_batch(xb, yb, epoch=0, b=0)
    assert 0 < lam < 1
    assert not np.allclose(mixed.asnumpy(), x)
    np.testing.assert_array_equal(xb.asnumpy(), x)  # the loader's batch is left alone
    assert sorted(partner.asnumpy().astype(int)) == sorted(y)
    if kind == "cutmix":  # every pixel comes from one of the two images
        assert np.isin(mixed.asnumpy(), np.concatenate([x.ravel()])).all()
    again = t._mix_batch(xb, yb, epoch=0, b=0)
    np.testing.assert_array_equal(again[0].asnumpy(), mixed.asnumpy())  # seeded per batch
    t.fit((x, y), epochs=1)
    assert np.isfinite(t.history_[0]["train_loss"])


# ---------------------------------------------------------------- both modes check the same things
def test_seed_has_one_range_everywhere():
    from finetune.train import ManualRecipe, TrainConfig

    for make in (Recipe, ManualRecipe, TrainConfig):
        for bad in (-1, 2 ** 32):
            with pytest.raises(ConfigError, match=r"\[0, 4294967295\]"):
                make(seed=bad)


def test_a_warm_up_as_long_as_the_run_is_shortened_in_the_plan_and_warned_about(image_folder, tmp_path, caplog):
    images = ft.ImageList.from_folder(image_folder)
    ft.pack(images, tmp_path / "r", workers=1)
    recipe = Recipe(warmup_epochs=50, epochs=2, input_size=32)
    model = recipe.build_model(ft.Backbone.from_zoo("mobilenet0.25", weights=None), images.class_names)
    text = str(recipe.plan(model, str(tmp_path / "r.rec")))
    assert "cosine, 1 warm-up epoch(s)" in text and "warmup_epochs=50 is not shorter" in text
    assert recipe.make_schedule(2).warmup_epochs == 1
    with caplog.at_level(logging.WARNING):  # the schedule class warns the same way (manual mode, the API)
        ft.train.CosineSchedule(warmup_epochs=3).setup(3)
    assert "not shorter than the run of 3 epoch(s)" in caplog.text


@pytest.mark.parametrize("mode", ["recipe", "manual"])
def test_both_modes_warn_about_validation_on_the_training_records_and_refuse_resume_without_checkpoint(
        image_folder, tmp_path, caplog, mode):
    from finetune.errors import MissingFileError

    images = ft.ImageList.from_folder(image_folder)
    ft.pack(images, tmp_path / "r", resize=40, workers=1)
    rec = str(tmp_path / "r.rec")
    recipe = (Recipe(input_size=32, head_epochs=0, epochs=1, batch_size=8, ema=None) if mode == "recipe"
              else Recipe.manual(input_size=32, epochs=1, batch_size=8))
    model = recipe.build_model(ft.Backbone.from_zoo("mobilenet0.25", weights=None), images.class_names)
    with caplog.at_level(logging.WARNING):
        recipe.fit(model, rec, rec, workers=0, progress=False)
    assert "the validation records are the training records" in caplog.text
    with pytest.raises(MissingFileError, match="No checkpoint to resume"):
        recipe.fit(model, rec, workers=0, progress=False, out_dir=str(tmp_path / "new"), resume=True)
    assert not (tmp_path / "new").exists()
