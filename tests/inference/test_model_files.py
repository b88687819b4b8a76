"""Tests of keras_csl.inference.model_files: a .keras file with its card."""

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import encode_example
from keras_csl.data import write_classes_csv
from keras_csl.export import read_export_card
from keras_csl.inference import evaluate
from keras_csl.inference import export_model
from keras_csl.inference import load_model_with_card
from keras_csl.inference import resolve_model_path
from keras_csl.models import ModelCard
from keras_csl.models import set_model_card

IDS = ["/m/a", "/m/b", "/m/c"]
NAMES = ["Apple", "Banana", "Cherry"]


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(x))


def _legacy_run(tmp_path, dataset_options):
    """A run folder of before model cards: best.keras, config.json, data."""
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    data.mkdir()
    _model().save(run / "best.keras")
    write_classes_csv(str(data / "classes.csv"), IDS, NAMES)
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(data / "train-00000-of-00001.tfrecord")) as writer:
        for i in range(4):
            jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (200, 160, 3), np.uint8))
            writer.write(encode_example(jpeg.numpy(), f"p{i}", [i % 3], [(i + 1) % 3]))
    (run / "config.json").write_text(json.dumps(dict(
        train_files=str(data / "train-*.tfrecord"), dataset_options=dataset_options,
    )))
    return run, str(data / "train-*.tfrecord")


def test_resolve_model_path(tmp_path):
    with pytest.raises(ValueError, match="a folder without best.keras"):
        resolve_model_path(tmp_path)
    with pytest.raises(ValueError, match="which does not exist"):
        resolve_model_path(tmp_path / "model.keras")
    (tmp_path / "best.keras").write_bytes(b"")
    assert resolve_model_path(tmp_path) == str(tmp_path / "best.keras")
    assert resolve_model_path(tmp_path / "best.keras") == str(tmp_path / "best.keras")


def test_load_model_with_card_and_overrides(tmp_path, caplog):
    card = ModelCard(image_size=24, class_ids=IDS, display_names=NAMES,
                     resize_mode="crop", source="test")
    set_model_card(_model(), card).save(tmp_path / "model.keras")
    model, loaded, path = load_model_with_card(tmp_path / "model.keras")
    assert loaded == card and path == str(tmp_path / "model.keras")
    assert model.outputs[0].shape[-1] == 3
    with caplog.at_level(logging.WARNING, logger="keras_csl.export.cards"):
        _, loaded, _ = load_model_with_card(
            tmp_path / "model.keras", jpeg_downscale=False, from_logits=False
        )
    assert (loaded.jpeg_downscale, loaded.from_logits) == (False, False)
    assert "jpeg_downscale=False overrides the model card's True" in caplog.text
    assert "from_logits=False overrides the model card's True" in caplog.text


def test_a_legacy_run_reaches_export_and_evaluate(tmp_path):
    run, data = _legacy_run(tmp_path, dict(resize_mode="pad", jpeg_downscale=False))
    path = export_model(run, tmp_path / "export")
    card = read_export_card(path)
    assert card.jpeg_downscale is False and card.resize_mode == "pad"
    assert list(card.class_ids) == IDS  # the run's classes.csv

    for model in (run, run / "best.keras", tmp_path / "export"):
        result = evaluate(model, data, batch_size=2)
        assert result["jpeg_downscale"] is False, model
        assert result["resize_mode"] == "pad", model
        assert [r["display_name"] for r in result["per_class"]] == NAMES
        assert result["num_images"] == 4
    # A flag given explicitly wins over the run's setting.
    result = evaluate(run, data, jpeg_downscale=True)
    assert result["jpeg_downscale"] is True
    with pytest.raises(ValueError, match="made with jpeg_downscale=False"):
        evaluate(tmp_path / "export", data, jpeg_downscale=True)


def test_export_names_a_classes_csv_of_the_wrong_length(tmp_path):
    run, _ = _legacy_run(tmp_path, {})
    classes_csv = str(tmp_path / "two.csv")
    write_classes_csv(classes_csv, IDS[:2], NAMES[:2])
    with pytest.raises(
        ValueError, match=f"classes_csv='{classes_csv}', which lists 2 classes"
    ):
        export_model(str(run / "best.keras"), tmp_path / "export", classes_csv)
    assert not os.path.exists(tmp_path / "export")


def test_names_kept_in_keras_csl_export(tmp_path):
    """Code written before keras_csl.inference still imports and works."""
    import keras_csl
    from keras_csl import export
    from keras_csl import inference
    from keras_csl.inference import legacy

    assert export.Predictor is inference.Predictor
    assert export.load_predictor is inference.load_predictor
    assert export.training_run_settings is legacy.training_run_settings
    assert keras_csl.inference is inference
    run, _ = _legacy_run(tmp_path, dict(resize_mode="crop"))
    with pytest.warns(DeprecationWarning, match="resolve_training_settings"):
        settings = export.resolve_training_settings(run / "best.keras")
    assert settings == (str(tmp_path / "data" / "classes.csv"), "crop", True)
    with pytest.raises(AttributeError, match="no attribute 'predictor'"):
        export.predictor  # the old module is gone
