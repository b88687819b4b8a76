"""The Keras TResNet and the converter against timm, the independent oracle.

Three levels:

- committed golden fixtures (`tests/fixtures/tresnet/`, written by
  `make_golden.py` with timm): a reduced TResNet in timm's and in the
  authors' key layouts, and timm's logits for two images; run everywhere
  (the authors' `.pth` needs torch, which CI has, but no timm);
- committed key/shape manifests of timm's full-size `tresnet_m`, `_l`,
  `_xl`, `_v2_l`: the Keras weights must map one to one onto them;
- with timm installed (not in CI): full-size parity on random weights,
  the reference computed by timm in a subprocess (`torch_reference.py`).

Parity: `max |keras - timm| <= 1e-4 * max |timm|` for float32 Keras logits
against float64 timm logits, on the TensorFlow backend in this process and
on JAX in a subprocess (`keras_logits.py`).
"""

import functools
import gzip
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from keras_csl.models import get_model_card
from keras_csl.models import load_model
from keras_csl.models import tresnet_checkpoint
from keras_csl.models.backbones import assemble_classifier
from keras_csl.models.convert_checkpoint import convert_checkpoint
from keras_csl.models.tresnet import TRESNET_VARIANTS
from keras_csl.models.tresnet import TResNetSpec
from keras_csl.models.tresnet import build_tresnet
from keras_csl.models.tresnet import preprocessing_layers
from keras_csl.models.tresnet_checkpoint import weight_map

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "tresnet"
RELATIVE_TOLERANCE = 1e-4
GOLDEN_SIZE = 40


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def keras_logits(path, images):
    model = load_model(path)
    return np.asarray(model.predict(images.astype("float32"), verbose=0)), model


def run_in_backend(backend, jobs, folder):
    """Runs `keras_logits.py` on `jobs` under `backend` in a fresh process."""
    jobs_file = os.path.join(folder, f"jobs-{backend}.json")
    with open(jobs_file, "w") as handle:
        json.dump(jobs, handle)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(FIXTURES / "keras_logits.py"), jobs_file],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [np.load(job["output"]) for job in jobs]


def golden(name):
    folder = FIXTURES / name
    checkpoint = next(folder.glob("checkpoint.*"))
    return checkpoint, np.load(folder / "inputs.npy"), np.load(folder / "logits.npy")


def test_golden_timm_safetensors_without_torch(tmp_path, monkeypatch):
    read_checkpoint = tresnet_checkpoint.read_checkpoint

    def read_without_torch(*args):
        # Only around the read: with torch blocked for good, scipy fails later.
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "torch", None)
            return read_checkpoint(*args)

    monkeypatch.setattr(tresnet_checkpoint, "read_checkpoint", read_without_torch)
    checkpoint, images, expected = golden("tiny_timm")
    conversion = convert_checkpoint(
        checkpoint, tmp_path / "tiny.keras", architecture="custom",
        image_size=GOLDEN_SIZE,
    )
    assert (conversion.layout, conversion.num_classes, conversion.head_hidden) == (
        "timm", 5, None,
    )
    # One num_batches_tracked per batch norm: stem 1, stages 2 + 3 + 4 + 4.
    assert conversion.counters_skipped == 14
    logits, _ = keras_logits(tmp_path / "tiny.keras", images)
    assert relative_error(logits, expected) <= RELATIVE_TOLERANCE
    # Not a tautology: another image gives other logits.
    assert relative_error(logits[::-1], expected) > 0.01


def test_golden_authors_checkpoint(tmp_path):
    pytest.importorskip("torch")
    checkpoint, images, expected = golden("tiny_authors")
    conversion = convert_checkpoint(
        checkpoint, tmp_path / "tiny.keras", architecture="custom",
        image_size=GOLDEN_SIZE, class_descriptions=FIXTURES / "class_descriptions.csv",
    )
    assert (conversion.layout, conversion.head_hidden, conversion.counters_skipped) == (
        "authors", 16, 0,
    )
    logits, model = keras_logits(tmp_path / "tiny.keras", images)
    assert relative_error(logits, expected) <= RELATIVE_TOLERANCE
    card = get_model_card(model)
    assert card.class_ids == ("/m/01yrx", "/m/0bt9lr", "/m/01g317", "/m/07j7r", "/m/0zzzzz")
    assert card.display_names == ("Cat", "Dog", "Person", "Tree", "/m/0zzzzz")
    assert conversion.unnamed_classes == ("/m/0zzzzz",)
    assert (card.resize_mode, card.image_size, card.source) == (
        "squash", GOLDEN_SIZE, "checkpoint.pth",
    )


def test_golden_authors_weights_are_negative_somewhere():
    """The fixture exercises |w| + eps: copying w as it is would fail."""
    torch = pytest.importorskip("torch")
    state = torch.load(FIXTURES / "tiny_authors" / "checkpoint.pth", weights_only=True)
    weights = state["model"]["body.layer2.0.conv1.0.1.weight"]
    assert (weights < 0).any() and (weights > 0).any()


