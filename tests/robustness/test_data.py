"""Bad input to the data package: each case, and what must happen.

Every case names the input (what is wrong with it) and the expected outcome:
a clear error (the message names what was expected and what was found), or
a reported skip (counted in the summary, listed in the report, one WARNING
line per kind). The cases run on 4 tiny images in an OpenImages-style CSV
(`convert_openimages`) and on the shards it writes (`make_dataset`); the
docs table "What happens with bad input" follows this file.
"""

import dataclasses
import json
import logging
import os
import shutil
from typing import Callable
from typing import Optional

import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import convert_coco
from keras_csl.data import convert_openimages
from keras_csl.data import features
from keras_csl.data import make_dataset
from keras_csl.data import read_labels
from keras_csl.data import shards
from keras_csl.data import writer

HEADER = "ImageID,Source,LabelName,Confidence"
CLASSES = "/m/cat,Cat\n/m/dog,Dog\n/m/car,Car\n"
IMAGES = ("img0", "img1", "img2", "img3")


def _labels():
    """Rows `img<i>,v,<class>,<0|1>`: 4 images x 3 classes, all annotated."""
    return [
        f"{image},v,{mid},{int((i + c) % 2 == 0)}"
        for i, image in enumerate(IMAGES)
        for c, mid in enumerate(("/m/cat", "/m/dog", "/m/car"))
    ]


@dataclasses.dataclass
class Inputs:
    """A tiny OpenImages-style input that a case may spoil."""

    folder: str
    header: str = HEADER
    rows: list = dataclasses.field(default_factory=_labels)
    classes: str = CLASSES

    @property
    def images_dir(self):
        return os.path.join(self.folder, "images")

    def image(self, name):
        return os.path.join(self.images_dir, name + ".jpg")

    def write(self):
        os.makedirs(self.images_dir, exist_ok=True)
        labels = os.path.join(self.folder, "labels.csv")
        with open(labels, "w") as f:
            f.write("\n".join(([self.header] if self.header else []) + self.rows))
        classes = os.path.join(self.folder, "classes.csv")
        with open(classes, "w") as f:
            f.write(self.classes)
        return labels, classes


def _inputs(tmp_path):
    inputs = Inputs(str(tmp_path))
    os.makedirs(inputs.images_dir)
    for i, name in enumerate(IMAGES):
        pixels = np.full((4, 5, 3), 50 * i, np.uint8)
        with open(inputs.image(name), "wb") as f:
            f.write(tf.io.encode_jpeg(pixels).numpy())
    return inputs


def _convert(inputs, output_dir, **options):
    labels, classes = inputs.write()
    options = dict(dict(num_shards=2, num_workers=1, verbose=0), **options)
    return convert_openimages(labels, classes, inputs.images_dir, output_dir, **options)


def _truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


@dataclasses.dataclass
class Case:
    """One bad input to the converter and what must happen."""

    name: str
    spoil: Callable  # (Inputs) -> None
    error: Optional[str] = None  # regex of the ValueError message
    skipped: Optional[dict] = None  # the summary's "skipped" counts
    options: dict = dataclasses.field(default_factory=dict)


def _reorder(columns, header=None):
    """Spoils: rows (and header) with their columns in another order."""

    def spoil(inputs):
        inputs.header = header or ""
        inputs.rows = [
            ",".join(row.split(",")[c] for c in columns) for row in inputs.rows
        ]

    return spoil


def _set(**fields):
    return lambda inputs: [setattr(inputs, k, v) for k, v in fields.items()]


