"""Command-line runs of recipes/export.py, infer.py and evaluate.py.

As a user would type them: a `.keras` file copied alone into an empty
folder is exported with the classes and preprocessing of its model card,
the export answers like the Keras model on the same pixels, a flag
overrides the card (and the log says so), a folder of pictures with one
broken file is tagged, and the export is evaluated on TFRecords.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import encode_example
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.models import ModelCard
from keras_csl.models import set_model_card

REPO = pathlib.Path(__file__).resolve().parents[2]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
IMAGE_SIZE = 24
IDS = ["/m/a", "/m/b", "/m/c"]
NAMES = ["Apple", "Banana", "Cherry"]


def run_recipe(name, *args):
    result = subprocess.run(
        [sys.executable, str(REPO / "recipes" / f"{name}.py"), *args],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, result.stderr


@pytest.mark.slow
def test_export_infer_evaluate_command_lines(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, dtype="float32", name="logits")(x)
    card = ModelCard(
        image_size=IMAGE_SIZE, class_ids=IDS, display_names=NAMES,
        resize_mode="pad", jpeg_downscale=False, source="test",
    )
    model = set_model_card(keras.Model(inputs, outputs), card)
    (tmp_path / "trained").mkdir()
    model.save(tmp_path / "trained" / "model.keras")
    # The .keras file alone, in an empty folder: no run, no classes.csv.
    alone = tmp_path / "copy" / "model.keras"
    alone.parent.mkdir()
    shutil.copy(tmp_path / "trained" / "model.keras", alone)
    assert os.listdir(alone.parent) == ["model.keras"]

    out, _ = run_recipe(
        "export", f"--model={alone}", f"--export_dir={tmp_path / 'export'}",
        "--top_k=2",
    )
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["export"] == str(tmp_path / "export" / "1")
    assert summary["signatures"] == ["serving_default", "serve_images"]
    assert summary["outputs"][-1] == "valid"
    path = summary["export"]
    with open(os.path.join(path, "assets.extra", "model_card.json")) as f:
        assert ModelCard.from_dict(json.load(f)) == card

    # A photo through the SavedModel: the card's names, and the card's
    # preprocessing (compared with the Keras model on the same pixels).
    rng = np.random.default_rng(0)
    photo = tf.io.encode_jpeg(rng.integers(0, 256, (200, 150, 3), np.uint8)).numpy()
    serve = tf.saved_model.load(path).signatures["serving_default"]
    answer = serve(image_bytes=tf.constant([photo]))
    pixels = preprocess_encoded(
        tf.constant([photo]), IMAGE_SIZE, mode="pad", jpeg_downscale=False
    )
    expected = 1 / (1 + np.exp(-model.predict(pixels.numpy(), verbose=0)))
    np.testing.assert_allclose(answer["probabilities"].numpy(), expected, atol=1e-5)
    order = np.argsort(-expected[0])[:2]
    assert [n.decode() for n in answer["top_k_names"].numpy()[0]] == [
        NAMES[i] for i in order
    ]
    default = preprocess_encoded(tf.constant([photo]), IMAGE_SIZE)
    default = 1 / (1 + np.exp(-model.predict(default.numpy(), verbose=0)))
    assert np.abs(expected - default).max() > 1e-3  # the settings matter

    # Flags override the card, and the log says so.
    out, err = run_recipe(
        "export", f"--model={alone}", f"--export_dir={tmp_path / 'export'}",
        "--resize_mode=crop", "--resize_method=pillow_bicubic",
    )
    second = json.loads(out.strip().splitlines()[-1])["export"]
    assert second.endswith("2")
    assert "resize_mode='crop' overrides the model card's 'pad'" in err
    assert "resize_method='pillow_bicubic' overrides the model card's 'bilinear'" in err
    with open(os.path.join(second, "assets.extra", "model_card.json")) as f:
        assert ModelCard.from_dict(json.load(f)) == card.replace(
            resize_mode="crop", resize_method="pillow_bicubic")

    # Tagging a folder with one broken file: the others are tagged.
    photos = tmp_path / "photos"
    photos.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    with tf.io.TFRecordWriter(str(data / "val-00000-of-00001.tfrecord")) as writer:
        for i in range(6):
            jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (30, 20 + i, 3), np.uint8))
            (photos / f"p{i}.jpg").write_bytes(jpeg.numpy())
            writer.write(encode_example(jpeg.numpy(), f"p{i}", [i % 3], [(i + 1) % 3]))
    (photos / "broken.jpg").write_bytes(photo[:500])  # a truncated upload
    out, err = run_recipe(
        "infer", f"--model={alone}", f"--images={photos}",
        f"--images={photos / 'p0.jpg'}", "--threshold=0", "--top_k=2",
        f"--output_dir={tmp_path / 'tagged'}", "--resize_method=pillow_bicubic",
    )
    assert "resize_method='pillow_bicubic' overrides the model card's" in err
    lines = out.strip().splitlines()
    assert len(lines) == 8 and lines[0].startswith(str(photos / "broken.jpg") + ": ")
    assert "[error: " in lines[0]
    assert f"Cannot read {photos / 'broken.jpg'} as an image" in err
    assert lines[1].startswith(str(photos / "p0.jpg") + ": ")
    assert lines[1].count("(") == 2 and any(n in lines[1] for n in NAMES)
    assert (tmp_path / "tagged" / "p0_2.jpg").exists()

    out, _ = run_recipe(
        "evaluate", f"--export_dir={tmp_path / 'export' / '1'}",
        f"--data={data / 'val-*.tfrecord'}", f"--output_dir={tmp_path / 'eval'}",
        "--batch_size=4", "--pr_classes=Apple,/m/c",
        "--resize_method=bilinear",  # the export's own: accepted
    )
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["num_images"] == 6 and metrics["partial_map"] is not None
    assert metrics["full_map"] is None  # the records leave a class un-annotated
    assert metrics["resize_mode"] == "pad" and metrics["jpeg_downscale"] is False
    assert metrics["resize_method"] == "bilinear"
    written = ("per_class_ap.csv", "ap_vs_frequency.png", "pr_curves.png",
               "metrics.json")
    for name in written:
        assert (tmp_path / "eval" / name).exists(), name
