"""Tests of keras_csl.inference.evaluate (and its scoring and plots).

The command line is run in tests/recipes/test_serving_recipes_cli.py.
"""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import encode_example
from keras_csl.data import write_classes_csv
from keras_csl.data import write_label_overlay
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.inference import CSV_COLUMNS
from keras_csl.inference import Predictor
from keras_csl.inference import evaluate
from keras_csl.metrics import PartialMeanAveragePrecision
from keras_csl.metrics import partial_mean_average_precision
from keras_csl.models import ModelCard
from keras_csl.models import set_model_card

IMAGE_SIZE = 32
IDS = ["/m/person", "/m/car", "/m/dog", "/m/cat", "/m/tree"]
NAMES = ["Person", "Car", "Dog", "Cat", "Tree"]


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
    model = set_model_card(tiny_model(), ModelCard(
        image_size=IMAGE_SIZE, class_ids=IDS, display_names=NAMES
    ))
    return Predictor.from_keras_model(model)


def _pixels(rng, height, width, channels):
    return rng.integers(0, 256, (height, width, channels), np.uint8)


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
    result = evaluate(
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
    assert list(rows[0]) == list(CSV_COLUMNS)
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

    result = evaluate(predictor, pattern, batch_size=8)
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
    result = evaluate(
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

    result = evaluate(
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

    exact = evaluate(predictor, dataset)
    bounded = evaluate(predictor, dataset, num_thresholds=1000)
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
    result = evaluate(
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
    assert list(rows[0]) == list(CSV_COLUMNS) + ["full_ap"]
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
        evaluate(predictor, pattern, num_thresholds=1)


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
        evaluate(predictor, dataset, label_overlay=overlay)
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
    result = evaluate(predictor, dataset)
    assert len(calls) == 1
    expected, _ = original(targets, predictor.predict_images(images))
    assert result["labels_complete"]
    assert result["full_map"] == result["partial_map"] == pytest.approx(expected)


def test_batch_size_checked_before_any_work(predictor, tmp_path):
    message = "Invalid value for argument `batch_size`. Expected a positive int"
    with pytest.raises(ValueError, match=message):
        evaluate(predictor, str(tmp_path / "*.tfrecord"), batch_size=0)


def test_evaluate_a_keras_file_reads_its_card(tmp_path):
    """Classes and preprocessing from the card; no classes.csv is guessed."""
    model = set_model_card(tiny_model(seed=1), ModelCard(
        image_size=IMAGE_SIZE, class_ids=IDS, display_names=NAMES,
        resize_mode="pad", jpeg_downscale=False,
    ))
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(6)
    folder = tmp_path / "data"
    folder.mkdir()
    # A classes.csv with other names next to the data is not read.
    write_classes_csv(str(folder / "classes.csv"), IDS, list("abcde"))
    encoded, targets = [], []
    with tf.io.TFRecordWriter(str(folder / "val-00000-of-00001.tfrecord")) as writer:
        for i in range(10):
            # 240 x 180: jpeg_downscale would decode these at 1/4 scale.
            data = tf.io.encode_jpeg(_pixels(rng, 240, 180, 3)).numpy()
            row = np.array([i % 2, 1 - i % 2, 1, 0, -1], "float32")
            writer.write(encode_example(
                data, f"img{i}", np.flatnonzero(row == 1), np.flatnonzero(row == 0)
            ))
            encoded.append(data)
            targets.append(row)
    images = preprocess_encoded(
        tf.constant(encoded), IMAGE_SIZE, mode="pad", jpeg_downscale=False
    )
    scores = 1 / (1 + np.exp(-model.predict(images.numpy(), verbose=0)))
    expected, _ = partial_mean_average_precision(np.array(targets), scores)
    # The card's preprocessing matters here: the defaults give another mAP.
    images = preprocess_encoded(tf.constant(encoded), IMAGE_SIZE)
    default_scores = 1 / (1 + np.exp(-model.predict(images.numpy(), verbose=0)))
    default, _ = partial_mean_average_precision(np.array(targets), default_scores)
    assert abs(default - expected) > 1e-3

    result = evaluate(tmp_path / "model.keras", str(folder / "val-*.tfrecord"))
    assert result["resize_mode"] == "pad" and result["jpeg_downscale"] is False
    assert result["resize_method"] == "bilinear"
    assert [r["display_name"] for r in result["per_class"]] == NAMES
    assert result["partial_map"] == pytest.approx(expected, abs=1e-4)

    # An override of the resize method reaches the pipeline.
    images = preprocess_encoded(
        tf.constant(encoded), IMAGE_SIZE, mode="pad", jpeg_downscale=False,
        method="pillow_bicubic",
    )
    scores = 1 / (1 + np.exp(-model.predict(images.numpy(), verbose=0)))
    pillow, _ = partial_mean_average_precision(np.array(targets), scores)
    assert abs(pillow - expected) > 1e-3
    result = evaluate(
        tmp_path / "model.keras", str(folder / "val-*.tfrecord"),
        resize_method="pillow_bicubic",
    )
    assert result["resize_method"] == "pillow_bicubic"
    assert result["partial_map"] == pytest.approx(pillow, abs=1e-4)


def test_evaluate_checks_the_shard_set_unless_told_not_to(predictor, tmp_path):
    rng = np.random.default_rng(5)
    _, encoded, targets, _ = write_dataset(tmp_path / "data", rng)
    half = str(tmp_path / "data" / "val-00000-of-00002.tfrecord")
    with pytest.raises(ValueError, match="matches 1 of the 2 shards"):
        evaluate(predictor, half)
    result = evaluate(predictor, half, check_shards=False)
    # The first shard holds the first half of the images written.
    first = len(targets) // 2
    assert result["num_images"] == first
    expected, _ = partial_mean_average_precision(
        targets[:first], predictor.predict_encoded(encoded[:first])
    )
    assert result["partial_map"] == pytest.approx(expected, abs=1e-4)


def test_settings_given_with_a_predictor_must_be_its_own(predictor, tmp_path):
    """A Predictor's preprocessing is fixed: another setting raises."""
    missing = str(tmp_path / "*.tfrecord")  # raised before reading any data
    with pytest.raises(ValueError, match="made with resize_mode='squash'"):
        evaluate(predictor, missing, resize_mode="pad")
    with pytest.raises(ValueError, match="made with jpeg_downscale=True"):
        evaluate(predictor, missing, jpeg_downscale=False)
    other_ids = tmp_path / "other.csv"
    write_classes_csv(str(other_ids), list("abcde"), NAMES)
    with pytest.raises(ValueError, match="`classes_csv`. Its class ids differ"):
        evaluate(predictor, missing, classes_csv=str(other_ids))

    pattern, _, _, _ = write_dataset(tmp_path / "data", np.random.default_rng(7))
    renamed = tmp_path / "renamed.csv"
    write_classes_csv(str(renamed), IDS, list("vwxyz"))
    plain = evaluate(predictor, pattern)
    same = evaluate(
        predictor, pattern, resize_mode="squash", resize_method="bilinear",
        jpeg_downscale=True, from_logits=True, classes_csv=str(renamed),
    )
    assert same["partial_map"] == plain["partial_map"]
    assert [r["display_name"] for r in same["per_class"]] == list("vwxyz")
    assert predictor.display_names == NAMES  # the predictor is left as it was


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    """A notebook's backend stays: the plots draw without pyplot."""
    import matplotlib

    from keras_csl.inference import plot_ap_vs_frequency
    from keras_csl.inference import plot_pr_curves

    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        rows = [dict(ap=50.0 + c, frequency=0.1 * (c + 1), display_name=f"c{c}")
                for c in range(3)]
        plot_ap_vs_frequency(
            rows, dict(partial_map=51.0, num_images=10), tmp_path / "ap.png"
        )
        precision, recall = np.array([1.0, 0.5]), np.array([0.5, 1.0])
        plot_pr_curves([("c0", precision, recall, 75.0, 2)], tmp_path / "pr.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    assert (tmp_path / "ap.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"