CONVERSION_CASES = [
    Case(
        "missing image",
        lambda i: os.remove(i.image("img1")),
        skipped={"missing image": 1},
    ),
    Case(
        "corrupt (truncated) image",
        lambda i: _truncate(i.image("img1")),
        skipped={"undecodable image": 1},
    ),
    Case(
        "empty image file",
        lambda i: open(i.image("img1"), "wb").close(),
        skipped={"empty image file": 1},
    ),
    Case(
        "conflicting duplicate label row (fraction allowed)",
        lambda i: i.rows.append("img0,v,/m/cat,0"),  # img0 cat is 1 above
        skipped={"conflicting duplicate": 1},
        options={"max_rejected_fraction": 0.2},  # both rows: 2 of 13
    ),
    Case(
        "identical duplicate label row",
        lambda i: i.rows.append(i.rows[0]),
        skipped={},
    ),
    Case(
        "columns reordered, with their header",
        _reorder([3, 2, 0, 1], header="Confidence,LabelName,ImageID,Source"),
        skipped={},
    ),
    Case(
        "columns renamed and reordered",
        _set(header="image_id,source,label,confidence"),
        error=r"labels\.csv, line 1: expected the header "
        r"ImageID,Source,LabelName,Confidence .* Received: "
        r"'image_id,source,label,confidence'",
    ),
    Case(
        "headerless rows, columns reordered",
        _reorder([0, 3, 2, 1]),
        error=r"line 1: expected the header .* Received: 'img0,1,/m/cat,v'",
    ),
    Case(
        "class file of another dataset: every row rejected",
        _set(classes="/m/yak,Yak\n"),
        error=r"No usable label row: 12 of the 12 label rows were rejected:\n"
        r"  12 x unknown class id \(first: .*labels\.csv, line 2: .*\)\n"
        r"Expected label CSVs with the header .*\nFound: .*labels\.csv starts "
        r"with 'ImageID,Source,LabelName,Confidence'",
    ),
    Case(
        "4 of 12 rows of a class missing from the class file",
        _set(classes="/m/cat,Cat\n/m/dog,Dog\n"),
        error=r"4 of the 12 label rows \(33\.3%\) were rejected, more than "
        r"max_rejected_fraction=0\.01 allows:\n  4 x unknown class id .*\n"
        r"(.|\n)*accept the loss with max_rejected_fraction=0\.34",
    ),
    Case(
        "the same, with the fraction allowed",
        _set(classes="/m/cat,Cat\n/m/dog,Dog\n"),
        skipped={"unknown class id": 4},
        options={"max_rejected_fraction": 0.34},
    ),
    Case(
        "invalid Confidence values",
        lambda i: setattr(i, "rows", [r[:-1] + "yes" for r in i.rows]),
        error=r"No usable label row: 12 of the 12 .*\n  12 x invalid Confidence",
    ),
    Case(
        "label file with only a header",
        _set(rows=[]),
        error=r"No usable label row: the input holds no label row\.\n  1 x empty "
        r"file",
    ),
    Case(
        "wrong images_dir: every image missing",
        lambda i: [os.remove(i.image(name)) for name in IMAGES],
        error=r"No image could be stored: all 4 images were skipped:\n  4 x "
        r"missing image .*\nCheck `images_dir`",
    ),
    Case(
        "missing image under strict",
        lambda i: os.remove(i.image("img2")),
        error=r"labels\.csv, line 8: missing image\. Received: .*img2\.jpg",
        options={"strict": True},
    ),
    Case(
        "unknown class under strict",
        lambda i: i.rows.append("img0,v,/m/yak,1"),
        error=r"labels\.csv, line 14: unknown class id\. Received: '/m/yak'",
        options={"strict": True},
    ),
]


@pytest.mark.parametrize("case", CONVERSION_CASES, ids=lambda case: case.name)
def test_conversion(case, tmp_path, caplog):
    inputs = _inputs(tmp_path)
    case.spoil(inputs)
    out = str(tmp_path / "out")
    if case.error:
        with pytest.raises(ValueError, match=case.error):
            _convert(inputs, out, **case.options)
        return
    with caplog.at_level(logging.WARNING):
        summary = _convert(inputs, out, **case.options)
    assert summary["skipped"] == case.skipped
    with open(summary["report"]) as f:
        report = f.read().splitlines()
    assert len(report) - 1 == sum(case.skipped.values())
    for kind, count in case.skipped.items():
        assert f"Skipped: {count} x {kind} (first: " in caplog.text
    # What was stored reads back, and the set passes the readers' check.
    pattern = os.path.join(out, "train-*.tfrecord")
    ds = make_dataset(pattern, summary["num_classes"], 8, 8, training=False)
    assert sum(int(images.shape[0]) for images, _ in ds) == summary["images"]


