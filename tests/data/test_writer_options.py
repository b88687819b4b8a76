"""WriterOptions: the one settings object of the converters, and the CLI flags."""

import dataclasses

import numpy as np
import pytest

from keras_csl.data import WriterOptions
from keras_csl.data import convert
from keras_csl.data import convert_coco
from keras_csl.data import convert_csv
from keras_csl.data import convert_lvis
from keras_csl.data import convert_openimages
from keras_csl.data import writer


def test_defaults_and_normalised_values():
    options = WriterOptions(num_shards=np.int64(4), jpeg_quality=np.int32(80))
    assert options.to_dict() == {
        "num_shards": 4,
        "split": "train",
        "resize_short_side": None,
        "jpeg_quality": 80,
        "validate_images": True,
        "strict": False,
        "max_rejected_fraction": 0.01,
        "num_workers": None,
        "verbose": 1,
    }
    assert type(options.num_shards) is int and type(options.jpeg_quality) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.num_shards = 2
    assert options.replace(split="val").split == "val" and options.split == "train"


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_shards", 0),
        ("num_shards", True),
        ("num_shards", 2.0),
        ("split", ""),
        ("split", "a/b"),
        ("resize_short_side", -1),
        ("jpeg_quality", 0),
        ("jpeg_quality", 101),
        ("validate_images", "yes"),
        ("strict", 1),
        ("max_rejected_fraction", 1.5),
        ("max_rejected_fraction", float("nan")),
        ("max_rejected_fraction", True),
        ("num_workers", 0),
        ("verbose", 3),
    ],
)
def test_each_invalid_value_names_its_field(field, value):
    kwargs = {"num_shards": 2, field: value}
    with pytest.raises(ValueError, match=rf"`{field}`.*Received: {field}="):
        WriterOptions(**kwargs)
    # A replace() is checked again.
    with pytest.raises(ValueError, match=rf"`{field}`"):
        WriterOptions(num_shards=2).replace(**{field: value})


def test_resolve_takes_an_object_keywords_or_both():
    base = WriterOptions(num_shards=3, strict=True)
    assert WriterOptions.resolve(base) is base
    assert WriterOptions.resolve(base, split="val") == base.replace(split="val")
    assert WriterOptions.resolve(None, num_shards=5) == WriterOptions(num_shards=5)
    with pytest.raises(TypeError, match=r"convert_x\(\) needs `num_shards`"):
        WriterOptions.resolve(None, "convert_x", split="val")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['shards'\]"):
        WriterOptions.resolve(None, "convert_x", shards=3)
    # The former positional num_shards: a clear message, not a silent default.
    with pytest.raises(TypeError, match=r"Expected a keras_csl.data.WriterOptions or "
                       r"None .* Received: options=3"):
        WriterOptions.resolve(3, "convert_x")


@pytest.mark.parametrize(
    "converter", [convert_openimages, convert_coco, convert_lvis, convert_csv]
)
def test_every_converter_takes_the_options_object(converter):
    import inspect

    parameters = inspect.signature(converter).parameters
    assert parameters["options"].default is None
    assert parameters["writer_options"].kind is inspect.Parameter.VAR_KEYWORD
    assert "num_shards" not in parameters  # defined once, in WriterOptions


def test_write_dataset_takes_them_too(tmp_path):
    with pytest.raises(TypeError, match="write_dataset\\(\\) needs `num_shards`"):
        writer.write_dataset([], ["a"], ["A"], str(tmp_path))


def test_the_cli_has_one_flag_per_field_but_verbose():
    parser = convert.make_parser()
    args = parser.parse_args(
        [
            "csv",
            "--labels_csv=l.csv",
            "--output_dir=o",
            "--num_shards=8",
            "--novalidate_images",
            "--strict",
            "--max_rejected_fraction=0.2",
            "--resize_short_side=256",
            "--jpeg_quality=85",
            "--num_workers=2",
            "--split=val",
        ]
    )
    fields = {f.name for f in dataclasses.fields(WriterOptions)} - {"verbose"}
    assert {name: getattr(args, name) for name in fields} == {
        "num_shards": 8,
        "split": "val",
        "resize_short_side": 256,
        "jpeg_quality": 85,
        "validate_images": False,
        "strict": True,
        "max_rejected_fraction": 0.2,
        "num_workers": 2,
    }
    defaults = parser.parse_args(["coco", "--annotations_json=a", "--images_dir=i",
                                  "--output_dir=o", "--num_shards=1"])
    assert {name: getattr(defaults, name) for name in fields} == {
        name: value
        for name, value in WriterOptions(num_shards=1).to_dict().items()
        if name in fields
    }
