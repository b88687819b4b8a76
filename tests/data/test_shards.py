"""The shard-set check (keras_csl.data.shards) and the readers that run it."""

import json
import logging

import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import features
from keras_csl.data import make_dataset
from keras_csl.data import read_labels
from keras_csl.data import shards

NUM_CLASSES = 4
# (image id, positives, negatives) of the records, dealt round-robin.
RECORDS = [
    ("a", [0], [1, 2]),
    ("b", [], [3]),
    ("c", [1, 3], []),
    ("d", [2], [0]),
    ("e", [], []),
]


def _dataset(folder, num_shards=3, split="train", classes=NUM_CLASSES, summary=True):
    """A converted folder written by hand: shards, classes.csv, summary."""
    folder.mkdir(parents=True, exist_ok=True)
    features.write_classes_csv(
        str(folder / "classes.csv"),
        [f"c{i}" for i in range(classes)],
        [f"C{i}" for i in range(classes)],
    )
    jpeg = tf.io.encode_jpeg(np.full((4, 4, 3), 200, np.uint8)).numpy()
    for index in range(num_shards):
        path = folder / shards.shard_name(split, index, num_shards)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for image_id, positive, negative in RECORDS[index::num_shards]:
                record = features.encode_example(jpeg, image_id, positive, negative)
                writer.write(record)
    if summary:
        (folder / f"{split}-summary.json").write_text(
            json.dumps({"num_shards": num_shards, "num_classes": classes})
        )
    return str(folder / f"{split}-*.tfrecord")


def _files(pattern):
    return sorted(tf.io.gfile.glob(pattern))


def test_shard_names_round_trip():
    assert shards.shard_name("val", 3, 8) == "val-00003-of-00008.tfrecord"
    assert shards.parse_shard_name("/d/val-00003-of-00008.tfrecord") == ("val", 3, 8)
    assert shards.parse_shard_name("my-split-123456-of-200000.tfrecord") == (
        "my-split",
        123456,
        200000,
    )
    for name in ("train.tfrecord", "train-3-of-8.tfrecord", "train-00000-of-00001"):
        assert shards.parse_shard_name(name) is None


def test_a_complete_set_passes_and_reads(tmp_path):
    pattern = _dataset(tmp_path / "d")
    shards.check_shard_set(_files(pattern), NUM_CLASSES)
    ds = make_dataset(pattern, NUM_CLASSES, 8, 5, training=False, return_ids=True)
    _, _, ids = next(iter(ds))
    assert sorted(i.decode() for i in ids.numpy()) == ["a", "b", "c", "d", "e"]


def test_a_missing_shard_is_a_half_finished_conversion(tmp_path):
    pattern = _dataset(tmp_path / "d", num_shards=8)
    for index in (3, 5):
        (tmp_path / "d" / shards.shard_name("train", index, 8)).unlink()
    with pytest.raises(ValueError) as error:
        make_dataset(pattern, NUM_CLASSES, 8, 2, training=False)
    message = str(error.value)
    assert "2 of the 8 shards of split 'train' are missing" in message
    assert "train-00003-of-00008.tfrecord, train-00005-of-00008.tfrecord" in message
    assert "check_shards=False" in message
    # The opt-out reads what is there: 5 records dealt to 8 shards, 3 and 5 gone.
    ds = make_dataset(
        pattern, NUM_CLASSES, 8, 8, training=False, return_ids=True, check_shards=False
    )
    assert sorted(i.decode() for _, _, ids in ds for i in ids.numpy()) == [
        "a",
        "b",
        "c",
        "e",
    ]


def test_stray_shards_of_another_set_are_refused(tmp_path):
    pattern = _dataset(tmp_path / "d", num_shards=2)
    (tmp_path / "d" / "train-00000-of-00004.tfrecord").write_bytes(b"")
    with pytest.raises(ValueError, match=r"mixes shards of 2 conversions of split "
                       r"'train': -of-00002 \(2 files\), -of-00004 \(1 files\)"):
        shards.check_shard_set(_files(pattern), NUM_CLASSES)


def test_a_pattern_that_matches_part_of_a_set_is_refused(tmp_path):
    _dataset(tmp_path / "d", num_shards=3)
    part = str(tmp_path / "d" / "train-00001-of-00003.tfrecord")
    with pytest.raises(ValueError, match=r"matches 1 of the 3 shards of split 'train'"):
        make_dataset(part, NUM_CLASSES, 8, 2, training=False)
    make_dataset(part, NUM_CLASSES, 8, 2, training=False, check_shards=False)


