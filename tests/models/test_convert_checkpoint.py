"""The checkpoint converter: file formats, key checks, classes, command line.

Parity of the converted numbers with timm is in test_tresnet_parity.py.
"""

import json
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

from keras_csl.models import read_model_card
from keras_csl.models import tresnet_checkpoint
from keras_csl.models.convert_checkpoint import _classes
from keras_csl.models.convert_checkpoint import _display_names
from keras_csl.models.convert_checkpoint import _read_class_descriptions
from keras_csl.models.convert_checkpoint import convert_checkpoint
from keras_csl.models.tresnet import TResNetSpec
from keras_csl.models.tresnet_checkpoint import infer_head
from keras_csl.models.tresnet_checkpoint import read_checkpoint
from keras_csl.models.tresnet_checkpoint import read_safetensors
from keras_csl.models.tresnet_checkpoint import resolve_spec

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "tresnet"
TINY_TIMM = FIXTURES / "tiny_timm" / "checkpoint.safetensors"


def write_safetensors(path, entries, metadata=None):
    """A minimal writer, from the format description (tests only)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, raw) in entries.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_safetensors_reader_hand_made_file(tmp_path):
    path = tmp_path / "a.safetensors"
    # bfloat16 1.5 is 0x3FC0 and -2.0 is 0xC000 (the top half of float32).
    write_safetensors(path, {
        "w": ("F32", (2, 2), np.array([1, 2, 3, 4], "<f4").tobytes()),
        "h": ("F16", (3,), np.array([0.5, -1, 2], "<f2").tobytes()),
        "b": ("BF16", (2,), struct.pack("<HH", 0x3FC0, 0xC000)),
        "n": ("I64", (), struct.pack("<q", 7)),
    }, metadata={"format": "pt"})
    tensors, metadata = read_safetensors(path)
    np.testing.assert_array_equal(tensors["w"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(tensors["h"], [0.5, -1, 2])
    assert tensors["b"].dtype == np.float32 and tensors["b"].tolist() == [1.5, -2.0]
    assert tensors["n"].shape == () and int(tensors["n"]) == 7
    assert metadata == {"format": "pt"}


def test_safetensors_reader_agrees_with_the_safetensors_package(tmp_path):
    numpy_api = pytest.importorskip("safetensors.numpy")
    arrays = {
        "x": np.random.default_rng(0).normal(size=(3, 4, 2)).astype("float32"),
        "y": np.arange(5, dtype="int64"),
        "z": np.array([1.25, -3.5], "float16"),
    }
    numpy_api.save_file(arrays, str(tmp_path / "p.safetensors"))
    tensors, _ = read_safetensors(tmp_path / "p.safetensors")
    assert sorted(tensors) == sorted(arrays)
    for name, value in arrays.items():
        assert tensors[name].dtype == value.dtype
        np.testing.assert_array_equal(tensors[name], value)


def test_safetensors_reader_rejects_malformed_files(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="shorter than 8 bytes"):
        read_safetensors(short)
    bad = tmp_path / "bad.safetensors"
    write_safetensors(bad, {"w": ("F32", (4,), b"\x00" * 8)})  # 2 values for 4
    with pytest.raises(ValueError, match="tensor 'w' of shape \\(4,\\) has 2 values"):
        read_safetensors(bad)
    odd = tmp_path / "odd.safetensors"
    write_safetensors(odd, {"w": ("C64", (1,), b"\x00" * 8)})
    with pytest.raises(ValueError, match="Unsupported dtype 'C64'"):
        read_safetensors(odd)


def test_pth_without_torch_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"keras-csl\[torch\]"):
        read_checkpoint(path)


def test_pth_with_other_objects_needs_allow_pickle(tmp_path):
    torch = pytest.importorskip("torch")
    import argparse

    path = tmp_path / "pickled.pth"
    torch.save({"model": {"a": torch.zeros(1)}, "args": argparse.Namespace(x=1)}, path)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_checkpoint(path)
    state, extras = read_checkpoint(path, allow_pickle=True)
    assert list(state) == ["a"] and extras["ignored"] == ["args"]


def test_missing_checkpoint_file():
    with pytest.raises(ValueError, match="argument `checkpoint`.*no such file"):
        read_checkpoint("/no/such/model.pth")


@pytest.fixture
def tiny_state():
    state, _ = read_checkpoint(TINY_TIMM)
    return state


def test_architecture_inferred_from_the_keys(tiny_state):
    assert tresnet_checkpoint.detect_layout(tiny_state) == "timm"
    spec, name = resolve_spec(tiny_state, "timm", "custom")
    assert spec == TResNetSpec((1, 1, 1, 1), 4, v2=False)
    assert name == "tresnet(layers=1-1-1-1, stem_width=4, v2=False)"
    assert infer_head(tiny_state) == (5, None)


def test_unknown_architecture_is_an_error_unless_custom(tiny_state):
    with pytest.raises(ValueError, match="Unknown TResNet architecture.*architecture='custom'"):
        resolve_spec(tiny_state, "timm")
    with pytest.raises(ValueError, match="the checkpoint is tresnet\\(layers=1-1-1-1.*tresnet_l is"):
        resolve_spec(tiny_state, "timm", "tresnet_l")
    with pytest.raises(ValueError, match="argument `architecture`.*'resnet50'"):
        resolve_spec(tiny_state, "timm", "resnet50")


def test_a_state_dict_of_another_network_is_rejected():
    resnet = {"conv1.weight": np.zeros((64, 3, 7, 7)), "fc.weight": np.zeros((10, 2048))}
    with pytest.raises(ValueError, match="Unknown checkpoint layout.*'conv1.weight'"):
        tresnet_checkpoint.detect_layout(resnet)


def _convert_state(state, tmp_path, monkeypatch):
    monkeypatch.setattr(tresnet_checkpoint, "read_checkpoint", lambda *a: (state, {}))
    return convert_checkpoint("edited.safetensors", tmp_path / "x.keras",
                              architecture="custom", image_size=40)


def test_unknown_key_is_named(tiny_state, tmp_path, monkeypatch):
    tiny_state["body.layer1.0.se.extra.weight"] = np.zeros(3, "float32")
    with pytest.raises(ValueError, match="1 unknown keys \\['body.layer1.0.se.extra.weight'\\]"):
        _convert_state(tiny_state, tmp_path, monkeypatch)


def test_missing_key_is_named(tiny_state, tmp_path, monkeypatch):
    del tiny_state["body.layer3.0.conv2.bn.running_var"]
    with pytest.raises(ValueError, match="1 missing keys \\['body.layer3.0.conv2.bn.running_var'\\]"):
        _convert_state(tiny_state, tmp_path, monkeypatch)


def test_shape_mismatch_is_named(tiny_state, tmp_path, monkeypatch):
    tiny_state["body.layer2.0.se.fc1.bias"] = np.zeros(65, "float32")
    with pytest.raises(ValueError, match="Shape mismatch for checkpoint key 'body.layer2.0.se.fc1.bias'"):
        _convert_state(tiny_state, tmp_path, monkeypatch)


def test_both_or_no_head_is_an_error(tiny_state):
    both = dict(tiny_state, **{"head.fc.FC.weight": np.zeros((5, 3))})
    with pytest.raises(ValueError, match="exactly one classifier head.*both"):
        infer_head(both)
    none = {k: v for k, v in tiny_state.items() if not k.startswith("head.")}
    with pytest.raises(ValueError, match="neither"):
        infer_head(none)


def test_non_finite_weights_are_refused(tiny_state, tmp_path, monkeypatch):
    tiny_state["body.conv1.bn.running_var"] = np.full(4, np.nan, "float32")
    with pytest.raises(ValueError, match="'body.conv1.bn.running_var' holds NaN"):
        _convert_state(tiny_state, tmp_path, monkeypatch)


def test_dataparallel_module_prefix_is_stripped(tiny_state, tmp_path):
    # torch's DataParallel saves every key as "module.<key>".
    codes = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}
    path = tmp_path / "dataparallel.safetensors"
    write_safetensors(path, {
        f"module.{key}": (codes[value.dtype], value.shape, value.tobytes())
        for key, value in tiny_state.items()
    })
    state, _ = read_checkpoint(path)
    assert sorted(state) == sorted(tiny_state)
    conversion = convert_checkpoint(path, tmp_path / "x.keras", architecture="custom",
                                    image_size=40)
    assert (conversion.layout, conversion.num_classes, conversion.counters_skipped) == (
        "timm", 5, 14)


def test_idx_to_class_order_and_checks():
    ids, names, source = _classes(3, None, {2: "/m/c", "0": "/m/a", 1: "/m/b"}, "ck")
    assert (ids, names, source) == (["/m/a", "/m/b", "/m/c"], None, "idx_to_class")
    with pytest.raises(ValueError, match="expected indices 0..3"):
        _classes(4, None, {0: "a", 1: "b", 2: "c"}, "ck")
    with pytest.raises(ValueError, match="key 'x' is not an integer"):
        _classes(1, None, {"x": "a"}, "ck")
    assert _classes(2, None, None, "ck") == (["0", "1"], None, "index")


def test_classes_csv_must_fit_the_head(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("index,class_id,display_name\n0,a,A\n1,b,B\n")
    with pytest.raises(ValueError, match="5 outputs.*lists 2 classes"):
        convert_checkpoint(TINY_TIMM, tmp_path / "x.keras", architecture="custom",
                           image_size=40, classes_csv=path)


def test_class_descriptions_file_checks(tmp_path):
    ids = ["/m/01yrx", "/m/0bt9lr"]
    # A byte order mark (a spreadsheet's "CSV UTF-8") before the header.
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffLabelName,DisplayName\n/m/01yrx,Cat\n".encode("utf-8"))
    assert _display_names(ids, bom, "idx_to_class") == (["Cat", "/m/0bt9lr"], ("/m/0bt9lr",))
    # keras-csl's classes.csv given by mistake: it names none of the ids.
    wrong = tmp_path / "classes.csv"
    wrong.write_text("index,class_id,display_name\n0,/m/01yrx,Cat\n1,/m/0bt9lr,Dog\n")
    with pytest.raises(ValueError, match="None of the 2 class ids.*classes.csv.*LabelName"):
        _display_names(ids, wrong, "idx_to_class")
    twice = tmp_path / "twice.csv"
    twice.write_text("LabelName,DisplayName\n/m/01yrx,Cat\n/m/01yrx,Kitten\n")
    with pytest.raises(ValueError, match="twice.csv, line 3: duplicate class id"):
        _display_names(ids, twice, "idx_to_class")
    with pytest.raises(ValueError, match="argument `class_descriptions`.*no such file"):
        _display_names(ids, tmp_path / "none.csv", "idx_to_class")


def test_real_openimages_class_descriptions(shared_data, tmp_path):
    path = shared_data / "openimages" / "oidv6-class-descriptions.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    names = _read_class_descriptions(path)
    assert len(names) == 19994
    assert (names["/m/01yrx"], names["/m/0bt9lr"], names["/m/0k4j"]) == ("Cat", "Dog", "Car")
    pytest.importorskip("torch")
    conversion = convert_checkpoint(
        FIXTURES / "tiny_authors" / "checkpoint.pth", tmp_path / "t.keras",
        architecture="custom", image_size=40, class_descriptions=path,
    )
    card = read_model_card(tmp_path / "t.keras")
    assert card.display_names == ("Cat", "Dog", "Person", "Tree", "/m/0zzzzz")
    assert conversion.unnamed_classes == ("/m/0zzzzz",)


def test_authors_checkpoints_get_the_preprocessing_of_their_infer_py(tmp_path):
    # Their infer.py: PIL.Image.open(path).resize((224, 224)), then / 255.
    pytest.importorskip("torch")
    conversion = convert_checkpoint(
        FIXTURES / "tiny_authors" / "checkpoint.pth", tmp_path / "authors.keras",
        architecture="custom", image_size=40,
    )
    assert conversion.layout == "authors"
    card = read_model_card(tmp_path / "authors.keras")
    assert (card.resize_mode, card.resize_method, card.jpeg_downscale) == (
        "squash", "pillow_bicubic", False)


def test_output_must_be_a_keras_file(tmp_path):
    with pytest.raises(ValueError, match="argument `output`.*'.keras'"):
        convert_checkpoint(TINY_TIMM, tmp_path / "x.h5")


def test_command_line(tmp_path):
    output = tmp_path / "out" / "tiny.keras"
    result = subprocess.run(
        [sys.executable, "-m", "keras_csl.models.convert_checkpoint",
         f"--checkpoint={TINY_TIMM}", f"--output={output}", "--architecture=custom",
         "--image_size=48"],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["layout"] == "timm" and summary["num_classes"] == 5
    assert summary["counters_skipped"] == 14 and summary["classes_from"] == "index"
    card = read_model_card(output)
    assert (card.image_size, card.class_ids, card.source) == (
        48, ("0", "1", "2", "3", "4"), "checkpoint.safetensors",
    )
    assert card.architecture == "tresnet(layers=1-1-1-1, stem_width=4, v2=False)"
    # timm's weights (backbones to fine-tune): keras-csl's defaults.
    assert (card.resize_mode, card.resize_method, card.jpeg_downscale) == (
        "squash", "bilinear", True)
