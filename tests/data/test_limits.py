"""Size limits apply to what a resize makes, not only to what a header declares, on every resize path."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import finetune.data as fdata
from finetune.data import Augment, ImageList, Preprocess, pack
from finetune.data._augment import eval_crop, train_crop
from finetune.data._image_checks import check_geometry, geometry_problem, refuse_unsafe
from finetune.data._pack import im2rec_size
from finetune.errors import ImageDecodeError, ImageTooLargeError
from finetune.features._geometry import resize_keep_aspect

PRE = Preprocess(size=(32, 32), resize=32)


def _png(h, w) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), 128, np.uint8))[1].tobytes()


def _jpeg_with_size(h, w) -> bytes:
    """A valid 8x8 JPEG whose start-of-frame marker is rewritten to declare ``h`` x ``w``."""
    buf = bytearray(cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes())
    sof = buf.find(b"\xff\xc0")
    buf[sof + 5:sof + 9] = int(h).to_bytes(2, "big") + int(w).to_bytes(2, "big")
    return bytes(buf)


def _paths(tmp_path):
    """Every way a user image is decoded and resized: name -> function(bytes) that raises or returns."""
    def via_file(buf, fn):
        path = tmp_path / "img.bin"
        path.write_bytes(buf)
        return fn(str(path))

    def via_pack(buf):
        (tmp_path / "imgs" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / "a" / "x.png").write_bytes(buf)
        cv2.imwrite(str(tmp_path / "imgs" / "a" / "ok.png"), np.zeros((8, 8, 3), np.uint8))  # a pack writes something
        report = pack(ImageList.from_folder(tmp_path / "imgs"), tmp_path / "out", resize=32, workers=0)
        if report.bad:  # pack reports bad images instead of raising: turn the report into the error
            raise {"too large": ImageTooLargeError}.get(report.bad[0].reason, ImageDecodeError)(report.bad[0].detail)
        return report

    rng = np.random.RandomState(0)
    return {
        "Preprocess.read": lambda buf: via_file(buf, PRE.read),
        "Preprocess.transform": lambda buf: PRE.transform(fdata.decode_image(buf), "RGB"),
        "eval_crop": lambda buf: eval_crop(buf, PRE),
        "train_crop": lambda buf: train_crop(buf, Augment(random_resized_crop=False), PRE, rng),
        "train_crop(random_resized_crop)": lambda buf: train_crop(buf, Augment(), PRE, rng),
        "resize_keep_aspect": lambda buf: resize_keep_aspect(fdata.decode_image(buf), 32),
        "pack --resize 32": via_pack,
    }


PATHS = list(_paths(None))


@pytest.mark.parametrize("path", PATHS)
def test_a_one_pixel_high_strip_is_refused_before_the_resize(path, tmp_path):
    """1,000,000 x 1 pixels is a 3 KB PNG; its shorter side at 32 would be 32,000,000 x 32."""
    fn = _paths(tmp_path)[path]
    buf = _png(1, 1_000_000)
    assert len(buf) < 10_000
    if path == "train_crop(random_resized_crop)":  # crops a region to 32x32: nothing is enlarged
        assert fn(buf).shape == (32, 32, 3)
        return
    with pytest.raises(ImageTooLargeError, match="1000000x1"):
        fn(buf)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("h, w", [(0, 8), (8, 0), (0, 0)])
def test_a_header_with_a_zero_side_is_a_decode_error(path, h, w, tmp_path):
    with pytest.raises(ImageDecodeError, match="both sides must be positive|corrupt"):
        _paths(tmp_path)[path](_jpeg_with_size(h, w))


@pytest.mark.parametrize("path", PATHS)
def test_the_resized_size_counts_against_max_image_pixels(path, tmp_path, monkeypatch):
    """A 4 x 400 image (1,600 pixels) becomes 32 x 3,200 (102,400): over a cap of 50,000."""
    fn = _paths(tmp_path)[path]
    buf = _png(4, 400)
    monkeypatch.setattr(fdata, "MAX_IMAGE_PIXELS", 50_000)
    if path == "train_crop(random_resized_crop)":
        assert fn(buf).shape == (32, 32, 3)
        return
    with pytest.raises(ImageTooLargeError, match="MAX_IMAGE_PIXELS=50000"):
        fn(buf)
    monkeypatch.setattr(fdata, "MAX_IMAGE_PIXELS", 200_000)  # within the cap and a ratio of 100: accepted
    fn(buf)


@pytest.mark.parametrize("path", [p for p in PATHS if "random_resized" not in p])
def test_an_extreme_aspect_ratio_is_not_enlarged(path, tmp_path, monkeypatch):
    fn = _paths(tmp_path)[path]
    buf = _png(2, 400)  # 200:1
    with pytest.raises(ImageTooLargeError, match="MAX_ASPECT_RATIO=100"):
        fn(buf)
    monkeypatch.setattr(fdata, "MAX_ASPECT_RATIO", 0)  # disabled
    fn(buf)


def test_an_extreme_aspect_ratio_that_is_only_shrunk_is_accepted():
    buf = _png(40, 8000)  # 200:1, shorter side 40 -> 32
    assert eval_crop(buf, PRE).shape == (32, 32, 3)


@settings(max_examples=300, deadline=None)
@given(st.integers(-2, 10**6), st.integers(-2, 10**6), st.integers(1, 512), st.booleans(),
       st.sampled_from(["shorter", "stretch"]))
def test_every_accepted_geometry_stays_within_the_limits(w, h, target, center_crop, mode):
    """Whatever the header declares, an accepted resize is within MAX_IMAGE_PIXELS and MAX_ASPECT_RATIO."""
    pre = Preprocess(size=(min(target, 224),) * 2, resize=target, resize_mode=mode)
    for name, resize in (("Preprocess", lambda hh, ww: pre.crop_box(hh, ww)[:2]),
                         ("pack", lambda hh, ww: im2rec_size(hh, ww, target, center_crop))):
        problem = geometry_problem(w, h, resize)
        if w <= 0 or h <= 0:
            assert problem[0] == "corrupt", name
            with pytest.raises(ImageDecodeError):
                check_geometry(w, h, resize)
            continue
        if problem is not None:
            with pytest.raises(ImageTooLargeError):
                check_geometry(w, h, resize)
            continue
        new_h, new_w = resize(h, w)
        assert w * h <= fdata.MAX_IMAGE_PIXELS and new_h * new_w <= fdata.MAX_IMAGE_PIXELS, name
        assert new_h * new_w <= w * h or max(w, h) <= fdata.MAX_ASPECT_RATIO * min(w, h), name


def test_refuse_unsafe_names_the_file_and_the_numbers():
    with pytest.raises(ImageTooLargeError, match=r"strip\.png: .*1000000x1 pixels .* 32000000x32 = 1024000000"):
        refuse_unsafe(_png(1, 1_000_000), "strip.png", resize=lambda h, w: PRE.crop_box(h, w)[:2])
