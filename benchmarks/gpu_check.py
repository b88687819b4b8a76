r"""One prepared GPU check: Keras on JAX against PyTorch, loss and training.

Made for a session that is lent an NVIDIA H100 (the device tool; its
machine has JAX, PyTorch and torchvision but neither TensorFlow nor
Keras). It measures, in one process:

(a) The CSL loss, forward + backward, at 64 x 80, 64 x 9,605 and
    256 x 9,605 (`--loss_shapes`): `keras_csl.ClassAwareSelectiveLoss`
    under `jax.jit(jax.value_and_grad(...))` next to Keras's plain BCE, and
    a lean PyTorch re-implementation of the authors' `PartialSelectiveLoss`
    written here (`torch_partial_selective_loss`: sigmoid, log clamped at
    1e-8, `argsort` of every un-annotated entry of the batch for the
    likelihood top-k, prior class mask; not their file), timed twice: with
    the prior tensor rebuilt from a Python dict on every call as the
    authors' `forward` does ("lean dict"), and with the prior kept on the
    device ("lean dev"). With `--authors_loss=PATH` the authors' own,
    unmodified `partial_asymmetric_loss.py` is timed too ("file"; on a GPU
    as it is, on a CPU through the CUDA-to-CPU mapping of
    benchmarks/authors_loss.py). Selective mode, likelihood top-k 5,
    prior threshold 0.05, gammas 0 / 1 / 2 (the authors' defaults, as
    `benchmarks/loss_speed.py` and ../shared/BASELINES.md). Before timing,
    the Keras loss and each PyTorch loss and their gradients are compared
    on the same inputs (relative error; `ok` below 1e-4 and 1e-3: above,
    the row says MISMATCH and the script exits with status 1).
(b) ResNet-50 training, batch 128, 224 px, 9,605 classes, bfloat16
    (`--train_*`): `keras.applications.ResNet50(weights=None)` through
    `keras_csl.models.build_model`, `mixed_bfloat16`, jit, `model.fit` with
    CSL and with BCE (`benchmarks/training_speed.compare_losses`, the code
    of the CPU table), next to PyTorch (channels_last, bf16 autocast, the
    authors' loss, `torch.optim.AdamW`) with (i) `keras_layout_resnet50`
    below, written here so that no torchvision is needed and laid out as
    Keras's (stride on the first 1x1 convolution of a stage, convolution
    biases: the same 23.5M trainable weights and FLOPs), and (ii)
    `torchvision.models.resnet50` (stride on the 3x3, "v1.5") when
    torchvision imports; KINDS.md lists torchvision 0.26 on the H100
    image. Without it that row says "skipped" and the rest still runs.

Data are one batch held on the device, repeated: no input pipeline. Every
timing is warmed up (compilation, cuDNN autotuning) and the median of
`--*_rounds` rounds; each round times `n` calls and syncs once.

It prints a table with the device name last, and writes everything to
`--output_json` (default `$OUT/gpu_check.json` when `OUT` is set).

Expected time on one H100: about 3 minutes, an estimate (the script has
not run on a GPU yet; JAX compiling the two ResNet-50 train steps should
be most of it). `--parts=loss` runs (a) alone. Keras 3.15.1 has not been
tried with that machine's JAX 0.11.2: if Keras fails to import, that is
the first error of the log. On a CPU, tiny (about 45 s with
`JAX_PLATFORMS=cpu`):

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python benchmarks/gpu_check.py \
        --loss_shapes=8x40,16x700 --train_batch=2 --train_image_size=32 \
        --train_classes=50 --train_steps=2 --train_rounds=1 \
        --torch_warmup=1 --loss_rounds=2 --loss_calls=3

For a future session with the device tool. Once, here, in the repository
root (Keras and its two dependencies missing there travel as wheels;
keras_csl travels with the repository):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 \
        -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0

(2.9 MB in all; pip found the three for Python 3.12 x86-64 when this was
written). Then one call of the tool's `run` (timeout_s=420 leaves room
for one rerun in a 15-minute budget; call `give_back` afterwards):

    run(carry=[".whl"], timeout_s=420, command=
        "python3 -m pip install -q --no-index --no-deps --no-compile "
        "--no-cache-dir --upgrade --target /tmp/site .whl/*.whl && "
        "export PYTHONPATH=/tmp/site:$PWD || exit; nvidia-smi -L; "
        "set -o pipefail; KERAS_BACKEND=jax PYTHONUNBUFFERED=1 "
        "python3 benchmarks/gpu_check.py 2>&1 | tee $OUT/gpu_check.log")

The reply's `output_tail` ends with the table; `gpu_check.json` and the
log come back under `files_at`. Compare with ../shared/BASELINES.md (H100:
the authors' loss 2.07 / 4.34 / 3.75 ms; ResNet-50 3,256 images/s in
PyTorch and 3,655 in Keras on JAX).
"""

