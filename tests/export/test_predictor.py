"""Tests of keras_csl.export.predictor: one interface over exports and .keras files."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import write_classes_csv
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.export import Predictor
from keras_csl.export import export_for_serving
from keras_csl.export import load_predictor

IMAGE_SIZE = 24
IDS = ["/m/a", "/m/b", "/m/c"]
NAMES = ["Apple", "Banana", "Cherry"]


def _model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs)


def _encoded():
    rng = np.random.default_rng(0)
    return [
        tf.io.encode_jpeg(rng.integers(0, 256, (30, 40, 3), np.uint8)).numpy(),
        tf.io.encode_png(rng.integers(0, 256, (20, 20, 1), np.uint8)).numpy(),
    ]


def test_export_and_keras_file_predict_the_same(tmp_path):
    model = _model()
    encoded = _encoded()
    images = preprocess_encoded(tf.constant(encoded), IMAGE_SIZE, mode="crop").numpy()
    expected = 1 / (1 + np.exp(-model.predict(images, verbose=0)))

    export_for_serving(model, tmp_path / "export", IDS, NAMES, resize_mode="crop")
    model.save(tmp_path / "model.keras")
    classes_csv = str(tmp_path / "classes.csv")
    write_classes_csv(classes_csv, IDS, NAMES)

    from_export = load_predictor(tmp_path / "export")
    from_keras = load_predictor(
        tmp_path / "model.keras", classes_csv=classes_csv, resize_mode="crop"
    )
    for predictor in (from_export, from_keras, Predictor.from_keras_model(
        model, IDS, NAMES, resize_mode="crop"
    )):
        assert predictor.class_ids == IDS and predictor.display_names == NAMES
        assert predictor.image_size == IMAGE_SIZE and predictor.resize_mode == "crop"
        np.testing.assert_allclose(
            predictor.predict_encoded(encoded, batch_size=1), expected, atol=1e-5
        )
        np.testing.assert_allclose(
            predictor.predict_images(images), expected, atol=1e-5
        )
        assert predictor.predict_encoded([]).shape == (0, 3)
        empty = np.zeros([0, IMAGE_SIZE, IMAGE_SIZE, 3])
        assert predictor.predict_images(empty).shape == (0, 3)

    # An export carries its own preprocessing: a different one is an error.
    with pytest.raises(ValueError, match="resize_mode='crop'"):
        load_predictor(tmp_path / "export", resize_mode="squash")
    write_classes_csv(classes_csv, ["x", "y", "z"], NAMES)
    with pytest.raises(ValueError, match="classes_csv"):
        load_predictor(tmp_path / "export", classes_csv=classes_csv)
    with pytest.raises(ValueError, match="No SavedModel"):
        load_predictor(tmp_path / "empty")
