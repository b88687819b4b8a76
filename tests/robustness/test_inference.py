"""Bad input to serving and inference: each case, what it gets.

Part of the robustness catalogue (issue 11): every case here is an input a
user or a serving client may send, with the clear error or the documented
signal it must get, never a plausible wrong number. Documented in
docs/SERVING.md ("Bad input").

- Serving signature (`serving_default`): an undecodable upload is flagged
  (`valid` False, zero probabilities, top-k -1 / 0 / ""), the rest of the
  batch is answered exactly as without it.
- `Predictor.predict_encoded`: raises `InvalidImageError` naming the bad
  indices, or flags them with `return_valid=True`.
- Loading, exporting, tagging and evaluating: a `ValueError` that names
  the argument and the value, or a warning that says which settings were
  assumed.
"""

import json
import logging
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import write_classes_csv
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.export import export_for_serving
from keras_csl.export import load_for_serving
from keras_csl.inference import InvalidImageError
from keras_csl.inference import Predictor
from keras_csl.inference import evaluate
from keras_csl.inference import load_predictor
from keras_csl.inference import tag_images
from keras_csl.models import ModelCard
from keras_csl.models import set_model_card

SIZE = 24
IDS = ["/m/a", "/m/b", "/m/c"]
NAMES = ["Apple", "Banana", "Cherry"]
CARD = ModelCard(image_size=SIZE, class_ids=IDS, display_names=NAMES,
                 resize_mode="pad", source="robustness test")


def _photo(seed=0, height=60, width=80):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.clip((x * 3 + y)[..., None] + rng.integers(0, 50, (height, width, 3)),
                    0, 255).astype(np.uint8)
    return image