import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
# JAX would otherwise take 75% of the GPU at start, leaving PyTorch short.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
_HERE = pathlib.Path(__file__).resolve().parent
for _path in (str(_HERE), str(_HERE.parent)):  # training_speed, keras_csl
    if _path not in sys.path:
        sys.path.insert(0, _path)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import training_speed  # noqa: E402

LOSS_SHAPES = "64x80,64x9605,256x9605"
# Relative errors of the Keras loss's value and gradient against PyTorch's
# above which the script reports a mismatch and exits with status 1.
VALUE_TOLERANCE = 1e-4
GRADIENT_TOLERANCE = 1e-3
# The authors' train.py defaults, as in benchmarks/loss_speed.py.
LOSS_OPTIONS = dict(
    gamma_pos=0.0, gamma_neg=1.0, gamma_unannotated=2.0, likelihood_topk=5,
    prior_threshold=0.05,
)

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_list("parts", ["loss", "resnet"], "What to run: loss, resnet.")
    flags.DEFINE_string("loss_shapes", LOSS_SHAPES, "Loss shapes, batch x classes.")
    flags.DEFINE_integer("loss_calls", 50, "Loss calls per timed round.")
    flags.DEFINE_integer("loss_rounds", 5, "Timed rounds per loss measurement.")
    flags.DEFINE_integer("train_batch", 128, "ResNet-50 images per step.")
    flags.DEFINE_integer("train_image_size", 224, "ResNet-50 input side.")
    flags.DEFINE_integer("train_classes", 9605, "ResNet-50 classes.")
    flags.DEFINE_integer("train_steps", 50, "Timed training steps per round.")
    flags.DEFINE_integer("train_rounds", 3, "Timed rounds per training measurement.")
    flags.DEFINE_enum(
        "train_precision", "mixed_bfloat16",
        ["float32", "mixed_bfloat16", "mixed_float16"],
        "Keras policy; PyTorch autocasts to bfloat16 unless float32.",
    )
    flags.DEFINE_list(
        "torch_models", ["keras_layout", "torchvision"],
        "PyTorch ResNet-50s: keras_layout (this file), torchvision.",
    )
    flags.DEFINE_integer("torch_warmup", 10, "Untimed PyTorch steps first.")
    flags.DEFINE_string(
        "output_json", None, "Where to write the results (default $OUT/gpu_check.json)."
    )
    flags.DEFINE_string(
        "authors_loss", None,
        "Path to the authors' unmodified partial_asymmetric_loss.py, to time it too.",
    )


# ------------------------------------------------------------------ inputs


def loss_inputs(batch, classes, seed=0):
    """Logits, targets and prior as `benchmarks/loss_speed.py` draws them.

    OpenImages-like: 0.1% positives, 0.3% verified negatives, the rest
    un-annotated; logits N(-2, 2); prior Beta(0.3, 6).
    """
    rng = np.random.default_rng(seed)
    logits = rng.normal(-2.0, 2.0, size=(batch, classes)).astype("float32")
    kind = rng.random((batch, classes))
    targets = np.full((batch, classes), -1.0, "float32")
    targets[kind < 0.004] = 0.0
    targets[kind < 0.001] = 1.0
    prior = rng.beta(0.3, 6.0, size=classes).astype("float32")
    return targets, logits, prior


def parse_shapes(text):
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",")]


# ------------------------------------------------------------- PyTorch side


