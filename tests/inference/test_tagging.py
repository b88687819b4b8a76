"""Tests of keras_csl.inference.tagging (tag_images and its helpers).

The command line is run in tests/recipes/test_serving_recipes_cli.py.
"""

import json
import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import write_classes_csv
from keras_csl.inference import Predictor
from keras_csl.inference import format_table
from keras_csl.inference import select_tags
from keras_csl.inference import tag_images
from keras_csl.inference.tagging import undecodable_reason
from keras_csl.models import ModelCard
from keras_csl.models import set_model_card

IMAGE_SIZE = 32
IDS = ["/m/person", "/m/car", "/m/dog", "/m/cat", "/m/tree"]
NAMES = ["Person", "Car", "Dog", "Cat", "Tree"]


@pytest.fixture(scope="module")
def predictor():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        len(IDS), dtype="float32", name="logits",
        kernel_initializer=keras.initializers.RandomNormal(stddev=3.0),
    )(x)
    model = set_model_card(keras.Model(inputs, outputs), ModelCard(
        image_size=IMAGE_SIZE, class_ids=IDS, display_names=NAMES
    ))
    return Predictor.from_keras_model(model)


def _pixels(rng, height, width, channels):
    return rng.integers(0, 256, (height, width, channels), np.uint8)


def write_images(folder, rng):
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "a.jpg": tf.io.encode_jpeg(_pixels(rng, 48, 64, 3)).numpy(),
        "b.png": tf.io.encode_png(_pixels(rng, 30, 20, 3)).numpy(),
        "gray.jpg": tf.io.encode_jpeg(_pixels(rng, 40, 40, 1)).numpy(),
        "gray.png": tf.io.encode_png(_pixels(rng, 25, 50, 1)).numpy(),
        "broken.jpg": b"not an image at all",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("ignored: not an image extension")
    return files


def test_select_tags():
    probabilities = np.array([0.2, 0.9, 0.55, 0.7, 0.5])
    assert select_tags(probabilities, threshold=0.5, top_k=10) == [1, 3, 2, 4]
    assert select_tags(probabilities, threshold=0.5, top_k=2) == [1, 3]
    assert select_tags(probabilities, threshold=0.95, top_k=0) == []
    everything = select_tags(probabilities, threshold=0.0, top_k=None)
    assert everything == [1, 3, 2, 4, 0]


def test_tag_images_folder_and_drawn_pictures(predictor, tmp_path, caplog):
    files = write_images(tmp_path / "photos", np.random.default_rng(0))
    extra = tmp_path / "more" / "a.jpg"  # same stem as photos/a.jpg
    extra.parent.mkdir()
    extra.write_bytes(files["a.jpg"])
    output_dir = tmp_path / "tagged"
    with caplog.at_level("WARNING", logger="keras_csl.inference.tagging"):
        results = tag_images(
            predictor, [tmp_path / "photos", extra], threshold=0.0, top_k=3,
            output_dir=output_dir, batch_size=4,
        )
    names = [os.path.basename(r["path"]) for r in results]
    assert names == ["a.jpg", "b.png", "broken.jpg", "gray.jpg", "gray.png", "a.jpg"]

    good = [r for r in results if r["error"] is None]
    expected = predictor.predict_encoded(
        [pathlib.Path(r["path"]).read_bytes() for r in good]
    )
    for result, probabilities in zip(good, expected):
        order = np.argsort(-probabilities)[:3]
        assert [t["index"] for t in result["tags"]] == order.tolist()
        assert [t["name"] for t in result["tags"]] == [NAMES[i] for i in order]
        assert [t["class_id"] for t in result["tags"]] == [IDS[i] for i in order]
        np.testing.assert_allclose(
            [t["score"] for t in result["tags"]], probabilities[order], atol=1e-6
        )
    broken = results[2]
    assert broken["tags"] == [] and "Unknown image file format" in broken["error"]
    assert f"Cannot read {tmp_path / 'photos' / 'broken.jpg'} as an image: " \
        "Unknown image file format" in caplog.text

    from PIL import Image

    outputs = sorted(p.name for p in output_dir.iterdir())
    assert outputs == [
        "a.jpg", "a_2.jpg", "b.jpg", "gray.jpg", "gray_2.jpg", "tags.json"
    ]
    with Image.open(output_dir / "gray.jpg") as image:
        assert image.mode == "RGB" and image.size == (40, 40)
    with Image.open(output_dir / "a.jpg") as image:
        # The tag box is drawn at the top left, darkening the picture there.
        drawn = np.asarray(image, dtype="float32")
    original = _pixels(np.random.default_rng(0), 48, 64, 3).astype("float32")
    assert drawn[:4, :4].mean() < original[:4, :4].mean() - 20
    with open(output_dir / "tags.json", encoding="utf-8") as f:
        assert len(json.load(f)) == 6
    table = format_table(results)
    assert "broken.jpg: [error:" in table and f"{good[0]['tags'][0]['name']} (" in table

    # A threshold above every probability gives no tag.
    none = tag_images(predictor, tmp_path / "photos" / "b.png", threshold=1.0)
    assert none[0]["tags"] == []
    with pytest.raises(ValueError, match="does not exist"):
        tag_images(predictor, tmp_path / "missing.jpg")


def test_undecodable_reasons():
    jpeg = tf.io.encode_jpeg(tf.zeros([40, 40, 3], tf.uint8)).numpy()
    assert undecodable_reason(b"") == "empty file"
    assert "Unknown image file format" in undecodable_reason(b"hello")
    assert "jpeg" in undecodable_reason(jpeg[: len(jpeg) // 2]).lower()
    assert "{{" not in undecodable_reason(b"hello")  # no graph trace


def test_tag_images_checks_arguments_first(predictor, tmp_path):
    message = "Invalid value for argument `batch_size`. Expected a positive int"
    with pytest.raises(ValueError, match=message):
        tag_images(predictor, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="threshold=1.5"):
        tag_images(predictor, tmp_path, threshold=1.5)


def test_settings_given_with_a_predictor_must_be_its_own(predictor, tmp_path):
    """A Predictor's preprocessing is fixed: another setting raises."""
    write_images(tmp_path, np.random.default_rng(2))
    image = tmp_path / "a.jpg"
    with pytest.raises(ValueError, match="made with resize_method='bilinear'"):
        tag_images(predictor, image, resize_method="pillow_bicubic")
    with pytest.raises(ValueError, match="made with from_logits=True"):
        tag_images(predictor, image, from_logits=False)
    other_ids = tmp_path / "other.csv"
    write_classes_csv(str(other_ids), list("abcde"), NAMES)
    with pytest.raises(ValueError, match="`classes_csv`. Its class ids differ"):
        tag_images(predictor, image, classes_csv=str(other_ids))

    renamed = tmp_path / "renamed.csv"
    write_classes_csv(str(renamed), IDS, list("vwxyz"))
    plain = tag_images(predictor, image, threshold=0.0, top_k=0)
    same = tag_images(
        predictor, image, threshold=0.0, top_k=0, resize_mode="squash",
        resize_method="bilinear", jpeg_downscale=True, from_logits=True,
        classes_csv=str(renamed),
    )
    assert [t["score"] for t in same[0]["tags"]] == [
        t["score"] for t in plain[0]["tags"]
    ]
    assert [t["name"] for t in same[0]["tags"]] == [
        "vwxyz"[t["index"]] for t in plain[0]["tags"]
    ]
