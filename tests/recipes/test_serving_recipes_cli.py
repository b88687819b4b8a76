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


def load_recipe(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"recipes_{name}", REPO / "recipes" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resolve_run_dir(tmp_path):
    export = load_recipe("export")
    run_dir, data = tmp_path / "run", tmp_path / "data"
    run_dir.mkdir()
    data.mkdir()
    with pytest.raises(ValueError, match="No best.keras"):
        export.resolve_run_dir(str(run_dir))
    (run_dir / "best.keras").write_bytes(b"")
    write_classes_csv(str(data / "classes.csv"), IDS, NAMES)
    (run_dir / "config.json").write_text(json.dumps(dict(
        train_files=str(data / "train-*.tfrecord"),
        dataset_options=dict(resize_mode="pad", jpeg_downscale=False),
    )))
    assert export.resolve_run_dir(str(run_dir)) == (
        str(run_dir / "best.keras"), str(data / "classes.csv"), "pad", False
    )
    (run_dir / "config.json").write_text(json.dumps(dict(
        train_files="", dataset_options={}
    )))
    assert export.resolve_run_dir(str(run_dir)) == (
        str(run_dir / "best.keras"), None, None, None
    )


def _tiny_run(tmp_path, dataset_options):
    """A run folder (best.keras, config.json) over a 4-image TFRecord."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3), name="images")
    x = keras.layers.Conv2D(4, 3, strides=2)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(x))
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    data.mkdir()
    model.save(run / "best.keras")
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


def test_run_settings_reach_export_and_evaluate(tmp_path):
    export, evaluate = load_recipe("export"), load_recipe("evaluate")
    run, data = _tiny_run(tmp_path, dict(resize_mode="pad", jpeg_downscale=False))
    model_path = export.resolve_run_dir(str(run))[0]
    path = export.export(model_path, tmp_path / "export")
    with open(os.path.join(path, "assets.extra", "export_metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["jpeg_downscale"] is False and metadata["resize_mode"] == "pad"
    assert metadata["class_ids"] == IDS  # the run's classes.csv

    for model in (run, model_path, tmp_path / "export"):
        result = evaluate.evaluate(model, data, batch_size=2)
        assert result["jpeg_downscale"] is False, model
        assert result["resize_mode"] == "pad", model
        assert result["num_images"] == 4
    # A flag given explicitly wins over the run's setting.
    result = evaluate.evaluate(run, data, jpeg_downscale=True)
    assert result["jpeg_downscale"] is True
    with pytest.raises(ValueError, match="made with jpeg_downscale=False"):
        evaluate.evaluate(tmp_path / "export", data, jpeg_downscale=True)


def test_export_names_a_classes_csv_of_the_wrong_length(tmp_path):
    export = load_recipe("export")
    run, _ = _tiny_run(tmp_path, {})
    classes_csv = str(tmp_path / "two.csv")
    write_classes_csv(classes_csv, IDS[:2], NAMES[:2])
    with pytest.raises(
        ValueError, match=f"classes_csv='{classes_csv}', which lists 2 classes"
    ):
        export.export(str(run / "best.keras"), tmp_path / "export", classes_csv)
    assert not (tmp_path / "export").exists()
