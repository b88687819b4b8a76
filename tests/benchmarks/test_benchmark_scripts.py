"""Smoke tests of the benchmark scripts: their functions run at tiny sizes.

No timing is asserted (these machines are shared and noisy); the tests check
that each script's pieces run, return what the tables read, that failures
give a non-zero exit status, that the PyTorch re-implementation of the
authors' loss in `gpu_check.py` computes the same function as the
independent NumPy reference, and that `--authors_loss` loads a file of the
authors' interface (a stand-in written here; with `CSL_AUTHORS_LOSS`
pointing at their real file, the reference is checked against it too).
"""

import importlib.util
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest

from csl_reference import csl_reference
from csl_reference import random_partial_batch

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


def load_script(name):
    spec = importlib.util.spec_from_file_location(
        f"benchmarks_{name}", BENCHMARKS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# loss_speed and metric_error define their flags at import: load them once.
sys.path.insert(0, str(BENCHMARKS))  # authors_loss, as the scripts see it.
import authors_loss  # noqa: E402

loss_speed = load_script("loss_speed")
metric_error = load_script("metric_error")
training_speed = load_script("training_speed")
gpu_check = load_script("gpu_check")
pipeline_speed = load_script("pipeline_speed")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    )
    env.update(extra)
    return env


# ------------------------------------------------------------- loss_speed


def test_sweep_shapes_default_grid():
    shapes = loss_speed.sweep_shapes(
        ["80", "1000", "9605", "20000"], 64, ["16", "64", "256"], 9605
    )
    # 64 x 9,605 belongs to both sweeps and is timed once.
    assert shapes == (
        (64, 80), (64, 1000), (64, 9605), (64, 20000), (16, 9605), (256, 9605)
    )


def test_sweep_table_reads_entries_and_ms_per_thousand():
    results = [
        dict(backend="tensorflow-graph", shape=shape, loss=loss, ms=ms)
        for shape, csl, bce in (("4x500", 2.0, 1.0), ("8x500", 4.0, 2.0),
                                ("4x1000", 3.0, 1.5))
        for loss, ms in (("csl", csl), ("bce", bce))
    ]
    table = loss_speed.format_sweep_table(results, 4, 500)
    assert "against classes (batch 4)" in table
    assert "against batch (500 classes)" in table
    # 8 x 500 = 4,000 entries, 4 ms: 1 ms per 1,000 entries, ratio 2.
    row = next(line for line in table.splitlines() if " 8x500" in line)
    assert row.split()[2:] == ["4000", "4.000", "2.000", "2.00", "1.0000", "0.5000"]


def test_time_tensorflow_graph_only():
    results, checks = loss_speed._time_tensorflow([(4, 30)], repeats=2, modes=("graph",))
    assert {(r["backend"], r["loss"]) for r in results} == {
        ("tensorflow-graph", name) for name in ("csl", "csl_unchecked", "bce", "bce_lean")
    }
    assert all(r["ms"] > 0 and len(r["rounds"]) == 2 for r in results)
    assert checks == []  # No authors' file given.


def test_timed_losses_compute_what_they_say():
    """The unchecked CSL equals the CSL; the one-exp BCE equals Keras's."""
    import keras

    targets, logits, prior = loss_speed._inputs(6, 50)
    losses = loss_speed._losses(targets, prior)
    value = {
        name: float(keras.ops.convert_to_numpy(loss(labels, logits)))
        for name, (loss, labels) in losses.items()
    }
    assert value["csl_unchecked"] == pytest.approx(value["csl"], rel=1e-6)
    assert value["bce_lean"] == pytest.approx(value["bce"], rel=1e-5)


