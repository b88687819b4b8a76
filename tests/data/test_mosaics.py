import csv

import numpy as np
import pytest
from PIL import Image

from keras_csl.data import mosaics


def test_shapes_determinism_and_labels():
    images, labels = mosaics.make_digit_mosaics(200, seed=3)
    again, labels_again = mosaics.make_digit_mosaics(200, seed=3)
    other, _ = mosaics.make_digit_mosaics(200, seed=4)
    assert images.shape == (200, 48, 48, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(images, other)
    assert set(np.unique(labels)) == {0.0, 1.0}
    assert labels.sum(1).min() >= 1  # At least one digit per image.


def test_class_frequencies_decrease():
    _, labels = mosaics.make_digit_mosaics(3000, seed=0)
    frequency = labels.mean(0)
    # Cells pick digit c with weight 0.85 ** c: "0" is the most frequent.
    assert frequency[0] > 0.45 and frequency[9] < 0.25
    assert np.all(np.diff(frequency) < 0.03)


def test_train_and_test_use_disjoint_scans():
    a, _ = mosaics.make_digit_mosaics(5, split="train", seed=0)
    b, _ = mosaics.make_digit_mosaics(5, split="test", seed=0)
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="split"):
        mosaics.make_digit_mosaics(5, split="val")
    with pytest.raises(ValueError, match="num_images"):
        mosaics.make_digit_mosaics(0)


def test_written_files_round_trip(tmp_path):
    paths = mosaics.write_digit_mosaics(str(tmp_path), 6, split="train", seed=1)
    images, labels = mosaics.make_digit_mosaics(6, split="train", seed=1)
    jpeg = np.asarray(Image.open(tmp_path / "images" / "train000002.jpg")).astype(int)
    # JPEG at quality 95: close to the array, not equal.
    assert np.abs(jpeg - images[2]).mean() < 3.0
    with open(paths["labels_csv"]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ImageID", "Source", "LabelName", "Confidence"]
    assert len(rows) == 1 + 6 * 10
    present = {(r[0], r[2]) for r in rows[1:] if r[3] == "1"}
    expected = {(f"train{n:06d}", mosaics.CLASS_IDS[c]) for n, c in zip(*np.nonzero(labels))}
    assert present == expected
    with open(paths["classes_csv"]) as f:
        assert next(csv.reader(f)) == ["/digit/0", "zero"]
