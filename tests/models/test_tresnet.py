"""TResNet through build_model: layers, head, weights, precision, training, export.

Numbers against timm are in test_tresnet_parity.py; here the layers get
hand-checked values and the models the package's own life cycle.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_csl
from keras_csl.models import build_model
from keras_csl.models import get_model_card
from keras_csl.models import load_model
from keras_csl.models import read_model_card
from keras_csl.models.convert_checkpoint import convert_checkpoint
from keras_csl.models.tresnet import TRESNET_VARIANTS
from keras_csl.models.tresnet_layers import BlurPool2D
from keras_csl.models.tresnet_layers import SpaceToDepth
from keras_csl.training.recipe import load_config

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "tresnet"


@pytest.fixture
def policy():
    previous = keras.mixed_precision.global_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


def test_space_to_depth_channel_order():
    # Channel k of an output pixel is (row r, column c, input channel i) of
    # its 2x2 block with k = (r * 2 + c) * 2 + i, as PyTorch's
    # view/permute(0, 3, 5, 1, 2, 4) in timm.
    x = np.arange(2 * 4 * 4 * 2, dtype="float32").reshape(2, 4, 4, 2)
    y = np.asarray(SpaceToDepth(2)(x))
    assert y.shape == (2, 2, 2, 8)
    for r in range(2):
        for c in range(2):
            for i in range(2):
                k = (r * 2 + c) * 2 + i
                np.testing.assert_array_equal(y[:, :, :, k], x[:, r::2, c::2, i])


def test_space_to_depth_rejects_sides_not_divisible():
    with pytest.raises(ValueError, match="divisible by block_size=4"):
        SpaceToDepth(4)(np.zeros((1, 6, 8, 3), "float32"))


def test_blur_pool_against_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 3)).astype("float32")
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    taps = np.array([1.0, 2.0, 1.0]) / 4
    expected = np.zeros((2, 3, 3, 3))
    for i in range(3):
        for j in range(3):
            for a in range(3):
                for b in range(3):
                    expected[:, i, j] += taps[a] * taps[b] * padded[:, 2 * i + a, 2 * j + b]
    np.testing.assert_allclose(BlurPool2D()(x), expected, atol=1e-6)
    # A constant image stays constant (the filter sums to 1).
    np.testing.assert_allclose(BlurPool2D()(np.full((1, 4, 4, 1), 7.0, "float32")), 7.0)


def test_build_tresnet_m_layout():
    model = build_model("tresnet_m", num_classes=3, image_size=64)
    assert model.name == "csl_tresnet_m"
    assert [layer.name for layer in model.layers] == [
        "images", "model_card", "rescaling", "tresnet_m", "logits",
    ]
    assert model.get_layer("rescaling").scale == pytest.approx(1 / 255)
    network = model.get_layer("tresnet_m")
    assert network.output.shape == (None, 2048)
    # Three stride-2 stages, each with one blur (in the first block).
    assert sorted(layer.name for layer in network.layers if isinstance(layer, BlurPool2D)) == [
        "layer2_0_conv1_aa", "layer3_0_conv2_aa", "layer4_0_conv2_aa",
    ]
    # No squeeze-excitation in stage 4; SE width max(planes // 4, 64) in stage 1.
    names = {layer.name for layer in network.layers}
    assert "layer3_10_se_fc1" in names and "layer4_0_se_fc1" not in names
    assert network.get_layer("layer1_0_se_fc1").units == 64
    assert network.get_layer("layer3_0_se_fc1").units == 128  # max(256 * 4 // 8, 64)
    assert network.get_layer("conv1_act").negative_slope == pytest.approx(1e-2)
    assert network.get_layer("layer1_0_conv1_act").negative_slope == pytest.approx(1e-3)
    assert get_model_card(model).architecture == "tresnet_m"
    logits = model(np.zeros((2, 64, 64, 3), "float32"))
    assert logits.shape == (2, 3) and logits.dtype == "float32"


def test_variants_feature_widths():
    widths = {name: spec.num_features for name, spec in TRESNET_VARIANTS.items()}
    assert widths == {
        "tresnet_m": 2048, "tresnet_l": 2432, "tresnet_xl": 2656, "tresnet_v2_l": 2048,
    }


def test_bottleneck_head_option_for_any_backbone():
    model = build_model("tiny", num_classes=4, image_size=32, head_hidden=7)
    hidden, logits = model.get_layer("head_hidden"), model.get_layer("logits")
    assert hidden.kernel.shape == (64, 7) and hidden.activation is keras.activations.linear
    assert logits.kernel.shape == (7, 4)
    assert model.layers[-2:] == [hidden, logits]
    plain = build_model("tiny", num_classes=4, image_size=32)
    assert "head_hidden" not in {layer.name for layer in plain.layers}


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "512"])
def test_bottleneck_head_rejects_bad_width(value):
    with pytest.raises(ValueError, match="argument `head_hidden`"):
        build_model("tiny", num_classes=2, image_size=32, head_hidden=value)


def test_imagenet_weights_say_how_to_convert():
    with pytest.raises(ValueError, match="tresnet_m.miil_in21k.*convert_checkpoint"):
        build_model("tresnet_m", num_classes=2, image_size=64, weights="imagenet")


def test_missing_weights_file_says_how_to_make_it():
    with pytest.raises(ValueError, match="no such file.*convert_checkpoint"):
        build_model("tresnet_m", num_classes=2, image_size=64, weights="none.keras")


@pytest.mark.parametrize(
    "name, size", [("coco_rps", 448), ("coco_fpc", 448), ("openimages", 224)]
)
def test_recipe_configs_use_the_papers_tresnet(name, size):
    path = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "configs" / f"{name}.py"
    config = load_config(f"{path}:full")
    assert (config.backbone, config.image_size) == ("tresnet_m", size)
    assert config.weights == "models/tresnet_m_miil_in21k.keras"


@pytest.mark.parametrize("size", [30, 66, 28])
def test_image_size_must_fit_the_stem(size):
    with pytest.raises(ValueError, match="multiple of 4.*>= 32"):
        build_model("tresnet_m", num_classes=2, image_size=size)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_close_to_float32(policy, precision):
    images = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    reference = build_model("tresnet_m", num_classes=3, image_size=64)
    expected = np.asarray(reference(images, training=False))
    policy(precision)
    model = build_model("tresnet_m", num_classes=3, image_size=64)
    model.set_weights(reference.get_weights())
    network = model.get_layer("tresnet_m")
    assert network.get_layer("layer2_0_conv1_aa").compute_dtype == precision.split("_")[1]
    logits = model(images, training=False)
    assert logits.dtype == "float32"
    scale = np.abs(expected).max()
    tolerance = 0.05 if precision == "mixed_bfloat16" else 0.01
    assert np.abs(np.asarray(logits) - expected).max() <= tolerance * scale


def test_csl_training_step_changes_weights():
    keras.utils.set_random_seed(1)
    model = build_model("tresnet_m", num_classes=4, image_size=64, head_hidden=8)
    # Eager: the same ops without tracing the ~280-layer train step (a
    # minute on 2 CPU cores); benchmarks/tresnet_speed.py runs it traced.
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras_csl.ClassAwareSelectiveLoss(likelihood_topk=1, num_classes=4),
        run_eagerly=True,
    )
    images = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    labels = np.array([[1, 0, -1, -1], [-1, 1, 0, -1]], "float32")
    stem = model.get_layer("tresnet_m").get_layer("conv1_conv").kernel
    before = np.array(stem.numpy())
    moving = model.get_layer("tresnet_m").get_layer("conv1_bn").moving_mean
    losses = [float(model.train_on_batch(images, labels)) for _ in range(2)]
    assert all(np.isfinite(losses))
    assert np.abs(stem.numpy() - before).max() > 0
    assert np.abs(moving.numpy()).max() > 0  # batch statistics were used


def test_backbone_weights_from_keras_file_new_head_and_size(tmp_path):
    """Fine-tuning start: the backbone of a .keras file, a new head, 64 -> 96 px."""
    keras.utils.set_random_seed(4)
    source = build_model("tresnet_m", num_classes=5, image_size=64, head_hidden=6)
    path = os.fspath(tmp_path / "source.keras")
    source.save(path)
    model = build_model("tresnet_m", num_classes=2, image_size=96, weights=path)
    assert model.output.shape == (None, 2) and model.input.shape == (None, 96, 96, 3)
    for a, b in zip(source.get_layer("tresnet_m").weights, model.get_layer("tresnet_m").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Backbone weights only: the weights file of the backbone alone, too.
    weights = os.fspath(tmp_path / "backbone.weights.h5")
    source.get_layer("tresnet_m").save_weights(weights)
    other = build_model("tresnet_m", num_classes=3, image_size=64, weights=weights)
    np.testing.assert_array_equal(
        other.get_layer("tresnet_m").get_layer("conv1_conv").kernel.numpy(),
        source.get_layer("tresnet_m").get_layer("conv1_conv").kernel.numpy(),
    )


# Keras warns about each layer it cannot match before it raises.
@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_backbone_weights_from_a_file_without_that_backbone(tmp_path):
    path = os.fspath(tmp_path / "tiny.keras")
    build_model("tiny", num_classes=2, image_size=32).save(path)
    with pytest.raises(ValueError, match="no 'tresnet_m' backbone.*'tiny'"):
        build_model("tresnet_m", num_classes=2, image_size=64, weights=path)
    weights = os.fspath(tmp_path / "tiny.weights.h5")
    build_model("tiny", num_classes=2, image_size=32).get_layer("tiny").save_weights(weights)
    with pytest.raises(ValueError, match="weights of that backbone alone"):
        build_model("tresnet_m", num_classes=2, image_size=64, weights=weights)


def _converted(tmp_path):
    """The golden reduced TResNet, converted with named classes."""
    classes = tmp_path / "classes.csv"
    classes.write_text(
        "index,class_id,display_name\n0,/m/01yrx,Cat\n1,/m/0bt9lr,Dog\n"
        "2,/m/01g317,Person\n3,/m/07j7r,Tree\n4,/m/0c9ph5,Flower\n"
    )
    path = tmp_path / "tiny.keras"
    convert_checkpoint(
        FIXTURES / "tiny_timm" / "checkpoint.safetensors", path,
        architecture="custom", image_size=40, classes_csv=classes,
    )
    return path


def test_keras_round_trip_in_a_fresh_process(tmp_path):
    path = _converted(tmp_path)
    images = np.load(FIXTURES / "tiny_timm" / "inputs.npy")
    expected = np.asarray(load_model(path).predict(images.astype("float32"), verbose=0))
    jobs = tmp_path / "jobs.json"
    output = tmp_path / "fresh.npy"
    jobs.write_text(json.dumps([{
        "checkpoint": None, "keras": str(path), "output": str(output),
        "inputs": str(FIXTURES / "tiny_timm" / "inputs.npy"), "image_size": 40,
    }]))
    result = subprocess.run(
        [sys.executable, str(FIXTURES / "keras_logits.py"), str(jobs)],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
        text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(output), expected, rtol=1e-6, atol=1e-6)
    card = keras_csl.models.ModelCard.from_json((tmp_path / "fresh.npy.card.json").read_text())
    assert card == read_model_card(path)
    assert card.display_names == ("Cat", "Dog", "Person", "Tree", "Flower")


def test_serving_export_of_a_converted_model(tmp_path):
    import tensorflow as tf

    from keras_csl.export import export_for_serving
    from keras_csl.export import read_export_card

    path = _converted(tmp_path)
    model = load_model(path)
    card = get_model_card(model)
    # Classes and preprocessing from the model's card alone.
    export = export_for_serving(model, tmp_path / "export", top_k=3)
    assert read_export_card(export) == card
    assert card.display_names == ("Cat", "Dog", "Person", "Tree", "Flower")
    serving = tf.saved_model.load(export)
    images = np.load(FIXTURES / "tiny_timm" / "inputs.npy").astype("float32")
    outputs = serving.signatures["serve_images"](images=tf.constant(images))
    logits = np.asarray(model.predict(images, verbose=0))
    np.testing.assert_allclose(
        outputs["probabilities"].numpy(), 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6
    )
    best = np.argsort(-logits, axis=1)[:, :3]
    names = np.array(card.display_names)[best]
    assert outputs["top_k_names"].numpy().astype(str).tolist() == names.tolist()
    # Encoded bytes go through the same squash resize; a 40 x 40 PNG is not resized.
    png = tf.io.encode_png(tf.constant(images[0].astype("uint8"))).numpy()
    encoded = serving.signatures["serving_default"](image_bytes=tf.constant([png]))
    np.testing.assert_allclose(
        encoded["probabilities"].numpy()[0], outputs["probabilities"].numpy()[0], atol=1e-5
    )
