"""RecordDatasets are read by the shared-memory record loader, with the DataLoader path's exact items and seeds."""

import numpy as np
from mxnet import gluon

from finetune import ImageList, Preprocess, RecordDataset, pack
from finetune.data import Augment
from finetune.train._batches import EpochSampler, RecordBatches, SeededItems


def _records(image_folder, tmp_path):
    images = ImageList.from_folder(image_folder)
    pack(images, str(tmp_path / "all"), resize=40)
    pre = Preprocess(size=(32, 32), resize=36)
    return RecordDataset(str(tmp_path / "all.rec"), pre, train=True,
                         augment=Augment(rotation=10, mirror=True, brightness=0.3))


def test_fast_loader_gives_the_dataloader_batches_bit_for_bit(image_folder, tmp_path):
    ds = _records(image_folder, tmp_path)
    for parts, part in ((1, 0), (2, 1)):
        sampler = EpochSampler(len(ds), 5, seed=3, num_parts=parts, part_index=part)
        fast = RecordBatches(ds, sampler, seed=3, workers=2)
        slow = gluon.data.DataLoader(SeededItems(ds, 3), batch_sampler=sampler, num_workers=0)
        try:
            for epoch, start in ((0, 0), (2, 1)):  # another epoch, and a resumed start
                sampler.set_epoch(epoch, start)
                a, b = list(fast), list(slow)
                assert len(a) == len(b) > 0
                for (xa, ya), (xb, yb) in zip(a, b):
                    np.testing.assert_array_equal(xa.asnumpy(), xb.asnumpy())
                    np.testing.assert_array_equal(ya.asnumpy(), yb.asnumpy())
        finally:
            fast.close()


def test_trainer_uses_the_fast_loader_for_records_by_default(image_folder, tmp_path):
    from mxnet.gluon import nn

    from finetune.train import Trainer

    ds = _records(image_folder, tmp_path)
    net = nn.HybridSequential(prefix="")
    net.add(nn.Conv2D(4, 3, in_channels=3, prefix="body_"), nn.GlobalAvgPool2D(), nn.Dense(3, prefix="head_"))
    net.initialize()
    trainer = Trainer(net, batch_size=8, progress=False, hybridize=False)
    assert isinstance(trainer._train_loader(net, ds, EpochSampler(len(ds), 8)), RecordBatches)
    trainer.fit(ds, ds, epochs=1)
    assert np.isfinite(trainer.history_[-1]["train_loss"])


def test_validation_records_start_their_workers_once_per_fit(image_folder, tmp_path, monkeypatch):
    """Every epoch validates through one loader: its worker processes start once, and it is closed at the end."""
    from mxnet.gluon import nn

    from finetune.data._record_loader import RecordLoader
    from finetune.train import Trainer

    starts, closes = [], []
    real_start, real_close = RecordLoader._start, RecordLoader.close
    monkeypatch.setattr(RecordLoader, "_start", lambda self: (starts.append(self), real_start(self))[1])
    monkeypatch.setattr(RecordLoader, "close", lambda self: (closes.append(self), real_close(self))[1])
    train = _records(image_folder, tmp_path)
    val = RecordDataset(train.path, train.preprocess)
    net = nn.HybridSequential(prefix="")
    net.add(nn.Conv2D(4, 3, in_channels=3, prefix="body_"), nn.GlobalAvgPool2D(), nn.Dense(3, prefix="head_"))
    net.initialize()
    trainer = Trainer(net, batch_size=8, progress=False, hybridize=False, workers=2).fit(train, val, epochs=3)
    assert len(trainer.history_) == 3 and all("val_top1" in row for row in trainer.history_)
    assert len(starts) == 2 and len(set(map(id, starts))) == 2  # the training loader and the validation loader
    assert {id(s) for s in starts} <= {id(c) for c in closes}
    assert trainer._val_loader is None
