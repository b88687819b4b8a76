"""Tests of keras_csl.export.predictor: one interface over exports and .keras files."""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import write_classes_csv
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.export import Predictor
from keras_csl.export import export_for_serving
from keras_csl.export import load_predictor
from keras_csl.export import training_run_settings

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


def test_from_logits_false_applies_no_second_sigmoid(tmp_path):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    outputs = keras.layers.Dense(3, activation="sigmoid", dtype="float32")(x)
    model = keras.Model(inputs, outputs)  # outputs probabilities
    encoded = _encoded()
    images = preprocess_encoded(tf.constant(encoded), IMAGE_SIZE).numpy()
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "probabilities.keras")
    export_for_serving(model, tmp_path / "export", IDS, from_logits=False)

    for predictor in (
        Predictor.from_keras_model(model, from_logits=False),
        load_predictor(tmp_path / "probabilities.keras", from_logits=False),
        load_predictor(tmp_path / "export"),  # from_logits from the metadata
    ):
        assert predictor.from_logits is False
        np.testing.assert_allclose(
            predictor.predict_encoded(encoded), expected, atol=1e-5
        )
        empty = np.zeros([0, IMAGE_SIZE, IMAGE_SIZE, 3])
        assert predictor.predict_images(empty).shape == (0, 3)
    # The default reads the outputs as logits: a second sigmoid.
    twice = load_predictor(tmp_path / "probabilities.keras").predict_encoded(encoded)
    np.testing.assert_allclose(twice, 1 / (1 + np.exp(-expected)), atol=1e-5)
    with pytest.raises(ValueError, match="made with from_logits=False"):
        load_predictor(tmp_path / "export", from_logits=True)


def test_keras_file_in_a_run_uses_the_runs_preprocessing(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    data.mkdir()
    assert training_run_settings(run) == dict(
        model_path=str(run / "best.keras"), classes_csv=None,
        resize_mode=None, jpeg_downscale=None,
    )
    # A config.json of another tool (e.g. a keras-hub preset) says nothing.
    (run / "config.json").write_text(json.dumps({"backbone": "resnet"}))
    assert training_run_settings(run / "best.keras")["jpeg_downscale"] is None

    model = _model()
    model.save(run / "best.keras")
    write_classes_csv(str(data / "classes.csv"), IDS, NAMES)
    (run / "config.json").write_text(json.dumps(dict(
        train_files=str(data / "train-*.tfrecord"),
        dataset_options=dict(resize_mode="pad", jpeg_downscale=False),
    )))
    assert training_run_settings(run / "best.keras") == dict(
        model_path=str(run / "best.keras"), classes_csv=str(data / "classes.csv"),
        resize_mode="pad", jpeg_downscale=False,
    )
    # 200 x 160: with jpeg_downscale the JPEG would be decoded at 1/8 scale.
    rng = np.random.default_rng(5)
    encoded = [
        tf.io.encode_jpeg(rng.integers(0, 256, (200, 160, 3), np.uint8)).numpy()
    ]

    def reference(jpeg_downscale):
        images = preprocess_encoded(
            tf.constant(encoded), IMAGE_SIZE, mode="pad",
            jpeg_downscale=jpeg_downscale,
        )
        return 1 / (1 + np.exp(-model.predict(images.numpy(), verbose=0)))

    for path in (run, run / "best.keras"):
        predictor = load_predictor(path)
        assert predictor.jpeg_downscale is False and predictor.resize_mode == "pad"
        assert predictor.class_ids == IDS and predictor.display_names == NAMES
        np.testing.assert_allclose(
            predictor.predict_encoded(encoded), reference(False), atol=1e-5
        )
    assert np.abs(reference(False) - reference(True)).max() > 1e-4
    # An argument given explicitly wins over the run's setting.
    predictor = load_predictor(run, jpeg_downscale=True, resize_mode="crop")
    assert predictor.jpeg_downscale is True and predictor.resize_mode == "crop"


def test_class_count_errors_name_their_source(tmp_path):
    model = _model()
    model.save(tmp_path / "model.keras")
    classes_csv = str(tmp_path / "classes.csv")
    write_classes_csv(classes_csv, IDS[:2], NAMES[:2])
    with pytest.raises(
        ValueError, match=re.escape(f"classes_csv='{classes_csv}', which lists 2")
    ):
        load_predictor(tmp_path / "model.keras", classes_csv=classes_csv)
    with pytest.raises(ValueError, match=r"`class_ids`.*\(3\). Received: 2 entries"):
        Predictor.from_keras_model(model, IDS[:2])
    with pytest.raises(ValueError, match="`display_names`"):
        Predictor.from_keras_model(model, IDS, NAMES[:1])