def test_transcendental_count_reads_hlo():
    hlo = (
        "%a = f32[4]{0} exponential(f32[4]{0} %x)\n"
        "%b = f32[4]{0} log-plus-one(f32[4]{0} %a)\n"
        "%c = f32[4]{0} log(f32[4]{0} %b)\n"
        "%d = f32[4]{0} logistic(f32[4]{0} %c)\n"
    )
    assert loss_speed.count_transcendentals(hlo) == 3
    rows = [dict(backend="jax-jit", shape="4x30", loss=name, ms=1.0, transcendentals=n)
            for name, n in (("csl", 2), ("bce", 6))]
    assert loss_speed.format_transcendentals(rows).splitlines()[-1] == (
        "  jax-jit 4x30: CSL 2, BCE 6"
    )
    assert loss_speed.format_transcendentals(rows[:0]) == ""


def test_jax_worker_counts_the_work_of_each_loss():
    """Keras's BCE on JAX does 3x the exp/log work of CSL (why CSL can be faster)."""
    pytest.importorskip("jax")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "loss_speed.py"), "--backends=jax",
         "--repeats=1", "--shapes=4x300"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax-jit 4x300: CSL 2, no-check 2, BCE 6, BCE 1exp 2" in result.stdout


def test_alternating_rounds_rotate_the_order():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    rounds = loss_speed.alternating_rounds(fns, repeats=3)
    assert calls[6:] == list("abc" "bca" "cab")  # After two warm-up calls each.
    assert {k: len(v) for k, v in rounds.items()} == {"a": 3, "b": 3, "c": 3}


def test_table_ratios_are_medians_of_per_round_ratios():
    rows = [
        dict(backend="jax-jit", shape="4x30", loss=name, ms=float(np.median(r)), rounds=r)
        for name, r in (("csl", [2.0, 4.0, 3.0]), ("csl_unchecked", [1.0, 4.0, 2.0]),
                        ("bce", [1.0, 1.0, 1.0]), ("authors", [20.0, 30.0, 40.0]))
    ]
    line = loss_speed.format_table(rows).splitlines()[1].split()
    # CSL 3, no-check 2, check % = median(2, 1, 1.5) - 1 = 50 %, BCE 1,
    # CSL/BCE median(2, 4, 3) = 3, authors 30, authors/CSL median(10, 7.5, 13.3).
    assert line == ["jax-jit", "4x30", "3.000", "2.000", "50.0", "1.000", "3.00",
                    "30.000", "10.00"]
    assert "BCE 1exp" not in loss_speed.format_table(rows)  # Not timed: no column.


def test_sweep_command_line_runs():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "loss_speed.py"), "--sweep",
         "--backends=tensorflow", "--repeats=1", "--sweep_classes=20,50",
         "--sweep_classes_batch=4", "--sweep_batches=2,4",
         "--sweep_batches_classes=50"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "against classes (batch 4)" in lines
    rows = [line.split()[1] for line in lines if line.startswith("tensorflow-graph")]
    # 4 x 50 is in both sections; XLA is off in a sweep unless asked for.
    assert rows == ["4x20", "4x50", "2x50", "4x50"]


def test_worker_outcome_tells_results_skips_and_failures():
    rows = [dict(backend="jax-jit", shape="4x30", loss="csl", ms=1.0)]
    value = dict(rows=rows, checks=[], info={})
    assert loss_speed.worker_outcome(
        0, "noise\nRESULTS " + json.dumps(value) + "\n", ""
    ) == ("results", value)
    assert loss_speed.worker_outcome(0, "RESULTS " + json.dumps(rows), "") == (
        "results", value
    )
    assert loss_speed.worker_outcome(0, "SKIPPED jax is not installed (x)\n", "") == (
        "skipped", "jax is not installed (x)"
    )
    crash = "Traceback (most recent call last):\n  ...\nValueError: bad shape\n"
    assert loss_speed.worker_outcome(1, "", crash) == (
        "failed", "exit status 1: ValueError: bad shape"
    )
    # A crash after a RESULTS line, or a clean exit without one, fails too.
    assert loss_speed.worker_outcome(-9, "RESULTS []", "")[0] == "failed"
    assert loss_speed.worker_outcome(0, "", "") == (
        "failed", "no RESULTS line (no output)"
    )


