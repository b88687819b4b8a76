"""Training images/s with the CSL loss against plain BCE, on the same model.

    python benchmarks/training_speed.py                   # CPU defaults below
    python benchmarks/training_speed.py --models=tiny --classes=80,9605
    python benchmarks/training_speed.py --models=resnet50 --batch_size=16 \
        --rounds=3 --loop

Models (`keras_csl.models.build_model`, random weights):

- `tiny`: the package's three-block CNN at `--tiny_image_size` (64 px);
- `resnet50`: `keras.applications.ResNet50(weights=None)` at
  `--resnet_image_size` (224 px), with the package's float32 head.

For every model and class count (`--classes`, default 80 and 9,605) two
copies of the model with the same initial weights are compiled with
`keras.optimizers.AdamW`, one with `ClassAwareSelectiveLoss` in the
recipes' setting (selective mode, gammas 0 / 1 / 4, likelihood top-k 5,
prior threshold 0.5, a prior set) and one with
`keras.losses.BinaryCrossentropy(from_logits=True)` (un-annotated targets
read as negatives). Each is trained with `model.fit` on one in-memory batch
of `--batch_size` images repeated (no input pipeline cost), after a
warm-up `fit` that compiles the step. A callback syncs at the end of the
first and of the last step of each `fit` and times the steps in between,
so the figure excludes `fit`'s own set-up. The two losses alternate in `--rounds` rounds
(load from other processes hits neighbouring rounds alike); the table gives
the median ms per step and images/s of each, and the median of the
per-round CSL/BCE step-time ratios.

Why `model.fit` and not `keras_csl.training.train`: `fit` takes any loss,
so the two columns differ in the loss alone, and it runs on every Keras
backend (`benchmarks/gpu_check.py` times the same thing under JAX, where
the TensorFlow-only `keras_csl.training` cannot run). `train` hard-wires
the CSL loss and adds the weight EMA, the prior tracker and the
per-replica bookkeeping to every step. `--loop` adds one column: the
images/s that `keras_csl.training.train` itself logs for its second epoch
(CSL, EMA 0.9997, `MeanPrediction` tracker; TensorFlow only), the step
`recipes/train.py` runs. It is timed from the start of the epoch's
first step to the end of its last (`keras_csl.callbacks.MetricsLogger`),
so it also holds the per-batch callbacks: give the tiny CNN enough steps.

The backend is `KERAS_BACKEND` (default tensorflow); XLA follows Keras's
`jit_compile="auto"` (off on a CPU-only machine) unless `--jit_compile`.

Time on 2 quiet cores with `--loop` (defaults otherwise: tiny and
resnet50, 80 and 9,605 classes, batch 32, 2 rounds): 9 min 52 s
(`/usr/bin/time`, 2026-11-30), nearly all ResNet-50 (about 6 s per step;
tracing each step took 15-20 s in earlier runs on a shared machine);
without `--loop` less (not timed on a quiet machine; about 6 minutes in
an earlier run on a shared one). `--models=tiny`: about 15 s.
"""

import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

# The recipes' CSL (`loss` of recipes/configs/coco_rps.py; the rest of
# `TrainConfig.loss` keeps the loss's defaults).
CSL_OPTIONS = dict(
    mode="selective",
    gamma_pos=0.0,
    gamma_neg=1.0,
    gamma_unannotated=4.0,
    likelihood_topk=5,
    prior_threshold=0.5,
)
IMAGE_FLAGS = {"tiny": "tiny_image_size", "resnet50": "resnet_image_size"}
STEP_FLAGS = {"tiny": "tiny_steps", "resnet50": "resnet_steps"}

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_list("models", ["tiny", "resnet50"], "Backbones: tiny, resnet50.")
    flags.DEFINE_list("classes", ["80", "9605"], "Numbers of classes.")
    flags.DEFINE_integer("batch_size", 32, "Images per step.")
    flags.DEFINE_integer("tiny_image_size", 64, "Input side of the tiny CNN.")
    flags.DEFINE_integer("resnet_image_size", 224, "Input side of ResNet-50.")
    flags.DEFINE_integer("tiny_steps", 30, "Timed steps per round, tiny CNN.")
    flags.DEFINE_integer("resnet_steps", 3, "Timed steps per round, ResNet-50.")
    flags.DEFINE_integer("rounds", 2, "Alternating CSL/BCE rounds.")
    flags.DEFINE_enum(
        "precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
        "Keras dtype policy.",
    )
    flags.DEFINE_enum(
        "jit_compile", "auto", ["auto", "true", "false"], "XLA for the train step."
    )
    flags.DEFINE_boolean(
        "loop", False, "Also time keras_csl.training.train (TensorFlow only)."
    )


