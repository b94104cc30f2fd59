"""check and pack on real photos plus files broken on purpose: no crash, every bad file reported."""

import io
import os
import shutil

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from finetune import ImageList, check, pack
from finetune.errors import ConfigError
from tests.ingredients import foolbox_dir, real_photos


@pytest.fixture
def messy_folder(tmp_path):
    """Real photos plus broken and unusual files, in two class folders."""
    root = tmp_path / "messy"
    good, odd = root / "good", root / "odd"
    good.mkdir(parents=True)
    odd.mkdir()
    for p in real_photos():
        shutil.copy(p, good / p.name)
    fb = foolbox_dir()
    for name in ["imagenet_00_243.jpg", "cifar10_00_3.png", "mnist_00_7.png", "fashionMNIST_00_9.png"]:
        if (fb / name).exists():
            shutil.copy(fb / name, good / name)
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    ok, jpg = cv2.imencode(".jpg", rgb)
    (odd / "truncated.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    (odd / "zero.jpg").write_bytes(b"")
    (odd / "text.jpg").write_text("this is not an image\n")
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG")
    (odd / "cmyk.jpg").write_bytes(buf.getvalue())
    cv2.imwrite(str(odd / "deep16.png"), (rgb.astype(np.uint16) * 257))
    cv2.imwrite(str(odd / "grey.png"), rgb[:, :, 0])
    cv2.imwrite(str(odd / "rgba.png"), np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]))
    cv2.imwrite(str(odd / "tiny.png"), rgb[:4, :4])
    return root


BAD = {"truncated.jpg": "truncated", "zero.jpg": "zero bytes", "text.jpg": "not an image",
       "tiny.png": "too small"}
CONVERTED = {"cmyk.jpg": "CMYK", "deep16.png": "16-bit", "grey.png": "grayscale", "rgba.png": "alpha channel"}


@pytest.mark.realdata
@pytest.mark.parametrize("workers", [1, 2])
def test_check_reports_every_bad_file(messy_folder, workers):
    images = ImageList.from_folder(messy_folder)
    report = check(images, workers=workers, min_size=8)
    assert {os.path.basename(b.path): b.reason for b in report.bad} == BAD
    converted = {os.path.basename(p): notes for p, notes in report.converted}
    for name, note in CONVERTED.items():
        assert note in converted[name]
    assert len(report.good) == len(images) - len(BAD)
    assert "4 bad" in report.summary()


@pytest.mark.realdata
def test_pack_skips_bad_files_and_imagerecorditer_reads_the_rest(messy_folder, tmp_path):
    images = ImageList.from_folder(messy_folder)
    report = pack(images, tmp_path / "messy", resize=32, workers=2, min_size=8)
    assert {os.path.basename(b.path): b.reason for b in report.bad} == BAD
    assert report.written == len(images) - len(BAD)
    it = mx.io.ImageRecordIter(path_imgrec=report.rec, path_imgidx=report.idx, data_shape=(3, 32, 32),
                               batch_size=report.written)
    batch = next(iter(it))
    good_labels = [e.label for e in images if os.path.basename(e.path) not in BAD]
    assert batch.label[0].asnumpy().tolist() == good_labels
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_pack_is_ordered_with_workers_and_matches_imagerecorditer_pixels(image_folder, tmp_path):
    images = ImageList.from_folder(image_folder)
    shuffled = images.subset(np.random.default_rng(3).permutation(len(images)))
    report = pack(shuffled, tmp_path / "p", encoding=".png", quality=3, workers=2, resize=40, center_crop=True)
    assert report.written == len(images) and not report.bad
    it = mx.io.ImageRecordIter(path_imgrec=report.rec, data_shape=(3, 40, 40), batch_size=len(images))
    batch = next(iter(it))
    assert batch.label[0].asnumpy().tolist() == [float(e.label) for e in shuffled]
    record = mx.recordio.MXIndexedRecordIO(report.idx, report.rec, "r")
    assert sorted(record.keys) == sorted(e.index for e in shuffled)
    for k, entry in enumerate(shuffled):
        header, stored = mx.recordio.unpack_img(record.read_idx(entry.index))
        assert header.id == entry.index and stored.shape == (40, 40, 3)
        decoded_rgb = batch.data[0][k].asnumpy().transpose(1, 2, 0)
        np.testing.assert_array_equal(decoded_rgb, stored[:, :, ::-1].astype(np.float32))


