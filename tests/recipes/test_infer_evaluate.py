"""Tests of recipes/infer.py and recipes/evaluate.py (their functions).

The command lines are run in tests/recipes/test_serving_recipes_cli.py.
"""

import csv
import importlib.util
import json
import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import encode_example
from keras_csl.data import write_classes_csv
from keras_csl.data import write_label_overlay
from keras_csl.export import Predictor
from keras_csl.metrics import PartialMeanAveragePrecision
from keras_csl.metrics import partial_mean_average_precision

RECIPES = pathlib.Path(__file__).resolve().parents[2] / "recipes"
IMAGE_SIZE = 32
IDS = ["/m/person", "/m/car", "/m/dog", "/m/cat", "/m/tree"]
NAMES = ["Person", "Car", "Dog", "Cat", "Tree"]


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(
        f"recipes_{name}", RECIPES / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


infer = load_recipe("infer")
evaluate_recipe = load_recipe("evaluate")


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        len(IDS), dtype="float32", name="logits",
        kernel_initializer=keras.initializers.RandomNormal(stddev=3.0),
    )(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_keras_model(tiny_model(), IDS, NAMES)


def _pixels(rng, height, width, channels):
    return rng.integers(0, 256, (height, width, channels), np.uint8)


def write_images(folder, rng):
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "a.jpg": tf.io.encode_jpeg(_pixels(rng, 48, 64, 3)).numpy(),
        "b.png": tf.io.encode_png(_pixels(rng, 30, 20, 3)).numpy(),
        "gray.jpg": tf.io.encode_jpeg(_pixels(rng, 40, 40, 1)).numpy(),
        "gray.png": tf.io.encode_png(_pixels(rng, 25, 50, 1)).numpy(),
        "broken.jpg": b"not an image at all",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("ignored: not an image extension")
    return files


def test_select_tags():
    probabilities = np.array([0.2, 0.9, 0.55, 0.7, 0.5])
    assert infer.select_tags(probabilities, threshold=0.5, top_k=10) == [1, 3, 2, 4]
    assert infer.select_tags(probabilities, threshold=0.5, top_k=2) == [1, 3]
    assert infer.select_tags(probabilities, threshold=0.95, top_k=0) == []
    everything = infer.select_tags(probabilities, threshold=0.0, top_k=None)
    assert everything == [1, 3, 2, 4, 0]


def test_tag_images_folder_and_drawn_pictures(predictor, tmp_path):
    files = write_images(tmp_path / "photos", np.random.default_rng(0))
    extra = tmp_path / "more" / "a.jpg"  # same stem as photos/a.jpg
    extra.parent.mkdir()
    extra.write_bytes(files["a.jpg"])
    output_dir = tmp_path / "tagged"
    results = infer.tag_images(
        predictor, [tmp_path / "photos", extra], threshold=0.0, top_k=3,
        output_dir=output_dir, batch_size=4,
    )
    names = [os.path.basename(r["path"]) for r in results]
    assert names == ["a.jpg", "b.png", "broken.jpg", "gray.jpg", "gray.png", "a.jpg"]

    good = [r for r in results if r["error"] is None]
    expected = predictor.predict_encoded(
        [pathlib.Path(r["path"]).read_bytes() for r in good]
    )
    for result, probabilities in zip(good, expected):
        order = np.argsort(-probabilities)[:3]
        assert [t["index"] for t in result["tags"]] == order.tolist()
        assert [t["name"] for t in result["tags"]] == [NAMES[i] for i in order]
        assert [t["class_id"] for t in result["tags"]] == [IDS[i] for i in order]
        np.testing.assert_allclose(
            [t["score"] for t in result["tags"]], probabilities[order], atol=1e-6
        )
    broken = results[2]
    assert broken["tags"] == [] and "Unknown image file format" in broken["error"]

    from PIL import Image

    outputs = sorted(p.name for p in output_dir.iterdir())
    assert outputs == [
        "a.jpg", "a_2.jpg", "b.jpg", "gray.jpg", "gray_2.jpg", "tags.json"
    ]
    with Image.open(output_dir / "gray.jpg") as image:
        assert image.mode == "RGB" and image.size == (40, 40)
    with Image.open(output_dir / "a.jpg") as image:
        # The tag box is drawn at the top left, darkening the picture there.
        drawn = np.asarray(image, dtype="float32")
    original = _pixels(np.random.default_rng(0), 48, 64, 3).astype("float32")
    assert drawn[:4, :4].mean() < original[:4, :4].mean() - 20
    with open(output_dir / "tags.json", encoding="utf-8") as f:
        assert len(json.load(f)) == 6
    table = infer.format_table(results)
    assert "broken.jpg: [error:" in table and f"{good[0]['tags'][0]['name']} (" in table

    # A threshold above every probability gives no tag.
    none = infer.tag_images(predictor, tmp_path / "photos" / "b.png", threshold=1.0)
    assert none[0]["tags"] == []
    with pytest.raises(ValueError, match="does not exist"):
        infer.tag_images(predictor, tmp_path / "missing.jpg")


def test_precision_recall_curve_hand_checked():
    # Annotated: scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.6 (neg);
    # the -1 entry at 0.95 is left out.
    precision, recall = evaluate_recipe.precision_recall_curve(
        [1, 0, -1, 1, 0], [0.9, 0.8, 0.95, 0.7, 0.6]
    )
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0, 1.0])
    # Ties form one point.
    precision, recall = evaluate_recipe.precision_recall_curve(
        [1, 0, 1], [0.5, 0.5, 0.2]
    )
    np.testing.assert_allclose(precision, [0.5, 2 / 3])
    np.testing.assert_allclose(recall, [0.5, 1.0])
    assert len(evaluate_recipe.precision_recall_curve([0, -1], [0.1, 0.2])[0]) == 0


