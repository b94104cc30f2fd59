"""Hostile data inputs: bombs, link loops, byte-order marks, escaping names, empty means, bad bytes."""

import os
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

import finetune.data as fdata
from finetune.data import ImageList, MeanImage, balance, check, decode_image, pack, read_image
from finetune.data._recordio import RecordFile
from finetune.errors import (DataError, ImageDecodeError, ImageTooLargeError, ListFormatError, MixedOutputError,
                             RecordFormatError)


def _png_bomb(w=30000, h=30000) -> bytes:
    """A small, valid-looking PNG whose header declares w x h pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(b"\0" * (3 * w + 1)) for _ in range(50)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture
def bomb_folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "bomb.png").write_bytes(_png_bomb())
    cv2.imwrite(str(root / "a" / "ok.png"), np.zeros((20, 20, 3), np.uint8))
    return root


def test_a_declared_30000x30000_png_is_refused_quickly_everywhere(bomb_folder, tmp_path):
    buf = (bomb_folder / "a" / "bomb.png").read_bytes()
    assert len(buf) < 200_000
    t0 = time.time()
    with pytest.raises(ImageTooLargeError, match="30000x30000"):
        decode_image(buf, source="bomb.png")
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        read_image(bomb_folder / "a" / "bomb.png")
    images = ImageList.from_folder(bomb_folder)
    report = check(images, workers=0, min_size=1)
    assert [(os.path.basename(b.path), b.reason) for b in report.bad] == [("bomb.png", "too large")]
    packed = pack(images, tmp_path / "out", workers=0)
    assert packed.written == 1 and [b.reason for b in packed.bad] == ["too large"]
    assert time.time() - t0 < 10


def test_the_pixel_cap_is_configurable(monkeypatch):
    png = cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1].tobytes()
    monkeypatch.setattr(fdata, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(ImageTooLargeError, match="30x20 = 600 pixels, more than MAX_IMAGE_PIXELS=500"):
        decode_image(png)
    assert decode_image(png, max_pixels=600).shape == (20, 30, 3)
    monkeypatch.setattr(fdata, "MAX_IMAGE_PIXELS", 0)  # disabled
    assert decode_image(png).shape == (20, 30, 3)


def test_symlink_loops_are_followed_once_and_duplicates_dropped(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    cv2.imwrite(str(root / "a" / "1.png"), np.zeros((8, 8, 3), np.uint8))
    os.symlink(root, root / "a" / "loop")        # a loop back to the top
    os.symlink(root / "a", root / "b")           # the same folder under a second name
    os.symlink(root / "a" / "1.png", root / "a" / "2.png")  # the same file twice
    t0 = time.time()
    images = ImageList.from_folder(root)
    assert time.time() - t0 < 5
    assert len(images) == 1 and images.class_names == ["a"]


def test_a_byte_order_mark_does_not_turn_the_csv_header_into_a_row(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    path = tmp_path / "list.csv"
    path.write_bytes("\ufeffpath,label\nx.png,cat\ny.png,dog\n".encode("utf-8"))
    images = ImageList.from_csv(path)
    assert images.class_names == ["cat", "dog"] and len(images) == 2


@pytest.mark.parametrize("content,match", [
    (b"-1\t0\ta.png\n", r"\[0, 2\*\*63\)"),
    (b"99999999999999999999999\t0\ta.png\n", r"\[0, 2\*\*63\)"),
    (b"0\tnan\ta.png\n", "finite"),
    (b"0\tinf\ta.png\n", "finite"),
    (b"x\t0\ta.png\n", "integer"),
])
def test_bad_lst_lines_are_list_format_errors(tmp_path, content, match):
    path = tmp_path / "l.lst"
    path.write_bytes(content)
    with pytest.raises(ListFormatError, match=match):
        ImageList.from_lst(path)


def test_non_utf8_lists_are_read_byte_exact(tmp_path):
    (tmp_path / "l.csv").write_bytes(b"a.png,\xe9t\xe9\n")
    (tmp_path / "l.lst").write_bytes(b"0\t1\t\xff\xfe.png\n")
    images = ImageList.from_csv(tmp_path / "l.csv")
    assert [os.fsencode(n) for n in images.class_names] == [b"\xe9t\xe9"]
    assert os.fsencode(ImageList.from_lst(tmp_path / "l.lst")[0].path) == b"\xff\xfe.png"


@pytest.mark.parametrize("idx", [b"0\t\xff\n", b"0\t-8\n", b"0\t99999999999999999999999\n", b"0\t1\t2\n"])
def test_bad_idx_files_are_record_format_errors(tmp_path, image_folder, idx):
    pack(ImageList.from_folder(image_folder), tmp_path / "d", workers=0)
    (tmp_path / "d.idx").write_bytes(idx)
    with pytest.raises(MixedOutputError, match="d.idx"):  # not the index this pack wrote
        RecordFile(tmp_path / "d.rec", tmp_path / "d.idx")
    os.remove(tmp_path / ".d.rec.finetune")  # as if another tool had written both: the index itself is checked
    with pytest.raises(RecordFormatError, match="d.idx"):
        RecordFile(tmp_path / "d.rec", tmp_path / "d.idx")


@pytest.mark.parametrize("name", ["../../x", "..", "/abs/x", ""])
def test_balance_refuses_class_names_leading_out_of_its_folder(tmp_path, name):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    cv2.imwrite(str(root / "a" / "1.png"), np.zeros((8, 8, 3), np.uint8))
    images = ImageList.from_folder(root)
    images = ImageList([(e.index, e.path, e.label) for e in images], class_names=[name], root=str(root))
    out = tmp_path / "deep" / "out"
    with pytest.raises(DataError, match="does not name a folder inside"):
        balance(images, 3, out)
    assert not (tmp_path / "x").exists()


def test_balance_still_accepts_nested_class_names(tmp_path):
    root = tmp_path / "imgs"
    (root / "a" / "b").mkdir(parents=True)
    cv2.imwrite(str(root / "a" / "b" / "1.png"), np.zeros((8, 8, 3), np.uint8))
    out = balance(ImageList.from_folder(root), 2, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b").is_dir() and len(out) == 2


def test_mean_of_zero_readable_images_is_an_error_not_nan(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="none of the 1 images could be read"):
        MeanImage.compute(ImageList.from_folder(root), size=(8, 8), workers=0)


def _record_file(tmp_path, payloads):
    """A ``.rec`` / ``.idx`` pair holding ``payloads`` as they are (no checks, as MXNet's im2rec would)."""
    from finetune.data._recordio import RecordWriter

    prefix = tmp_path / "raw"
    with open(f"{prefix}.rec", "wb") as rec, open(f"{prefix}.idx", "w") as idx:
        w = RecordWriter(rec, idx)
        for k, payload in enumerate(payloads):
            w.write(k, struct.pack("IfQQ", 0, float(k), k, 0) + payload)
        w.close()
    return prefix


def _truncated_jpeg():
    rng = np.random.default_rng(0)
    jpg = cv2.imencode(".jpg", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    return jpg[: len(jpg) * 2 // 3]


@pytest.mark.parametrize("train", [False, True])
def test_records_holding_a_bomb_or_a_truncated_jpeg_are_refused_before_decoding(tmp_path, train):
    good = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes()
    ds = fdata.RecordDataset(_record_file(tmp_path, [good, _png_bomb(), _truncated_jpeg()]),
                             fdata.Preprocess(size=(16, 16)), train=train)
    assert ds.image(0).shape == (20, 20, 3) and ds[0][0].shape == (3, 16, 16)
    t0 = time.time()
    for access in (ds.image, ds.__getitem__):
        with pytest.raises(ImageTooLargeError, match=r"raw\.rec: record 1 \(id 1\).*30000x30000"):
            access(1)
        with pytest.raises(RecordFormatError, match=r"record 2 \(id 2\).*truncated.*end-of-image"):
            access(2)
    assert time.time() - t0 < 5
    loader = ds.loader(3, workers=1, shuffle=False)
    try:
        with pytest.raises(ImageTooLargeError, match="record 1"):
            list(loader)
    finally:
        loader.close()


def test_decode_image_refuses_a_truncated_jpeg_or_png():
    with pytest.raises(ImageDecodeError, match="x.jpg: the image is truncated: the JPEG data ends before"):
        decode_image(_truncated_jpeg(), source="x.jpg")
    png = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageDecodeError, match="before its IEND chunk"):
        decode_image(png[:-20])


def _damaged_jpeg():
    """A JPEG with 64 bytes of its scan data overwritten; it still ends with its end-of-image marker."""
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (7, 7), 2)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    mid = (jpg.find(b"\xff\xda") + len(jpg)) // 2
    return jpg[:mid] + rng.integers(0, 256, 64, dtype=np.uint8).tobytes() + jpg[mid + 64:], img


def _damaged_png():
    """A PNG whose IDAT data has 32 bytes zeroed (the CRC no longer matches)."""
    png = cv2.imencode(".png", np.random.default_rng(4).integers(0, 255, (60, 80, 3), dtype=np.uint8))[1].tobytes()
    i = png.find(b"IDAT")
    (length,) = struct.unpack(">I", png[i - 4:i])
    mid = i + 4 + length // 2
    return png[:mid] + bytes(32) + png[mid + 32:]


def test_check_and_pack_report_images_that_decode_only_partly(tmp_path, capfd):
    jpg, original = _damaged_jpeg()
    decoded = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and np.abs(decoded.astype(int) - original).mean() > 5  # OpenCV passes it
    assert capfd.readouterr().err.startswith("Corrupt JPEG data")  # and only prints libjpeg's warning
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "damaged.jpg").write_bytes(jpg)
    (root / "a" / "damaged.png").write_bytes(_damaged_png())
    cv2.imwrite(str(root / "a" / "ok.jpg"), original)
    images = ImageList.from_folder(root)
    for workers in (0, 2):
        report = check(images, workers=workers, min_size=1)
        bad = {os.path.basename(b.path): b for b in report.bad}
        assert sorted(bad) == ["damaged.jpg", "damaged.png"] and len(report.good) == 1
        assert bad["damaged.jpg"].reason == "damaged"
        assert "Corrupt JPEG data" in bad["damaged.jpg"].detail and "re-encode" in bad["damaged.jpg"].detail
        assert bad["damaged.png"].reason == "corrupt" and "libpng error" in bad["damaged.png"].detail
    packed = pack(images, tmp_path / "out", workers=0)
    assert packed.written == 1 and sorted(b.reason for b in packed.bad) == ["corrupt", "damaged"]
    printed = capfd.readouterr().err.splitlines()
    assert not [line for line in printed if line.startswith(("Corrupt JPEG", "libpng"))]  # reported, not printed


def test_decoder_capture_passes_other_output_on(capfd):
    from finetune.data._check import decode_reporting

    png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    img, messages, damaged = decode_reporting(png)
    assert img.shape == (4, 4, 3) and messages == [] and not damaged
    os.write(2, b"before\n")
    decode_reporting(_damaged_jpeg()[0])
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"
