"""The model factory: named input, float32 logits, preprocessing, weights."""

import os

import keras
import numpy as np
import pytest

from keras_csl.models import BACKBONES
from keras_csl.models import CaffePreprocessing
from keras_csl.models import build_model
from keras_csl.models import set_sync_batchnorm


@pytest.fixture
def bfloat16_policy():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy(previous)


def test_tiny_model_signature():
    model = build_model("tiny", num_classes=5, image_size=32)
    assert model.input.name == "images"
    assert tuple(model.input.shape) == (None, 32, 32, 3)
    assert model.layers[-1].name == "logits"
    assert model.get_layer("logits").dtype_policy.name == "float32"
    logits = model(np.full((2, 32, 32, 3), 255.0, "float32"))
    assert logits.shape == (2, 5)


def test_logits_stay_float32_under_mixed_precision(bfloat16_policy):
    model = build_model("tiny", num_classes=3, image_size=32, dropout=0.2)
    assert model.get_layer("tiny").get_layer("conv0").compute_dtype == "bfloat16"
    assert model(np.zeros((1, 32, 32, 3), "float32")).dtype == "float32"


def test_resnet50_takes_raw_pixels(bfloat16_policy):
    model = build_model("resnet50", num_classes=4, image_size=32, weights=None)
    assert isinstance(model.get_layer("caffe_preprocessing"), CaffePreprocessing)
    logits = model(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)))
    assert logits.dtype == "float32" and logits.shape == (2, 4)


def test_caffe_preprocessing_matches_keras_applications():
    x = np.random.default_rng(1).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    expected = keras.applications.resnet.preprocess_input(x.copy())
    np.testing.assert_allclose(CaffePreprocessing()(x), expected, atol=1e-4)
    # Red in RGB is the last channel in BGR.
    red = np.array([[[[255.0, 0.0, 0.0]]]], "float32")
    np.testing.assert_allclose(
        CaffePreprocessing()(red)[0, 0, 0], [-103.939, -116.779, 131.32], atol=1e-3
    )


def test_local_weights_file_round_trip(tmp_path):
    source = build_model("tiny", num_classes=3, image_size=32)
    path = os.fspath(tmp_path / "tiny.weights.h5")
    source.get_layer("tiny").save_weights(path)
    loaded = build_model("tiny", num_classes=3, image_size=32, weights=path)
    for a, b in zip(source.get_layer("tiny").weights, loaded.get_layer("tiny").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_saved_model_file_round_trip(tmp_path):
    model = build_model("resnet50", num_classes=2, image_size=32, weights=None)
    path = os.fspath(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)
    assert loaded.input.name == "images"


def test_sync_batchnorm_reaches_nested_layers():
    model = build_model("tiny", num_classes=2, image_size=32, sync_batchnorm=True)
    assert all(model.get_layer("tiny").get_layer(f"bn{i}").synchronized for i in range(3))
    assert set_sync_batchnorm(model, False) == 3


def test_every_backbone_is_listed():
    assert set(BACKBONES) == {
        "resnet50", "resnet101", "efficientnetv2_s", "efficientnetv2_m",
        "convnext_tiny", "convnext_small", "tiny",
        "tresnet_m", "tresnet_l", "tresnet_xl", "tresnet_v2_l",
    }


@pytest.mark.parametrize("backbone", ["efficientnetv2_s", "convnext_tiny"])
def test_other_families_build_and_predict(backbone):
    # One member of each keras.applications family that takes raw pixels
    # itself (include_preprocessing), built without weights at a small size.
    model = build_model(backbone, num_classes=3, image_size=64, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    logits = model.predict(x, verbose=0)
    assert logits.shape == (2, 3) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    assert model.input.name == "images" and model.layers[-1].name == "logits"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backbone="vgg"), "backbone"),
        (dict(num_classes=0), "num_classes"),
        (dict(dropout=1.0), "dropout"),
        (dict(weights="/no/such/file.h5"), "no such file"),
        (dict(backbone="tiny", weights="imagenet"), "no pretrained weights"),
    ],
)
def test_invalid_arguments(kwargs, message):
    arguments = dict(backbone="tiny", num_classes=3, image_size=32)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_model(**arguments)