def test_reordered_columns_give_the_same_dataset(tmp_path):
    plain, reordered = _inputs(tmp_path / "a"), _inputs(tmp_path / "b")
    _reorder([3, 2, 0, 1], header="Confidence,LabelName,ImageID,Source")(reordered)
    outs = [str(tmp_path / name) for name in ("out_a", "out_b")]
    for inputs, out in zip((plain, reordered), outs):
        _convert(inputs, out)
    for name in ("train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"):
        assert open(os.path.join(outs[0], name), "rb").read() == open(
            os.path.join(outs[1], name), "rb"
        ).read()


def test_a_coco_file_without_annotations_is_refused(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [],
                "categories": [{"id": 1, "name": "cat"}],
            }
        )
    )
    # Every class of every image would be a verified negative: refused.
    with pytest.raises(ValueError, match=r"No usable label row: the input holds "
                       r"no label row\.\nExpected a COCO instances JSON"):
        convert_coco(str(path), str(tmp_path), str(tmp_path / "out"), num_shards=1)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_shards": 0}, r"`num_shards`.*Received: num_shards=0"),
        ({"num_shards": 2, "jpeg_quality": 101}, r"Received: jpeg_quality=101"),
        (
            {"num_shards": 2, "max_rejected_fraction": 2},
            r"`max_rejected_fraction`. Expected a number in \[0, 1\]",
        ),
        ({"split": "val"}, r"needs `num_shards`"),
        ({"num_shard": 2}, r"unexpected keyword arguments \['num_shard'\]"),
    ],
)
def test_invalid_writer_options(tmp_path, options, message):
    labels, classes = Inputs(str(tmp_path)).write()
    with pytest.raises((ValueError, TypeError), match=message):
        convert_openimages(
            labels, classes, str(tmp_path), str(tmp_path / "o"), **options
        )


def test_num_shards_passed_positionally_as_before(tmp_path):
    labels, classes = Inputs(str(tmp_path)).write()
    with pytest.raises(TypeError, match=r"Received: options=4"):
        convert_openimages(labels, classes, str(tmp_path), str(tmp_path / "o"), 4)


# ---------------------------------------------------------------- reading


@pytest.fixture
def converted(tmp_path):
    """A clean conversion in 4 shards: `(inputs, output_dir, pattern)`."""
    inputs = _inputs(tmp_path / "in")
    out = str(tmp_path / "out")
    _convert(inputs, out, num_shards=4)
    return inputs, out, os.path.join(out, "train-*.tfrecord")


def _read(pattern, num_classes=3, **kwargs):
    return make_dataset(pattern, num_classes, 8, 4, training=False, **kwargs)


def test_half_finished_shard_set(converted):
    _, out, pattern = converted
    os.remove(os.path.join(out, "train-00002-of-00004.tfrecord"))
    with pytest.raises(ValueError, match=r"1 of the 4 shards of split 'train' are "
                       r"missing \(train-00002-of-00004\.tfrecord\)"):
        _read(pattern)
    _read(pattern, check_shards=False)  # the documented opt-out