@pytest.mark.slow
def test_golden_fixtures_on_jax(tmp_path):
    jobs = []
    cases = ["tiny_timm"]
    if importlib.util.find_spec("torch") is not None:
        cases.append("tiny_authors")
    for name in cases:
        checkpoint, _, _ = golden(name)
        jobs.append(dict(
            checkpoint=str(checkpoint), inputs=str(FIXTURES / name / "inputs.npy"),
            keras=str(tmp_path / f"{name}.keras"), output=str(tmp_path / f"{name}.npy"),
            image_size=GOLDEN_SIZE, architecture="custom",
        ))
    for name, logits in zip(cases, run_in_backend("jax", jobs, tmp_path)):
        assert relative_error(logits, golden(name)[2]) <= RELATIVE_TOLERANCE, name


def _manifests():
    with gzip.open(FIXTURES / "architectures.json.gz", "rt") as handle:
        return json.load(handle)


def _spec(name, manifest):
    if name in TRESNET_VARIANTS:
        return TRESNET_VARIANTS[name]
    kwargs = manifest["kwargs"]
    width = int(64 * kwargs["width_factor"])
    return TResNetSpec(tuple(kwargs["layers"]), width // 8 * 8, v2=True)


@pytest.mark.parametrize(
    "name", ["tresnet_m", "tresnet_l", "tresnet_xl", "tresnet_v2_l", "tiny_v2"]
)
def test_weights_map_onto_timms_state_dict(name):
    """Every Keras weight has one timm key (and one authors' key) of its shape."""
    manifest = _manifests()[name]
    network = build_tresnet(_spec(name, manifest), 32, name="tresnet")
    model = assemble_classifier(preprocessing_layers(), network, manifest["num_classes"], 32)
    timm_shapes = {
        key: tuple(shape) for key, shape in manifest["timm"].items()
        if not key.endswith("num_batches_tracked")
    }
    entries = weight_map(model, "tresnet", "timm")
    assert sorted(entries) == sorted(timm_shapes)
    for key, (variable, how) in entries.items():
        shape = timm_shapes[key]
        if how == "conv":
            shape = (shape[2], shape[3], shape[1], shape[0])
        elif how == "conv1x1_dense":
            shape = (shape[1], shape[0])
        elif how == "linear":
            shape = shape[::-1]
        assert tuple(variable.shape) == shape, key
    authors = weight_map(model, "tresnet", "authors")
    expected = {
        manifest["authors"][key]: entries[key][0].path for key in timm_shapes
    }
    assert {key: v.path for key, (v, _) in authors.items()} == expected


# Full size, against timm itself (skipped without torch and timm).
FULL_CASES = [
    ("tresnet_m", "timm", 0),
    ("tresnet_l", "timm", 0),
    ("tresnet_xl", "timm", 0),
    ("tresnet_v2_l", "timm", 0),
    ("tresnet_m", "authors", 512),
    ("tresnet_v2_l", "authors", 512),
]
FULL_SIZE = 72  # sides 18, 9, 5, 3: odd maps for the blur and the pooling


@functools.lru_cache(maxsize=None)
def timm_import_error():
    """Why timm cannot be imported here (in a subprocess), or `None`.

    Installed is not enough: with a torchvision built for another torch,
    `import timm` fails (../shared/PITFALLS.md).
    """
    if importlib.util.find_spec("timm") is None:
        return "timm is not installed"
    result = subprocess.run([sys.executable, "-c", "import timm"],
                            capture_output=True, text=True, timeout=300)
    return None if result.returncode == 0 else result.stderr.strip()[-300:]


def _timm_reference(variant, layout, head_hidden, folder, seed):
    if timm_import_error() is not None:
        pytest.skip(f"no timm: {timm_import_error()}")
    command = [
        sys.executable, str(FIXTURES / "torch_reference.py"), f"--variant={variant}",
        f"--layout={layout}", f"--head_hidden={head_hidden}", "--num_classes=11",
        f"--image_size={FULL_SIZE}", f"--seed={seed}", f"--output_dir={folder}",
    ]
    if layout == "authors":
        command += ["--counters"] if seed % 2 else []
        command += ["--class_ids=" + ",".join(f"/m/{i:05d}" for i in range(11))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return next(pathlib.Path(folder).glob("checkpoint.*"))


@pytest.mark.slow
def test_full_size_parity_with_timm_on_tensorflow_and_jax(tmp_path):
    jobs, expected = [], []
    for seed, (variant, layout, hidden) in enumerate(FULL_CASES):
        folder = tmp_path / f"{variant}-{layout}"
        checkpoint = _timm_reference(variant, layout, hidden, folder, seed)
        keras_path = folder / "tf.keras"
        conversion = convert_checkpoint(checkpoint, keras_path, image_size=FULL_SIZE)
        assert (conversion.architecture, conversion.layout) == (variant, layout)
        assert conversion.head_hidden == (hidden or None)
        reference = np.load(folder / "logits.npy")
        logits, _ = keras_logits(keras_path, np.load(folder / "inputs.npy"))
        error = relative_error(logits, reference)
        assert error <= RELATIVE_TOLERANCE, (variant, layout, error)
        expected.append(reference)
        jobs.append(dict(
            checkpoint=str(checkpoint), inputs=str(folder / "inputs.npy"),
            keras=str(folder / "jax.keras"), output=str(folder / "jax.npy"),
            image_size=FULL_SIZE, architecture=variant,
        ))
    for job, logits, reference in zip(jobs, run_in_backend("jax", jobs, tmp_path), expected):
        error = relative_error(logits, reference)
        assert error <= RELATIVE_TOLERANCE, (job["checkpoint"], error)
