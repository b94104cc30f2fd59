"""Class balancing and the built-in Fashion-MNIST reader."""

import os

import numpy as np
import pytest

from finetune import ImageList, balance
from finetune.data import (FASHION_MNIST_CLASSES, load_fashion_mnist, write_fashion_mnist_folder,
                           write_fashion_mnist_unlabeled)
from finetune.data._balance import random_affine
from finetune.errors import ConfigError, UnknownNameError


def test_balance_fills_small_classes_only_from_the_given_list(image_folder, tmp_path):
    images = ImageList.from_folder(image_folder)
    train, val = images.split((0.5, 0.5), seed=0)
    small = train.subset([i for i, lab in enumerate(train.labels) if lab != 0 or i % 2])
    out = balance(small, 6, tmp_path / "extra", seed=0)
    assert out.class_counts() == {0: 6, 1: 6, 2: 6}
    new = [p for p in out.paths if str(tmp_path / "extra") in p]
    assert len(new) == len(out) - len(small)
    val_paths = set(val.paths)
    assert not val_paths & set(out.paths)
    assert all(os.path.isfile(p) for p in new)
    again = balance(small, 6, tmp_path / "extra2", seed=0)
    assert [e.label for e in again] == [e.label for e in out]
    with pytest.raises(ConfigError):
        balance(small, 0, tmp_path)


def test_random_affine_changes_the_image_but_keeps_its_shape():
    img = np.zeros((20, 30, 3), np.uint8)
    img[5:15, 5:10] = 255
    out = random_affine(img, np.random.RandomState(0), rotation=30)
    assert out.shape == img.shape and not np.array_equal(out, img)


@pytest.mark.realdata
def test_fashion_mnist_reader_and_folder(tmp_path):
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    tree = write_fashion_mnist_folder(tmp_path / "fm", 5, split="test", seed=0, size=32)
    assert sorted(tree.class_names) == sorted(FASHION_MNIST_CLASSES)
    assert tree.class_counts() == {k: 5 for k in range(10)}
    again = write_fashion_mnist_folder(tmp_path / "fm2", 5, split="test", seed=0)
    assert [os.path.basename(p) for p in again.paths] == [os.path.basename(p) for p in tree.paths]


def test_fashion_mnist_folder_with_a_subset_of_classes(tmp_path):
    all_classes = write_fashion_mnist_folder(tmp_path / "all", 3, split="test", seed=1)
    three = write_fashion_mnist_folder(tmp_path / "three", 3, split="test", seed=1, classes=3)
    assert three.class_names == sorted(FASHION_MNIST_CLASSES)[:3]
    by_class = {os.path.basename(e.path): e for e in all_classes}
    assert all(os.path.basename(e.path) in by_class for e in three)  # the same sample, not a new draw
    named = write_fashion_mnist_folder(tmp_path / "named", 2, split="test", classes=["Bag", "Dress"])
    assert named.class_names == ["Bag", "Dress"]
    with pytest.raises(UnknownNameError, match="Did you mean 'Bag'"):
        write_fashion_mnist_folder(tmp_path / "bad", 2, split="test", classes=["Bags"])
    with pytest.raises(ConfigError, match="'classes' parameter"):
        write_fashion_mnist_folder(tmp_path / "bad", 2, split="test", classes=11)


def test_unlabeled_fashion_mnist_images_are_outside_the_sample_and_carry_no_label(tmp_path):
    import cv2

    sample = write_fashion_mnist_folder(tmp_path / "sample", 3, seed=2)
    paths = write_fashion_mnist_unlabeled(tmp_path / "pool", 200, per_class=3, seed=2)
    listed = sorted(n for n in os.listdir(tmp_path / "pool") if n != ".finetune")  # the folder's owner marker
    assert len(paths) == 200 and listed == [f"{k:05d}.png" for k in range(200)]
    taken = {cv2.imread(sample.full_path(e), cv2.IMREAD_GRAYSCALE).tobytes() for e in sample}
    pool = [cv2.imread(p, cv2.IMREAD_GRAYSCALE).tobytes() for p in paths]
    assert not taken & set(pool)  # never an image of the labelled sample
    again = write_fashion_mnist_unlabeled(tmp_path / "again", 200, per_class=3, seed=2)
    assert [cv2.imread(p, cv2.IMREAD_GRAYSCALE).tobytes() for p in again] == pool  # seeded
    with pytest.raises(ConfigError, match="at most 59970"):
        write_fashion_mnist_unlabeled(tmp_path / "bad", 60000, per_class=3, seed=2)
    with pytest.raises(ConfigError, match="count"):
        write_fashion_mnist_unlabeled(tmp_path / "bad", 0)


@pytest.mark.realdata
def test_the_fashion_mnist_folder_replaces_its_own_earlier_sample_and_refuses_a_users_folder(tmp_path):
    """A second sample replaces the first whole (an earlier draw never stays beside it); a folder of the
    user's own images is refused instead of getting ten Fashion-MNIST classes mixed into it."""
    from finetune.errors import OutputExistsError

    out = tmp_path / "fm"
    write_fashion_mnist_folder(out, 2, split="test", seed=0)
    assert len(write_fashion_mnist_folder(out, 1, split="test", seed=1)) == 10
    mine = tmp_path / "photos" / "cat"
    mine.mkdir(parents=True)
    (mine / "1.png").write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="did not write"):
        write_fashion_mnist_folder(tmp_path / "photos", 1, split="test")
    assert sorted(os.listdir(tmp_path / "photos")) == ["cat"]
