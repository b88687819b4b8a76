"""Tests of the TF Serving export (keras_csl.export.serving).

One tiny model is exported once per module; the signatures are checked in
process, with `saved_model_cli` (the TF1 session loader TF Serving also
uses), and in a fresh Python process that imports only TensorFlow.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import SHARED_DATA
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.export import OUTPUT_KEYS
from keras_csl.export import export_for_serving
from keras_csl.export import latest_version_path
from keras_csl.export import load_for_serving
from keras_csl.export import next_version

NUM_CLASSES = 7
IMAGE_SIZE = 32
TOP_K = 3
CLASS_IDS = [f"/m/{i:02d}" for i in range(NUM_CLASSES)]
NAMES = ["Person", "Car", "Café", "Dog", "Cat", "Tree", "Cat"]  # not unique
BIN = pathlib.Path(sys.executable).parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def tiny_model(num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, seed=0):
    """A small CNN: named input "images", float32 logits head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # Large weights spread the probabilities, so the top-k order is clear.
    outputs = keras.layers.Dense(
        num_classes, dtype="float32", name="logits",
        kernel_initializer=keras.initializers.RandomNormal(stddev=3.0),
    )(x)
    return keras.Model(inputs, outputs, name="tiny_test")


def encoded_images():
    """JPEG and PNG bytes of several sizes, in colour and grayscale."""
    rng = np.random.default_rng(0)

    def pixels(height, width, channels):
        # Smooth gradients plus noise: realistic enough for JPEG.
        y, x = np.mgrid[0:height, 0:width]
        base = (x * 255 / width + y * 128 / height)[..., None]
        noise = rng.integers(0, 60, (height, width, channels))
        return np.clip(base + noise, 0, 255).astype(np.uint8)

    return [
        tf.io.encode_jpeg(pixels(48, 64, 3)).numpy(),
        tf.io.encode_png(pixels(30, 20, 3)).numpy(),
        tf.io.encode_jpeg(pixels(40, 40, 1)).numpy(),  # grayscale JPEG
        tf.io.encode_png(pixels(100, 37, 1)).numpy(),  # grayscale PNG
        tf.io.encode_png(
            np.concatenate([pixels(16, 16, 3), np.full((16, 16, 1), 99, np.uint8)], -1)
        ).numpy(),  # RGBA PNG
    ]


def sample_jpegs(count=8):
    """Real COCO photos from ../shared/data when present, else generated JPEGs."""
    folder = SHARED_DATA / "coco-sample" / "images"
    files = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    if files:
        return [f.read_bytes() for f in files]
    rng = np.random.default_rng(1)
    return [
        tf.io.encode_jpeg(rng.integers(0, 256, (120 + i, 160, 3), np.uint8)).numpy()
        for i in range(count)
    ]


def reference_probabilities(model, encoded):
    """model.predict on the pipeline's preprocessing: what serving must match."""
    images = preprocess_encoded(tf.constant(encoded), IMAGE_SIZE).numpy()
    logits = model.predict(images, verbose=0)
    return 1.0 / (1.0 + np.exp(-logits.astype("float64")))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model()
    export_dir = tmp_path_factory.mktemp("exports")
    path = export_for_serving(
        model, export_dir, CLASS_IDS, NAMES, top_k=TOP_K
    )
    return model, export_dir, path


