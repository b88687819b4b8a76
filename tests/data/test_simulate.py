"""Tests of the partial-annotation simulation (keras_csl.data.simulate)."""

import array
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import convert_openimages
from keras_csl.data import features
from keras_csl.data import simulate_partial_labels
from keras_csl.data import writer

NUM_IMAGES, NUM_CLASSES = 60, 5


def _dense_labels(seed=0):
    """Labels in {1, 0, -1}; class 3 has only 2 positives, class 4 some -1."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((NUM_IMAGES, NUM_CLASSES)) < [0.5, 0.3, 0.15, 0.0, 0.4]).astype(
        int
    )
    dense[[5, 40], 3] = 1
    dense[rng.random(NUM_IMAGES) < 0.3, 4] = -1
    ids = [f"id{v:04d}" for v in rng.permutation(1000)[:NUM_IMAGES]]
    return dense, ids


def _make_dataset(tmp_path, dense, ids, num_shards=3, name="dataset"):
    image = tmp_path / "image.jpg"
    if not image.exists():
        pixels = np.random.default_rng(0).integers(0, 256, (4, 4, 3), np.uint8)
        image.write_bytes(tf.io.encode_jpeg(pixels).numpy())
    items = [
        writer.Item(
            image_id=image_id,
            path=str(image),
            positive=array.array("i", np.flatnonzero(row == 1).tolist()),
            negative=array.array("i", np.flatnonzero(row == 0).tolist()),
        )
        for image_id, row in zip(ids, dense)
    ]
    out = str(tmp_path / name)
    class_ids = [f"/m/c{c}" for c in range(NUM_CLASSES)]
    writer.write_dataset(
        items,
        class_ids,
        [f"C{c}" for c in range(NUM_CLASSES)],
        out,
        num_shards=num_shards,
        num_workers=1,
        verbose=0,
    )
    return out


def _reference(dense, ids, scheme, param, seed):
    """The documented procedure, from the dense matrix, with NumPy only."""
    order = np.argsort(np.array(ids))
    labels = dense[order]
    result = -np.ones_like(labels)
    for c in range(labels.shape[1]):
        if scheme == "fpc":
            for value in (1, 0):
                rows = np.flatnonzero(labels[:, c] == value)
                rng = np.random.default_rng([seed, c, value])
                chosen = rows[
                    rng.choice(len(rows), min(param, len(rows)), replace=False)
                ]
                result[chosen, c] = value
        else:
            rows = np.flatnonzero(labels[:, c] >= 0)
            keep = rows[np.random.default_rng([seed, c]).random(len(rows)) >= param]
            result[keep, c] = labels[keep, c]
    return {ids[i]: result[r].tolist() for r, i in enumerate(order)}


def _overlay_dense(path):
    dense = {}
    for image_id, (positive, negative) in features.read_label_overlay(path).items():
        row = [-1] * NUM_CLASSES
        for c in positive:
            row[c] = 1
        for c in negative:
            row[c] = 0
        dense[image_id] = row
    return dense


def test_fpc_keeps_exact_counts_per_class(tmp_path):
    dense, ids = _dense_labels()
    dataset = _make_dataset(tmp_path, dense, ids)
    overlay = str(tmp_path / "fpc.csv")
    stats = simulate_partial_labels(dataset, "fpc", 4, seed=7, overlay_path=overlay)

    positives, negatives = (dense == 1).sum(0), (dense == 0).sum(0)
    assert positives[3] == 2 and positives.min() < 4 < positives.max()
    per_class = stats["per_class"]
    assert per_class["positive_before"] == positives.tolist()
    assert per_class["negative_before"] == negatives.tolist()
    assert per_class["positive_after"] == np.minimum(positives, 4).tolist()
    assert per_class["negative_after"] == np.minimum(negatives, 4).tolist()
    assert stats["labels_after"]["positive"] == int(np.minimum(positives, 4).sum())

    kept = _overlay_dense(overlay)
    assert kept == _reference(dense, ids, "fpc", 4, 7)
    for image_id, row in zip(ids, dense):
        for c, value in enumerate(kept[image_id]):
            assert value in (-1, row[c])
    assert os.path.exists(str(tmp_path / "fpc.stats.json"))
    other = simulate_partial_labels(
        dataset, "fpc", 4, seed=8, overlay_path=str(tmp_path / "o.csv")
    )
    assert other["per_class"]["positive_after"] == per_class["positive_after"]
    assert _overlay_dense(str(tmp_path / "o.csv")) != kept


def test_rps_matches_numpy_reference(tmp_path):
    dense, ids = _dense_labels(seed=1)
    dataset = _make_dataset(tmp_path, dense, ids)
    overlay = str(tmp_path / "rps.csv")
    stats = simulate_partial_labels(dataset, "rps", 0.4, seed=3, overlay_path=overlay)
    kept = _overlay_dense(overlay)
    assert kept == _reference(dense, ids, "rps", 0.4, 3)
    annotated = int((dense >= 0).sum())
    after = stats["labels_after"]["positive"] + stats["labels_after"]["negative"]
    assert 0.45 * annotated < after < 0.75 * annotated

    for p, expected in ((0.0, dense), (1.0, -np.ones_like(dense))):
        path = str(tmp_path / f"p{p}.csv")
        simulate_partial_labels(dataset, "rps", p, seed=3, overlay_path=path)
        assert _overlay_dense(path) == {
            i: row.tolist() for i, row in zip(ids, expected)
        }


def test_new_dataset_output_overlay_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    dense, ids = _dense_labels()
    dataset = _make_dataset(tmp_path, dense, ids)
    outputs = []
    for run in range(2):
        out = str(tmp_path / f"fpc{run}")
        stats = simulate_partial_labels(
            dataset,
            "fpc",
            3,
            seed=0,
            output_dir=out,
            overlay_path=os.path.join(out, "overlay.csv"),
            plot_path=str(tmp_path / f"freq{run}.png"),
        )
        outputs.append(out)
    names = sorted(n for n in os.listdir(dataset) if n.endswith(".tfrecord"))
    assert sorted(n for n in os.listdir(outputs[0]) if n.endswith(".tfrecord")) == names
    for name in names:  # deterministic
        assert (
            open(os.path.join(outputs[0], name), "rb").read()
            == open(os.path.join(outputs[1], name), "rb").read()
        )

    overlay = _overlay_dense(os.path.join(outputs[0], "overlay.csv"))
    assert overlay == _reference(dense, ids, "fpc", 3, 0)
    # Read back with protobuf (the documented layout), not the package's reader.
    originals = {}
    for name in names:
        for record in tf.data.TFRecordDataset(os.path.join(dataset, name)):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            image_id = feature["image/id"].bytes_list.value[0].decode()
            originals[image_id] = feature["image/encoded"].bytes_list.value[0]
    read_back = {}
    for name in names:
        for record in tf.data.TFRecordDataset(os.path.join(outputs[0], name)):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            image_id = feature["image/id"].bytes_list.value[0].decode()
            row = [-1] * NUM_CLASSES
            for c in feature["image/class/negative"].int64_list.value:
                row[c] = 0
            for c in feature["image/class/positive"].int64_list.value:
                row[c] = 1
            read_back[image_id] = row
            assert feature["image/encoded"].bytes_list.value[0] == originals[image_id]
    assert read_back == overlay

    assert features.read_classes_csv(os.path.join(outputs[0], "classes.csv")) == (
        features.read_classes_csv(os.path.join(dataset, "classes.csv"))
    )
    summary = json.load(open(os.path.join(outputs[0], "train-summary.json")))
    assert summary["images"] == NUM_IMAGES
    assert summary["per_class"]["positive"] == stats["per_class"]["positive_after"]
    assert summary["simulation"] == {
        "scheme": "fpc",
        "param": 3,
        "seed": 0,
        "source": dataset,
    }
    saved = json.load(open(os.path.join(outputs[0], "train-simulation.json")))
    assert saved["per_class"] == stats["per_class"]
    assert open(tmp_path / "freq0.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_result_does_not_depend_on_sharding(tmp_path):
    dense, ids = _dense_labels()
    paths = []
    for shards in (1, 4):
        dataset = _make_dataset(
            tmp_path, dense, ids, num_shards=shards, name=f"d{shards}"
        )
        paths.append(str(tmp_path / f"rps{shards}.csv"))
        simulate_partial_labels(dataset, "rps", 0.5, seed=1, overlay_path=paths[-1])
    assert open(paths[0]).read() == open(paths[1]).read()


def test_a_new_dataset_keeps_or_refuses_an_existing_classes_file(tmp_path):
    dense, ids = _dense_labels()
    dataset = _make_dataset(tmp_path, dense, ids, num_shards=1)
    out = tmp_path / "out"
    out.mkdir()
    # The same classes (e.g. a rerun): kept, and written without a temp file.
    simulate_partial_labels(dataset, "rps", 0.5, seed=0, output_dir=str(out))
    simulate_partial_labels(dataset, "rps", 0.5, seed=0, output_dir=str(out))
    assert sorted(os.listdir(out)) == [
        "classes.csv",
        "train-00000-of-00001.tfrecord",
        "train-simulation.json",
        "train-summary.json",
    ]
    # Other classes: refused, like the converters, before any shard is written.
    other = tmp_path / "other"
    other.mkdir()
    features.write_classes_csv(str(other / "classes.csv"), ["/m/x"], ["X"])
    overlay = str(tmp_path / "o.csv")
    with pytest.raises(ValueError, match="already exists with other classes"):
        simulate_partial_labels(
            dataset, "rps", 0.5, seed=0, output_dir=str(other), overlay_path=overlay
        )
    assert sorted(os.listdir(other)) == ["classes.csv"]
    assert not os.path.exists(overlay)


def test_invalid_arguments(tmp_path):
    dense, ids = _dense_labels()
    dataset = _make_dataset(tmp_path, dense, ids, num_shards=1)
    overlay = str(tmp_path / "o.csv")
    for kwargs, message in (
        (dict(scheme="abc", param=1), "`scheme`"),
        (dict(scheme="fpc", param=2.5), "non-negative integer"),
        (dict(scheme="rps", param=1.5), r"in \[0, 1\]"),
        (dict(scheme="rps", param=0.5, seed=-1), "`seed`"),
        (dict(scheme="rps", param=0.5, overlay_path=None), "output_dir"),
        (dict(scheme="rps", param=0.5, output_dir=dataset), "must differ"),
    ):
        kwargs = dict(dict(seed=0, overlay_path=overlay), **kwargs)
        with pytest.raises(ValueError, match=message):
            simulate_partial_labels(dataset, **kwargs)
    with pytest.raises(ValueError, match="complete set of shards"):
        simulate_partial_labels(dataset, "fpc", 1, 0, overlay_path=overlay, split="val")


def test_fpc_on_shared_coco_sample(tmp_path, shared_data):
    sample = shared_data / "coco-sample"
    dataset = str(tmp_path / "coco")
    convert_openimages(
        str(sample / "image-labels.csv"),
        str(sample / "class-descriptions.csv"),
        str(sample / "images"),
        dataset,
        num_shards=2,
        num_workers=1,
        verbose=0,
        validate_images=False,
    )
    stats = simulate_partial_labels(
        dataset, "fpc", 3, seed=0, overlay_path=str(tmp_path / "o.csv")
    )
    before = np.array(stats["per_class"]["positive_before"])
    assert before.sum() == 147 and stats["num_images"] == 53
    assert stats["per_class"]["positive_after"] == np.minimum(before, 3).tolist()
    negatives = np.array(stats["per_class"]["negative_before"])
    assert stats["per_class"]["negative_after"] == np.minimum(negatives, 3).tolist()


@pytest.mark.parametrize("scheme, param", [("fpc", 7), ("rps", 0.4)])
def test_simulate_targets_matches_the_documented_procedure(scheme, param):
    from keras_csl.data import simulate_targets

    dense, _ = _dense_labels(seed=2)
    ids = [f"id{i:04d}" for i in range(NUM_IMAGES)]  # Rows already in id order.
    expected = _reference(dense, ids, scheme, param, seed=5)
    result = simulate_targets(dense, scheme, param, seed=5)
    np.testing.assert_array_equal(result, np.array([expected[i] for i in ids]))
    if scheme == "fpc":
        kept = (result == 1).sum(0)
        np.testing.assert_array_equal(kept, np.minimum((dense == 1).sum(0), 7))
    with pytest.raises(ValueError, match="2D"):
        simulate_targets(dense[0], scheme, param)
