import json

import mxnet as mx
import numpy as np
import pytest

from finetune.errors import ConfigError, DeviceError, NonFiniteLossError, UnknownNameError
from finetune.train import (Callback, CosineSchedule, EarlyStopping, LayerLRPolicy, PlateauSchedule,
                            StepSchedule, StopTraining, Trainer)
from finetune.train._evaluate import input_peak

from ._nets import data, mlp, params


def fit(net, **kw):
    epochs = kw.pop("epochs", 2)
    d = kw.pop("data", data(40))
    val = kw.pop("val", None)
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 12)
    return Trainer(net, **kw).fit(d, val=val, epochs=epochs)


@pytest.mark.parametrize("n", [40, 25])  # 25: the last batch (1 image) is smaller than the device count
def test_two_devices_equal_one_device(n):
    one = fit(mlp(), data=data(n), optimizer_params={"learning_rate": 0.1})
    two = fit(mlp(), data=data(n), optimizer_params={"learning_rate": 0.1}, ctx=[mx.cpu(0), mx.cpu(1)],
              kvstore="device")
    p = two.model.collect_params()["head_fc_weight"]
    assert len(p.list_ctx()) == 2
    a, b = params(one.model), params(two.model)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    # both copies stayed identical
    np.testing.assert_array_equal(p.data(mx.cpu(0)).asnumpy(), p.data(mx.cpu(1)).asnumpy())
    assert a["head_fc_weight"].tolist() != params(mlp())["head_fc_weight"].tolist()


def test_history_metrics_and_files(tmp_path):
    t = fit(mlp(), val=data(12, seed=1), out_dir=tmp_path, epochs=3)
    assert [r["epoch"] for r in t.history_] == [0, 1, 2]
    row = t.history_[-1]
    for k in ("train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5", "images_per_s", "lr"):
        assert k in row
    assert row["val_top5"] == 1.0  # 3 classes
    assert t.history_[-1]["train_loss"] < t.history_[0]["train_loss"]
    assert json.loads((tmp_path / "history.json").read_text()) == t.history_
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("epoch,lr,train_loss")
    assert (tmp_path / "checkpoints" / "last.ckpt").exists() and (tmp_path / "checkpoints" / "best.ckpt").exists()


@pytest.mark.parametrize("name", ["sgd", "nag", "adam", "adamw", "rmsprop"])
def test_optimizers_reduce_loss(name):
    lr = 0.1 if name in ("sgd", "nag") else 0.01
    t = fit(mlp(), optimizer=name, optimizer_params={"lr": lr}, epochs=4)
    assert t.history_[-1]["train_loss"] < t.history_[0]["train_loss"]


def test_adamw_decay_is_decoupled():
    w = mx.nd.array([1.0, -2.0])
    opt = mx.optimizer.create("adamw", learning_rate=0.1, wd=0.5)
    state = opt.create_state(0, w)
    opt.update(0, w, mx.nd.zeros(2), state)  # zero gradient: only the decay acts
    np.testing.assert_allclose(w.asnumpy(), [1 - 0.1 * 0.5, -2 + 0.1 * 0.5 * 2], rtol=1e-6)


def test_unknown_optimizer_and_bad_config():
    with pytest.raises(UnknownNameError, match="Did you mean 'adamw'"):
        Trainer(mlp(), optimizer="adamww")
    with pytest.raises(ConfigError, match="'batch_size' parameter of Trainer"):
        Trainer(mlp(), batch_size=0)
    with pytest.raises(ConfigError, match="kvstore"):
        Trainer(mlp(), kvstore="dist_sink")


def test_mixed_precision_without_gpu_raises():
    with pytest.raises(DeviceError, match="GPU"):
        Trainer(mlp(), mixed_precision=True)


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    x, y = data(24)
    t = fit(mlp(), data=(x, y), out_dir=tmp_path, epochs=1, batch_size=8)
    good = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    t.optimizer_params["learning_rate"] = 1e38  # diverges at once
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is .*last.ckpt"):
        t.fit((x, y), epochs=3)
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == good


