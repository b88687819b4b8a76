"""Tests of the converters (keras_csl.data.converters) and the shard writer."""

import array
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import convert_coco
from keras_csl.data import convert_csv
from keras_csl.data import convert_lvis
from keras_csl.data import convert_openimages
from keras_csl.data import features
from keras_csl.data import writer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIDS = ["/m/cat", "/m/dog", "/m/car"]
CLASSES = "/m/cat,Cat\n/m/dog,Dog\n/m/car,Cat\n"  # display names need not be unique


def _image_bytes(seed, shape=(6, 9), fmt="jpeg"):
    pixels = np.random.default_rng(seed).integers(0, 256, shape + (3,), np.uint8)
    if fmt == "png":
        return tf.io.encode_png(pixels).numpy()
    return tf.io.encode_jpeg(pixels, quality=95).numpy()


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as f:
        f.write(data)
    return str(path)


def _read_dataset(output_dir, split="train"):
    """`{image_id: (targets, bytes, format, not_exhaustive)}`.

    Read with protobuf directly (the documented layout), not with the
    package's decoder, so that a bug there cannot hide one here.
    """
    class_ids, _ = features.read_classes_csv(os.path.join(output_dir, "classes.csv"))
    files = sorted(tf.io.gfile.glob(os.path.join(output_dir, f"{split}-*.tfrecord")))
    records = {}
    for serialized in tf.data.TFRecordDataset(files):
        feature = tf.train.Example.FromString(serialized.numpy()).features.feature
        targets = [-1.0] * len(class_ids)
        for c in feature["image/class/negative"].int64_list.value:
            targets[c] = 0.0
        for c in feature["image/class/positive"].int64_list.value:
            targets[c] = 1.0
        image_id = feature["image/id"].bytes_list.value[0].decode()
        assert image_id not in records
        records[image_id] = (
            targets,
            feature["image/encoded"].bytes_list.value[0],
            feature["image/format"].bytes_list.value[0].decode(),
            list(feature["image/class/not_exhaustive"].int64_list.value),
        )
    return records