def test_interrupted_conversion_then_a_byte_identical_resume(converted, tmp_path):
    inputs, out, pattern = converted
    original = {
        name: open(os.path.join(out, name), "rb").read()
        for name in os.listdir(out)
        if name.endswith(".tfrecord")
    }
    # What a rerun killed while rewriting shard 1 leaves: every shard name
    # (the first run's), shard 1's resume marker gone, a temp file, and the
    # in-progress marker.
    name = "train-00001-of-00004.tfrecord"
    os.remove(os.path.join(out, ".train-progress", name + ".json"))
    with open(os.path.join(out, name + ".tmp"), "wb") as f:
        f.write(b"partial")
    shards.mark_incomplete(out, "train", "a killed test")
    with pytest.raises(ValueError, match=r"has not finished .*\.train-incomplete"):
        _read(pattern)
    summary = _convert(inputs, out, num_shards=4)
    assert summary["this_run"]["shards_resumed"] == 3
    assert {n: open(os.path.join(out, n), "rb").read() for n in original} == original
    assert not os.path.exists(os.path.join(out, ".train-incomplete"))
    _read(pattern)


def test_stray_shards_of_another_conversion(converted):
    _, out, pattern = converted
    shutil.copy(
        os.path.join(out, "train-00000-of-00004.tfrecord"),
        os.path.join(out, "train-00000-of-00002.tfrecord"),
    )
    with pytest.raises(ValueError, match=r"mixes shards of 2 conversions"):
        _read(pattern)
    # The writer refuses to add a set of another size, too.
    with pytest.raises(ValueError, match=r"shards of another conversion"):
        _convert(converted[0], out, num_shards=2)


def test_a_stray_copy_with_another_name(converted):
    _, out, pattern = converted
    shutil.copy(
        os.path.join(out, "train-00000-of-00004.tfrecord"),
        os.path.join(out, "train-copy.tfrecord"),
    )
    with pytest.raises(ValueError, match=r"train-copy\.tfrecord\. To read hand-made"):
        _read(pattern)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_class_count_mismatch(converted, num_classes):
    _, _, pattern = converted
    with pytest.raises(ValueError, match=rf"Expected 3, the number of classes in "
                       rf".*classes\.csv\. Received: num_classes={num_classes}"):
        _read(pattern, num_classes)
    with pytest.raises(ValueError, match="Expected 3"):
        read_labels(pattern, num_classes)


def test_a_class_index_outside_num_classes_in_hand_made_records(tmp_path):
    path = str(tmp_path / "mine.tfrecord")
    jpeg = tf.io.encode_jpeg(np.zeros((4, 4, 3), np.uint8)).numpy()
    with tf.io.TFRecordWriter(path) as f:
        f.write(features.encode_example(jpeg, "fine", [0], [1]))
        f.write(features.encode_example(jpeg, "bad-one", [5], []))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside \[0, "
                       r"num_classes=2\) in the images with ids\] \[bad-one\]"):
        list(_read(path, 2, check_shards=False))


def test_a_label_overlay_with_an_index_out_of_range(converted, tmp_path):
    _, _, pattern = converted
    overlay = str(tmp_path / "overlay.csv")
    features.write_label_overlay(overlay, [("img0", [3], [])])
    with pytest.raises(ValueError, match=r"image 'img0' has positive class "
                       r"indices \[3\] outside \[0, 3\)"):
        _read(pattern, label_overlay=overlay)


def test_the_report_is_the_complete_list(tmp_path):
    inputs = _inputs(tmp_path)
    os.remove(inputs.image("img3"))
    inputs.rows.append("img0,v,/m/cat,x")
    summary = _convert(inputs, str(tmp_path / "out"), max_rejected_fraction=0.1)
    with open(summary["report"]) as f:
        rows = [line.split(",")[1:] for line in f.read().splitlines()[1:]]
    assert [row[0] for row in rows] == ["14", "11"]  # file order, then images
    assert rows[0][-1] == "invalid Confidence (not 0 or 1)"
    assert rows[1][-1] == "missing image"
    assert summary["inputs"]["label_rows"] == {
        "read": 13,
        "rejected": 1,
        "dropped": 0,
        "usable": 12,
    }
    assert writer.REPORT_HEADER == ("file", "line", "value", "reason")
