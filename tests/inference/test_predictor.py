"""Tests of keras_csl.inference.predictor: one interface over exports and .keras files."""

import json
import logging
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import write_classes_csv
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.export import export_for_serving
from keras_csl.inference import InvalidImageError
from keras_csl.inference import Predictor
from keras_csl.inference import load_predictor
from keras_csl.inference import training_run_settings
from keras_csl.models import ModelCard
from keras_csl.models import build_model
from keras_csl.models import set_model_card

IMAGE_SIZE = 24
IDS = ["/m/a", "/m/b", "/m/c"]
NAMES = ["Apple", "Banana", "Cherry"]


def _model(activation=None):
    """A tiny CNN without a model card."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        3, activation=activation, dtype="float32", name="logits"
    )(x)
    return keras.Model(inputs, outputs)


def _encoded():
    rng = np.random.default_rng(0)
    return [
        tf.io.encode_jpeg(rng.integers(0, 256, (30, 40, 3), np.uint8)).numpy(),
        tf.io.encode_png(rng.integers(0, 256, (20, 20, 1), np.uint8)).numpy(),
    ]


def _large_jpeg(seed=5):
    # 200 x 160: with jpeg_downscale it would be decoded at 1/4 scale.
    rng = np.random.default_rng(seed)
    return tf.io.encode_jpeg(rng.integers(0, 256, (200, 160, 3), np.uint8)).numpy()


def _reference(model, encoded, sigmoid=True, **preprocessing):
    images = preprocess_encoded(tf.constant(encoded), IMAGE_SIZE, **preprocessing)
    scores = model.predict(images.numpy(), verbose=0)
    return 1 / (1 + np.exp(-scores)) if sigmoid else scores


def test_export_and_keras_file_predict_the_same(tmp_path):
    card = ModelCard(
        image_size=IMAGE_SIZE, class_ids=IDS, display_names=NAMES,
        resize_mode="crop", jpeg_downscale=False,
    )
    model = set_model_card(_model(), card)
    encoded = _encoded() + [_large_jpeg()]
    expected = _reference(model, encoded, mode="crop", jpeg_downscale=False)
    images = preprocess_encoded(
        tf.constant(encoded), IMAGE_SIZE, mode="crop", jpeg_downscale=False
    ).numpy()
    export_for_serving(model, tmp_path / "export")
    model.save(tmp_path / "model.keras")

    for predictor in (
        load_predictor(tmp_path / "export"),
        load_predictor(tmp_path / "model.keras"),
        Predictor.from_keras_model(model),
    ):
        assert predictor.card == card
        assert predictor.class_ids == IDS and predictor.display_names == NAMES
        assert predictor.image_size == IMAGE_SIZE and predictor.resize_mode == "crop"
        np.testing.assert_allclose(
            predictor.predict_encoded(encoded, batch_size=2), expected, atol=1e-5
        )
        np.testing.assert_allclose(
            predictor.predict_images(images), expected, atol=1e-5
        )
        assert predictor.predict_encoded([]).shape == (0, 3)
        empty = np.zeros([0, IMAGE_SIZE, IMAGE_SIZE, 3])
        assert predictor.predict_images(empty).shape == (0, 3)
    assert np.abs(expected - _reference(model, encoded)).max() > 1e-4

    # An export carries its own preprocessing: a different one is an error.
    with pytest.raises(ValueError, match="made with resize_mode='crop'"):
        load_predictor(tmp_path / "export", resize_mode="squash")
    classes_csv = str(tmp_path / "classes.csv")
    write_classes_csv(classes_csv, ["x", "y", "z"], NAMES)
    with pytest.raises(ValueError, match="classes_csv"):
        load_predictor(tmp_path / "export", classes_csv=classes_csv)
    with pytest.raises(ValueError, match="No SavedModel"):
        load_predictor(tmp_path / "empty")


def test_resize_method_from_the_card_and_its_overrides(tmp_path, caplog):
    card = ModelCard(
        image_size=IMAGE_SIZE, class_ids=IDS, display_names=NAMES,
        resize_method="pillow_bicubic", jpeg_downscale=False,
    )
    model = set_model_card(_model(), card)
    encoded = _encoded() + [_large_jpeg()]
    pillow = _reference(model, encoded, jpeg_downscale=False, method="pillow_bicubic")
    bilinear = _reference(model, encoded, jpeg_downscale=False)
    assert np.abs(pillow - bilinear).max() > 1e-4  # the method matters
    model.save(tmp_path / "model.keras")
    export_for_serving(model, tmp_path / "export")
    for predictor in (
        load_predictor(tmp_path / "model.keras"), load_predictor(tmp_path / "export")
    ):
        assert predictor.resize_method == "pillow_bicubic"
        assert "resize_method='pillow_bicubic'" in repr(predictor)
        np.testing.assert_allclose(predictor.predict_encoded(encoded), pillow, atol=1e-5)

    with caplog.at_level(logging.WARNING, logger="keras_csl.export.cards"):
        predictor = load_predictor(tmp_path / "model.keras", resize_method="bilinear")
    assert (
        "resize_method='bilinear' overrides the model card's 'pillow_bicubic'"
        in caplog.text
    )
    np.testing.assert_allclose(predictor.predict_encoded(encoded), bilinear, atol=1e-5)
    # An export carries its own preprocessing: a different one is an error.
    with pytest.raises(ValueError, match="made with resize_method='pillow_bicubic'"):
        load_predictor(tmp_path / "export", resize_method="bilinear")
    assert load_predictor(
        tmp_path / "export", resize_method="pillow_bicubic"
    ).resize_method == "pillow_bicubic"


def test_undecodable_files_raise_by_default_or_are_flagged(tmp_path):
    model = set_model_card(_model(), ModelCard(image_size=IMAGE_SIZE, class_ids=IDS))
    export_for_serving(model, tmp_path)
    good = _encoded()
    batch = [good[0], b"", good[1], good[0][:50], b"GIF89a broken"]
    expected = _reference(model, good)
    for predictor in (Predictor.from_keras_model(model), load_predictor(tmp_path)):
        with pytest.raises(InvalidImageError, match=re.escape(
            "Received: 3 of 5 that cannot be decoded, at indices [1, 3, 4]"
        )) as error:
            predictor.predict_encoded(batch, batch_size=2)
        assert error.value.indices == [1, 3, 4]
        assert isinstance(error.value, ValueError)
        probabilities, valid = predictor.predict_encoded(
            batch, batch_size=2, return_valid=True
        )
        assert valid.tolist() == [True, False, True, False, False]
        np.testing.assert_allclose(probabilities[[0, 2]], expected, atol=1e-5)
        assert not probabilities[[1, 3, 4]].any()
        images = np.zeros([2, IMAGE_SIZE, IMAGE_SIZE, 3], "float32")
        images[1, 0, 0, 2] = np.inf
        with pytest.raises(ValueError, match=r"non-finite|infinite pixels in images \[1\]"):
            predictor.predict_images(images)
        with pytest.raises(ValueError, match="batch_size=0"):
            predictor.predict_encoded(good, batch_size=0)


def test_export_without_valid_output_is_retried_file_by_file(tmp_path):
    """Exports made before the `valid` output fail a batch on one bad file."""
    model = _model()
    encoded = _encoded()

    def serve_bytes(image_bytes):
        images = preprocess_encoded(image_bytes, IMAGE_SIZE)
        return {"probabilities": tf.sigmoid(model(images))}

    def serve_images(images):
        return {"probabilities": tf.sigmoid(model(images))}

    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serve_images", serve_images, input_signature=[
        tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="images")])
    path = tmp_path / "1"
    archive.write_out(str(path), verbose=False)
    (path / "assets.extra").mkdir()
    (path / "assets.extra" / "export_metadata.json").write_text(json.dumps(dict(
        image_size=IMAGE_SIZE, class_ids=IDS, display_names=NAMES,
        resize_mode="squash", jpeg_downscale=True, from_logits=True, top_k=3,
    )))
    predictor = load_predictor(tmp_path)
    assert predictor.display_names == NAMES  # from the old metadata file
    probabilities, valid = predictor.predict_encoded(
        [encoded[0], b"broken", encoded[1]], return_valid=True
    )
    assert valid.tolist() == [True, False, True]
    np.testing.assert_allclose(
        probabilities[[0, 2]], _reference(model, encoded), atol=1e-5
    )


def test_from_logits_false_applies_no_second_sigmoid(tmp_path):
    model = _model(activation="sigmoid")  # outputs probabilities
    encoded = _encoded()
    expected = _reference(model, encoded, sigmoid=False)
    model.save(tmp_path / "probabilities.keras")
    carded = set_model_card(model, ModelCard(
        image_size=IMAGE_SIZE, class_ids=IDS, from_logits=False
    ))
    carded.save(tmp_path / "carded.keras")
    export_for_serving(carded, tmp_path / "export")

    for predictor in (
        Predictor.from_keras_model(model, from_logits=False),
        load_predictor(tmp_path / "probabilities.keras", from_logits=False),
        load_predictor(tmp_path / "carded.keras"),  # from the card
        load_predictor(tmp_path / "export"),  # from the export's card
    ):
        assert predictor.from_logits is False
        np.testing.assert_allclose(
            predictor.predict_encoded(encoded), expected, atol=1e-5
        )
        empty = np.zeros([0, IMAGE_SIZE, IMAGE_SIZE, 3])
        assert predictor.predict_images(empty).shape == (0, 3)
    # Without a card the outputs are read as logits: a second sigmoid.
    twice = load_predictor(tmp_path / "probabilities.keras").predict_encoded(encoded)
    np.testing.assert_allclose(twice, 1 / (1 + np.exp(-expected)), atol=1e-5)
    with pytest.raises(ValueError, match="made with from_logits=False"):
        load_predictor(tmp_path / "export", from_logits=True)


def _run_folder(tmp_path, model, config):
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    data.mkdir(exist_ok=True)
    model.save(run / "best.keras")
    write_classes_csv(str(data / "classes.csv"), IDS, NAMES)
    config = dict(config, train_files=str(data / "train-*.tfrecord"))
    (run / "config.json").write_text(json.dumps(config))
    return run, data


@pytest.mark.parametrize("config", [
    dict(dataset_options=dict(resize_mode="pad", jpeg_downscale=False)),
    dict(resize_mode="pad", jpeg_downscale=False, dataset_options={}),  # typed fields
])
def test_a_model_without_card_in_a_run_uses_the_runs_settings(tmp_path, caplog, config):
    model = _model()
    run, data = _run_folder(tmp_path, model, config)
    assert training_run_settings(run / "best.keras") == dict(
        model_path=str(run / "best.keras"), classes_csv=str(data / "classes.csv"),
        resize_mode="pad", jpeg_downscale=False, resize_method=None,
    )
    encoded = [_large_jpeg()]
    expected = _reference(model, encoded, mode="pad", jpeg_downscale=False)
    for path in (run, run / "best.keras"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="keras_csl.inference.legacy"):
            predictor = load_predictor(path)
        assert (
            f"{run / 'best.keras'} has no model card of its own (saved before "
            "keras-csl wrote cards): using its training run's config.json: "
            "resize_mode='pad', jpeg_downscale=False, resize_method='bilinear' "
            f"(default), classes from {data / 'classes.csv'}"
        ) in caplog.text
        assert predictor.jpeg_downscale is False and predictor.resize_mode == "pad"
        assert predictor.class_ids == IDS and predictor.display_names == NAMES
        np.testing.assert_allclose(
            predictor.predict_encoded(encoded), expected, atol=1e-5
        )
    assert np.abs(expected - _reference(model, encoded)).max() > 1e-4
    # An argument given explicitly wins over the run's setting.
    predictor = load_predictor(run, jpeg_downscale=True, resize_mode="crop")
    assert predictor.jpeg_downscale is True and predictor.resize_mode == "crop"


def test_run_folders_without_settings_and_real_cards(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    assert training_run_settings(run) == dict(
        model_path=str(run / "best.keras"), classes_csv=None,
        resize_mode=None, jpeg_downscale=None, resize_method=None,
    )
    # A config.json of another tool (e.g. a keras-hub preset) says nothing.
    (run / "config.json").write_text(json.dumps({"backbone": "resnet"}))
    assert training_run_settings(run / "best.keras")["jpeg_downscale"] is None
    _model().save(run / "best.keras")
    with caplog.at_level(logging.WARNING):
        predictor = load_predictor(run)
    assert "has no model card: using the defaults" in caplog.text
    assert predictor.resize_mode == "squash" and predictor.class_ids == ["0", "1", "2"]

    # build_model's placeholder card in a run folder: the run's settings.
    other = tmp_path / "other"
    other.mkdir()
    placeholder = build_model("tiny", 3, image_size=IMAGE_SIZE)
    run, _ = _run_folder(other, placeholder, dict(
        dataset_options=dict(resize_mode="crop")
    ))
    predictor = load_predictor(run)
    assert predictor.resize_mode == "crop" and predictor.display_names == NAMES
    assert predictor.jpeg_downscale is True  # the run did not set it

    # The placeholder card alone (no run folder): used, with a warning.
    placeholder.save(tmp_path / "placeholder.keras")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predictor = load_predictor(tmp_path / "placeholder.keras")
    assert "has only the placeholder model card of build_model: classes " \
        "named by index (0-2), resize_mode='squash'" in caplog.text
    assert predictor.class_ids == ["0", "1", "2"]

    # A real card wins over the run folder, which is not read at all.
    carded = set_model_card(placeholder, ModelCard(
        image_size=IMAGE_SIZE, class_ids=("p", "q", "r"), source="training run"
    ))
    carded.save(run / "best.keras")
    predictor = load_predictor(run)
    assert predictor.class_ids == ["p", "q", "r"] and predictor.resize_mode == "squash"


def test_a_keras_file_copied_alone_keeps_its_settings(tmp_path):
    card = ModelCard(
        image_size=IMAGE_SIZE, class_ids=IDS, display_names=NAMES,
        resize_mode="pad", jpeg_downscale=False,
    )
    model = set_model_card(_model(), card)
    model.save(tmp_path / "model.keras")
    alone = tmp_path / "elsewhere" / "copy.keras"
    alone.parent.mkdir()
    shutil.copy(tmp_path / "model.keras", alone)
    predictor = load_predictor(alone)
    assert predictor.card == card
    encoded = [_large_jpeg()]
    np.testing.assert_allclose(
        predictor.predict_encoded(encoded),
        _reference(model, encoded, mode="pad", jpeg_downscale=False), atol=1e-5,
    )


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
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="Cannot read a model card from"):
        load_predictor(tmp_path / "broken.keras")
    with pytest.raises(ValueError, match="does not exist"):
        load_predictor(tmp_path / "missing.keras")