def test_layout_metadata_and_versions(exported):
    model, export_dir, path = exported
    assert path == os.path.join(export_dir, "1")
    assert sorted(os.listdir(export_dir)) == ["1"]  # no staging folder left
    contents = set(os.listdir(path))
    assert {"saved_model.pb", "variables", "assets.extra"} <= contents
    with open(os.path.join(path, "assets.extra", "export_metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["class_ids"] == CLASS_IDS
    assert metadata["display_names"] == NAMES
    assert metadata["image_size"] == IMAGE_SIZE
    assert metadata["top_k"] == TOP_K
    assert metadata["resize_mode"] == "squash"
    assert metadata["outputs"] == list(OUTPUT_KEYS)
    # Each weight is stored once (tracking the model too would double them).
    stored = tf.train.list_variables(os.path.join(path, "variables", "variables"))
    assert len(stored) - 1 == len(model.weights)  # - the object graph entry

    # Folders that are not numbers (TF Serving skips them) do not count.
    os.makedirs(os.path.join(export_dir, "notes"))
    os.makedirs(os.path.join(export_dir, "7"))
    assert next_version(export_dir) == 8
    with pytest.raises(ValueError, match="already exists"):
        export_for_serving(model, export_dir, CLASS_IDS, version=7)


def test_bytes_signature_matches_predict_and_top_k(exported):
    model, _, path = exported
    serve_bytes, serve_images, _ = load_for_serving(path)
    encoded = encoded_images()
    out = serve_bytes(image_bytes=tf.constant(encoded))
    out = {k: v.numpy() for k, v in out.items()}
    assert sorted(out) == sorted(OUTPUT_KEYS)
    expected = reference_probabilities(model, encoded)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    assert out["probabilities"].dtype == np.float32

    order = np.argsort(-out["probabilities"], axis=1)[:, :TOP_K]
    np.testing.assert_array_equal(out["top_k_indices"], order)
    np.testing.assert_allclose(
        out["top_k_scores"], np.take_along_axis(out["probabilities"], order, 1)
    )
    ids = np.array(CLASS_IDS, dtype=object)[order]
    names = np.array(NAMES, dtype=object)[order]
    assert [[v.decode() for v in row] for row in out["top_k_class_ids"]] == ids.tolist()
    decoded = [[v.decode("utf-8") for v in row] for row in out["top_k_names"]]
    assert decoded == names.tolist()

    # The float signature gives the same numbers on the preprocessed images.
    images = preprocess_encoded(tf.constant(encoded), IMAGE_SIZE)
    np.testing.assert_allclose(
        serve_images(images=images)["probabilities"].numpy(),
        out["probabilities"], atol=1e-6,
    )


def test_empty_batches(exported):
    _, _, path = exported
    serve_bytes, serve_images, _ = load_for_serving(path)
    for out in (
        serve_bytes(image_bytes=tf.constant([], tf.string)),
        serve_images(images=tf.zeros([0, IMAGE_SIZE, IMAGE_SIZE, 3])),
    ):
        assert out["probabilities"].shape == (0, NUM_CLASSES)
        for key in OUTPUT_KEYS[1:]:
            assert out[key].shape == (0, TOP_K), key
        assert out["top_k_names"].dtype == tf.string


def test_top_k_clamped_and_other_resize_mode(tmp_path):
    model = tiny_model(num_classes=4, seed=1)
    path = export_for_serving(
        model, tmp_path, [str(i) for i in range(4)], top_k=50,
        resize_mode="pad", version=5,
    )
    assert path.endswith("5")
    serve_bytes, _, metadata = load_for_serving(tmp_path)  # the base path
    assert metadata["top_k"] == 4 and metadata["display_names"] == ["0", "1", "2", "3"]
    encoded = encoded_images()[:2]
    out = serve_bytes(image_bytes=tf.constant(encoded))
    assert out["top_k_indices"].shape == (2, 4)
    images = preprocess_encoded(tf.constant(encoded), IMAGE_SIZE, mode="pad")
    expected = 1 / (1 + np.exp(-model.predict(images, verbose=0)))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)


def test_latest_version_skips_incomplete_folders(tmp_path, caplog):
    # Only the files that latest_version_path looks at.
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "3" / "variables").mkdir(parents=True)  # a copy in progress
    (tmp_path / "10").mkdir()
    (tmp_path / "tmp-11-abc").mkdir()
    with caplog.at_level("WARNING", logger="keras_csl.export.serving"):
        assert latest_version_path(tmp_path) == str(tmp_path / "1")
    assert "without saved_model.pb: [10, 3]" in caplog.text
    assert next_version(tmp_path) == 11  # never reuses an incomplete number

    (tmp_path / "1" / "saved_model.pb").unlink()
    with pytest.raises(ValueError, match=r"No complete SavedModel .*\[1, 3, 10\]"):
        latest_version_path(tmp_path)
    with pytest.raises(ValueError, match="No SavedModel found"):
        latest_version_path(tmp_path / "tmp-11-abc")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(class_ids=["a"] * 3), "one entry per model output"),
        (dict(display_names=["a"] * 8), "one entry per model output"),
        (dict(top_k=0), "top_k"),
        (dict(resize_mode="stretch"), "resize_mode"),
        (dict(image_size=64), "image_size"),
        (dict(version=0), "version"),
        (dict(jpeg_downscale="no"), "jpeg_downscale"),
        (dict(from_logits=None), "from_logits"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, message):
    arguments = dict(
        model=tiny_model(), export_dir=tmp_path, class_ids=CLASS_IDS
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        export_for_serving(**arguments)
    assert not any(p.is_dir() for p in tmp_path.iterdir())


def test_saved_model_cli_show_lists_signatures(exported):
    _, _, path = exported
    result = subprocess.run(
        [str(BIN / "saved_model_cli"), "show", "--dir", path, "--all"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "signature_def['serving_default']" in text
    assert "signature_def['serve_images']" in text
    assert "inputs['image_bytes']" in text and "DT_STRING" in text
    assert "inputs['images']" in text
    assert f"shape: (-1, {IMAGE_SIZE}, {IMAGE_SIZE}, 3)" in text
    for key in OUTPUT_KEYS:
        assert f"outputs['{key}']" in text
    assert "tensorflow/serving/predict" in text


def test_saved_model_cli_run_on_jpeg_bytes(exported, tmp_path):
    model, _, path = exported
    encoded = sample_jpegs(4)
    request = tmp_path / "request.npy"
    # An object array keeps each file's bytes whole (a fixed-width bytes
    # dtype would strip trailing NUL bytes); saved_model_cli loads it with
    # allow_pickle=True.
    np.save(request, np.array(encoded, dtype=object), allow_pickle=True)
    outdir = tmp_path / "outputs"
    result = subprocess.run(
        [
            str(BIN / "saved_model_cli"), "run", "--dir", path,
            "--tag_set", "serve", "--signature_def", "serving_default",
            "--inputs", f"image_bytes={request}", "--outdir", str(outdir),
        ],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Result for output key top_k_names" in result.stdout
    probabilities = np.load(outdir / "probabilities.npy")
    np.testing.assert_allclose(
        probabilities, reference_probabilities(model, encoded), atol=1e-5
    )
    names = np.load(outdir / "top_k_names.npy", allow_pickle=True)
    assert names.shape == (4, TOP_K)
    assert names[0, 0].decode("utf-8") == NAMES[int(np.argmax(probabilities[0]))]


FRESH_PROCESS = textwrap.dedent(
    """
    import sys

    class Block:  # the SavedModel must not need the package
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "keras_csl":
                raise ImportError("keras_csl must not be imported")

    sys.meta_path.insert(0, Block())
    import numpy as np
    import tensorflow as tf

    path, request, output = sys.argv[1:]
    serving = tf.saved_model.load(path)
    encoded = np.load(request, allow_pickle=True)
    out = serving.signatures["serving_default"](image_bytes=tf.constant(list(encoded)))
    np.save(output, out["probabilities"].numpy())
    assert not any(m.startswith("keras_csl") for m in sys.modules)
    print("names", [v.decode("utf-8") for v in out["top_k_names"].numpy()[0]])
    """
)


def test_fresh_process_with_only_tensorflow_matches_predict(exported, tmp_path):
    model, _, path = exported
    encoded = sample_jpegs(8)
    request, output = tmp_path / "request.npy", tmp_path / "probabilities.npy"
    np.save(request, np.array(encoded, dtype=object), allow_pickle=True)
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, path, str(request), str(output)],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "names [" in result.stdout
    np.testing.assert_allclose(
        np.load(output), reference_probabilities(model, encoded), atol=1e-5
    )