def test_hand_named_files_need_the_opt_out(tmp_path):
    path = tmp_path / "my-data.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(features.encode_example(b"", "x", [1], [0]))
    with pytest.raises(ValueError, match=r"my-data\.tfrecord\. To read hand-made"):
        read_labels(str(path), 2)
    (batch,) = list(read_labels(str(path), 2, check_shards=False))
    assert batch["targets"].numpy().tolist() == [[0.0, 1.0]]


def test_an_unfinished_conversion_is_refused(tmp_path):
    pattern = _dataset(tmp_path / "d")
    shards.mark_incomplete(str(tmp_path / "d"), "train", "a test")
    with pytest.raises(ValueError, match=r"conversion of split 'train' .* has not "
                       r"finished \(.*\.train-incomplete exists\)"):
        make_dataset(pattern, NUM_CLASSES, 8, 2, training=False)
    # Another split of the same folder is not concerned.
    val = _dataset(tmp_path / "d", num_shards=1, split="val")
    make_dataset(val, NUM_CLASSES, 8, 2, training=False)
    shards.mark_complete(str(tmp_path / "d"), "train")
    make_dataset(pattern, NUM_CLASSES, 8, 2, training=False)


@pytest.mark.parametrize("num_classes", [NUM_CLASSES + 1, NUM_CLASSES - 1])
def test_num_classes_must_match_classes_csv(tmp_path, num_classes):
    pattern = _dataset(tmp_path / "d", summary=False)
    with pytest.raises(
        ValueError,
        match=rf"`num_classes`. Expected 4, the number of classes in .*classes\.csv\. "
        rf"Received: num_classes={num_classes}",
    ):
        make_dataset(pattern, num_classes, 8, 2, training=False)


def test_the_summary_must_agree_with_the_files(tmp_path):
    pattern = _dataset(tmp_path / "d")
    summary = tmp_path / "d" / "train-summary.json"
    summary.write_text(json.dumps({"num_shards": 3, "num_classes": 5}))
    (tmp_path / "d" / "classes.csv").unlink()
    with pytest.raises(ValueError, match=r"Expected 5, the number of classes in .*"
                       r"train-summary\.json\. Received: num_classes=4"):
        make_dataset(pattern, NUM_CLASSES, 8, 2, training=False)
    summary.write_text(json.dumps({"num_shards": 4}))
    with pytest.raises(ValueError, match=r"says the split has 4 shards, but the "
                       r"files are a set of 3"):
        make_dataset(pattern, NUM_CLASSES, 8, 2, training=False)


def test_without_classes_csv_the_class_count_is_unchecked_and_said(tmp_path, caplog):
    pattern = _dataset(tmp_path / "d", summary=False)
    (tmp_path / "d" / "classes.csv").unlink()
    with caplog.at_level(logging.WARNING, logger=shards.__name__):
        make_dataset(pattern, NUM_CLASSES + 3, 8, 2, training=False)
    assert "No classes.csv next to the shards" in caplog.text
    assert "num_classes=7 is not checked" in caplog.text


def test_read_labels_matches_the_records_and_checks_indices(tmp_path):
    pattern = _dataset(tmp_path / "d", num_shards=2)
    batches = list(read_labels(pattern, NUM_CLASSES, batch_size=2))
    # File order (shard 0: a c e, shard 1: b d), batched across files.
    assert [b["id"].numpy().tolist() for b in batches] == [
        [b"a", b"c"],
        [b"e", b"b"],
        [b"d"],
    ]
    got = {
        image_id.decode(): (pos, neg, row.tolist())
        for b in batches
        for image_id, pos, neg, row in zip(
            b["id"].numpy(),
            b["positive"].to_list(),
            b["negative"].to_list(),
            b["targets"].numpy(),
        )
    }
    assert got["c"] == ([1, 3], [], [-1.0, 1.0, -1.0, 1.0])
    assert got["a"] == ([0], [1, 2], [1.0, 0.0, 0.0, -1.0])
    assert got["e"] == ([], [], [-1.0] * 4)
    assert got["b"] == ([], [3], [-1.0, -1.0, -1.0, 0.0])
    without = next(iter(read_labels(pattern, NUM_CLASSES, with_targets=False)))
    assert "targets" not in without
    # Index 3 is outside [0, 3): the error names the images that have one.
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=3") as error:
        list(read_labels(pattern, 3, check_shards=False))
    assert "ids] [c b]" in error.value.message


def test_split_files_lists_one_complete_set(tmp_path):
    _dataset(tmp_path / "d", num_shards=2)
    assert [f.split("/")[-1] for f in shards.split_files(tmp_path / "d")] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    with pytest.raises(ValueError, match="no shard of split 'val'"):
        shards.split_files(tmp_path / "d", "val")
