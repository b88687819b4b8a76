"""Command-line runs of recipes/export.py, infer.py and evaluate.py.

One chain, as a user would type it: export a .keras model, tag a folder of
pictures with the export, evaluate the export on TFRecords.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import encode_example
from keras_csl.data import write_classes_csv

REPO = pathlib.Path(__file__).resolve().parents[2]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
IDS = ["/m/a", "/m/b", "/m/c"]
NAMES = ["Apple", "Banana", "Cherry"]


def run_recipe(name, *args):
    result = subprocess.run(
        [sys.executable, str(REPO / "recipes" / f"{name}.py"), *args],
        capture_output=True, text=True, env=ENV, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_export_infer_evaluate_command_lines(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3), name="images")
    x = keras.layers.Conv2D(4, 3, strides=2)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, dtype="float32", name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "best.keras")
    data = tmp_path / "data"
    data.mkdir()
    write_classes_csv(str(data / "classes.csv"), IDS, NAMES)
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    with tf.io.TFRecordWriter(str(data / "val-00000-of-00001.tfrecord")) as writer:
        for i in range(6):
            jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (30, 20 + i, 3), np.uint8))
            (photos / f"p{i}.jpg").write_bytes(jpeg.numpy())
            writer.write(encode_example(jpeg.numpy(), f"p{i}", [i % 3], [(i + 1) % 3]))

    out = run_recipe(
        "export", f"--model={tmp_path / 'best.keras'}",
        f"--classes_csv={data / 'classes.csv'}",
        f"--export_dir={tmp_path / 'export'}", "--top_k=2",
    )
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["export"] == str(tmp_path / "export" / "1")
    assert summary["signatures"] == ["serving_default", "serve_images"]

    out = run_recipe(
        "infer", f"--export_dir={tmp_path / 'export'}", f"--images={photos}",
        f"--images={photos / 'p0.jpg'}", "--threshold=0", "--top_k=2",
        f"--output_dir={tmp_path / 'tagged'}",
    )
    lines = out.strip().splitlines()
    assert len(lines) == 7 and lines[0].startswith(str(photos / "p0.jpg") + ": ")
    assert lines[0].count("(") == 2 and any(n in lines[0] for n in NAMES)
    assert (tmp_path / "tagged" / "p0_2.jpg").exists()

    out = run_recipe(
        "evaluate", f"--export_dir={tmp_path / 'export'}",
        f"--data={data / 'val-*.tfrecord'}", f"--output_dir={tmp_path / 'eval'}",
        "--batch_size=4", "--pr_classes=Apple,/m/c",
    )
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["num_images"] == 6 and metrics["partial_map"] is not None
    assert metrics["full_map"] is None  # the records leave a class un-annotated
    written = ("per_class_ap.csv", "ap_vs_frequency.png", "pr_curves.png",
               "metrics.json")
    for name in written:
        assert (tmp_path / "eval" / name).exists(), name


def test_resolve_run_dir(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "recipes_export", REPO / "recipes" / "export.py"
    )
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    run_dir, data = tmp_path / "run", tmp_path / "data"
    run_dir.mkdir()
    data.mkdir()
    with pytest.raises(ValueError, match="No best.keras"):
        export.resolve_run_dir(str(run_dir))
    (run_dir / "best.keras").write_bytes(b"")
    write_classes_csv(str(data / "classes.csv"), IDS, NAMES)
    (run_dir / "config.json").write_text(json.dumps(dict(
        train_files=str(data / "train-*.tfrecord"),
        dataset_options=dict(resize_mode="pad"),
    )))
    assert export.resolve_run_dir(str(run_dir)) == (
        str(run_dir / "best.keras"), str(data / "classes.csv"), "pad"
    )