def test_worker_reports_a_missing_backend_as_skipped(monkeypatch, capsys):
    def missing(*args):
        raise ModuleNotFoundError("No module named 'jax'", name="jax")

    monkeypatch.setattr(loss_speed, "_time_jax", missing)
    loss_speed._run_worker("jax", [(4, 30)], repeats=1, tf_modes=["graph"])
    assert capsys.readouterr().out == (
        "SKIPPED jax is not installed (No module named 'jax')\n"
    )

    def broken(*args):
        raise ImportError("cannot import name 'x' from 'keras_csl'", name="keras_csl")

    monkeypatch.setattr(loss_speed, "_time_jax", broken)
    with pytest.raises(ImportError, match="cannot import name"):
        loss_speed._run_worker("jax", [(4, 30)], repeats=1, tf_modes=["graph"])


def test_crashed_worker_fails_the_command_line():
    # A negative class count makes the worker raise after TensorFlow loads.
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "loss_speed.py"), "--backends=tensorflow",
         "--repeats=1", "--shapes=4x-1", "--tf_modes=graph"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "skipped" not in result.stdout
    assert "FAILED: tensorflow: exit status 1: ValueError" in result.stderr


# A stand-in for the authors' partial_asymmetric_loss.py (their repository
# cannot be vendored): the same interface and the same CUDA assumptions
# (`torch.device('cuda')`, `.cuda()`, `import pandas`), computing the loss
# with gpu_check's PyTorch re-implementation.
STAND_IN = """
import importlib.util
import torch
import pandas as pd  # Unused, as in theirs apart from reading a CSV.
from torch import nn as nn

spec = importlib.util.spec_from_file_location("gpu_check_for_stand_in", {gpu_check!r})
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


class PartialSelectiveLoss(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args

    def forward(self, logits, targets):
        a = self.args
        weights = torch.ones(targets.shape, device=torch.device('cuda'))
        prior = torch.tensor(list(self.prior_classes.values())).cuda()
        assert type(prior) is torch.Tensor and weights.device == logits.device
        return {scale} * gpu_check.torch_partial_selective_loss(
            logits, targets, prior, gamma_pos=a.gamma_pos, gamma_neg=a.gamma_neg,
            gamma_unannotated=a.gamma_unann, alpha_pos=a.alpha_pos,
            alpha_neg=a.alpha_neg, alpha_unannotated=a.alpha_unann, clip=a.clip,
            likelihood_topk=a.likelihood_topk, prior_threshold=a.prior_threshold,
        ) * weights.mean()
"""


def write_stand_in(folder, scale=1.0):
    path = folder / "stand_in_partial_asymmetric_loss.py"
    path.write_text(STAND_IN.format(gpu_check=str(BENCHMARKS / "gpu_check.py"), scale=scale))
    return path


def test_authors_loss_plumbing_with_a_stand_in(tmp_path):
    pytest.importorskip("torch")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "loss_speed.py"), "--backends=tensorflow",
         "--tf_modes=graph", "--repeats=1", "--shapes=4x30",
         f"--authors_loss={write_stand_in(tmp_path)}"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    header, row = result.stdout.splitlines()[:2]
    assert header.split()[-2:] == ["ms", "authors/CSL"] and "authors ms" in header
    assert row.split()[:2] == ["tensorflow-graph", "4x30"]
    assert "stand_in_partial_asymmetric_loss.py" in result.stdout
    assert "tensorflow 4x30: value and gradient agree with ours" in result.stdout


def test_authors_loss_mismatch_fails(tmp_path):
    pytest.importorskip("torch")
    authors = authors_loss.AuthorsLoss(str(write_stand_in(tmp_path, scale=1.01)))
    targets, logits, prior = loss_speed._inputs(4, 30)
    ours = authors_loss.our_sum_and_gradient(targets, logits, prior)
    with pytest.raises(ValueError, match=r"differ at \(4, 30\).*value 9\.9e-03"):
        authors.check(targets, logits, prior, *ours)
    exact = authors_loss.AuthorsLoss(str(write_stand_in(tmp_path)))
    errors = exact.check(targets, logits, prior, *ours)
    assert errors["value_error"] < 1e-6 and errors["grad_error"] < 1e-6