def _read_report(output_dir, split="train"):
    with open(os.path.join(output_dir, f"{split}-report.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(writer.REPORT_HEADER)
    return [tuple(row) for row in rows[1:]]


def _shard_bytes(output_dir):
    names = sorted(n for n in os.listdir(output_dir) if n.endswith(".tfrecord"))
    return {n: open(os.path.join(output_dir, n), "rb").read() for n in names}


def _openimages_inputs(tmp_path, num_images=6):
    """Images img0..img5 (img2 a PNG) and their labels in two CSVs."""
    images = tmp_path / "images"
    for i in range(num_images):
        _write(images / f"img{i}.jpg", _image_bytes(i, fmt="png" if i == 2 else "jpeg"))
    header = "ImageID,Source,LabelName,Confidence\n"
    train = header + "".join(
        f"img{i},verification,{MIDS[c]},{int((i + c) % 3 == 0)}\n"
        for i in range(4)
        for c in range(3)
        if (i, c) != (1, 2)
    )
    validation = header + "img4,crowdsource,/m/dog,1\nimg5,verification,/m/car,0\n"
    labels = [
        _write(tmp_path / "train.csv", train),
        _write(tmp_path / "val.csv", validation),
    ]
    expected = {f"img{i}": [-1.0] * 3 for i in range(num_images)}
    for i in range(4):
        for c in range(3):
            if (i, c) != (1, 2):
                expected[f"img{i}"][c] = float((i + c) % 3 == 0)
    expected["img4"][1] = 1.0
    expected["img5"][2] = 0.0
    return labels, _write(tmp_path / "classes.csv", CLASSES), str(images), expected


def test_openimages_round_trip(tmp_path):
    labels, classes, images, expected = _openimages_inputs(tmp_path)
    out = str(tmp_path / "out")
    summary = convert_openimages(
        labels, classes, images, out, num_shards=2, num_workers=1, verbose=0
    )

    records = _read_dataset(out)
    assert {k: v[0] for k, v in records.items()} == expected
    for image_id, (_, data, fmt, _) in records.items():
        assert data == open(os.path.join(images, image_id + ".jpg"), "rb").read()
        assert fmt == ("png" if image_id == "img2" else "jpeg")
    assert features.read_classes_csv(os.path.join(out, "classes.csv")) == (
        MIDS,
        ["Cat", "Dog", "Cat"],
    )
    # Round-robin over the sorted ids: img0, img2, img4 | img1, img3, img5.
    shard0 = [
        tf.train.Example.FromString(r.numpy())
        .features.feature[features.ID_KEY]
        .bytes_list.value[0]
        for r in tf.data.TFRecordDataset(
            os.path.join(out, "train-00000-of-00002.tfrecord")
        )
    ]
    assert shard0 == [b"img0", b"img2", b"img4"]

    dense = np.array(list(expected.values()))
    assert summary["images"] == 6 and summary["images_skipped"] == 0
    assert summary["labels"] == {
        "positive": int((dense == 1).sum()),
        "negative": int((dense == 0).sum()),
        "unannotated": int((dense == -1).sum()),
        "not_exhaustive": 0,
    }
    assert summary["per_class"]["positive"] == (dense == 1).sum(0).tolist()
    assert summary["per_class"]["negative"] == (dense == 0).sum(0).tolist()
    assert summary["inputs"]["rows"] == 13
    assert summary["skipped"] == {}
    assert summary["this_run"]["images_written"] == 6
    assert summary["bytes_out"] == sum(len(b) for b in _shard_bytes(out).values())
    assert json.load(open(os.path.join(out, "train-summary.json")))["images"] == 6
    assert _read_report(out) == []


def test_openimages_bad_inputs_are_reported_and_skipped(tmp_path):
    images = tmp_path / "images"
    for i in range(7):
        _write(images / f"img{i}.jpg", _image_bytes(i))
    good = open(images / "img3.jpg", "rb").read()
    _write(images / "img3.jpg", good[: len(good) // 2])  # corrupt, mid-folder
    _write(images / "img5.jpg", b"")  # empty file; img6.jpg is never written
    os.remove(images / "img6.jpg")
    labels = _write(
        tmp_path / "labels.csv",
        "ImageID,Source,LabelName,Confidence\n"
        "img0,v,/m/cat,1\n"  # line 2
        "img0,v,/m/unknown,1\n"  # 3: unknown MID
        "img1,v,/m/dog,0\n"  # 4
        "img1,v,/m/dog,1\n"  # 5: conflicting duplicate
        "img1,v,/m/car,1\n"  # 6
        "img1,v,/m/car,1\n"  # 7: identical duplicate, harmless
        "img2,v,/m/cat,maybe\n"  # 8: invalid confidence
        "img2,v\n"  # 9: malformed
        "img2,v,/m/car,0.0\n"  # 10
        "img3,v,/m/cat,1\n"  # 11: corrupt image
        "img4,v,/m/dog,1\n"  # 12
        "img5,v,/m/dog,1\n"  # 13: empty image
        "img6,v,/m/dog,1\n",  # 14: missing image
    )
    empty = _write(tmp_path / "empty.csv", "ImageID,Source,LabelName,Confidence\n")
    classes = _write(tmp_path / "classes.csv", CLASSES)
    out = str(tmp_path / "out")
    summary = convert_openimages(
        [labels, empty],
        classes,
        str(images),
        out,
        num_shards=3,
        num_workers=1,
        verbose=0,
        max_rejected_fraction=0.4,  # 5 of the 13 label rows are rejected
    )

    records = _read_dataset(out)
    assert {k: v[0] for k, v in records.items()} == {
        "img0": [1.0, -1.0, -1.0],
        "img1": [-1.0, -1.0, 1.0],  # the conflicting dog label is dropped
        "img2": [-1.0, -1.0, 0.0],
        "img4": [-1.0, 1.0, -1.0],
    }
    report = _read_report(out)
    assert report[:5] == [
        (labels, "3", "/m/unknown", "unknown class id"),
        (labels, "8", "img2,v,/m/cat,maybe", "invalid Confidence (not 0 or 1)"),
        (labels, "9", "img2,v", "malformed row"),
        (empty, "1", "", "empty file"),
        (
            labels,
            "5",
            "img1,/m/dog,1",
            f"conflicting duplicate (value 0 at {labels}, line 4; left un-annotated)",
        ),
    ]
    assert sorted((r[1], r[2], r[3].split(" (")[0]) for r in report[5:]) == [
        ("11", str(images / "img3.jpg"), "undecodable image"),
        ("13", str(images / "img5.jpg"), "empty image file"),
        ("14", str(images / "img6.jpg"), "missing image"),
    ]
    assert summary["skipped"] == {
        "unknown class id": 1,
        "invalid Confidence": 1,
        "malformed row": 1,
        "empty file": 1,
        "conflicting duplicate": 1,
        "undecodable image": 1,
        "empty image file": 1,
        "missing image": 1,
    }
    assert summary["images"] == 4 and summary["images_skipped"] == 3
    assert summary["inputs"]["duplicate_rows"] == 1
    # Rejected: unknown MID, bad Confidence, malformed, both conflicting rows.
    assert summary["inputs"]["label_rows"] == {
        "read": 13,
        "rejected": 5,
        "dropped": 0,
        "usable": 8,
    }


def test_strict_makes_bad_input_fatal(tmp_path):
    labels, classes, images, _ = _openimages_inputs(tmp_path)
    bad = _write(
        tmp_path / "bad.csv",
        "ImageID,Source,LabelName,Confidence\nimg0,v,/m/cat,1\nimg1,v,/m/zebra,1\n",
    )
    with pytest.raises(
        ValueError, match=r"bad\.csv, line 3: unknown class id\. Received: '/m/zebra'"
    ):
        convert_openimages(
            bad,
            classes,
            images,
            str(tmp_path / "a"),
            num_shards=1,
            strict=True,
            verbose=0,
        )
    _write(os.path.join(images, "img1.jpg"), b"\xff\xd8\xffnot a jpeg")
    with pytest.raises(
        ValueError, match=r"train\.csv, line 5: undecodable image .*img1\.jpg"
    ):
        convert_openimages(
            labels,
            classes,
            images,
            str(tmp_path / "b"),
            num_shards=2,
            strict=True,
            num_workers=1,
            verbose=0,
        )


def test_trainable_classes_and_class_file_header(tmp_path):
    labels, _, images, expected = _openimages_inputs(tmp_path)
    classes = _write(tmp_path / "c.csv", "LabelName,DisplayName\n" + CLASSES)
    trainable = _write(tmp_path / "trainable.txt", "/m/car\n/m/nope\n\n/m/cat\n")
    out = str(tmp_path / "out")
    summary = convert_openimages(
        labels,
        classes,
        images,
        out,
        num_shards=1,
        trainable_classes_csv=trainable,
        verbose=0,
    )
    assert features.read_classes_csv(os.path.join(out, "classes.csv")) == (
        ["/m/car", "/m/cat"],
        ["Cat", "Cat"],
    )
    records = _read_dataset(out)
    assert {k: v[0] for k, v in records.items()} == {
        k: [v[2], v[0]] for k, v in expected.items()
    }
    assert summary["inputs"]["rows_not_trainable"] == 5  # the /m/dog rows
    assert _read_report(out) == [(trainable, "2", "/m/nope", "unknown class id")]


def test_coco(tmp_path):
    for name, seed in (("a.jpg", 0), ("b.jpg", 1), ("c.jpg", 2)):
        _write(tmp_path / "img" / name, _image_bytes(seed))
    data = {
        "images": [
            {"id": 7, "file_name": "a.jpg"},
            {"id": 3, "file_name": "b.jpg"},
            {"id": 5, "file_name": "c.jpg"},  # no annotation: all negative
        ],
        "categories": [
            {"id": 9, "name": "kite"},
            {"id": 1, "name": "person"},
            {"id": 4, "name": "car"},
        ],
        "annotations": [
            {"image_id": 7, "category_id": 1},
            {"image_id": 7, "category_id": 1},
            {"image_id": 7, "category_id": 9, "iscrowd": 1},
            {"image_id": 3, "category_id": 4},
            {"image_id": 3, "category_id": 2},  # unknown category
            {"image_id": 99, "category_id": 1},  # unknown image
        ],
    }
    annotations = _write(tmp_path / "instances.json", json.dumps(data))
    out = str(tmp_path / "out")
    summary = convert_coco(
        annotations,
        str(tmp_path / "img"),
        out,
        num_shards=2,
        num_workers=1,
        verbose=0,
        max_rejected_fraction=0.5,  # 2 of 6 annotations
    )
    assert features.read_classes_csv(os.path.join(out, "classes.csv")) == (
        ["1", "4", "9"],
        ["person", "car", "kite"],
    )
    assert {k: v[0] for k, v in _read_dataset(out).items()} == {
        "a": [1.0, 0.0, 1.0],
        "b": [0.0, 1.0, 0.0],
        "c": [0.0, 0.0, 0.0],
    }
    assert _read_report(out) == [
        (annotations, "annotations[4]", "2", "unknown class id"),
        (annotations, "annotations[5]", "99", "unknown image id"),
    ]
    assert summary["format"] == "coco" and summary["labels"]["unannotated"] == 0


def test_lvis(tmp_path):
    _write(tmp_path / "coco" / "train2017" / "000000000001.jpg", _image_bytes(0))
    _write(
        tmp_path / "coco" / "val2017" / "000000000002.png", _image_bytes(1, fmt="png")
    )
    url = "http://images.cocodataset.org/{}/{}"
    data = {
        "images": [
            {
                "id": 1,
                "coco_url": url.format("train2017", "000000000001.jpg"),
                "neg_category_ids": [3, 2],
                "not_exhaustive_category_ids": [1],
            },
            {
                "id": 2,
                "coco_url": url.format("val2017", "000000000002.png"),
                "neg_category_ids": [1, 77],  # 1 is annotated too: conflict; 77 unknown
                "not_exhaustive_category_ids": [],
            },
        ],
        "categories": [{"id": i, "name": f"c{i}"} for i in (1, 2, 3, 4)],
        "annotations": [
            {"image_id": 1, "category_id": 1},
            {"image_id": 2, "category_id": 1},
            {"image_id": 2, "category_id": 4},
        ],
    }
    annotations = _write(tmp_path / "lvis.json", json.dumps(data))
    out = str(tmp_path / "out")
    summary = convert_lvis(
        annotations,
        str(tmp_path / "coco"),
        out,
        num_shards=1,
        verbose=0,
        max_rejected_fraction=0.25,  # 2 of 8: 3 annotations, 5 listed ids
    )
    records = _read_dataset(out)
    assert {k: v[0] for k, v in records.items()} == {
        "000000000001": [1.0, 0.0, 0.0, -1.0],
        "000000000002": [-1.0, -1.0, -1.0, 1.0],
    }
    assert records["000000000001"][3] == [0] and records["000000000002"][3] == []
    assert records["000000000002"][2] == "png"
    assert _read_report(out) == [
        (annotations, "images[1]", "neg_category_ids: 77", "unknown class id"),
        (
            annotations,
            "images[1]",
            "000000000002,1",
            "conflicting labels (annotated and in neg_category_ids; left un-annotated)",
        ),
    ]
    assert summary["labels"]["not_exhaustive"] == 1
    assert summary["per_class"]["not_exhaustive"] == [1, 0, 0, 0]


def test_generic_csv(tmp_path):
    _write(tmp_path / "data" / "pets" / "1.jpg", _image_bytes(0))
    _write(tmp_path / "data" / "pets" / "2.png", _image_bytes(1, fmt="png"))
    labels = _write(
        tmp_path / "data" / "labels.csv",
        "image,positive,negative\n"
        "pets/1.jpg,10 2,7\n"
        "pets/2.png,7\n"  # no negative column
        "pets/1.jpg,,2\n"  # 2 positive above: conflict
        "pets/1.jpg,x,\n",  # x is a class id too
    )
    out = str(tmp_path / "out")
    # Paths relative to the CSV; 2 of the 6 class ids conflict.
    convert_csv(labels, None, out, num_shards=1, verbose=0, max_rejected_fraction=0.4)
    class_ids, _ = features.read_classes_csv(os.path.join(out, "classes.csv"))
    assert class_ids == ["10", "2", "7", "x"]  # not all integers: string order
    assert {k: v[0] for k, v in _read_dataset(out).items()} == {
        "pets/1": [1.0, -1.0, 0.0, 1.0],
        "pets/2": [-1.0, -1.0, 1.0, -1.0],
    }
    assert [r[3].split(" (")[0] for r in _read_report(out)] == ["conflicting duplicate"]

    classes = _write(
        tmp_path / "classes.csv", "class_id,display_name\n7,seven\n2,two\n"
    )
    out2 = str(tmp_path / "out2")
    convert_csv(
        labels,
        str(tmp_path / "data"),
        out2,
        classes_csv=classes,
        num_shards=1,
        verbose=0,
        max_rejected_fraction=1.0,  # 4 of 6
    )
    assert {k: v[0] for k, v in _read_dataset(out2).items()} == {
        "pets/1": [0.0, -1.0],
        "pets/2": [1.0, -1.0],
    }
    assert [(r[1], r[2], r[3]) for r in _read_report(out2)][:3] == [
        ("2", "10", "unknown class id"),
        ("5", "x", "unknown class id"),
    ] + [
        (
            "4",
            "pets/1,2,0",
            f"conflicting duplicate (value 1 at {labels}, line 2; left un-annotated)",
        )
    ]


def test_resize_short_side(tmp_path):
    _write(tmp_path / "img" / "big.jpg", _image_bytes(0, shape=(16, 24)))
    _write(tmp_path / "img" / "tall.jpg", _image_bytes(1, shape=(30, 10), fmt="png"))
    _write(tmp_path / "img" / "small.jpg", _image_bytes(2, shape=(6, 6)))
    labels = _write(
        tmp_path / "l.csv", "image,positive\nbig.jpg,a\ntall.jpg,a\nsmall.jpg,a\n"
    )
    outs = [str(tmp_path / f"out{i}") for i in range(2)]
    for out in outs:
        summary = convert_csv(
            labels,
            str(tmp_path / "img"),
            out,
            num_shards=1,
            resize_short_side=8,
            verbose=0,
        )
    assert _shard_bytes(outs[0]) == _shard_bytes(outs[1])
    records = _read_dataset(outs[0])
    shapes = {k: tuple(tf.io.decode_image(v[1]).shape[:2]) for k, v in records.items()}
    assert shapes == {"big": (8, 12), "tall": (24, 8), "small": (6, 6)}
    assert records["tall"][2] == "jpeg"
    assert records["small"][1] == open(tmp_path / "img" / "small.jpg", "rb").read()
    assert summary["images_resized"] == 2


def test_deterministic_across_runs_and_worker_counts(tmp_path):
    labels, classes, images, _ = _openimages_inputs(tmp_path)
    outs = [str(tmp_path / f"out{i}") for i in range(3)]
    for out, workers in zip(outs, (1, 1, 2)):
        summary = convert_openimages(
            labels, classes, images, out, num_shards=3, num_workers=workers, verbose=0
        )
    assert summary["this_run"]["num_workers"] == 2
    shards = [_shard_bytes(out) for out in outs]
    assert len(shards[0]) == 3
    assert shards[0] == shards[1] == shards[2]


def test_resume_skips_complete_shards(tmp_path):
    labels, classes, images, _ = _openimages_inputs(tmp_path)
    out = str(tmp_path / "out")
    convert_openimages(
        labels,
        classes,
        images,
        out,
        num_shards=3,
        num_workers=1,
        verbose=0,
    )
    original = _shard_bytes(out)
    names = sorted(original)
    paths = [os.path.join(out, name) for name in names]
    mtimes = [os.stat(p).st_mtime_ns for p in paths]
    # An interrupted run: shard 2 half written (marker not yet written, a
    # partial temp file left), shard 1 never renamed into place.
    with open(paths[2], "r+b") as f:
        f.truncate(100)
    os.remove(os.path.join(out, ".train-progress", names[2] + ".json"))
    _write(paths[2] + ".tmp", b"partial")
    os.remove(paths[1])

    summary = convert_openimages(
        labels, classes, images, out, num_shards=3, num_workers=1, verbose=0
    )
    assert summary["this_run"]["shards_resumed"] == 1
    assert summary["this_run"]["shards_written"] == 2
    assert summary["images"] == 6
    assert os.stat(paths[0]).st_mtime_ns == mtimes[0]
    assert _shard_bytes(out) == original
    assert not os.path.exists(paths[2] + ".tmp")

    # A changed label rewrites only the shard of that image (img0: shard 0).
    with open(labels[0]) as f:
        text = f.read().replace(
            "img0,verification,/m/cat,1", "img0,verification,/m/cat,0"
        )
    _write(labels[0], text)
    summary = convert_openimages(
        labels, classes, images, out, num_shards=3, num_workers=1, verbose=0
    )
    assert summary["this_run"]["shards_written"] == 1
    assert _shard_bytes(out)[names[1]] == original[names[1]]
    assert _shard_bytes(out)[names[0]] != original[names[0]]

    with pytest.raises(ValueError, match="shards of another conversion"):
        convert_openimages(
            labels,
            classes,
            images,
            out,
            num_shards=2,
            num_workers=1,
            verbose=0,
        )


def test_resume_after_killed_conversion(tmp_path):
    labels, classes, images, _ = _openimages_inputs(tmp_path)
    out, clean = str(tmp_path / "out"), str(tmp_path / "clean")
    # The CLI, killed (os._exit) while reading the 4th image of 6 (shard 1 of 3).
    argv = ["convert", "openimages", "--labels_csv", labels[0]]
    argv += [
        "--labels_csv",
        labels[1],
        "--classes_csv",
        classes,
        "--images_dir",
        images,
    ]
    argv += ["--output_dir", out, "--num_shards=3", "--num_workers=1"]
    script = (
        "import os, sys\n"
        "from keras_csl.data import convert\n"
        "from keras_csl.data.writer import images\n"
        "load, calls = images.load_image, []\n"
        "def dying(*args, **kwargs):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 4:\n"
        "        os._exit(3)\n"
        "    return load(*args, **kwargs)\n"
        "images.load_image = dying\n"
        f"sys.argv = {argv!r}\n"
        "convert.run()\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 3, result.stderr.decode()[-2000:]
    assert sorted(n for n in os.listdir(out) if n.startswith("train-0")) == [
        "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord.tmp",
    ]
    summary = convert_openimages(
        labels, classes, images, out, num_shards=3, num_workers=1, verbose=0
    )
    assert summary["this_run"]["shards_resumed"] == 1
    convert_openimages(
        labels,
        classes,
        images,
        clean,
        num_shards=3,
        num_workers=1,
        verbose=0,
    )
    assert _shard_bytes(out) == _shard_bytes(clean)


def test_resume_retries_images_that_were_missing(tmp_path):
    labels, classes, images, _ = _openimages_inputs(tmp_path)
    out, clean = str(tmp_path / "out"), str(tmp_path / "clean")
    missing = os.path.join(images, "img1.jpg")  # shard 1 of 3: img1, img4
    data = open(missing, "rb").read()
    os.remove(missing)
    summary = convert_openimages(labels, classes, images, out, num_shards=3, verbose=0)
    assert summary["images"] == 5 and summary["skipped"] == {"missing image": 1}

    _write(missing, data)
    summary = convert_openimages(labels, classes, images, out, num_shards=3, verbose=0)
    assert summary["this_run"]["shards_written"] == 1
    assert summary["this_run"]["shards_resumed"] == 2
    assert summary["images"] == 6 and summary["skipped"] == {}
    assert _read_report(out) == []
    convert_openimages(labels, classes, images, clean, num_shards=3, verbose=0)
    assert _shard_bytes(out) == _shard_bytes(clean)


def test_resume_rewrites_the_shard_of_a_changed_image_file(tmp_path):
    labels, classes, images, _ = _openimages_inputs(tmp_path)
    out = str(tmp_path / "out")
    convert_openimages(labels, classes, images, out, num_shards=3, verbose=0)
    # img4 is in shard 1 of 3. A new picture at the same path:
    new_picture = _image_bytes(99, shape=(7, 5))
    _write(os.path.join(images, "img4.jpg"), new_picture)
    summary = convert_openimages(labels, classes, images, out, num_shards=3, verbose=0)
    assert summary["this_run"]["shards_written"] == 1
    assert _read_dataset(out)["img4"][1] == new_picture
    # The same bytes with a new modification time count as a change too.
    path = os.path.join(images, "img0.jpg")  # shard 0
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    summary = convert_openimages(labels, classes, images, out, num_shards=3, verbose=0)
    assert summary["this_run"]["shards_written"] == 1
    summary = convert_openimages(labels, classes, images, out, num_shards=3, verbose=0)
    assert summary["this_run"]["shards_written"] == 0


def test_a_strict_rerun_raises_on_an_image_an_earlier_run_skipped(tmp_path):
    labels, classes, images, _ = _openimages_inputs(tmp_path)
    out = str(tmp_path / "out")
    _write(os.path.join(images, "img1.jpg"), b"\xff\xd8\xffnot a jpeg")
    summary = convert_openimages(labels, classes, images, out, num_shards=3, verbose=0)
    assert summary["skipped"] == {"undecodable image": 1}
    with pytest.raises(
        ValueError, match=r"train\.csv, line 5: undecodable image .*img1\.jpg"
    ):
        convert_openimages(
            labels,
            classes,
            images,
            out,
            num_shards=3,
            strict=True,
            verbose=0,
        )
    # Without `strict`, the rerun resumes every shard and reports it again.
    summary = convert_openimages(labels, classes, images, out, num_shards=3, verbose=0)
    assert summary["this_run"]["shards_resumed"] == 3
    assert summary["skipped"] == {"undecodable image": 1}
    assert [row[1] for row in _read_report(out)] == ["5"]


def test_duplicate_image_ids_name_both_sources(tmp_path):
    def item(source_file, source_line):
        return writer.Item(
            "cat1",
            "/img/cat1.jpg",
            array.array("i", [0]),
            array.array("i"),
            source_file=source_file,
            source_line=source_line,
        )

    with pytest.raises(
        ValueError,
        match=r"Duplicate image id 'cat1' in `items`: a\.csv, line 2 and b\.csv, "
        r"line 7\.",
    ):
        writer.write_dataset(
            [item("a.csv", 2), item("b.csv", 7)],
            ["cat"],
            ["Cat"],
            str(tmp_path),
            num_shards=1,
        )


def test_invalid_arguments_and_empty_files(tmp_path):
    labels, classes, images, _ = _openimages_inputs(tmp_path)
    with pytest.raises(ValueError, match=r"`num_shards`.*Received: num_shards=0"):
        convert_openimages(
            labels,
            classes,
            images,
            str(tmp_path / "o"),
            num_shards=0,
            verbose=0,
        )
    with pytest.raises(ValueError, match=r"Received: num_shards=True"):
        convert_openimages(
            labels,
            classes,
            images,
            str(tmp_path / "o"),
            num_shards=True,
        )
    # NumPy integers pass, and the summary stays JSON.
    summary = convert_openimages(
        labels, classes, images, str(tmp_path / "np"), num_shards=np.int64(2), verbose=0
    )
    assert summary["num_shards"] == 2 and type(summary["num_shards"]) is int
    empty = _write(tmp_path / "empty.csv", "")
    with pytest.raises(ValueError, match="no class found"):
        convert_openimages(
            labels,
            empty,
            images,
            str(tmp_path / "o"),
            num_shards=1,
            verbose=0,
        )
    with pytest.raises(ValueError, match="empty file"):
        convert_coco(empty, images, str(tmp_path / "o"), num_shards=1, verbose=0)
    with pytest.raises(ValueError, match="No usable label row: the input holds no"):
        convert_openimages(
            empty, classes, images, str(tmp_path / "o"), num_shards=1, verbose=0
        )


def test_shared_coco_sample(tmp_path, shared_data):
    sample = shared_data / "coco-sample"
    out = str(tmp_path / "out")
    summary = convert_openimages(
        str(sample / "image-labels.csv"),
        str(sample / "class-descriptions.csv"),
        str(sample / "images"),
        out,
        num_shards=4,
        num_workers=1,
        verbose=0,
    )
    class_ids, _ = features.read_classes_csv(os.path.join(out, "classes.csv"))
    expected = {}
    with open(sample / "image-labels.csv") as f:
        for row in csv.DictReader(f):
            targets = expected.setdefault(row["ImageID"], [-1.0] * len(class_ids))
            targets[class_ids.index(row["LabelName"])] = float(row["Confidence"])
    records = _read_dataset(out)
    assert {k: v[0] for k, v in records.items()} == expected
    assert len(records) == 53 and summary["labels"]["unannotated"] == 0
    # A consistent input rejects no label row (docs/OPENIMAGES.md's claim).
    assert summary["inputs"]["label_rows"] == {
        "read": 4240,
        "rejected": 0,
        "dropped": 0,
        "usable": 4240,
    }
    assert summary["skipped"] == {}
    for image_id, (_, data, fmt, _) in records.items():
        original = open(sample / "images" / f"{image_id}.jpg", "rb").read()
        assert data == original and fmt == "jpeg"
    # Re-encoded: a short side of 64, pixels close to the resized original.
    resized_out = str(tmp_path / "resized")
    convert_openimages(
        str(sample / "image-labels.csv"),
        str(sample / "class-descriptions.csv"),
        str(sample / "images"),
        resized_out,
        num_shards=1,
        num_workers=1,
        verbose=0,
        resize_short_side=64,
    )
    image_id, (_, data, _, _) = next(iter(_read_dataset(resized_out).items()))
    stored = tf.io.decode_jpeg(data)
    original = tf.io.decode_jpeg(
        open(sample / "images" / f"{image_id}.jpg", "rb").read()
    )
    assert min(stored.shape[:2]) == 64
    reference = tf.image.resize(original, stored.shape[:2], antialias=True)
    assert float(tf.reduce_mean(tf.abs(tf.cast(stored, tf.float32) - reference))) < 4.0