def test_pack_options_are_validated(image_folder, tmp_path):
    images = ImageList.from_folder(image_folder)
    with pytest.raises(ConfigError, match="encoding"):
        pack(images, tmp_path / "x", encoding=".gif")
    with pytest.raises(ConfigError, match="quality"):
        pack(images, tmp_path / "x", quality=101)


def test_pack_pass_through_keeps_bytes(image_folder, tmp_path):
    images = ImageList.from_folder(image_folder)
    report = pack(images, tmp_path / "raw", pass_through=True, workers=1)
    record = mx.recordio.MXIndexedRecordIO(report.idx, report.rec, "r")
    _, payload = mx.recordio.unpack(record.read_idx(0))
    assert payload == open(images.paths[0], "rb").read()


def test_pack_unchanged_colour_with_alpha_and_multi_labels(tmp_path):
    rgba = np.dstack([np.full((20, 20, 3), 90, np.uint8), np.full((20, 20), 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    cv2.imwrite(str(tmp_path / "b.png"), rgba[:, :, :3])
    images = ImageList([(0, "a.png", (1.0, 2.0)), (1, "b.png", (3.0, 4.0))], root=tmp_path)
    report = pack(images, tmp_path / "alpha", color=-1, workers=1)  # alpha dropped for JPEG
    record = mx.recordio.MXIndexedRecordIO(report.idx, report.rec, "r")
    assert report.written == 2 and mx.recordio.unpack_img(record.read_idx(0), -1)[1].shape == (20, 20, 3)
    png = pack(images, tmp_path / "alpha_png", color=-1, encoding=".png", workers=1)
    record = mx.recordio.MXIndexedRecordIO(png.idx, png.rec, "r")
    assert mx.recordio.unpack_img(record.read_idx(0), -1)[1].shape == (20, 20, 4)
    report = pack(images, tmp_path / "multi", pack_label=True, encoding=".png", workers=1)
    from finetune import RecordDataset

    ds = RecordDataset(tmp_path / "multi")
    assert ds[1][1].tolist() == [3.0, 4.0] and ds.labels.shape == (2, 2)


def test_greyscale_packing_is_read_as_three_channels(image_folder, tmp_path):
    from finetune import Preprocess, RecordDataset

    report = pack(ImageList.from_folder(image_folder), tmp_path / "grey", color=0, resize=32, workers=2)
    record = mx.recordio.MXIndexedRecordIO(report.idx, report.rec, "r")
    assert mx.recordio.unpack_img(record.read_idx(0), -1)[1].ndim == 2
    pre = Preprocess(size=(32, 32), resize=32, mean=(0, 0, 0), std=(1, 1, 1))
    image, _ = RecordDataset(tmp_path / "grey", pre)[0]
    assert image.shape == (3, 32, 32)
    np.testing.assert_allclose(image[0], image[2])


@pytest.mark.parametrize("shape", [(1, 1), (16, 16), (1, 3000), (3000, 1), (2, 150), (40, 4000), (50, 5000)])
def test_check_pack_and_training_agree_on_every_image_shape(tmp_path, shape):
    """One rule: what ``check`` calls good, ``pack`` packs and the training loader reads, and the reverse.

    ``check`` once called a 1x1 image bad that ``pack`` packed, and both passed a 3000x1 strip that the
    loader refused in the middle of the first epoch.
    """
    from finetune import RecordDataset
    from finetune.data import Preprocess

    for name, side in (("a", shape), ("b", (20, 20))):
        (tmp_path / "p" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "p" / name / "x.png"), np.full(side + (3,), 128, np.uint8))
    images = ImageList.from_folder(tmp_path / "p")
    checked = check(images, workers=0)
    packed = pack(images, tmp_path / "x", workers=0)
    assert len(checked.good) == packed.written
    assert [b.reason for b in checked.bad] == [b.reason for b in packed.bad]
    ds = RecordDataset(packed.rec, Preprocess(size=(32, 32)))
    assert all(ds[i][0].shape[-2:] == (32, 32) for i in range(len(ds)))


def test_a_name_that_looks_like_an_image_but_is_no_file_is_named(tmp_path, caplog):
    """A link to nothing (or a pipe) called ``x.png`` was left out of a folder's images without a word."""
    (tmp_path / "cat").mkdir()
    cv2.imwrite(str(tmp_path / "cat" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    os.symlink(tmp_path / "gone.png", tmp_path / "cat" / "b.png")
    os.mkfifo(tmp_path / "cat" / "c.jpg")
    images = ImageList.from_folder(tmp_path)
    assert [e.path for e in images] == ["cat/a.png"]
    assert "cat/b.png" in caplog.text and "cat/c.jpg" in caplog.text and "not files" in caplog.text