def test_authors_loss_flag_names_a_missing_file(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "loss_speed.py"),
         f"--authors_loss={tmp_path / 'absent.py'}"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "Invalid value for --authors_loss" in result.stderr
    assert "absent.py" in result.stderr
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "loss_speed.py"), "--threads=2"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "Invalid value for --threads" in result.stderr


def test_single_thread_run_says_so():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "loss_speed.py"), "--backends=tensorflow",
         "--tf_modes=graph", "--repeats=1", "--shapes=4x30", "--threads=1"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tensorflow threads: TensorFlow intra-op 1, inter-op 1" in result.stdout


@pytest.mark.skipif(
    not os.environ.get("CSL_AUTHORS_LOSS"),
    reason="set CSL_AUTHORS_LOSS to the authors' partial_asymmetric_loss.py",
)
def test_reference_matches_the_authors_file():
    """Opt-in: the NumPy reference against the authors' own, unmodified file."""
    torch = pytest.importorskip("torch")
    module = authors_loss.load_module(os.environ["CSL_AUTHORS_LOSS"])
    rng = np.random.default_rng(3)
    targets, logits = random_partial_batch(rng, 16, 300)
    prior = (0.3 * rng.random(300)).astype("float32")
    for options in (
        dict(), dict(prior_threshold=0.0), dict(clip=0.05, gamma_neg=4.0),
        dict(mode="ignore"), dict(mode="negative"),
        dict(gamma_unannotated=4.0, alpha_unannotated=0.5, likelihood_topk=1),
    ):
        criterion = authors_loss.make_criterion(module, prior, **options)
        x = torch.tensor(logits, requires_grad=True)
        value = criterion(x, torch.tensor(targets))
        value.backward()
        expected = csl_reference(targets, logits, prior=prior, **options).sum()
        gradient = csl_reference(targets, logits, prior=prior, return_gradient=True, **options)
        np.testing.assert_allclose(value.item(), expected, rtol=1e-5)
        np.testing.assert_allclose(x.grad.numpy(), gradient, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------- training_speed


def test_jit_flag_values():
    assert [training_speed._jit(v) for v in ("auto", "true", "false", True, False)] == [
        "auto", True, False, True, False
    ]
    with pytest.raises(KeyError):
        training_speed._jit("yes")


def test_csl_options_are_the_recipes():
    from keras_csl.training.recipe import load_config

    config = load_config(str(REPO / "recipes" / "configs" / "coco_rps.py"))
    options = training_speed.CSL_OPTIONS
    assert options == {key: config.loss[key] for key in options}


def test_synthetic_batch_is_partially_annotated():
    images, targets, prior = training_speed.synthetic_batch(16, 8, 500)
    assert images.shape == (16, 8, 8, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 255
    assert targets.shape == (16, 500) and prior.shape == (500,)
    assert set(np.unique(targets)) <= {-1.0, 0.0, 1.0}
    assert (targets == -1).mean() > 0.9  # About 9 labels of 500 per image.
    assert np.array_equal(
        training_speed.bce_targets(targets), (targets == 1).astype("float32")
    )


def test_compare_losses_tiny_model():
    row = training_speed.compare_losses(
        "tiny", num_classes=7, image_size=16, batch_size=4, steps=2, rounds=1
    )
    assert row["classes"] == 7 and row["batch"] == 4
    for key in ("csl_ms", "bce_ms", "csl_images_per_s", "bce_images_per_s", "ratio"):
        assert row[key] > 0, key
    assert row["csl_images_per_s"] == pytest.approx(4 / (row["csl_ms"] / 1e3))
    table = training_speed.format_table([row], "tensorflow")
    assert "tiny" in table.splitlines()[-1]


def test_recipe_loop_tiny_model():
    images_per_s = training_speed.time_recipe_loop(
        "tiny", num_classes=5, image_size=16, batch_size=4, steps=2
    )
    assert images_per_s > 0


# -------------------------------------------------------------- gpu_check


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_loss_matches_numpy_reference(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    targets, logits = random_partial_batch(rng, 6, 40)
    prior = rng.uniform(0.0, 0.2, 40).astype("float32")
    options = dict(gpu_check.LOSS_OPTIONS, gamma_unannotated=3.0, likelihood_topk=2)
    x = torch.tensor(logits, requires_grad=True)
    value = gpu_check.torch_partial_selective_loss(
        x, torch.tensor(targets), torch.tensor(prior), **options
    )
    value.backward()
    expected = csl_reference(targets, logits, prior=prior, **options).sum()
    gradient = csl_reference(
        targets, logits, prior=prior, return_gradient=True, **options
    )
    np.testing.assert_allclose(value.item(), expected, rtol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), gradient, rtol=1e-4, atol=1e-6)


def test_keras_layout_resnet50_has_keras_weights():
    torch = pytest.importorskip("torch")
    model = gpu_check.keras_layout_resnet50(num_classes=3)
    trainable = sum(p.numel() for p in model.parameters())
    # keras.applications.ResNet50(include_top=False): 23,534,592 trainable.
    assert trainable - (2048 * 3 + 3) == 23_534_592
    with torch.no_grad():
        assert tuple(model(torch.zeros(1, 3, 64, 64)).shape) == (1, 3)


def test_torch_training_step_runs():
    pytest.importorskip("torch")
    images_per_s, ms = gpu_check.time_torch_training(
        "keras_layout", batch=2, image_size=32, num_classes=5, steps=1,
        rounds=1, warmup=1,
    )
    assert images_per_s > 0 and ms > 0


def test_gpu_check_report_problems_name_the_mismatch():
    rows = [
        dict(shape="64x80", ok=True, value_relative_error=1e-7,
             grad_relative_error=1e-6),
        dict(shape="64x9605", ok=False, value_relative_error=2e-3,
             grad_relative_error=5e-4),
    ]
    assert gpu_check.report_problems(dict(loss=rows[:1])) == []
    assert gpu_check.report_problems(dict(training=[])) == []
    (problem,) = gpu_check.report_problems(dict(loss=rows))
    assert "64x9605" in problem and "2.0e-03 (limit 1e-04)" in problem
    assert "lean PyTorch loss" in problem
    rows[1].update(value_relative_error=1e-7, file_value_relative_error=1e-7,
                   file_grad_relative_error=0.5)
    (problem,) = gpu_check.report_problems(dict(loss=rows))
    assert "the authors' file" in problem and "gradient 5.0e-01" in problem


@pytest.mark.slow
def test_gpu_check_runs_on_jax_without_tensorflow(tmp_path):
    """The whole script, tiny, on the CPU, with TensorFlow unimportable."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    output = tmp_path / "gpu_check.json"
    launcher = (
        "import sys, runpy; sys.modules['tensorflow'] = None; "
        f"sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", launcher, str(BENCHMARKS / "gpu_check.py"),
         "--loss_shapes=4x30,8x600", "--loss_calls=2", "--loss_rounds=1",
         "--train_batch=2", "--train_image_size=32", "--train_classes=5",
         "--train_steps=1", "--train_rounds=1", "--torch_warmup=1",
         f"--output_json={output}", f"--authors_loss={write_stand_in(tmp_path)}"],
        env=_env(KERAS_BACKEND="jax", OUT=""), capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["device"]["keras_backend"] == "jax"
    assert [r["shape"] for r in report["loss"]] == ["4x30", "8x600"]
    assert all(r["ok"] for r in report["loss"]), report["loss"]
    for row in report["loss"]:
        assert row["authors_file_ms"] > 0 and row["file_value_relative_error"] < 1e-5
    names = [r["implementation"] for r in report["training"]]
    assert names[:3] == [
        "keras jax fit, CSL", "keras jax fit, BCE",
        "torch keras_layout, lean authors' loss",
    ]
    assert report["training"][0]["images_per_s"] > 0
    # The table comes last, with the device.
    assert "device: JAX cpu" in result.stdout


# ---------------------------------------------------------- pipeline_speed


def _coco_like_sample(folder, count=6):
    """The layout of ../shared/data/coco-sample, with generated JPEGs."""
    import tensorflow as tf

    (folder / "images").mkdir(parents=True)
    (folder / "class-descriptions.csv").write_text("/m/a,Apple\n/m/b,Banana\n")
    rng = np.random.default_rng(0)
    lines = ["ImageID,Source,LabelName,Confidence"]
    for i in range(count):
        pixels = rng.integers(0, 256, (60 + 10 * i, 300, 3), np.uint8)
        (folder / "images" / f"im{i}.jpg").write_bytes(
            tf.io.encode_jpeg(pixels).numpy()
        )
        lines += [f"im{i},verification,/m/a,{i % 2}", f"im{i},verification,/m/b,1"]
    (folder / "image-labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_pipeline_speed_flags():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pipeline_speed.py"), "--help"],
        env=_env(), capture_output=True, text=True, timeout=60,
    )
    for flag in ("--data", "--image_size", "--batch_size", "--images",
                 "--rounds", "--threads", "--pipelines", "--inputs", "--json"):
        assert flag in result.stdout + result.stderr, flag


def test_pipeline_speed_runs_every_pipeline_on_both_inputs(tmp_path):
    data = _coco_like_sample(tmp_path / "sample")
    output = tmp_path / "rows.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pipeline_speed.py"), f"--data={data}",
         "--images=4", "--rounds=1", "--batch_size=4", "--image_size=32",
         "--threads=1", f"--json={output}"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 JPEGs from" in result.stdout and "1 thread(s)" in result.stdout
    has_recipe = importlib.util.find_spec("randaugment") is not None
    if not has_recipe:
        assert "pil_recipe: skipped, the `randaugment` package" in result.stdout
    rows = json.loads(output.read_text())
    expected = ["pil"] + ["pil_recipe"] * has_recipe + [
        "tf_bare", "decode+resize", "eval", "train"]
    # Every pipeline ran on both inputs, 4 images each, in one run.
    assert [(r["input"], r["pipeline"]) for r in rows] == [
        (i, p) for i in ("original", "short256") for p in expected]
    assert all(r["images_per_s"] > 0 and r["cpu_ms"] > 0 for r in rows)
    table = [line.split("|")[1:-1] for line in result.stdout.splitlines()
             if line.startswith("| original |") or line.startswith("| short256 |")]
    assert [(c[0].strip(), c[1].strip()) for c in table] == [
        (r["input"], r["pipeline"]) for r in rows]
    # tf_bare against itself, on the same input, is 1.
    assert all(c[3].strip() == "1.00" for c in table if c[1].strip() == "tf_bare")
    assert "each pipeline on short256 against itself on original" in result.stdout


def test_pipeline_speed_times_the_parts_of_the_augmentation(tmp_path):
    data = _coco_like_sample(tmp_path / "sample", count=3)
    output = tmp_path / "rows.json"
    parts = ["tf_bare", "train_no_aug", "train_flip", "train_cutout", "train_ra1", "train_ra2"]
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pipeline_speed.py"), f"--data={data}",
         "--images=2", "--rounds=1", "--batch_size=2", "--image_size=16",
         "--threads=1", "--inputs=original", f"--pipelines={','.join(parts)}",
         f"--json={output}"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["pipeline"] for r in json.loads(output.read_text())] == parts


def test_pipeline_speed_rejects_an_unknown_pipeline(tmp_path):
    data = _coco_like_sample(tmp_path / "sample", count=1)
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pipeline_speed.py"), f"--data={data}",
         "--pipelines=tf_bare,trian"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "Invalid value for flag --pipelines" in result.stderr
    assert "['trian']" in result.stderr



@pytest.mark.parametrize("flag", ["--images=0", "--rounds=0", "--batch_size=0",
                                  "--image_size=-1", "--threads=1,-2"])
def test_pipeline_speed_rejects_numbers_out_of_range(tmp_path, flag):
    data = _coco_like_sample(tmp_path / "sample", count=1)
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pipeline_speed.py"), f"--data={data}", flag],
        env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert f"Invalid value for flag {flag.split('=')[0]}" in result.stderr

def test_pipeline_speed_ratios_are_per_round_on_the_same_input():
    rows = [
        dict(threads=1, round=k, input=i, pipeline=p, images_per_s=v, cpu_ms=1.0)
        for k, values in enumerate([
            {("a", "tf_bare"): 100, ("a", "train"): 80, ("a", "pil"): 40,
             ("b", "tf_bare"): 400, ("b", "train"): 200, ("b", "pil"): 100},
            {("a", "tf_bare"): 200, ("a", "train"): 100, ("a", "pil"): 50,
             ("b", "tf_bare"): 500, ("b", "train"): 300, ("b", "pil"): 100},
        ])
        for (i, p), v in values.items()
    ]
    table = pipeline_speed.format_tables(rows, ["a", "b"], ["pil", "tf_bare", "train"])
    lines = table.splitlines()
    assert "| input | pipeline | images/s | x tf_bare, same input | x pil, same input | CPU ms/image |" in lines
    # Round ratios to tf_bare 0.8 and 0.5: median 0.65 (the medians' ratio
    # would be 90 / 150 = 0.6); to pil on input a: 2.0 and 2.0.
    assert "| a | train | 90 | 0.65 | 2.00 | 1.00 |" in lines
    # Input b is compared with b only: 200 / 400, 300 / 500; 2, 3.
    assert "| b | train | 250 | 0.55 | 2.50 | 1.00 |" in lines
    # train on b against train on a: 200 / 80 = 2.5, 300 / 100 = 3.
    assert "| train | 2.75 | 1.00 |" in lines


def test_pil_cutout_is_one_half_size_box_of_one_colour():
    from PIL import Image

    random.seed(3)
    for _ in range(20):
        image = pipeline_speed._cutout(Image.new("RGB", (20, 20)))
        pixels = np.asarray(image).reshape(-1, 3)
        changed = np.flatnonzero(pixels.any(axis=1))
        colours = {tuple(c) for c in pixels[changed]}
        rows, cols = np.unravel_index(changed, (20, 20))
        # A box of round(20 / 2) = 10 px around the centre, both ends drawn,
        # cut at the border (the authors' CutoutPIL).
        assert len(colours) <= 1
        assert rows.max() - rows.min() <= 10 and cols.max() - cols.min() <= 10
        assert len(changed) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_pipeline_speed_skips_without_data(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pipeline_speed.py"),
         f"--data={tmp_path / 'absent'}"],
        env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stdout.startswith("Skipped")


# ------------------------------------------------------------ metric_error


def test_metric_error_smoke_cases():
    rows = metric_error.measure(
        ["trained", "untrained", "rare_trained"], ["mix16+middle", "prob+tie"],
        [100, 1000], smoke=True,
    )
    assert len(rows) == 3 * 2 * 2
    cell = {(r["case"], r["variant"], r["bins"]): r for r in rows}
    for row in rows:
        assert 0 < row["exact"] <= 100 and row["worst"] >= abs(row["error"]) - 1e-9
    # Spread-out scores: the default binning is close at 1,000 bins.
    assert abs(cell[("trained", "mix16+middle", 1000)]["error"]) < 0.2
    # Concentrated scores: the old probability bins merge them, the default not.
    assert abs(cell[("untrained", "prob+tie", 100)]["error"]) > abs(
        cell[("untrained", "mix16+middle", 100)]["error"]
    )
    table = metric_error.format_tables(rows, [100, 1000])
    assert "| untrained |" in table and "All variants at B = 1,000:" in table


def test_metric_error_command_line(tmp_path):
    output = tmp_path / "rows.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "metric_error.py"), "--smoke",
         "--cases=zero_bias", "--bins=10", "--variants=mix16+middle",
         f"--json={output}"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| zero_bias |" in result.stdout
    (row,) = json.loads(output.read_text())
    assert row["case"] == "zero_bias" and row["bins"] == 10
