"""The model card travels inside the model and its `.keras` file."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_csl
from keras_csl.models import ModelCard
from keras_csl.models import build_model
from keras_csl.models import get_model_card
from keras_csl.models import read_model_card
from keras_csl.models import set_model_card

IDS = ("/m/01yrx", "/m/0bt9lr", "/m/015p6")
NAMES = ("Cat", "Dog", "Bird")


def _card(**changes):
    # Non-default preprocessing throughout, so every round trip checks it.
    values = dict(image_size=32, class_ids=IDS, display_names=NAMES,
                  resize_mode="pad", resize_method="pillow_bicubic",
                  jpeg_downscale=False)
    values.update(changes)
    return ModelCard(**values)


def test_defaults_and_round_trip():
    card = ModelCard(image_size=224, class_ids=["a", "b"])
    assert card.display_names == ("a", "b")
    assert (card.resize_mode, card.jpeg_downscale, card.from_logits) == (
        "squash", True, True)
    assert card.resize_method == "bilinear"
    values = _card(extra={"val_map": 71.5}).to_dict()
    assert values["format"] == "keras_csl_model_card"
    assert values["resize_method"] == "pillow_bicubic"
    assert values["num_classes"] == 3 and values["value_range"] == [0.0, 255.0]
    assert ModelCard.from_dict(json.loads(json.dumps(values))) == _card(
        extra={"val_map": 71.5})


@pytest.mark.parametrize("changes, message", [
    (dict(image_size=0), "image_size=0"),
    (dict(image_size=True), "image_size=True"),
    (dict(class_ids="abc"), "class_ids='abc'"),
    (dict(class_ids=()), "at least one class id"),
    (dict(class_ids=(1, 2, 3)), "Expected strings"),
    (dict(display_names=("Cat",)), "one name per class id (3)"),
    (dict(resize_mode="stretch"), "resize_mode='stretch'"),
    (dict(resize_method="bicubic"), "resize_method='bicubic'"),
    (dict(resize_method="bicubic"), "one of ('bilinear', 'pillow_bicubic')"),
    (dict(jpeg_downscale="yes"), "jpeg_downscale='yes'"),
    (dict(from_logits=1), "from_logits=1"),
    (dict(extra={"f": object()}), "JSON-serialisable"),
])
def test_invalid_fields_name_the_argument(changes, message):
    with pytest.raises(ValueError, match="Invalid value for argument") as info:
        _card(**changes)
    assert message in str(info.value)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="other"), "format='keras_csl_model_card'"),
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(colour="red"), "Unknown fields ['colour']"),
    (lambda d: d.update(num_classes=4), "num_classes=4"),
    (lambda d: d.update(value_range=[0, 1]), "value_range=[0, 1]"),
])
def test_from_dict_rejects_what_it_does_not_know(edit, message):
    values = _card().to_dict()
    edit(values)
    with pytest.raises(ValueError) as info:
        ModelCard.from_dict(values)
    assert message in str(info.value)


def test_a_card_written_without_resize_method_reads_as_bilinear():
    # Version 1 cards written before the field existed leave it out.
    values = _card().to_dict()
    del values["resize_method"]
    card = ModelCard.from_dict(values)
    assert card.resize_method == "bilinear"
    assert card == _card(resize_method="bilinear")


def test_build_model_has_a_default_card_and_it_is_an_identity():
    model = build_model("tiny", num_classes=3, image_size=32)
    card = get_model_card(model)
    assert card == ModelCard(image_size=32, class_ids=("0", "1", "2"),
                             architecture="tiny")
    layer = model.get_layer("model_card")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    assert layer.weights == []


def test_set_model_card_in_place_and_checked():
    model = build_model("tiny", num_classes=3, image_size=32)
    assert set_model_card(model, _card()) is model
    assert get_model_card(model).display_names == NAMES
    with pytest.raises(ValueError, match="has 3 outputs, the card 2 class ids"):
        set_model_card(model, _card(class_ids=IDS[:2], display_names=None))
    with pytest.raises(ValueError, match="card says image_size=64"):
        set_model_card(model, _card(image_size=64))
    with pytest.raises(ValueError, match="Expected a ModelCard"):
        set_model_card(model, "cat,dog,bird")


def test_set_model_card_wraps_a_model_without_one():
    inputs = keras.Input((8, 8, 3), name="pixels")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    plain = keras.Model(inputs, keras.layers.Dense(3)(pooled), name="plain")
    wrapped = set_model_card(plain, _card(image_size=8))
    assert wrapped is not plain and wrapped.name == "plain"
    assert wrapped.inputs[0].name == "pixels"
    x = np.random.default_rng(1).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(wrapped.predict(x, verbose=0),
                               plain.predict(x, verbose=0), rtol=1e-6)
    assert get_model_card(wrapped).class_ids == IDS


def test_card_survives_save_copy_alone_and_fresh_process(tmp_path):
    model = set_model_card(build_model("tiny", num_classes=3, image_size=32), _card())
    saved = tmp_path / "run" / "best.keras"
    saved.parent.mkdir()
    model.save(saved)
    # Copied alone into an empty folder: nothing else travels with it.
    alone = tmp_path / "elsewhere" / "model.keras"
    alone.parent.mkdir()
    shutil.copy(saved, alone)
    assert read_model_card(alone) == _card()
    code = (
        "import sys, keras, keras_csl\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "c = keras_csl.models.get_model_card(m)\n"
        "print(c.to_json().replace('\\n', ' '))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(alone)], capture_output=True, text=True,
        timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert ModelCard.from_json(result.stdout.strip().splitlines()[-1]) == _card()


def test_read_model_card_without_card_and_bad_files(tmp_path):
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    plain.save(tmp_path / "plain.keras")
    assert read_model_card(tmp_path / "plain.keras") is None
    (tmp_path / "notes.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="notes.keras: expected a .keras file"):
        read_model_card(tmp_path / "notes.keras")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(ValueError, match="empty.keras"):
        read_model_card(tmp_path / "empty.keras")


def test_card_layer_keeps_pixels_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("tiny", num_classes=2, image_size=16)
        layer = model.get_layer("model_card")
        assert layer.compute_dtype == "float32"
        x = np.full((1, 16, 16, 3), 254.7, "float32")  # not exact in bfloat16
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_package_exports():
    assert keras_csl.models.ModelCard is ModelCard
    assert keras_csl.models.set_model_card is set_model_card
