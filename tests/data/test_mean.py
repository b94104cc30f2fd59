"""MeanImage: one-pass statistics, MXNet's mean.bin (used by ImageRecordIter as is), Caffe binaryproto."""

import hashlib

import mxnet as mx
import numpy as np
import pytest

from finetune import ImageList, MeanImage, RecordDataset, pack
from finetune.data import Preprocess
from finetune.errors import ShapeError


@pytest.fixture
def rec(image_folder, tmp_path):
    pack(ImageList.from_folder(image_folder), tmp_path / "data", resize=32, center_crop=True,
         encoding=".png", workers=1)
    return tmp_path / "data"


def _raw_batches(prefix, **kw):
    it = mx.io.ImageRecordIter(path_imgrec=str(prefix) + ".rec", data_shape=(3, 32, 32), batch_size=24, **kw)
    return next(iter(it)).data[0].asnumpy()


def test_compute_matches_numpy_and_workers_agree(rec):
    raw = _raw_batches(rec)  # ImageRecordIter decodes RGB
    mean1 = MeanImage.compute(rec, size=(32, 32), workers=1)
    mean2 = MeanImage.compute(rec, size=(32, 32), workers=2)
    np.testing.assert_allclose(mean1.image, raw.mean(0), atol=1e-3)
    np.testing.assert_allclose(mean2.image, mean1.image, atol=1e-4)
    np.testing.assert_allclose(mean1.channel_mean, raw.mean((0, 2, 3)), atol=1e-3)
    np.testing.assert_allclose(mean1.channel_std, raw.std((0, 2, 3)), rtol=1e-4)
    assert mean1.count == 24


def test_mean_bin_is_used_by_imagerecorditer_without_regeneration(rec, tmp_path):
    mean = MeanImage.compute(RecordDataset(rec, Preprocess(size=(32, 32), resize=32)), workers=1)
    path = tmp_path / "mean.bin"
    mean.save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    raw = _raw_batches(rec)
    centred = _raw_batches(rec, mean_img=str(path))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    np.testing.assert_allclose(centred, raw - mean.image[None], atol=1e-3)
    loaded = MeanImage.load(path)
    np.testing.assert_allclose(loaded.image, mean.image)


def test_mean_bin_written_by_imagerecorditer_loads(rec, tmp_path):
    path = tmp_path / "mx_mean.bin"
    _raw_batches(rec, mean_img=str(path))  # MXNet computes and saves it
    loaded = MeanImage.load(path)
    assert loaded.shape == (3, 32, 32)
    np.testing.assert_allclose(loaded.image, MeanImage.compute(rec, size=(32, 32), workers=1).image, atol=0.5)


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_caffe_binaryproto_is_read_as_bgr(tmp_path):
    bgr = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    data = bgr.tobytes()
    blob = b"".join([b"\x08" + _varint(1), b"\x10" + _varint(3), b"\x18" + _varint(2), b"\x20" + _varint(2),
                     b"\x2a" + _varint(len(data)) + data])
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob)
    mean = MeanImage.load(path)
    np.testing.assert_array_equal(mean.image, bgr[::-1])
    np.testing.assert_array_equal(mean.as_array("BGR"), bgr)
    dims = b"".join(_varint(d) for d in (1, 3, 2, 2))
    shape = b"\x0a" + _varint(len(dims)) + dims
    shaped = b"\x3a" + _varint(len(shape)) + shape + b"\x2a" + _varint(len(data)) + data
    (tmp_path / "shaped.binaryproto").write_bytes(shaped)
    np.testing.assert_array_equal(MeanImage.load(tmp_path / "shaped.binaryproto").image, bgr[::-1])


def test_to_preprocess_subtracts_the_mean_image():
    mean = MeanImage(np.stack([np.full((4, 4), v, np.float32) for v in (10, 20, 30)]),
                     channel_std=(2, 2, 2))
    pre = mean.to_preprocess(color="BGR")
    img = np.full((4, 4, 3), 50, np.uint8)
    out = pre.transform(img, color="RGB")
    assert out[:, 0, 0].tolist() == [20.0, 30.0, 40.0]  # BGR: 50-30, 50-20, 50-10
    per_channel = mean.to_preprocess(use_image=False)
    assert per_channel.mean_image is None and per_channel.std == (2.0, 2.0, 2.0)
    with pytest.raises(ShapeError):
        MeanImage(np.zeros((4, 4)))
    assert "count=0" in repr(mean)


def test_load_or_compute_computes_once(rec, tmp_path):
    path = tmp_path / "mean.bin"
    first = MeanImage.load_or_compute(path, rec, size=(32, 32), workers=1)
    stamp = path.stat().st_mtime_ns
    again = MeanImage.load_or_compute(path, "no such source", size=(32, 32))
    assert path.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.image, first.image)