def torch_partial_selective_loss(
    logits,
    targets,
    prior=None,
    gamma_pos=0.0,
    gamma_neg=1.0,
    gamma_unannotated=2.0,
    alpha_pos=1.0,
    alpha_neg=1.0,
    alpha_unannotated=1.0,
    clip=0.0,
    likelihood_topk=5,
    prior_threshold=0.05,
):
    """The authors' selective loss in PyTorch, summed over the batch.

    Written from the semantics of `PartialSelectiveLoss` (selective mode)
    in Alibaba-MIIL/PartialLabelingCSL: probabilities by sigmoid (`1 - p`,
    plus `clip` capped at 1, for non-positives); log-likelihoods of the
    probabilities clamped at 1e-8; focusing weight `(1 - p_t)^gamma` by
    target kind, without gradient; an un-annotated entry gets weight 0 if
    its class prior exceeds `prior_threshold`, or if it is among the
    `likelihood_topk * batch` un-annotated entries of the batch with the
    smallest `1 - p`, found by an `argsort` of all of them.

    Args:
        logits: float tensor `[batch, classes]`.
        targets: tensor of 1, 0, -1 of the same shape.
        prior: `None` or a tensor `[classes]` on any device.

    Returns:
        A scalar tensor: minus the weighted sum of log-likelihoods.
    """
    import torch

    positive = targets == 1
    negative = targets == 0
    unannotated = targets == -1
    p = torch.sigmoid(logits)
    p_neg = 1.0 - p
    if clip > 0:
        p_neg = (p_neg + clip).clamp(max=1.0)
    with torch.no_grad():
        weight = torch.ones_like(logits)
        if prior is not None:
            common = prior.to(logits.device) > prior_threshold
            weight[unannotated & common[None, :]] = 0.0
        if likelihood_topk > 0:
            candidates = torch.nonzero(unannotated.flatten()).squeeze(1)
            order = torch.argsort(p_neg.flatten()[candidates])
            k = likelihood_topk * logits.shape[0]
            weight.view(-1)[candidates[order[:k]]] = 0.0
        p_t = torch.where(positive, p, p_neg)
        gamma = (
            gamma_pos * positive + gamma_neg * negative
            + gamma_unannotated * unannotated
        ).to(logits.dtype)
        focus = torch.pow(1.0 - p_t, gamma)
        alpha = (
            alpha_pos * positive + alpha_neg * negative
            + alpha_unannotated * unannotated
        ).to(logits.dtype)
    log_likelihood = torch.where(
        positive,
        torch.log(torch.clamp(p, min=1e-8)),
        torch.log(torch.clamp(p_neg, min=1e-8)),
    )
    return -(alpha * focus * weight * log_likelihood).sum()


def _torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def keras_layout_resnet50(num_classes):
    """ResNet-50 in plain PyTorch, laid out as `keras.applications.ResNet50`.

    Convolutions with biases, batch normalisation with epsilon 1.001e-5,
    the stride of a stage on its first 1x1 convolution (and shortcut),
    global average pooling, a linear head: without the head the same
    23,534,592 trainable weights as Keras's `include_top=False` network
    (whose `count_params()`, 23,587,712, adds the moving statistics).
    """
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, in_channels, filters, stride):
            super().__init__()
            out_channels = 4 * filters
            self.shortcut = None
            if stride != 1 or in_channels != out_channels:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride),
                    nn.BatchNorm2d(out_channels, eps=1.001e-5),
                )
            self.body = nn.Sequential(
                nn.Conv2d(in_channels, filters, 1, stride),
                nn.BatchNorm2d(filters, eps=1.001e-5),
                nn.ReLU(inplace=True),
                nn.Conv2d(filters, filters, 3, padding=1),
                nn.BatchNorm2d(filters, eps=1.001e-5),
                nn.ReLU(inplace=True),
                nn.Conv2d(filters, out_channels, 1),
                nn.BatchNorm2d(out_channels, eps=1.001e-5),
            )
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            shortcut = x if self.shortcut is None else self.shortcut(x)
            return self.relu(self.body(x) + shortcut)

    layers = [
        nn.Conv2d(3, 64, 7, 2, padding=3),
        nn.BatchNorm2d(64, eps=1.001e-5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, padding=1),
    ]
    channels = 64
    for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for index in range(blocks):
            layers.append(Bottleneck(channels, filters, stride if index == 0 else 1))
            channels = 4 * filters
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def import_torchvision():
    """torchvision, or ImportError when it is missing or does not import.

    A torchvision built for another torch fails at import with a
    RuntimeError (torchvision 0.28 next to the CPU torch 2.13.0: "operator
    torchvision::nms does not exist"); that is a skip too.
    """
    try:
        import torchvision
    except Exception as error:  # noqa: BLE001
        raise ImportError(f"torchvision does not import: {error}") from error
    return torchvision