def test_weights_that_overflow_on_the_last_step_of_an_epoch_are_never_checkpointed_or_saved(tmp_path):
    """One batch per epoch: its loss is computed before the update that overflows the weights, so no loss was
    ever non-finite; the run ended "Trained", checkpointed and saved a model of NaN weights."""
    x, y = data(24)
    t = fit(mlp(), data=(x, y), out_dir=tmp_path, epochs=1, batch_size=24)
    good = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()

    class Overflow(Callback):  # what an update at a huge learning rate does, after its loss was computed
        def on_batch_end(self, trainer, epoch, batch, logs):
            weight = trainer._tparams[0]
            weight.set_data(weight.data() * np.inf)

    with pytest.raises(NonFiniteLossError, match="weights became NaN or infinite in epoch 1.*training diverged"):
        t.fit((x, y), epochs=3, callbacks=[Overflow()])
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == good
    # each value in range, their product not: refused before a step, not MXNet's traceback
    policy = LayerLRPolicy.pretrained(backbone_lr_mult=1e38, head="nothing*")
    with pytest.raises(ConfigError, match="learning rate 1e.30 times the largest per-layer multiplier"):
        fit(mlp(), data=(x, y), epochs=1, policy=policy, optimizer_params={"learning_rate": 1e30})


def test_step_and_cosine_lr_reach_the_optimizer():
    t = fit(mlp(), schedule=StepSchedule(0.1, epochs=[1]), optimizer_params={"lr": 0.5})
    assert [r["lr"] for r in t.history_] == pytest.approx([0.5, 0.05])
    assert t._trainer.learning_rate == pytest.approx(0.05)
    t = fit(mlp(), schedule=CosineSchedule(warmup_epochs=1), optimizer_params={"lr": 0.5}, epochs=3)
    assert 0 < t.history_[-1]["lr"] < 0.5


def test_plateau_stops_after_n_reductions():
    s = PlateauSchedule(factor=0.2, patience=0, monitor="train_top1", mode="min", stop_after=3)
    # mode="min" on an accuracy that rises: every epoch is a "drop" -> stops at the 3rd reduction
    t = fit(mlp(), schedule=s, epochs=20, optimizer_params={"lr": 0.1})
    assert len(t.history_) == 4 and s.reductions == 3
    assert t._trainer.learning_rate == pytest.approx(0.1 * 0.2 ** 2)


def test_callback_hooks_order_and_stop_training():
    calls = []

    class Spy(Callback):
        def on_train_begin(self, tr): calls.append("train_begin")
        def on_epoch_begin(self, tr, e): calls.append(f"epoch_begin{e}")
        def on_batch_begin(self, tr, e, b): calls.append(f"b{b}")
        def on_batch_end(self, tr, e, b, logs):
            calls.append(f"/b{b}")
            if e == 1 and b == 1:
                raise StopTraining("test")
        def on_epoch_end(self, tr, e, logs): calls.append(f"epoch_end{e}")
        def on_train_end(self, tr): calls.append("train_end")

    t = Trainer(mlp(), batch_size=16, progress=False).fit(data(40), epochs=5, callbacks=[Spy()])
    assert calls == ["train_begin", "epoch_begin0", "b0", "/b0", "b1", "/b1", "b2", "/b2", "epoch_end0",
                     "epoch_begin1", "b0", "/b0", "b1", "/b1", "epoch_end1", "train_end"]
    assert len(t.history_) == 2


def test_early_stopping():
    t = Trainer(mlp(), batch_size=12, progress=False, optimizer_params={"lr": 0.0})
    t.fit(data(24), val=data(12), epochs=30, callbacks=[EarlyStopping("val_loss", patience=2)])
    assert len(t.history_) == 4  # best at epoch 0, then 3 epochs without improvement


def test_cached_features_give_the_same_head_as_recomputing():
    policy = LayerLRPolicy.head_only()
    cached = fit(mlp(), policy=policy, epochs=3)
    assert cached._net is not cached.model
    plain = fit(mlp(), policy=LayerLRPolicy.head_only(), epochs=3, cache_features=False)
    assert plain._net is plain.model
    a, b = params(cached.model), params(plain.model)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_no_caching_when_backbone_trains_or_bn_is_live():
    t = fit(mlp(), epochs=1)
    assert t._net is t.model
    t = fit(mlp(bn=True), policy=LayerLRPolicy.head_only(freeze_bn=False), epochs=1)
    assert t._net is t.model


