"""Tests of the TF Serving export (keras_csl.export.serving).

One tiny model is exported once per module; the signatures are checked in
process, with `saved_model_cli` (the TF1 session loader TF Serving also
uses), and in a fresh Python process that imports only TensorFlow. Every
check of the bytes signature sends a batch that mixes good images with
undecodable ones: each good image must get the answer it gets alone.
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
from keras_csl.export import read_export_card
from keras_csl.models import ModelCard
from keras_csl.models import set_model_card

NUM_CLASSES = 7
IMAGE_SIZE = 32
TOP_K = 3
CLASS_IDS = [f"/m/{i:02d}" for i in range(NUM_CLASSES)]
NAMES = ["Person", "Car", "Café", "Dog", "Cat", "Tree", "Cat"]  # not unique
BIN = pathlib.Path(sys.executable).parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def tiny_model(num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, seed=0):
    """A small CNN: named input "images", float32 logits head, no card."""
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


def pixels(rng, height, width, channels):
    """Smooth gradients plus noise: realistic enough for JPEG."""
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 255 / width + y * 128 / height)[..., None]
    noise = rng.integers(0, 60, (height, width, channels))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encoded_images():
    """JPEG and PNG bytes of several sizes, in colour and grayscale."""
    rng = np.random.default_rng(0)
    return [
        tf.io.encode_jpeg(pixels(rng, 48, 64, 3)).numpy(),
        tf.io.encode_png(pixels(rng, 30, 20, 3)).numpy(),
        tf.io.encode_jpeg(pixels(rng, 40, 40, 1)).numpy(),  # grayscale JPEG
        tf.io.encode_png(pixels(rng, 100, 37, 1)).numpy(),  # grayscale PNG
        tf.io.encode_png(
            np.concatenate(
                [pixels(rng, 16, 16, 3), np.full((16, 16, 1), 99, np.uint8)], -1
            )
        ).numpy(),  # RGBA PNG
    ]


def bad_inputs(good_jpeg, good_png):
    """Undecodable uploads: what a client may send by mistake."""
    return {
        "truncated JPEG": good_jpeg[: len(good_jpeg) // 2],
        "JPEG without its last bytes": good_jpeg[:-2],
        "truncated PNG": good_png[: len(good_png) // 2],
        "random bytes": np.random.default_rng(9).bytes(300),
        "empty string": b"",
        "not an image": b"%PDF-1.4 a text document, not a picture",
    }


def mixed_batch(goods):
    """Goods interleaved with every bad input: `(batch, good positions)`."""
    bads = list(bad_inputs(goods[0], goods[1]).values())
    batch, positions = [], []
    for i in range(max(len(goods), len(bads))):
        if i < len(bads):
            batch.append(bads[i])
        if i < len(goods):
            positions.append(len(batch))
            batch.append(goods[i])
    return batch, positions


def sample_jpegs(count=8):
    """Real COCO photos from ../shared/data when present, else generated JPEGs."""
    folder = SHARED_DATA / "coco-sample" / "images"
    files = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    if files:
        return [f.read_bytes() for f in files]
    rng = np.random.default_rng(1)
    return [
        tf.io.encode_jpeg(pixels(rng, 120 + i, 160, 3)).numpy()
        for i in range(count)
    ]


def reference_probabilities(model, encoded, **preprocessing):
    """model.predict on the pipeline's preprocessing: what serving must match."""
    images = preprocess_encoded(tf.constant(encoded), IMAGE_SIZE, **preprocessing)
    logits = model.predict(images.numpy(), verbose=0)
    return 1.0 / (1.0 + np.exp(-logits.astype("float64")))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model()
    export_dir = tmp_path_factory.mktemp("exports")
    path = export_for_serving(model, export_dir, CLASS_IDS, NAMES, top_k=TOP_K)
    return model, export_dir, path


