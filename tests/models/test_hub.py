"""keras-hub backbones: `build_model("hub:<preset>")` from local presets.

The presets are tiny keras-hub ResNets saved in a temporary folder, so no
download is needed; what a downloaded preset adds is only its size.
"""

import logging
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_csl
from keras_csl.export import export_for_serving
from keras_csl.export import load_for_serving
from keras_csl.models import build_model
from keras_csl.models import load_model

keras_hub = pytest.importorskip("keras_hub")  # in the `test` extra: CI runs these

SCALE = [0.01, 0.02, 0.03]
OFFSET = [-1.0, 0.0, 1.0]


def _tiny_resnet():
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(None, None, 3),
    )


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """A classifier preset (with an image converter) and a bare backbone one."""
    folder = tmp_path_factory.mktemp("presets")
    keras.utils.set_random_seed(7)
    backbone = _tiny_resnet()
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(32, 32), scale=SCALE, offset=OFFSET
    )
    classifier = keras_hub.models.ResNetImageClassifier(
        backbone=backbone,
        num_classes=3,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(
            image_converter=converter
        ),
    )
    classifier.save_to_preset(os.fspath(folder / "classifier"))
    backbone.save_to_preset(os.fspath(folder / "bare"))
    return {
        "classifier": os.fspath(folder / "classifier"),
        "bare": os.fspath(folder / "bare"),
        "backbone": backbone,
    }


def _images(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(
        "float32"
    )


def test_preset_weights_and_pixel_scaling(presets):
    model = build_model(
        f"hub:{presets['classifier']}", num_classes=5, image_size=32, weights="imagenet"
    )
    assert model.input.name == "images" and model.output.shape == (None, 5)
    assert model.name == "csl_hub_classifier"
    assert model.get_layer("logits").dtype_policy.name == "float32"

    # The pooled features are the preset backbone's features of the pixels
    # scaled as the preset's converter does, averaged over space.
    x = _images()
    scaled = x * np.array(SCALE, "float32") + np.array(OFFSET, "float32")
    expected = keras.ops.convert_to_numpy(presets["backbone"](scaled)).mean(axis=(1, 2))
    features = keras.Model(model.input, model.get_layer("logits").input)
    np.testing.assert_allclose(features(x), expected, rtol=1e-4, atol=1e-5)


def test_weights_none_is_a_fresh_initialisation(presets):
    preset = build_model(f"hub:{presets['classifier']}", 2, 32, weights="preset")
    fresh = build_model(f"hub:{presets['classifier']}", 2, 32, weights=None)
    kernel = "res_net_backbone"
    a = preset.get_layer("hub_classifier").get_layer(kernel).weights[0].numpy()
    b = fresh.get_layer("hub_classifier").get_layer(kernel).weights[0].numpy()
    assert a.shape == b.shape and not np.allclose(a, b)


def test_local_weights_file(presets, tmp_path):
    path = os.fspath(tmp_path / "backbone.weights.h5")
    presets["backbone"].save_weights(path)
    model = build_model(f"hub:{presets['classifier']}", 2, 32, weights=path)
    loaded = model.get_layer("hub_classifier").get_layer("res_net_backbone")
    for a, b in zip(loaded.weights, presets["backbone"].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bare_backbone_preset_scales_by_255(presets, caplog):
    with caplog.at_level(logging.WARNING):
        model = build_model(f"hub:{presets['bare']}", 2, 32, weights="preset")
    assert "has no image converter" in caplog.text
    rescaling = model.get_layer("hub_rescaling")
    assert rescaling.scale == pytest.approx(1 / 255) and rescaling.offset == 0.0


def test_trains_with_the_selective_loss(presets):
    model = build_model(f"hub:{presets['classifier']}", 4, 32, weights="preset")
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras_csl.ClassAwareSelectiveLoss(likelihood_topk=1),
    )
    targets = np.array([[1, 0, -1, -1], [-1, 1, 0, -1]], "float32")
    before = model.get_layer("logits").kernel.numpy().copy()
    history = model.fit(_images(), targets, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(before, model.get_layer("logits").kernel.numpy())


def test_keras_file_loads_in_a_fresh_process(presets, tmp_path):
    """`load_model` imports keras-hub itself, as the recipes need."""
    model = build_model(f"hub:{presets['classifier']}", 3, 32, weights="preset")
    path = os.fspath(tmp_path / "model.keras")
    model.save(path)
    x = _images(seed=3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", keras.ops.convert_to_numpy(model(x)))
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from keras_csl.models import load_model
        assert "keras_hub" not in sys.modules
        model = load_model({path!r})
        got = np.asarray(model(np.load({os.fspath(tmp_path / 'x.npy')!r})))
        np.testing.assert_allclose(
            got, np.load({os.fspath(tmp_path / 'expected.npy')!r}), atol=1e-5)
        print("OK", "keras_hub" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK True")


def test_exports_for_serving(presets, tmp_path):
    model = build_model(f"hub:{presets['classifier']}", 3, 32, weights="preset")
    path = export_for_serving(model, os.fspath(tmp_path / "export"), ["a", "b", "c"])
    _, serve_images, _ = load_for_serving(path)
    x = _images(seed=4)
    expected = keras.ops.convert_to_numpy(keras.ops.sigmoid(model(x)))
    got = serve_images(images=x)["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    "backbone, error, message",
    [
        ("hub:", ValueError, "hub:<preset>"),
        ("hubble", ValueError, "hub:<keras-hub preset>"),
    ],
)
def test_invalid_backbone(backbone, error, message):
    with pytest.raises(error, match=message):
        build_model(backbone, 2, 32, weights=None)


def test_missing_keras_hub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    with pytest.raises(ImportError, match=r"keras-csl\[hub\]"):
        build_model("hub:resnet_50_imagenet", 2, 32, weights=None)


def test_unknown_weights_value(presets):
    with pytest.raises(ValueError, match="weights='imagenet21k'"):
        build_model(f"hub:{presets['classifier']}", 2, 32, weights="imagenet21k")