def _torch_resnet(kind, num_classes):
    if kind == "keras_layout":
        return keras_layout_resnet50(num_classes)
    if kind == "torchvision":
        torchvision = import_torchvision()
        return torchvision.models.resnet50(weights=None, num_classes=num_classes)
    raise ValueError(
        "Invalid value for argument `kind`. Expected 'keras_layout' or "
        f"'torchvision'. Received: kind={kind!r}"
    )


def time_torch_training(
    kind, batch, image_size, num_classes, steps, rounds, warmup=10,
    bfloat16=True,
):
    """Images/s of PyTorch ResNet-50 training steps with the authors' loss.

    channels_last, bf16 autocast (unless `bfloat16=False`), logits cast to
    float32, the loss (`torch_partial_selective_loss`, the lean
    re-implementation) with the prior rebuilt from a dict each call as the
    authors' code does, `AdamW`.

    Returns:
        `(images per second, ms per step)`, medians over `rounds`.
    """
    import torch

    device = _torch_device()
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model = _torch_resnet(kind, num_classes).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    images_np, targets_np, prior_np = training_speed.synthetic_batch(
        batch, image_size, num_classes
    )
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last
    ).to(device)
    targets = torch.from_numpy(targets_np).to(device)
    prior_dict = dict(enumerate(prior_np.astype("float64").tolist()))
    # The recipes' loss settings, as the Keras side of the table.
    options = {k: v for k, v in training_speed.CSL_OPTIONS.items() if k != "mode"}

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):
            logits = model(images).float()
        prior = torch.tensor(list(prior_dict.values())).to(device)
        loss = torch_partial_selective_loss(logits, targets, prior, **options)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    model.train()
    for _ in range(warmup):
        step()
    _torch_sync()
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _torch_sync()
        seconds.append((time.perf_counter() - start) / steps)
    per_step = statistics.median(seconds)
    return batch / per_step, 1e3 * per_step


# ------------------------------------------------------------------- timing


def median_ms(fn, sync, calls, rounds):
    """Median over `rounds` of the ms per call of `calls` calls, one sync each."""
    sync(fn())
    sync(fn())
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn()
        sync(out)
        per_call.append((time.perf_counter() - start) / calls)
    return 1e3 * statistics.median(per_call)


def _relative_error(value, reference):
    value = np.asarray(value, "float64")
    reference = np.asarray(reference, "float64")
    return float(np.linalg.norm(value - reference) / max(np.linalg.norm(reference), 1e-30))


def check_and_time_losses(shapes, calls, rounds, authors_path=None):
    """Part (a): one result dict per shape (ms of each variant, errors)."""
    import jax
    import torch

    import keras_csl

    authors_module = None
    if authors_path:
        import authors_loss

        authors_module = authors_loss.load_module(authors_path)
    device = _torch_device()
    results = []
    for batch, classes in shapes:
        targets, logits, prior = loss_inputs(batch, classes)
        csl = keras_csl.ClassAwareSelectiveLoss(prior=prior, **LOSS_OPTIONS)
        csl_sum = keras_csl.ClassAwareSelectiveLoss(
            prior=prior, reduction="sum", **LOSS_OPTIONS
        )
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        labels01 = (targets > 0).astype("float32")
        x = jax.device_put(logits)
        y = jax.device_put(targets)
        y01 = jax.device_put(labels01)
        t_targets = torch.from_numpy(targets).to(device)
        t_prior = torch.from_numpy(prior).to(device)
        prior_dict = dict(enumerate(prior.astype("float64").tolist()))

        # Correctness first: the same inputs through every implementation.
        value, grad = jax.value_and_grad(lambda v: csl_sum(y, v))(x)
        torch_losses = {
            "lean": lambda v, p=t_prior: torch_partial_selective_loss(
                v, t_targets, p, **LOSS_OPTIONS
            ),
        }
        if authors_module is not None:
            import authors_loss

            criterion = authors_loss.make_criterion(authors_module, prior, **LOSS_OPTIONS)
            torch_losses["file"] = lambda v: criterion(v, t_targets)
        row = dict(shape=f"{batch}x{classes}")
        for name, fn in torch_losses.items():
            t_logits = torch.from_numpy(logits).to(device).requires_grad_(True)
            t_value = fn(t_logits)
            t_value.backward()
            row[f"{name}_value_relative_error"] = _relative_error(value, t_value.item())
            row[f"{name}_grad_relative_error"] = _relative_error(
                grad, t_logits.grad.cpu().numpy()
            )
        # The lean re-implementation's errors keep their old keys.
        row["value_relative_error"] = row.pop("lean_value_relative_error")
        row["grad_relative_error"] = row.pop("lean_grad_relative_error")

        timings = {}
        for name, loss, labels in (("keras_csl", csl, y), ("keras_bce", bce, y01)):
            step = jax.jit(jax.value_and_grad(lambda v, t, loss=loss: loss(t, v)))
            timings[name] = median_ms(
                lambda step=step, labels=labels: step(x, labels),
                jax.block_until_ready, calls, rounds,
            )
        t_x = torch.from_numpy(logits).to(device).requires_grad_(True)

        def torch_step(loss_of):
            def run():
                loss = loss_of()
                loss.backward()
                t_x.grad = None
                return loss

            return run

        variants = {
            # The prior rebuilt from a dict on every call, as their forward.
            "torch_lean_dict": lambda: torch_partial_selective_loss(
                t_x, t_targets,
                torch.tensor(list(prior_dict.values())).to(device), **LOSS_OPTIONS,
            ),
            "torch_lean_device": lambda: torch_partial_selective_loss(
                t_x, t_targets, t_prior, **LOSS_OPTIONS
            ),
        }
        if "file" in torch_losses:
            variants["authors_file"] = lambda: torch_losses["file"](t_x)
        for name, loss_of in variants.items():
            timings[name] = median_ms(
                torch_step(loss_of), lambda _: _torch_sync(), calls, rounds
            )
        errors = [
            (row[key], GRADIENT_TOLERANCE if "grad" in key else VALUE_TOLERANCE)
            for key in row if key.endswith("relative_error")
        ]
        row["ok"] = bool(all(error < limit for error, limit in errors))
        row.update({f"{name}_ms": ms for name, ms in timings.items()})
        results.append(row)
    return results