def synthetic_batch(batch_size, image_size, num_classes, seed=0):
    """One batch: images in [0, 255], partial targets, a class prior.

    About 3 positives and 6 verified negatives per image (at most 30% and
    40% of the classes), the rest un-annotated (-1), as in OpenImages'
    human-verified labels.

    Returns:
        `(images float32 [B, S, S, 3], targets float32 [B, C],
        prior float32 [C])`.
    """
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3))
    draw = rng.random((batch_size, num_classes))
    positive = min(3.0 / num_classes, 0.3)
    negative = min(6.0 / num_classes, 0.4)
    targets = np.full((batch_size, num_classes), -1.0, "float32")
    targets[draw < positive + negative] = 0.0
    targets[draw < positive] = 1.0
    prior = rng.beta(0.3, 6.0, size=num_classes).astype("float32")
    return images.astype("float32"), targets, prior


def make_losses(num_classes, prior):
    """`{"csl": ClassAwareSelectiveLoss, "bce": BinaryCrossentropy}`."""
    import keras_csl

    return {
        "csl": keras_csl.ClassAwareSelectiveLoss(
            num_classes=num_classes, prior=prior, **CSL_OPTIONS
        ),
        "bce": keras.losses.BinaryCrossentropy(from_logits=True),
    }


def bce_targets(targets):
    """Plain BCE reads un-annotated (-1) targets as negatives."""
    return (targets > 0.5).astype("float32")


class StepTimer(keras.callbacks.Callback):
    """Times steps `skip` to `skip + steps - 1` (0-based) of one `fit`.

    It converts the step's loss to NumPy at both ends, which waits for the
    device on every backend, so the time covers finished steps only and
    leaves out `fit`'s set-up and the first `skip` steps.
    """

    def __init__(self, skip, steps):
        super().__init__()
        self.skip = skip
        self.steps = steps
        self.start = self.seconds = None

    def on_train_begin(self, logs=None):
        self.start = self.seconds = None

    def on_train_batch_end(self, batch, logs=None):
        if batch not in (self.skip - 1, self.skip + self.steps - 1):
            return
        keras.ops.convert_to_numpy((logs or {}).get("loss", 0.0))
        now = time.perf_counter()
        if batch == self.skip - 1:
            self.start = now
        else:
            self.seconds = (now - self.start) / self.steps