def test_layout_card_metadata_and_versions(exported):
    model, export_dir, path = exported
    assert path == os.path.join(export_dir, "1")
    assert sorted(os.listdir(export_dir)) == ["1"]  # no staging folder left
    contents = set(os.listdir(path))
    assert {"saved_model.pb", "variables", "assets.extra"} <= contents
    with open(os.path.join(path, "assets.extra", "model_card.json")) as f:
        card = json.load(f)
    assert card["format"] == "keras_csl_model_card"
    assert card["class_ids"] == CLASS_IDS and card["display_names"] == NAMES
    assert card["image_size"] == IMAGE_SIZE and card["resize_mode"] == "squash"
    assert read_export_card(export_dir) == ModelCard.from_dict(card)
    with open(os.path.join(path, "assets.extra", "export_metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["top_k"] == TOP_K and metadata["model_card"] == "model_card.json"
    assert metadata["outputs"] == list(OUTPUT_KEYS)
    assert "class_ids" not in metadata  # one source of truth: the card
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
    assert out["valid"].tolist() == [True] * len(encoded)
    expected = reference_probabilities(model, encoded)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    assert out["probabilities"].dtype == np.float32

    order = np.argsort(-expected, axis=1)[:, :TOP_K]
    np.testing.assert_array_equal(out["top_k_indices"], order)
    np.testing.assert_allclose(
        out["top_k_scores"], np.take_along_axis(expected, order, 1), atol=1e-5
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


def test_bad_images_are_flagged_and_do_not_fail_the_batch(exported):
    model, _, path = exported
    serve_bytes, serve_images, _ = load_for_serving(path)
    goods = encoded_images()
    batch, positions = mixed_batch(goods)
    out = {k: v.numpy() for k, v in serve_bytes(image_bytes=tf.constant(batch)).items()}
    valid = np.zeros(len(batch), bool)
    valid[positions] = True
    np.testing.assert_array_equal(out["valid"], valid)
    # Each good image: the answer it gets in a batch of good images only.
    np.testing.assert_allclose(
        out["probabilities"][positions], reference_probabilities(model, goods),
        atol=1e-5,
    )
    bad = ~valid
    assert not out["probabilities"][bad].any()
    assert (out["top_k_indices"][bad] == -1).all()
    assert not out["top_k_scores"][bad].any()
    assert (out["top_k_names"][bad] == b"").all()
    assert (out["top_k_class_ids"][bad] == b"").all()
    assert (out["top_k_indices"][valid] >= 0).all()

    # Nothing decodable at all: a batch of flags, the model is not called.
    out = serve_bytes(image_bytes=tf.constant([b"", b"x"]))
    assert out["valid"].numpy().tolist() == [False, False]
    assert out["probabilities"].shape == (2, NUM_CLASSES)

    # serve_images: an image with a NaN pixel is invalid, the others exact.
    images = preprocess_encoded(tf.constant(goods[:3]), IMAGE_SIZE).numpy()
    images[1, 5, 5, 0] = np.nan
    out = serve_images(images=tf.constant(images))
    assert out["valid"].numpy().tolist() == [True, False, True]
    expected = reference_probabilities(model, goods[:3])
    np.testing.assert_allclose(
        out["probabilities"].numpy()[[0, 2]], expected[[0, 2]], atol=1e-5
    )
    assert not out["probabilities"].numpy()[1].any()


def test_empty_batches(exported):
    _, _, path = exported
    serve_bytes, serve_images, _ = load_for_serving(path)
    for out in (
        serve_bytes(image_bytes=tf.constant([], tf.string)),
        serve_images(images=tf.zeros([0, IMAGE_SIZE, IMAGE_SIZE, 3])),
    ):
        assert out["probabilities"].shape == (0, NUM_CLASSES)
        for key in ("top_k_indices", "top_k_scores", "top_k_class_ids", "top_k_names"):
            assert out[key].shape == (0, TOP_K), key
        assert out["valid"].shape == (0,)
        assert out["top_k_names"].dtype == tf.string


def test_card_settings_and_overrides(tmp_path, caplog):
    """The model's card decides; arguments override it, and the log says so."""
    model = set_model_card(tiny_model(num_classes=4, seed=1), ModelCard(
        image_size=IMAGE_SIZE, class_ids=("w", "x", "y", "z"),
        display_names=("W", "X", "Y", "Z"), resize_mode="pad",
        jpeg_downscale=False,
    ))
    rng = np.random.default_rng(3)
    # 300 x 200: with jpeg_downscale the JPEG would be decoded at 1/4 scale.
    encoded = [tf.io.encode_jpeg(pixels(rng, 300, 200, 3)).numpy()]
    path = export_for_serving(model, tmp_path, top_k=50, version=5)
    assert path.endswith("5")
    serve_bytes, _, metadata = load_for_serving(tmp_path)  # the base path
    assert metadata["top_k"] == 4
    card = read_export_card(path)
    assert card.display_names == ("W", "X", "Y", "Z") and card.resize_mode == "pad"
    out = serve_bytes(image_bytes=tf.constant(encoded))
    assert out["top_k_indices"].shape == (1, 4)
    expected = reference_probabilities(model, encoded, mode="pad", jpeg_downscale=False)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    default = reference_probabilities(model, encoded)
    assert np.abs(expected - default).max() > 1e-3  # the settings matter

    with caplog.at_level("WARNING", logger="keras_csl.export.cards"):
        path = export_for_serving(
            model, tmp_path, resize_mode="crop", display_names=list("abcd")
        )
    assert "resize_mode='crop' overrides the model card's 'pad'" in caplog.text
    assert "4 display_names override the model card's" in caplog.text
    card = read_export_card(path)
    assert card.resize_mode == "crop" and card.display_names == tuple("abcd")
    assert card.class_ids == ("w", "x", "y", "z") and card.jpeg_downscale is False
    out = load_for_serving(path)[0](image_bytes=tf.constant(encoded))
    np.testing.assert_allclose(
        out["probabilities"].numpy(),
        reference_probabilities(model, encoded, mode="crop", jpeg_downscale=False),
        atol=1e-5,
    )


def test_pillow_bicubic_export_answers_like_the_predictor_and_pillow(
    tmp_path, caplog
):
    """A card's `resize_method` is baked into the bytes signature."""
    import io

    from PIL import Image

    from keras_csl.inference import Predictor
    from keras_csl.inference import load_predictor

    card = ModelCard(
        image_size=IMAGE_SIZE, class_ids=CLASS_IDS, display_names=NAMES,
        resize_method="pillow_bicubic", jpeg_downscale=False,
    )
    model = set_model_card(tiny_model(seed=2), card)
    rng = np.random.default_rng(5)
    encoded = [
        tf.io.encode_jpeg(pixels(rng, 300, 200, 3), quality=90).numpy(),
        tf.io.encode_png(pixels(rng, 45, 70, 3)).numpy(),
    ]
    path = export_for_serving(model, tmp_path / "pillow")
    assert read_export_card(path).resize_method == "pillow_bicubic"
    serve_bytes, serve_images, _ = load_for_serving(path)
    answer = serve_bytes(image_bytes=tf.constant(encoded))["probabilities"].numpy()
    # The Predictor of the Keras model, and that of the export, agree.
    predictor = Predictor.from_keras_model(model)
    assert predictor.resize_method == "pillow_bicubic"
    np.testing.assert_allclose(predictor.predict_encoded(encoded), answer, atol=1e-5)
    exported = load_predictor(path)
    assert exported.resize_method == "pillow_bicubic"
    np.testing.assert_allclose(exported.predict_encoded(encoded), answer, atol=1e-6)
    # Pillow's own pixels through the images signature: the same answer.
    pillow = np.stack([
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize(
            (IMAGE_SIZE, IMAGE_SIZE)), np.float32)
        for data in encoded
    ])
    from_pillow = serve_images(images=tf.constant(pillow))["probabilities"].numpy()
    np.testing.assert_allclose(answer, from_pillow, atol=1e-4)
    bilinear = reference_probabilities(model, encoded, jpeg_downscale=False)
    assert np.abs(bilinear - from_pillow).max() > 1e-3  # the method matters

    with caplog.at_level("WARNING", logger="keras_csl.export.cards"):
        path = export_for_serving(
            model, tmp_path / "bilinear", resize_method="bilinear"
        )
    assert (
        "resize_method='bilinear' overrides the model card's 'pillow_bicubic'"
        in caplog.text
    )
    out = load_for_serving(path)[0](image_bytes=tf.constant(encoded))
    np.testing.assert_allclose(out["probabilities"].numpy(), bilinear, atol=1e-5)


def test_a_model_without_card_gets_defaults_with_a_warning(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="keras_csl.export.cards"):
        path = export_for_serving(tiny_model(num_classes=3), tmp_path)
    assert "has no model card: using the defaults: classes named by index" in (
        caplog.text
    )
    card = read_export_card(path)
    assert card.class_ids == ("0", "1", "2") and card.resize_mode == "squash"


def test_latest_version_skips_incomplete_folders(tmp_path, caplog):
    # Only the files that latest_version_path looks at.
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "3" / "variables").mkdir(parents=True)  # a copy in progress
    (tmp_path / "10").mkdir()
    (tmp_path / "tmp-11-abc").mkdir()
    with caplog.at_level("WARNING", logger="keras_csl.export.versions"):
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
        (dict(resize_mode="stretch"), "resize_mode='stretch'"),
        (dict(resize_method="area"), "resize_method='area'"),
        (dict(image_size=64), "image_size"),
        (dict(version=0), "version"),
        (dict(jpeg_downscale="no"), "jpeg_downscale='no'"),
        (dict(from_logits="yes"), "from_logits='yes'"),
        (dict(card="pad"), "card"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, message):
    arguments = dict(model=tiny_model(), export_dir=tmp_path, class_ids=CLASS_IDS)
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
    assert "DT_BOOL" in text  # valid
    assert "tensorflow/serving/predict" in text


def test_saved_model_cli_run_on_a_mixed_batch(exported, tmp_path):
    """The session loader of TF Serving answers good images, flags bad ones."""
    model, _, path = exported
    goods = sample_jpegs(4)
    batch, positions = mixed_batch(goods)
    request = tmp_path / "request.npy"
    # An object array keeps each file's bytes whole (a fixed-width bytes
    # dtype would strip trailing NUL bytes); saved_model_cli loads it with
    # allow_pickle=True.
    np.save(request, np.array(batch, dtype=object), allow_pickle=True)
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
    assert "Result for output key valid" in result.stdout
    valid = np.load(outdir / "valid.npy")
    assert np.flatnonzero(valid).tolist() == positions
    probabilities = np.load(outdir / "probabilities.npy")
    np.testing.assert_allclose(
        probabilities[positions], reference_probabilities(model, goods), atol=1e-5
    )
    assert not probabilities[~valid].any()
    names = np.load(outdir / "top_k_names.npy", allow_pickle=True)
    assert names.shape == (len(batch), TOP_K)
    first = positions[0]
    assert names[first, 0].decode("utf-8") == NAMES[int(np.argmax(probabilities[first]))]
    assert names[0, 0] == b""


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
    np.save(output.replace(".npy", "-valid.npy"), out["valid"].numpy())
    assert not any(m.startswith("keras_csl") for m in sys.modules)
    print("names", [v.decode("utf-8") for v in out["top_k_names"].numpy()[1]])
    """
)


def test_fresh_process_with_only_tensorflow_matches_predict(exported, tmp_path):
    model, _, path = exported
    goods = sample_jpegs(8)
    batch, positions = mixed_batch(goods)
    request, output = tmp_path / "request.npy", tmp_path / "probabilities.npy"
    np.save(request, np.array(batch, dtype=object), allow_pickle=True)
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, path, str(request), str(output)],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "names [" in result.stdout
    assert np.flatnonzero(np.load(tmp_path / "probabilities-valid.npy")).tolist() == (
        positions
    )
    np.testing.assert_allclose(
        np.load(output)[positions], reference_probabilities(model, goods), atol=1e-5
    )