JPEG = tf.io.encode_jpeg(_photo(0)).numpy()
PNG = tf.io.encode_png(_photo(1)).numpy()
# name -> bytes a client may upload by mistake.
UNDECODABLE = {
    "truncated JPEG (half)": JPEG[: len(JPEG) // 2],
    "JPEG without its end marker": JPEG[:-2],
    "JPEG header only": JPEG[:120],
    "truncated PNG": PNG[: len(PNG) // 2],
    "PNG without its last chunk": PNG[:-12],
    "random bytes": np.random.default_rng(7).bytes(400),
    "empty string": b"",
    "a PDF, not an image": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj",
    "GIF header only": b"GIF89a" + b"\x00" * 8,
    "BMP header only": b"BM" + b"\x00" * 40,
}


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    return set_model_card(
        keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(x)), CARD
    )


@pytest.fixture(scope="module")
def export(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    export_for_serving(model, folder, top_k=2)
    return folder


def _expected(model, encoded):
    images = preprocess_encoded(tf.constant(encoded), SIZE, mode="pad")
    return 1 / (1 + np.exp(-model.predict(images.numpy(), verbose=0)))


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_serving_flags_an_undecodable_upload(model, export, name):
    """Input: [JPEG, <bad>, PNG]. Signal: valid [T, F, T], neutral row 1."""
    serve_bytes = load_for_serving(export)[0]
    out = serve_bytes(image_bytes=tf.constant([JPEG, UNDECODABLE[name], PNG]))
    out = {k: v.numpy() for k, v in out.items()}
    assert out["valid"].tolist() == [True, False, True]
    np.testing.assert_allclose(
        out["probabilities"][[0, 2]], _expected(model, [JPEG, PNG]), atol=1e-5
    )
    assert out["probabilities"][1].tolist() == [0.0, 0.0, 0.0]
    assert out["top_k_indices"][1].tolist() == [-1, -1]
    assert out["top_k_scores"][1].tolist() == [0.0, 0.0]
    assert out["top_k_names"][1].tolist() == [b"", b""]
    assert out["top_k_class_ids"][1].tolist() == [b"", b""]


def test_serving_edge_batches(export):
    """Input: only bad uploads / nothing / a NaN image. Signal: flags, shapes."""
    serve_bytes, serve_images, _ = load_for_serving(export)
    out = serve_bytes(image_bytes=tf.constant(list(UNDECODABLE.values())))
    assert not out["valid"].numpy().any()
    assert out["probabilities"].shape == (len(UNDECODABLE), 3)
    out = serve_bytes(image_bytes=tf.constant([], tf.string))
    assert out["valid"].shape == (0,) and out["top_k_names"].shape == (0, 2)
    images = np.full([2, SIZE, SIZE, 3], 100.0, "float32")
    images[0, 1, 1, 1] = np.nan
    out = serve_images(images=tf.constant(images))
    assert out["valid"].numpy().tolist() == [False, True]
    assert not np.isnan(out["probabilities"].numpy()).any()


def test_predictor_raises_or_flags(model, export):
    """Input: a bad file among good ones. Error: InvalidImageError [indices]."""
    batch = [JPEG, UNDECODABLE["empty string"], PNG, UNDECODABLE["random bytes"]]
    for predictor in (Predictor.from_keras_model(model), load_predictor(export)):
        with pytest.raises(InvalidImageError, match=re.escape("at indices [1, 3]")):
            predictor.predict_encoded(batch)
        probabilities, valid = predictor.predict_encoded(batch, return_valid=True)
        assert valid.tolist() == [True, False, True, False]
        assert not probabilities[[1, 3]].any()


def test_predict_encoded_rejects_paths(model):
    """Input: a path instead of the file's bytes. Error: ValueError."""
    with pytest.raises(ValueError, match="Received: str at index 1: 'photo.jpg'"):
        Predictor.from_keras_model(model).predict_encoded([JPEG, "photo.jpg"])


@pytest.mark.parametrize("images, message", [
    (np.zeros([2, SIZE + 1, SIZE, 3]), r"Expected shape \[N, 24, 24, 3\]"),
    (np.zeros([SIZE, SIZE, 3]), r"Expected shape"),
    (np.full([1, SIZE, SIZE, 3], np.inf), r"infinite pixels in images \[0\]"),
])
def test_predict_images_rejects(model, images, message):
    """Input: wrong shape or non-finite pixels. Error: ValueError."""
    with pytest.raises(ValueError, match=message):
        Predictor.from_keras_model(model).predict_images(images)


def _keras_file(tmp_path, model):
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def _bare_model():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


CASES = {
    # name: (build the input under tmp_path, call, expected error regex)
    "missing .keras file": (
        lambda t, m: t / "missing.keras", load_predictor, "which does not exist"),
    "a .keras file that is no zip": (
        lambda t, m: (t / "x.keras").write_bytes(b"text") and t / "x.keras",
        load_predictor, "Cannot read a model card from .*x.keras"),
    "a folder with neither export nor run": (
        lambda t, m: t, load_predictor, "No SavedModel found"),
    "an export folder being copied (no saved_model.pb)": (
        lambda t, m: (t / "1" / "variables").mkdir(parents=True) or t,
        load_predictor, r"No complete SavedModel .*\[1\]"),
    "classes.csv of another length": (
        lambda t, m: (_keras_file(t, m), _classes(t, 2)),
        lambda a: load_predictor(a[0], classes_csv=a[1]),
        r"classes_csv='.*two.csv', which lists 2 classes"),
    "an invalid resize_mode override": (
        lambda t, m: _keras_file(t, m),
        lambda a: load_predictor(a, resize_mode="stretch"),
        "Invalid value for argument `resize_mode`.*'stretch'"),
}


def _classes(tmp_path, count):
    path = tmp_path / "two.csv"
    write_classes_csv(str(path), IDS[:count], NAMES[:count])
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_loading_errors(model, tmp_path, name):
    make, call, message = CASES[name]
    with pytest.raises(ValueError, match=message):
        call(make(tmp_path, model))


def test_export_settings_cannot_be_changed_at_load(export, tmp_path):
    """Input: a setting other than the export's graph. Error: ValueError."""
    with pytest.raises(ValueError, match="was made with resize_mode='pad'"):
        load_predictor(export, resize_mode="squash")
    csv = tmp_path / "classes.csv"
    write_classes_csv(str(csv), ["x", "y", "z"], NAMES)
    with pytest.raises(ValueError, match="class ids differ from those of the export"):
        load_predictor(export, classes_csv=csv)


def test_assumed_settings_are_never_silent(tmp_path, model, caplog):
    """Input: no card; a legacy run; an override. Signal: a warning each."""
    _bare_model().save(tmp_path / "bare.keras")
    with caplog.at_level(logging.WARNING):
        load_predictor(tmp_path / "bare.keras")
    assert "has no model card: using the defaults" in caplog.text

    run = tmp_path / "run"
    run.mkdir()
    _bare_model().save(run / "best.keras")
    (run / "config.json").write_text(json.dumps(dict(
        train_files=str(tmp_path / "nowhere" / "train-*.tfrecord"),
        dataset_options=dict(resize_mode="crop"),
    )))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predictor = load_predictor(run)
    assert predictor.resize_mode == "crop"
    assert "has no model card of its own (saved before keras-csl wrote cards)" \
        in caplog.text
    assert "classes named by index (no classes.csv" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_predictor(_keras_file(tmp_path, model), jpeg_downscale=False)
    assert "jpeg_downscale=False overrides the model card's True" in caplog.text


def test_tagging_reports_bad_files_by_name(model, tmp_path, caplog):
    """Input: a folder with a broken .jpg. Signal: its error, others tagged."""
    (tmp_path / "good.jpg").write_bytes(JPEG)
    (tmp_path / "broken.jpg").write_bytes(UNDECODABLE["truncated JPEG (half)"])
    with caplog.at_level(logging.WARNING):
        results = tag_images(Predictor.from_keras_model(model), tmp_path, threshold=0)
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in results}
    assert by_name["good.jpg"]["error"] is None and by_name["good.jpg"]["tags"]
    assert by_name["broken.jpg"]["tags"] == [] and by_name["broken.jpg"]["error"]
    assert f"Cannot read {tmp_path / 'broken.jpg'} as an image" in caplog.text
    with pytest.raises(ValueError, match="which does not exist"):
        tag_images(Predictor.from_keras_model(model), tmp_path / "nope.jpg")
    with pytest.raises(ValueError, match="threshold=-0.1"):
        tag_images(Predictor.from_keras_model(model), tmp_path, threshold=-0.1)


def test_evaluation_rejects(model, tmp_path):
    """Input: empty data, a wrong size or class. Error: ValueError."""
    predictor = Predictor.from_keras_model(model)
    images = np.zeros([2, SIZE, SIZE, 3], "float32")
    targets = np.array([[1, 0, 1], [0, 1, 0]], "float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(2)
    with pytest.raises(ValueError, match="No image in"):
        evaluate(predictor, dataset.take(0))
    with pytest.raises(ValueError, match="image_size=32"):
        evaluate(predictor, dataset, image_size=32)
    with pytest.raises(ValueError, match="`pr_classes`.*'Durian'"):
        evaluate(predictor, dataset, output_dir=tmp_path, pr_classes=["Durian"])