def test_precision_recall_from_histograms():
    # Bins by increasing score. Bin 2: 2 positives, 1 negative -> precision
    # 2/3 at recall 2/3; bin 1: 1 negative -> 2/4, 2/3; bin 0: 1 positive
    # -> 3/5, 1. Bin 3 is empty: no point.
    precision, recall = evaluate_recipe.precision_recall_from_histograms(
        [1, 0, 2, 0], [0, 1, 1, 0]
    )
    np.testing.assert_allclose(precision, [2 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(recall, [2 / 3, 2 / 3, 1.0])
    assert len(evaluate_recipe.precision_recall_from_histograms([0], [3])[0]) == 0
    # The curve of the bin indices taken as tied scores.
    rng = np.random.default_rng(0)
    targets = rng.choice([-1, 0, 1], size=300, p=[0.3, 0.5, 0.2])
    bins = rng.integers(0, 20, size=300)
    counts = [np.bincount(bins[targets == t], minlength=20) for t in (1, 0)]
    for got, expected in zip(
        evaluate_recipe.precision_recall_from_histograms(*counts),
        evaluate_recipe.precision_recall_curve(targets, bins),
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def write_dataset(folder, rng, count=24, partial=True):
    """TFRecords in the keras_csl.data layout: (pattern, encoded, targets, ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_classes_csv(str(folder / "classes.csv"), IDS, NAMES)
    encoded, targets, ids = [], [], []
    for shard in range(2):
        path = str(folder / f"val-{shard:05d}-of-00002.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(shard * count // 2, (shard + 1) * count // 2):
                data = tf.io.encode_jpeg(_pixels(rng, 40 + i, 36, 3)).numpy()
                row = rng.integers(0, 2, len(IDS)).astype("float32")
                row[0], row[1] = 1 - (i % 2), i % 2  # classes 0 and 1 evaluable
                if partial:
                    row[rng.random(len(IDS)) < 0.3] = -1
                    row[0], row[1] = 1 - (i % 2), i % 2
                row[4] = -1 if partial else 0  # class 4: never positive
                positive = np.flatnonzero(row == 1)
                negative = np.flatnonzero(row == 0)
                writer.write(encode_example(data, f"img{i}", positive, negative))
                encoded.append(data)
                targets.append(row)
                ids.append(f"img{i}")
    return str(folder / "val-*.tfrecord"), encoded, np.array(targets), ids


def test_evaluate_partial_labels_writes_csv_and_plots(predictor, tmp_path):
    rng = np.random.default_rng(1)
    pattern, encoded, targets, _ = write_dataset(tmp_path / "data", rng)
    scores = predictor.predict_encoded(encoded)
    expected_map, expected_ap = partial_mean_average_precision(targets, scores)

    out = tmp_path / "eval"
    result = evaluate_recipe.evaluate(
        predictor, pattern, output_dir=out, batch_size=5,
        pr_classes=["Car", "/m/person", "3"],
    )
    assert result["num_images"] == 24 and result["num_classes"] == 5
    assert result["partial_map"] == pytest.approx(expected_map, abs=1e-4)
    assert result["full_map"] is None and not result["labels_complete"]
    assert result["classes_evaluated"] == int(np.isfinite(expected_ap).sum())
    assert result["annotated_fraction"] == pytest.approx((targets != -1).mean())

    with open(out / "per_class_ap.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(evaluate_recipe.CSV_COLUMNS)
    assert [r["class_id"] for r in rows] == IDS
    assert [r["display_name"] for r in rows] == NAMES
    for c, row in enumerate(rows):
        assert int(row["positives"]) == int((targets[:, c] == 1).sum())
        assert int(row["negatives"]) == int((targets[:, c] == 0).sum())
        assert float(row["frequency"]) == pytest.approx(
            (targets[:, c] == 1).mean(), abs=1e-4
        )
        if np.isfinite(expected_ap[c]):
            assert float(row["ap"]) == pytest.approx(expected_ap[c], abs=1e-3)
        else:
            assert row["ap"] == ""
    with open(out / "metrics.json") as f:
        assert json.load(f)["partial_map"] == pytest.approx(expected_map, abs=1e-4)

    from PIL import Image

    for name in ("ap_vs_frequency.png", "pr_curves.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] >= 600


def test_evaluate_full_labels_and_overlay(predictor, tmp_path):
    rng = np.random.default_rng(2)
    pattern, encoded, targets, ids = write_dataset(
        tmp_path / "data", rng, partial=False
    )
    scores = predictor.predict_encoded(encoded)
    full_map, _ = partial_mean_average_precision(targets, scores)

    result = evaluate_recipe.evaluate(predictor, pattern, batch_size=8)
    assert result["labels_complete"]
    assert result["full_map"] == pytest.approx(full_map, abs=1e-4)
    assert result["partial_map"] == pytest.approx(full_map, abs=1e-4)
    assert result["files"] == {}

    # An overlay hides labels: partial mAP on it, full mAP on the records.
    partial = targets.copy()
    partial[:, 2:] = -1
    overlay = str(tmp_path / "overlay.csv")
    write_label_overlay(
        overlay,
        [
            (i, np.flatnonzero(r == 1), np.flatnonzero(r == 0))
            for i, r in zip(ids, partial)
        ],
    )
    expected_partial, _ = partial_mean_average_precision(partial, scores)
    result = evaluate_recipe.evaluate(
        predictor, pattern, label_overlay=overlay, output_dir=tmp_path / "eval"
    )
    assert result["partial_map"] == pytest.approx(expected_partial, abs=1e-4)
    assert result["full_map"] == pytest.approx(full_map, abs=1e-4)
    assert result["classes_evaluated"] == 2
    with open(tmp_path / "eval" / "per_class_ap.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert "full_ap" in rows[0] and rows[3]["ap"] == "" and rows[3]["full_ap"] != ""


def test_evaluate_real_coco_photos(shared_data, tmp_path):
    """The 53 COCO photos through a export: full labels, so full mAP is set."""
    from keras_csl.export import export_for_serving
    from keras_csl.export import load_predictor

    root = shared_data / "coco-sample"
    with open(root / "class-descriptions.csv", encoding="utf-8") as f:
        names = dict(csv.reader(f))
    mids = sorted(names)
    labels = {}
    with open(root / "image-labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            labels.setdefault(row["ImageID"], {})[row["LabelName"]] = row["Confidence"]
    folder = tmp_path / "coco"
    folder.mkdir()
    write_classes_csv(str(folder / "classes.csv"), mids, [names[m] for m in mids])
    with tf.io.TFRecordWriter(str(folder / "val-00000-of-00001.tfrecord")) as writer:
        for image_id in sorted(labels):
            rows = labels[image_id]
            writer.write(encode_example(
                (root / "images" / f"{image_id}.jpg").read_bytes(), image_id,
                [mids.index(m) for m, c in rows.items() if c == "1"],
                [mids.index(m) for m, c in rows.items() if c == "0"],
            ))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(len(mids), dtype="float32")(x))
    export_for_serving(model, tmp_path / "export", mids, [names[m] for m in mids])

    result = evaluate_recipe.evaluate(
        load_predictor(tmp_path / "export"), str(folder / "val-*.tfrecord"),
        output_dir=tmp_path / "eval",
    )
    assert result["num_images"] == len(labels) == 53
    assert result["labels_complete"] and result["full_map"] == result["partial_map"]
    assert 0 < result["full_map"] < 100
    assert (tmp_path / "eval" / "pr_curves.png").stat().st_size > 10_000


def test_evaluate_bounded_agrees_with_exact(predictor):
    # 1,500 random images: the tiny model's probabilities crowd into a
    # narrow range (each class's logits have a standard deviation of 0.08 -
    # 0.19), as an untrained model's do; labels follow the scores loosely.
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (1500, IMAGE_SIZE, IMAGE_SIZE, 3))
    images = images.astype("float32")
    scores = predictor.predict_images(images, batch_size=500)
    signal = (scores - scores.mean(0)) / scores.std(0) + rng.normal(size=scores.shape)
    targets = (signal > 1.5).astype("float32")
    targets[rng.random(targets.shape) < 0.3] = -1
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(100)

    exact = evaluate_recipe.evaluate(predictor, dataset)
    bounded = evaluate_recipe.evaluate(predictor, dataset, num_thresholds=1000)
    assert exact["num_thresholds"] is None and bounded["num_thresholds"] == 1000
    # Measured: partial mAP 54.45 exact; error -0.021 (weighted -0.018),
    # worst class 0.27 (100 bins: -3.5 and 5.9).
    for key in ("partial_map", "partial_map_weighted", "full_map"):
        if exact[key] is not None:
            assert bounded[key] == pytest.approx(exact[key], abs=0.1), key
    assert bounded["full_map"] is None and 20 < exact["partial_map"] < 60
    for key in ("num_images", "classes_evaluated", "annotated_fraction"):
        assert bounded[key] == exact[key]
    for exact_row, bounded_row in zip(exact["per_class"], bounded["per_class"]):
        assert bounded_row["ap"] == pytest.approx(exact_row["ap"], abs=0.5)
        for key in ("positives", "negatives", "frequency"):
            assert bounded_row[key] == exact_row[key]


def test_evaluate_bounded_with_overlay_writes_files(predictor, tmp_path):
    rng = np.random.default_rng(4)
    pattern, encoded, targets, ids = write_dataset(
        tmp_path / "data", rng, partial=False
    )
    partial = targets.copy()
    partial[:, 3:] = -1
    overlay = str(tmp_path / "overlay.csv")
    write_label_overlay(
        overlay,
        [
            (i, np.flatnonzero(r == 1), np.flatnonzero(r == 0))
            for i, r in zip(ids, partial)
        ],
    )
    out = tmp_path / "eval"
    result = evaluate_recipe.evaluate(
        predictor, pattern, label_overlay=overlay, output_dir=out,
        batch_size=5, num_thresholds=50,
    )
    # The streamed batches give what the metric gives on the whole arrays.
    scores = predictor.predict_encoded(encoded)
    expected = {}
    for name, labels, average in (
        ("partial_map", partial, "macro"),
        ("partial_map_weighted", partial, "weighted"),
        ("full_map", targets, "macro"),
    ):
        metric = PartialMeanAveragePrecision(
            5, from_logits=False, average=average, num_thresholds=50
        )
        metric.update_state(labels, scores)
        expected[name] = float(metric.result())
        assert result[name] == pytest.approx(expected[name], abs=1e-4), name
        if name == "partial_map":
            per_class = metric.per_class_ap()

    with open(out / "per_class_ap.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(evaluate_recipe.CSV_COLUMNS) + ["full_ap"]
    for c, row in enumerate(rows):
        assert int(row["positives"]) == int((partial[:, c] == 1).sum())
        assert int(row["negatives"]) == int((partial[:, c] == 0).sum())
        if np.isfinite(per_class[c]):
            assert float(row["ap"]) == pytest.approx(per_class[c], abs=1e-3)
        else:
            assert row["ap"] == "" and c >= 3
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["num_thresholds"] == 50
    assert metrics["partial_map"] == pytest.approx(expected["partial_map"], abs=1e-4)
    from PIL import Image

    for name in ("ap_vs_frequency.png", "pr_curves.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] >= 600
    with pytest.raises(ValueError, match="num_thresholds=1"):
        evaluate_recipe.evaluate(predictor, pattern, num_thresholds=1)


def _complete_dataset(count=12, with_ids=True):
    """Random images with complete labels, as `(images, targets[, ids])`."""
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 255, (count, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    targets = (rng.random((count, len(IDS))) < 0.5).astype("float32")
    targets[0], targets[1] = 1, 0  # every class has a positive and a negative
    parts = (images, targets) + ((np.array([f"img{i}" for i in range(count)]),)
                                 if with_ids else ())
    return tf.data.Dataset.from_tensor_slices(parts).batch(5), images, targets


@pytest.mark.parametrize(
    "rows, message",
    [
        # -1 would silently label the last class by NumPy indexing.
        ([("img0", [0], [-1])], r"'img0'.*\[-1\]"),
        ([("img0", [1], [0]), ("img3", [5], [])], r"'img3'.*\[5\]"),
        ([], "no image"),
    ],
)
def test_evaluate_rejects_invalid_overlays(predictor, tmp_path, rows, message):
    dataset, _, _ = _complete_dataset()
    overlay = str(tmp_path / "overlay.csv")
    write_label_overlay(overlay, rows)
    with pytest.raises(ValueError, match=message) as error:
        evaluate_recipe.evaluate(predictor, dataset, label_overlay=overlay)
    assert overlay in str(error.value)


def test_evaluate_scores_complete_labels_once(predictor, monkeypatch):
    import keras_csl.metrics

    calls = []
    original = keras_csl.metrics.partial_mean_average_precision

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(keras_csl.metrics, "partial_mean_average_precision", counted)
    dataset, images, targets = _complete_dataset(with_ids=False)
    result = evaluate_recipe.evaluate(predictor, dataset)
    assert len(calls) == 1
    expected, _ = original(targets, predictor.predict_images(images))
    assert result["labels_complete"]
    assert result["full_map"] == result["partial_map"] == pytest.approx(expected)


def test_batch_size_checked_before_any_work(predictor, tmp_path):
    message = "Invalid value for argument `batch_size`. Expected a positive int"
    with pytest.raises(ValueError, match=message):
        infer.tag_images(predictor, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match=message):
        evaluate_recipe.evaluate(predictor, str(tmp_path / "*.tfrecord"), batch_size=0)
