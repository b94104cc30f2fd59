"""One extension list, one folder lister, one image source for every input form."""

import os
import time

import cv2
import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.data import DEFAULT_EXTS, IMAGE_EXTENSIONS, ImageList, list_images, read_image
from finetune.data import ImageSource
from finetune.errors import ConfigError, DataError, ImageDecodeError, MissingFileError


def test_one_extension_list():
    assert DEFAULT_EXTS is IMAGE_EXTENSIONS
    assert {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".pgm", ".ppm", ".tif"} <= set(IMAGE_EXTENSIONS)
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)


def test_list_images_follows_links_once_and_agrees_with_image_list(linked_folder):
    root, names = linked_folder
    t0 = time.time()
    paths = list_images(root)
    assert time.time() - t0 < 5
    assert [os.path.relpath(p, root) for p in paths] == names
    images = ImageList.from_folder(root)
    assert sorted(images.paths) == sorted(paths)
    assert images.class_names == ["a", "b"] and images.skipped == {".txt": 1}


def test_list_images_sorts_by_relative_path_and_filters(tmp_path):
    for name in ("z.png", "a/y.PNG", "a/b/x.jpg", "c.gif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [os.path.relpath(p, tmp_path) for p in list_images(tmp_path)] == ["a/b/x.jpg", "a/y.PNG", "z.png"]
    assert [os.path.relpath(p, tmp_path) for p in list_images(tmp_path, recursive=False)] == ["z.png"]
    assert [os.path.relpath(p, tmp_path) for p in list_images(tmp_path, exts=["GIF"])] == ["c.gif"]


def test_list_images_errors_say_what_to_do(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"holds no image files \(.*\.pgm.*\)\. Put images there"):
        list_images(tmp_path)


def test_every_input_form_decodes_to_the_same_pixels(image_folder, tmp_path):
    images = ImageList.from_folder(image_folder)
    path = images.paths[0]
    rgb = read_image(path, "RGB")
    encoded = open(path, "rb").read()
    ft.pack(images, tmp_path / "data", workers=1, encoding=".png")
    images.write_lst(tmp_path / "data.lst")
    records = ft.RecordDataset(tmp_path / "data")

    class Dataset:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return rgb[:, :, ::-1], 7

    forms = [path, encoded, rgb[:, :, ::-1].copy(), [(path, 0)], images, records, Dataset()]
    for form in forms:
        source = ImageSource(form, color="BGR")
        np.testing.assert_array_equal(source.read(0, "RGB"), rgb, err_msg=repr(form)[:80])
        np.testing.assert_array_equal(source.read(0, "BGR"), rgb[:, :, ::-1])
    assert [item.label for item in ImageSource(images)][:3] == images.labels[:3]
    record_items = ImageSource(records).items
    assert [item.label for item in record_items] == images.labels
    assert record_items[0].source == images.entries[0].path  # named by the .lst beside the records
    assert len(ImageSource(image_folder)) == len(images)
    assert len(ImageSource([image_folder, path])) == len(images) + 1
    # records and lists named by a path are read like the objects (predict/extract on data/val.rec said
    # "not a decodable image")
    for named in (tmp_path / "data.rec", str(tmp_path / "data"), [tmp_path / "data.idx"]):
        source = ImageSource(named)
        assert len(source) == len(images), named
        np.testing.assert_array_equal(source.read(0, "RGB"), rgb, err_msg=str(named))


def test_arrays_batches_and_their_colour_order():
    batch = np.zeros((5, 8, 9, 3), np.uint8)
    batch[..., 0] = 255
    source = ImageSource(batch, color="RGB")
    assert len(source) == 5 and [item.source for item in source][:2] == ["array[0]", "array[1]"]
    assert source.read(4, "BGR")[0, 0].tolist() == [0, 0, 255]
    assert len(ImageSource(np.zeros((5, 20, 20), np.uint8), color="RGB")) == 5  # (N, H, W) grey
    # (3, H, W) and (1, H, W) read as (C, H, W), 2 channels: refused (a (3, 40, 48) image gave 3 grey "images")
    for shape in ((3, 20, 20), (1, 20, 20), (20, 20, 2)):
        with pytest.raises(ConfigError, match=r"\(C, H, W\) tensor|1, 3 or 4 channels"):
            ImageSource(np.zeros(shape, np.uint8), color="RGB")
    assert len(ImageSource(mx.nd.zeros((20, 24, 3), dtype="uint8"), color="RGB")) == 1  # an NDArray, not its rows
    assert ImageSource(np.zeros((20, 20), np.uint8), color="RGB").read(0).shape == (20, 20, 3)
    with pytest.raises(ConfigError, match="color='BGR'"):
        ImageSource(batch)
    with pytest.raises(ConfigError, match="'color' parameter"):
        ImageSource(batch, color="rgb")
    with pytest.raises(ConfigError, match=r"\(H, W\[, C\]\)"):
        ImageSource(np.zeros((2, 2, 2, 2, 2), np.uint8), color="RGB")
    with pytest.warns(UserWarning, match="Multiply by 255"):
        ImageSource(np.zeros((8, 8, 3), np.float32), color="RGB").read(0)
    assert ImageSource(np.full((4, 4, 3), 200), color="RGB").read(0).max() == 200
    # integers beyond 0-255 (16-bit pixels) were clipped to white; NaN pixels gave NaN descriptors
    for bad, match in ((np.full((4, 4, 3), 300), "values from 300 to 300"), (np.full((4, 4, 3), np.nan), "NaN"),
                       (np.zeros((4, 4, 3), bool), "bool values")):
        with pytest.raises(ConfigError, match=match):
            ImageSource(bad, color="RGB").read(0)
    with pytest.raises(ConfigError, match="from a dict"):
        ImageSource({"a": 1}, color="RGB")
    with pytest.raises(ConfigError, match="use read_image"):
        ft.decode_image("photo.jpg")


def test_unknown_inputs_and_preprocessed_tensors_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read input 1 of the images: a float"):
        ImageSource(["a.jpg", 1.5])
    with pytest.raises(ConfigError, match="Cannot read calibration images from a int"):
        ImageSource(3, what="calibration images")
    with pytest.raises(ConfigError, match="already preprocessed"):
        ImageSource([np.zeros((3, 16, 16), np.float32)], color="RGB").read(0)
    with pytest.raises(DataError, match="No calibration images found: folder"):
        ImageSource([tmp_path], what="calibration images")


def test_decoding_is_lazy_and_per_item(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((4, 4, 3), np.uint8))
    source = ImageSource([good, tmp_path / "missing.png", b"junk"])
    assert len(source) == 3 and source.read(0).shape == (4, 4, 3)
    with pytest.raises(MissingFileError):
        source.read(1)
    with pytest.raises(ImageDecodeError, match="bytes\\[2\\]"):
        source.read(2)


def test_labelled_data_named_by_a_path_opens_like_the_cli(tmp_path):
    import cv2

    from finetune.data import ImageList, open_labelled, pack
    from finetune.errors import MissingFileError

    for name in ("cat/1.png", "dog/2.png"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "photos" / name), np.zeros((8, 8, 3), np.uint8))
    images = ImageList.from_folder(tmp_path / "photos")
    pack(images, tmp_path / "val", workers=0)
    images.write_lst(tmp_path / "photos" / "all.lst")
    for spec in (tmp_path / "val.rec", str(tmp_path / "val"), tmp_path / "val.idx", tmp_path / "photos",
                 tmp_path / "photos" / "all.lst"):
        source = ImageSource.labelled(spec)
        assert sorted(item.label for item in source) == [0, 1], spec
    for missing in (tmp_path / "nothere.rec", tmp_path / "nothere", tmp_path / "photos" / "cat" / "1.png"):
        with pytest.raises(MissingFileError, match="is not a .rec file"):
            open_labelled(missing)