def test_dropout_is_replayable():
    a = params(fit(mlp(dropout=0.5), epochs=2).model)
    b = params(fit(mlp(dropout=0.5), epochs=2).model)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_resume_in_process_equals_uninterrupted(tmp_path):
    full = params(fit(mlp(bn=True), epochs=3, optimizer="adam", optimizer_params={"lr": 0.01},
                      schedule=StepSchedule(0.5, epochs=1)).model)

    class Crash(Callback):
        def on_batch_end(self, tr, e, b, logs):
            if e == 1 and b == 1:
                raise KeyboardInterrupt

    kw = dict(batch_size=12, progress=False, optimizer="adam", optimizer_params={"lr": 0.01},
              out_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        Trainer(mlp(bn=True), schedule=StepSchedule(0.5, epochs=1), **kw).fit(data(40), epochs=3,
                                                                              callbacks=[Crash()])
    t = Trainer(mlp(seed=7, bn=True), schedule=StepSchedule(0.5, epochs=1), **kw)
    t.fit(data(40), epochs=3, resume=tmp_path)
    resumed = params(t.model)
    for k in full:
        np.testing.assert_array_equal(full[k], resumed[k], err_msg=k)
    assert [r["epoch"] for r in t.history_] == [0, 1, 2]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("batchnorm", ["none", "live", "frozen"])
def test_non_finite_inputs_never_reach_weights_or_batchnorm_statistics(batchnorm, bad):
    x, y = data()
    x[25, 1, 3, 3] = bad
    net = mlp(bn=batchnorm != "none")
    policy = LayerLRPolicy(freeze_bn=batchnorm == "frozen")
    seen = params(net)

    class Grab(Callback):
        def on_batch_end(self, trainer, epoch, batch, logs):
            seen.update(params(trainer.model))

    with pytest.raises(NonFiniteLossError, match=r"inputs of epoch 0, batch \d hold NaN or infinite"):
        Trainer(net, policy=policy, batch_size=10, progress=False).fit((x, y), epochs=1, callbacks=[Grab()])
    for k, v in params(net).items():  # running statistics included: those after the last good batch
        np.testing.assert_array_equal(v, seen[k], err_msg=k)


def test_the_input_check_copies_no_batch_to_the_host(monkeypatch):
    copied = []
    to_numpy = mx.nd.NDArray.asnumpy

    def spy(self):
        copied.append(self.size)
        return to_numpy(self)

    monkeypatch.setattr(mx.nd.NDArray, "asnumpy", spy)
    for bn in (False, True):  # the check read with the loss statistics, and before the forward pass
        Trainer(mlp(bn=bn), batch_size=10, progress=False).fit(data(), epochs=1)
    assert copied and max(copied) < 10 * 2 * 4 * 4  # scalars and counts only, never a batch


def test_the_input_check_neither_overflows_nor_misses_a_single_nan():
    huge = mx.nd.full((4, 8), 3e38)  # finite, though any sum of two overflows float32
    assert np.isfinite(input_peak(huge).asscalar())
    assert np.isfinite(input_peak(mx.nd.full((300, 300), 60000.0, dtype="float16")).asscalar())
    assert input_peak(mx.nd.array([1, 2], dtype="int32")) is None
    for at in (0, 17, 31):
        for bad in (np.nan, np.inf, -np.inf):
            x = np.full(32, 3e38, dtype="float32")
            x[at] = bad
            assert not np.isfinite(input_peak(mx.nd.array(x).reshape((4, 8))).asscalar()), (at, bad)


def test_nan_inputs_raise_before_they_reach_the_weights():
    x, y = data()
    x[12, 0, 0, 0] = np.nan  # in the second batch
    net = mlp()
    trainer = Trainer(net, batch_size=10, progress=False)
    seen = {}

    class Grab(Callback):
        def on_batch_end(self, trainer, epoch, batch, logs):
            seen.update(params(trainer.model))

    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        trainer.fit((x, y), epochs=1, callbacks=[Grab()])
    after = params(net)
    assert all(np.isfinite(v).all() for v in after.values())
    for k, v in after.items():  # the weights are those after the last good batch
        np.testing.assert_array_equal(v, seen[k])


def test_a_schedule_that_never_leaves_zero_is_named(caplog):
    """``--warmup-epochs 1e308`` trained every step at a learning rate of 0 and reported success."""
    CosineSchedule(warmup_epochs=1e30).setup(3)
    assert "stays below" in caplog.text and "Shorten the warm-up" in caplog.text
    caplog.clear()
    CosineSchedule(warmup_epochs=1).setup(3)
    StepSchedule(0.1, epochs=[1]).setup(3)
    assert "stays below" not in caplog.text
