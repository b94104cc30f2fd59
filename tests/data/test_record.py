"""RecordDataset: reading records from pack and from mx.recordio, augmentation, loader, errors."""

import cv2
import mxnet as mx
import numpy as np
import pytest

from finetune import Augment, ImageList, Preprocess, RecordDataset, pack
from finetune.errors import ConfigError, RecordFormatError


@pytest.fixture
def packed(image_folder, tmp_path):
    images = ImageList.from_folder(image_folder)
    report = pack(images, tmp_path / "data", resize=48, workers=1)
    return images, tmp_path / "data"


@pytest.fixture
def mx_written(tmp_path):
    """A .rec written directly with mx.recordio (as MXNet's own tools do)."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8) for i in range(6)]
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / "mx.idx"), str(tmp_path / "mx.rec"), "w")
    for i, img in enumerate(images):
        header = mx.recordio.IRHeader(0, float(i % 3), 100 + i, 0)
        writer.write_idx(100 + i, mx.recordio.pack_img(header, img, img_fmt=".png"))
    writer.close()
    return images, tmp_path / "mx"


def test_reads_records_written_by_mx_recordio(mx_written):
    images, prefix = mx_written
    pre = Preprocess(size=(24, 24), resize=30, mean=(0, 0, 0), std=(1, 1, 1))
    ds = RecordDataset(str(prefix) + ".rec", pre)
    assert len(ds) == 6 and ds.labels.tolist() == [0, 1, 2, 0, 1, 2]
    for i, bgr in enumerate(images):
        image, label = ds[i]
        assert label == i % 3
        np.testing.assert_array_equal(ds.image(i), bgr[:, :, ::-1])
        np.testing.assert_allclose(image, pre.transform(bgr, color="BGR"), atol=1e-4)
    assert ds.record(0)[1] == 100


def test_reads_without_idx_by_scanning(mx_written, tmp_path):
    _, prefix = mx_written
    (tmp_path / "mx.idx").unlink()
    ds = RecordDataset(str(prefix), Preprocess(size=(24, 24), resize=30))
    assert len(ds) == 6 and ds[5][1] == 2


def test_eval_mode_matches_preprocess_and_class_names(packed):
    images, prefix = packed
    pre = Preprocess(size=(32, 32), resize=40, color="BGR", mean=(104, 117, 123), std=(1, 1, 1))
    ds = RecordDataset(prefix, pre)
    assert ds.class_names == ["cat", "dog", "fish"]
    image, label = ds[3]
    np.testing.assert_allclose(image, pre.transform(ds.image(3), color="RGB"), atol=1e-4)
    assert label == images[3].label


def test_train_mode_augments_with_every_option(packed):
    _, prefix = packed
    pre = Preprocess(size=(32, 32), resize=36)
    aug = Augment(scale=(0.3, 1), rotation=15, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1,
                  pca_noise=0.1)
    ds = RecordDataset(prefix, pre, train=True, augment=aug)
    a, _ = ds.load(0, np.random.RandomState(0))
    b, _ = ds.load(0, np.random.RandomState(0))
    c, _ = ds.load(0, np.random.RandomState(1))
    assert a.shape == (3, 32, 32) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    crop = RecordDataset(prefix, pre, train=True, augment=Augment(random_resized_crop=False, random_crop=True))
    assert crop.load(1, np.random.RandomState(0))[0].shape == (3, 32, 32)


def test_reduced_jpeg_decode_keeps_the_crop(tmp_path):
    # a large smooth JPEG: the reduced-size decode must give nearly the same crop as a full decode
    y, x = np.mgrid[0:800, 0:1000]
    img = np.dstack([x * 255 / 1000, y * 255 / 800, (x + y) * 255 / 1800]).astype(np.uint8)
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / "big.idx"), str(tmp_path / "big.rec"), "w")
    writer.write_idx(0, mx.recordio.pack_img(mx.recordio.IRHeader(0, 0, 0, 0), img, quality=95))
    writer.close()
    pre = Preprocess(size=(64, 64), mean=(0, 0, 0), std=(1, 1, 1))
    ds = RecordDataset(tmp_path / "big", pre, train=True, augment=Augment(scale=(0.5, 0.5), ratio=(1, 1), mirror=False))
    fast, _ = ds.load(0, np.random.RandomState(0))
    from finetune.data._augment import random_area
    top, left, ch, cw = random_area(np.random.RandomState(0), (0.5, 0.5), (1, 1))(800, 1000)
    full = cv2.resize(img[top:top + ch, left:left + cw], (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(fast - full[:, :, ::-1].transpose(2, 0, 1)).mean() < 3


def test_loader_batches_order_and_determinism(packed):
    images, prefix = packed
    pre = Preprocess(size=(32, 32), resize=36)
    ds = RecordDataset(prefix, pre)
    batches = list(ds.loader(5, workers=2))
    assert [b[0].shape for b in batches][-1] == (4, 3, 32, 32) and len(batches) == 5
    labels = np.concatenate([b[1].asnumpy() for b in batches])
    assert labels.tolist() == ds.labels.tolist()
    np.testing.assert_allclose(batches[0][0].asnumpy()[2], ds[2][0], atol=1e-5)
    train = RecordDataset(prefix, pre, train=True)
    first = [b[0].asnumpy() for b in train.loader(8, workers=2, seed=3, last_batch="discard")]
    again = [b[0].asnumpy() for b in train.loader(8, workers=0, seed=3, last_batch="discard")]
    assert len(first) == 3
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    loader = train.loader(8, workers=2, seed=3)
    for _ in loader:  # leaving an epoch early must not break the next one
        break
    assert sum(b[0].shape[0] for b in loader) == 24
    loader.close()


def test_parts_cover_the_dataset_once(packed):
    _, prefix = packed
    parts = [RecordDataset(prefix, num_parts=3, part_index=k) for k in range(3)]
    ids = [p.record(i)[1] for p in parts for i in range(len(p))]
    assert sorted(ids) == list(range(24)) and [len(p) for p in parts] == [8, 8, 8]
    with pytest.raises(ConfigError):
        RecordDataset(prefix, num_parts=2, part_index=2)


def test_gluon_dataloader_accepts_the_dataset(packed):
    _, prefix = packed
    ds = RecordDataset(prefix, Preprocess(size=(32, 32), resize=36))
    data, label = next(iter(mx.gluon.data.DataLoader(ds, batch_size=4)))
    assert data.shape == (4, 3, 32, 32)


def test_truncated_or_corrupt_record_files_raise_record_format_error(packed, tmp_path):
    _, prefix = packed
    rec = open(str(prefix) + ".rec", "rb").read()
    (tmp_path / "cut.rec").write_bytes(rec[: len(rec) // 2])
    (tmp_path / "cut.idx").write_bytes(open(str(prefix) + ".idx", "rb").read())
    with pytest.raises(RecordFormatError, match="truncated"):
        RecordDataset(tmp_path / "cut")
    (tmp_path / "noise.rec").write_bytes(b"x" * 64)
    with pytest.raises(RecordFormatError, match="corrupt"):
        RecordDataset(tmp_path / "noise")
    offsets = [int(line.split("\t")[1]) for line in open(str(prefix) + ".idx")]
    broken = bytearray(rec)
    broken[offsets[1] + 8 + 24: offsets[1] + 8 + 64] = b"\0" * 40  # damage the image bytes
    (tmp_path / "bad.rec").write_bytes(bytes(broken))
    (tmp_path / "bad.idx").write_bytes(open(str(prefix) + ".idx", "rb").read())
    ds = RecordDataset(tmp_path / "bad")
    with pytest.raises(RecordFormatError, match="record 1"):
        ds[1]


def test_record_writer_is_byte_identical_to_mxnet(tmp_path):
    import os
    import struct

    from finetune.data._recordio import RecordFile, RecordWriter

    magic = struct.pack("<I", 0xCED7230A)
    datas = [b"abc", b"abcd" + magic + b"xy", magic + b"1234" + magic, b"", b"12" + magic + b"zz" + magic + magic,
             os.urandom(999)]
    ours = RecordWriter(str(tmp_path / "a.rec"), str(tmp_path / "a.idx"))
    theirs = mx.recordio.MXIndexedRecordIO(str(tmp_path / "b.idx"), str(tmp_path / "b.rec"), "w")
    for i, d in enumerate(datas):
        ours.write(i, d)
        theirs.write_idx(i, d)
    ours.close()
    theirs.close()
    assert (tmp_path / "a.rec").read_bytes() == (tmp_path / "b.rec").read_bytes()
    assert (tmp_path / "a.idx").read_text() == (tmp_path / "b.idx").read_text()
    reader = RecordFile(str(tmp_path / "b.rec"))  # scanned, no index
    assert [reader.read(i) for i in range(len(reader))] == datas


def test_mean_image_preprocess_is_applied_like_transform(packed):
    _, prefix = packed
    mean_image = np.random.default_rng(0).uniform(0, 255, (3, 40, 40)).astype(np.float32)
    pre = Preprocess(size=(32, 32), resize=36, color="BGR", mean_image=mean_image, std=(2, 2, 2), scale=0.5)
    ds = RecordDataset(prefix, pre)
    np.testing.assert_allclose(ds[4][0], pre.transform(ds.image(4), color="RGB"), atol=1e-4)