def time_training(batch, image_size, classes, steps, rounds, precision,
                  torch_models, torch_warmup):
    """Part (b): one result dict per implementation."""
    rows = []
    keras_row = training_speed.compare_losses(
        "resnet50", classes, image_size, batch, steps, rounds=rounds,
        jit_compile=True, precision=precision,
    )
    rows.append(dict(
        implementation=f"keras {keras.backend.backend()} fit, CSL",
        images_per_s=keras_row["csl_images_per_s"], ms=keras_row["csl_ms"],
    ))
    rows.append(dict(
        implementation=f"keras {keras.backend.backend()} fit, BCE",
        images_per_s=keras_row["bce_images_per_s"], ms=keras_row["bce_ms"],
    ))
    for kind in torch_models:
        name = f"torch {kind}, lean authors' loss"
        try:
            images_per_s, ms = time_torch_training(
                kind, batch, image_size, classes, steps, rounds,
                warmup=torch_warmup, bfloat16=precision != "float32",
            )
        except ImportError as error:
            rows.append(dict(implementation=name, skipped=str(error)))
            continue
        rows.append(dict(implementation=name, images_per_s=images_per_s, ms=ms))
    return rows


# -------------------------------------------------------------------- report


def device_info():
    import jax
    import torch

    info = dict(
        jax_device=str(jax.devices()[0].device_kind),
        jax_platform=jax.default_backend(),
        torch_device=(
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        ),
        host=platform.node(),
        python=platform.python_version(),
        versions=dict(
            keras=keras.__version__, jax=jax.__version__,
            torch=torch.__version__, numpy=np.__version__,
        ),
        keras_backend=keras.backend.backend(),
    )
    try:
        info["versions"]["torchvision"] = import_torchvision().__version__
    except ImportError:
        info["versions"]["torchvision"] = None
    return info