def repeated_batch(images, targets):
    """What `fit` iterates over: the same batch, forever, without copies."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensors((images, targets)).repeat()
    images = keras.ops.convert_to_tensor(images)
    targets = keras.ops.convert_to_tensor(targets)

    def forever():
        while True:
            yield images, targets

    return forever()


def time_fit(model, data, steps, skip=1):
    """Seconds per step of `model.fit` on `data`, steps `skip` onwards."""
    timer = StepTimer(skip, steps)
    model.fit(
        data, epochs=1, steps_per_epoch=skip + steps, verbose=0, shuffle=False,
        callbacks=[timer],
    )
    return timer.seconds


def compare_losses(
    backbone,
    num_classes,
    image_size,
    batch_size,
    steps,
    rounds=2,
    jit_compile="auto",
    precision="float32",
):
    """Times CSL and BCE training steps of one model, alternating.

    Returns:
        A dict: `backbone`, `image_size`, `classes`, `batch`, `csl_ms`,
        `bce_ms` (median ms per step), `csl_images_per_s`,
        `bce_images_per_s`, `ratio` (median per-round CSL/BCE time).
    """
    from keras_csl.models import build_model

    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        images, targets, prior = synthetic_batch(
            batch_size, image_size, num_classes
        )
        losses = make_losses(num_classes, prior)
        labels = {"csl": targets, "bce": bce_targets(targets)}
        models, data = {}, {}
        for name, loss in losses.items():
            keras.utils.set_random_seed(0)  # Same initial weights.
            model = build_model(
                backbone, num_classes=num_classes, image_size=image_size,
                weights=None,
            )
            model.compile(
                optimizer=keras.optimizers.AdamW(1e-4, weight_decay=1e-4),
                loss=loss,
                jit_compile=jit_compile,
            )
            models[name] = model
            data[name] = repeated_batch(images, labels[name])
            time_fit(model, data[name], steps=1)  # Traces the step.
        seconds = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                seconds[name].append(time_fit(model, data[name], steps))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    csl_s = statistics.median(seconds["csl"])
    bce_s = statistics.median(seconds["bce"])
    return dict(
        backbone=backbone,
        image_size=image_size,
        classes=num_classes,
        batch=batch_size,
        csl_ms=1e3 * csl_s,
        bce_ms=1e3 * bce_s,
        csl_images_per_s=batch_size / csl_s,
        bce_images_per_s=batch_size / bce_s,
        ratio=statistics.median(
            c / b for c, b in zip(seconds["csl"], seconds["bce"])
        ),
    )


def time_recipe_loop(
    backbone, num_classes, image_size, batch_size, steps, precision="float32",
    jit_compile="auto",
):
    """Images/s that `keras_csl.training.train` logs for its 2nd epoch.

    Two epochs of `steps` steps on the repeated batch (the first one traces
    the step), no validation, nothing written; CSL as in the recipes, EMA
    0.9997 (TensorFlow only).
    """
    from keras_csl.training import TrainConfig
    from keras_csl.training import inputs
    from keras_csl.training import train

    images, targets, _ = synthetic_batch(batch_size, image_size, num_classes)
    config = TrainConfig(
        backbone=backbone,
        weights=None,
        num_classes=num_classes,
        image_size=image_size,
        epochs=2,
        per_replica_batch_size=batch_size,
        precision=precision,
        jit_compile=_jit(jit_compile),
        prior="none",
        strategy="default",
        loss=dict(CSL_OPTIONS),
    )
    result = train(
        config,
        inputs.in_memory_train_data(images, targets, batch_size, shuffle=False),
        None,
        steps_per_epoch=steps,
        verbose=0,
    )
    return result.history[-1]["images_per_second"]


def format_table(rows, backend):
    loop = any("loop_images_per_s" in row for row in rows)
    lines = [
        f"backend {backend}; images/s of one training step (model.fit), "
        "median over rounds",
        f"{'model':<10}{'px':>5}{'classes':>9}{'batch':>7}"
        f"{'CSL ms':>10}{'BCE ms':>10}{'CSL img/s':>11}{'BCE img/s':>11}"
        f"{'CSL/BCE':>9}" + (f"{'loop img/s':>12}" if loop else ""),
    ]
    for r in rows:
        line = (
            f"{r['backbone']:<10}{r['image_size']:>5}{r['classes']:>9}"
            f"{r['batch']:>7}{r['csl_ms']:>10.1f}{r['bce_ms']:>10.1f}"
            f"{r['csl_images_per_s']:>11.1f}{r['bce_images_per_s']:>11.1f}"
            f"{r['ratio']:>9.2f}"
        )
        if loop:
            value = r.get("loop_images_per_s")
            line += f"{value:>12.1f}" if value is not None else f"{'-':>12}"
        lines.append(line)
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.loop and keras.backend.backend() != "tensorflow":
        raise app.UsageError(
            "--loop times keras_csl.training, which needs the TensorFlow "
            f"backend. Received: KERAS_BACKEND={keras.backend.backend()!r}"
        )
    jit_compile = _jit(FLAGS.jit_compile)
    rows = []
    for backbone in FLAGS.models:
        if backbone not in IMAGE_FLAGS:
            raise app.UsageError(
                f"Invalid value for --models. Expected tiny or resnet50. "
                f"Received: {backbone!r}"
            )
        image_size = FLAGS[IMAGE_FLAGS[backbone]].value
        steps = FLAGS[STEP_FLAGS[backbone]].value
        for classes in FLAGS.classes:
            started = time.perf_counter()
            row = compare_losses(
                backbone, int(classes), image_size, FLAGS.batch_size, steps,
                rounds=FLAGS.rounds, jit_compile=jit_compile,
                precision=FLAGS.precision,
            )
            if FLAGS.loop:
                row["loop_images_per_s"] = time_recipe_loop(
                    backbone, int(classes), image_size, FLAGS.batch_size,
                    steps, precision=FLAGS.precision,
                    jit_compile=jit_compile,
                )
            rows.append(row)
            print(
                f"{backbone} {classes} classes: done in "
                f"{time.perf_counter() - started:.0f} s", flush=True,
            )
    print(format_table(rows, keras.backend.backend()))


def _jit(value):
    """Keras's `jit_compile` ("auto", True or False) from the flag's text.

    Values that are already one of those pass through.
    """
    if isinstance(value, bool) or value == "auto":
        return value
    return {"true": True, "false": False}[value]


if __name__ == "__main__":
    define_flags()
    app.run(main)
