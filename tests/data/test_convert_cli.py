"""The command line (keras_csl.data.convert), in process."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import convert

HEADER = "ImageID,Source,LabelName,Confidence\n"


def _summary(out):
    """The JSON summary printed after the progress bar."""
    return json.loads(out[out.index("{\n"):])


def _inputs(tmp_path, header=HEADER, rows=None):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for i in range(3):
        pixels = np.full((4, 5, 3), 40 * i, np.uint8)
        (images / f"img{i}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    (tmp_path / "classes.csv").write_text("/m/cat,Cat\n/m/dog,Dog\n")
    rows = rows or [f"img{i},v,/m/{c},{int(i == j)}" for i in range(3)
                    for j, c in enumerate(("cat", "dog"))]
    (tmp_path / "labels.csv").write_text(header + "\n".join(rows) + "\n")
    return [
        "openimages",
        f"--labels_csv={tmp_path / 'labels.csv'}",
        f"--classes_csv={tmp_path / 'classes.csv'}",
        f"--images_dir={images}",
        f"--output_dir={tmp_path / 'out'}",
        "--num_shards=2",
        "--num_workers=1",
    ]


@pytest.mark.parametrize(
    "fmt, own, foreign",
    [
        (
            "openimages",
            [HEADER.strip(), "--trainable_classes_csv", "--max_rejected_fraction"],
            ["--annotations_json", "--scheme"],
        ),
        ("coco", ["--annotations_json", "category_id", "--num_shards"],
         ["--labels_csv", "--trainable_classes_csv", "--scheme"]),
        ("lvis", ["neg_category_ids", "--annotations_json"], ["--labels_csv"]),
        ("csv", ["image,positive,negative", "--classes_csv", "--strict"],
         ["--trainable_classes_csv", "--annotations_json"]),
        ("simulate", ["--scheme", "--overlay_path"], ["--num_shards", "--labels_csv"]),
    ],
)
def test_help_shows_the_format_s_own_columns_and_flags(capsys, fmt, own, foreign):
    with pytest.raises(SystemExit) as exit_info:
        convert.main([fmt, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in own:
        assert word in text, word
    for word in foreign:
        assert word not in text, word


def test_a_good_conversion_prints_its_summary(tmp_path, capsys):
    assert convert.main(_inputs(tmp_path)) == 0
    summary = _summary(capsys.readouterr().out)
    assert summary["images"] == 3 and summary["labels"]["positive"] == 2
    assert summary["inputs"]["label_rows"]["usable"] == 6
    assert "per_class" not in summary


def test_renamed_columns_exit_1_naming_the_expected_and_found_header(tmp_path, capsys):
    argv = _inputs(tmp_path, header="image_id,confidence,label,source\n")
    assert convert.main(argv) == 1
    err = capsys.readouterr().err
    assert "expected the header ImageID,Source,LabelName,Confidence" in err
    assert "Received: 'image_id,confidence,label,source'" in err
    assert not os.path.exists(tmp_path / "out")  # refused before writing


def test_rejected_rows_over_the_threshold_exit_1_unless_allowed(tmp_path, capsys):
    rows = [f"img{i},v,/m/cat,1" for i in range(3)] + ["img0,v,/m/yak,1"]
    argv = _inputs(tmp_path, rows=rows)
    assert convert.main(argv) == 1
    err = capsys.readouterr().err
    assert "1 of the 4 label rows (25.0%) were rejected" in err
    assert "1 x unknown class id (first: " in err
    assert "--max_rejected_fraction=0.25" in err
    assert convert.main(argv + ["--max_rejected_fraction=0.25"]) == 0
    assert _summary(capsys.readouterr().out)["skipped"] == {"unknown class id": 1}


def test_invalid_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["openimages", "--labels_csv=x"])
    assert exit_info.value.code == 2
    assert "required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        convert.main(["parquet"])
    assert exit_info.value.code == 2


def test_an_invalid_option_value_exits_1_naming_it(tmp_path, capsys):
    assert convert.main(_inputs(tmp_path) + ["--jpeg_quality=0"]) == 1
    assert "Received: jpeg_quality=0" in capsys.readouterr().err


def test_simulate_runs_on_a_conversion(tmp_path, capsys):
    assert convert.main(_inputs(tmp_path)) == 0
    capsys.readouterr()
    overlay = tmp_path / "fpc.csv"
    argv = ["simulate", f"--dataset_dir={tmp_path / 'out'}", "--scheme=fpc",
            "--param=1", "--seed=0", f"--overlay_path={overlay}"]
    assert convert.main(argv) == 0
    stats = json.loads(capsys.readouterr().out)
    # 1 positive and 1 negative kept per class (each class has both).
    assert stats["labels_after"] == {"positive": 2, "negative": 2, "unannotated": 2}
    assert stats["param"] == 1 and overlay.exists()
    assert convert.main(argv[:-1]) == 1
    assert "needs --output_dir, --overlay_path or both" in capsys.readouterr().err