def format_report(report):
    info = report["device"]
    lines = [
        f"device: JAX {info['jax_device']} ({info['jax_platform']}), "
        f"PyTorch {info['torch_device']}; keras {info['versions']['keras']}, "
        f"jax {info['versions']['jax']}, torch {info['versions']['torch']}",
    ]
    if report.get("loss"):
        lines += [
            "",
            "(a) loss forward + backward, ms (median); lean = our PyTorch "
            "re-implementation of the authors' loss (dict: prior rebuilt from a "
            "dict per call, as theirs; dev: on the device); file = the authors' "
            "unmodified file (--authors_loss); errors = Keras vs lean (value, gradient)",
            f"{'batch x classes':>16}{'keras CSL':>11}{'keras BCE':>11}"
            f"{'lean dict':>11}{'lean dev':>10}{'file':>10}{'lean/CSL':>10}"
            f"{'file/CSL':>10}{'errors':>20}",
        ]
        for r in report["loss"]:
            file_ms = r.get("authors_file_ms")
            lines.append(
                f"{r['shape']:>16}{r['keras_csl_ms']:>11.3f}{r['keras_bce_ms']:>11.3f}"
                f"{r['torch_lean_dict_ms']:>11.3f}{r['torch_lean_device_ms']:>10.3f}"
                + (f"{file_ms:>10.3f}" if file_ms else f"{'-':>10}")
                + f"{r['torch_lean_dict_ms'] / r['keras_csl_ms']:>10.1f}"
                + (f"{file_ms / r['keras_csl_ms']:>10.1f}" if file_ms else f"{'-':>10}")
                + f"{r['value_relative_error']:>9.1e} {r['grad_relative_error']:>7.1e}"
                f"{'' if r['ok'] else ' MISMATCH'}"
            )
    if report.get("training"):
        t = report["training_setup"]
        lines += [
            "",
            f"(b) ResNet-50 training, batch {t['batch']}, {t['image_size']} px, "
            f"{t['classes']} classes, {t['precision']}",
            f"{'implementation':<40}{'images/s':>10}{'ms/step':>10}",
        ]
        for r in report["training"]:
            if "skipped" in r:
                lines.append(f"{r['implementation']:<40}  skipped: {r['skipped']}")
            else:
                lines.append(
                    f"{r['implementation']:<40}{r['images_per_s']:>10.1f}{r['ms']:>10.2f}"
                )
    return "\n".join(lines)


def run(parts, loss_shapes, loss_calls, loss_rounds, resnet_batch,
        resnet_image_size, resnet_classes, resnet_steps, resnet_rounds,
        resnet_precision, torch_models, torch_warmup, authors_loss=None):
    """Runs the parts; returns the report dict."""
    started = time.perf_counter()
    report = dict(device=device_info())
    if "loss" in parts:
        report["loss"] = check_and_time_losses(
            loss_shapes, loss_calls, loss_rounds, authors_loss
        )
        print(f"loss part done after {time.perf_counter() - started:.0f} s", flush=True)
    if "resnet" in parts:
        report["training_setup"] = dict(
            batch=resnet_batch, image_size=resnet_image_size,
            classes=resnet_classes, precision=resnet_precision,
            steps=resnet_steps, rounds=resnet_rounds,
        )
        report["training"] = time_training(
            resnet_batch, resnet_image_size, resnet_classes, resnet_steps,
            resnet_rounds, resnet_precision, torch_models, torch_warmup,
        )
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def report_problems(report):
    """Why the check failed: one line per mismatching loss shape (or none)."""
    problems = []
    for r in report.get("loss", ()):
        if r["ok"]:
            continue
        for name in ("", "file_"):
            value = r.get(f"{name}value_relative_error")
            grad = r.get(f"{name}grad_relative_error")
            if value is None or (value < VALUE_TOLERANCE and grad < GRADIENT_TOLERANCE):
                continue
            which = "the authors' file" if name else "the lean PyTorch loss"
            problems.append(
                f"Keras and {which} disagree at {r['shape']}: relative "
                f"error of the value {value:.1e} (limit {VALUE_TOLERANCE:.0e}), "
                f"of the gradient {grad:.1e} (limit {GRADIENT_TOLERANCE:.0e})"
            )
    return problems


def main(argv):
    del argv
    if keras.backend.backend() != "jax":
        raise app.UsageError(
            "gpu_check.py times Keras on JAX (the GPU machine has no "
            f"TensorFlow). Received: KERAS_BACKEND={keras.backend.backend()!r}"
        )
    report = run(
        FLAGS.parts, parse_shapes(FLAGS.loss_shapes), FLAGS.loss_calls,
        FLAGS.loss_rounds, FLAGS.train_batch, FLAGS.train_image_size,
        FLAGS.train_classes, FLAGS.train_steps, FLAGS.train_rounds,
        FLAGS.train_precision, FLAGS.torch_models, FLAGS.torch_warmup,
        FLAGS.authors_loss,
    )
    path = FLAGS.output_json
    if path is None and os.environ.get("OUT"):
        path = os.path.join(os.environ["OUT"], "gpu_check.json")
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
    print(format_report(report))
    print(f"total {report['seconds']} s" + (f"; JSON: {path}" if path else ""))
    problems = report_problems(report)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
