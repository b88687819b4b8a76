"""Forward + backward time of the CSL loss against Keras's plain BCE.

    python benchmarks/loss_speed.py              # TF graph, TF XLA, JAX
    python benchmarks/loss_speed.py --backends=tensorflow --repeats=50
    python benchmarks/loss_speed.py --sweep      # growth with classes, batch

Each backend runs in its own process (Keras fixes the backend at import).
For every shape, the CSL loss in its default selective mode (prior set,
likelihood top-k 5, batch scope) and `keras.losses.BinaryCrossentropy(
from_logits=True)` are timed in the same process, on the same inputs:
median of `--repeats` calls of a compiled function returning the loss and its
gradient with respect to the logits. Targets: CSL at most 3x plain BCE, and
at 64 x 9,605 at most 4 ms on a 2-core CPU (the authors' PyTorch loss takes
about 207 ms there; ../shared/BASELINES.md).

`--sweep` times how the cost grows instead: against the number of classes
(`--sweep_classes`, default 80, 1,000, 9,605 and 20,000, at batch
`--sweep_classes_batch` 64) and against the batch (`--sweep_batches`,
default 16, 64 and 256, at `--sweep_batches_classes` 9,605 classes), with
TF graph mode only (`--tf_modes=graph,xla` adds XLA) and JAX when
`--backends` includes it. Its table adds the number of entries (batch x
classes) and the ms per 1,000 entries of each loss: a flat column is cost
linear in the entries.

A backend that is not installed is reported as skipped; a worker that
fails otherwise is reported with its error, after the table of the others,
and the script exits with status 1.

Expected time: about 1 minute on 2 cores; `--sweep` about 30 s.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

SHAPES = ((64, 80), (64, 9605), (256, 9605))

flags.DEFINE_list("backends", ["tensorflow", "jax"], "Keras backends to time.")
flags.DEFINE_integer("repeats", 30, "Timed calls per measurement.")
flags.DEFINE_string("shapes", None, "Override, e.g. '64x80,64x9605'.")
flags.DEFINE_string("worker", None, "Internal: run one backend and print JSON.")
flags.DEFINE_list("tf_modes", ["graph", "xla"], "TensorFlow modes: graph, xla.")
flags.DEFINE_boolean("sweep", False, "Time the growth against classes and batch.")
flags.DEFINE_list("sweep_classes", ["80", "1000", "9605", "20000"], "--sweep: classes.")
flags.DEFINE_integer("sweep_classes_batch", 64, "--sweep: batch of the classes sweep.")
flags.DEFINE_list("sweep_batches", ["16", "64", "256"], "--sweep: batch sizes.")
flags.DEFINE_integer("sweep_batches_classes", 9605, "--sweep: classes of the batch sweep.")
FLAGS = flags.FLAGS


def _inputs(batch, classes, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    logits = rng.normal(-2.0, 2.0, size=(batch, classes)).astype("float32")
    # OpenImages-like: most entries un-annotated, a few verified labels.
    kind = rng.random((batch, classes))
    targets = np.full((batch, classes), -1.0, "float32")
    targets[kind < 0.004] = 0.0
    targets[kind < 0.001] = 1.0
    prior = rng.beta(0.3, 6.0, size=classes).astype("float32")
    return targets, logits, prior


def _median_ms(fn, repeats):
    import numpy as np

    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _time_tensorflow(shapes, repeats, modes=("graph", "xla")):
    import keras
    import tensorflow as tf

    import keras_csl

    results = []
    for batch, classes in shapes:
        targets, logits, prior = _inputs(batch, classes)
        csl = keras_csl.ClassAwareSelectiveLoss(prior=prior)
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        y = tf.constant(targets)
        y01 = tf.constant((targets > 0).astype("float32"))
        x = tf.constant(logits)
        for mode, xla in (("graph", False), ("xla", True)):
            if mode not in modes:
                continue
            for name, loss, labels in (("csl", csl, y), ("bce", bce, y01)):

                @tf.function(jit_compile=xla)
                def step(labels, x, loss=loss):
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        value = loss(labels, x)
                    return value, tape.gradient(value, x)

                ms = _median_ms(lambda: [t.numpy() for t in step(labels, x)], repeats)
                results.append(dict(backend=f"tensorflow-{mode}", shape=f"{batch}x{classes}", loss=name, ms=ms))
    return results


def _time_jax(shapes, repeats):
    import jax
    import keras

    import keras_csl

    results = []
    for batch, classes in shapes:
        targets, logits, prior = _inputs(batch, classes)
        csl = keras_csl.ClassAwareSelectiveLoss(prior=prior)
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        y01 = (targets > 0).astype("float32")
        for name, loss, labels in (("csl", csl, targets), ("bce", bce, y01)):
            step = jax.jit(jax.value_and_grad(lambda x, labels, loss=loss: loss(labels, x)))
            ms = _median_ms(lambda: jax.block_until_ready(step(logits, labels)), repeats)
            results.append(dict(backend="jax-jit", shape=f"{batch}x{classes}", loss=name, ms=ms))
    return results


def _parse_shapes(text):
    if not text:
        return SHAPES
    return tuple(tuple(int(v) for v in item.split("x")) for item in text.split(","))


def sweep_shapes(classes, classes_batch, batches, batches_classes):
    """The shapes of both sweeps, each once, in the order they are timed."""
    shapes = [(classes_batch, int(c)) for c in classes]
    shapes += [(int(b), batches_classes) for b in batches]
    return tuple(dict.fromkeys(shapes))


def _format_shapes(shapes):
    return ",".join(f"{b}x{c}" for b, c in shapes)


# The packages whose absence means "backend not installed" (a skip).
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib")}


def _run_worker(backend, shapes, repeats, tf_modes):
    """Prints the worker's timings as one `RESULTS` line, or `SKIPPED` why."""
    try:
        if backend == "tensorflow":
            results = _time_tensorflow(shapes, repeats, tf_modes)
        else:
            results = _time_jax(shapes, repeats)
    except ImportError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in BACKEND_PACKAGES[backend]:
            raise
        print(f"SKIPPED {backend} is not installed ({error})")
        return
    print("RESULTS " + json.dumps(results))


def worker_outcome(returncode, stdout, stderr):
    """`("results", list)`, `("skipped", reason)` or `("failed", reason)`."""
    if returncode == 0:
        for line in reversed(stdout.splitlines()):
            if line.startswith("RESULTS "):
                return "results", json.loads(line[len("RESULTS "):])
            if line.startswith("SKIPPED "):
                return "skipped", line[len("SKIPPED "):]
    errors = [line.strip() for line in stderr.splitlines() if line.strip()]
    reason = errors[-1] if errors else "no output"
    if returncode == 0:
        return "failed", f"no RESULTS line ({reason})"
    return "failed", f"exit status {returncode}: {reason}"


def main(argv):
    del argv
    shapes = _parse_shapes(FLAGS.shapes)
    backends = [FLAGS.worker] if FLAGS.worker else FLAGS.backends
    unknown = [b for b in backends if b not in BACKEND_PACKAGES]
    if unknown:
        raise app.UsageError(
            f"Invalid value for --backends. Expected some of "
            f"{sorted(BACKEND_PACKAGES)}. Received: {unknown}"
        )
    if FLAGS.worker:
        _run_worker(FLAGS.worker, shapes, FLAGS.repeats, FLAGS.tf_modes)
        return 0
    shapes_flag = FLAGS.shapes
    extra = [f"--tf_modes={','.join(FLAGS.tf_modes)}"] if FLAGS["tf_modes"].present else []
    if FLAGS.sweep:
        if not FLAGS["tf_modes"].present:
            extra = ["--tf_modes=graph"]
        shapes_flag = _format_shapes(sweep_shapes(
            FLAGS.sweep_classes, FLAGS.sweep_classes_batch,
            FLAGS.sweep_batches, FLAGS.sweep_batches_classes,
        ))
    results, failures = [], []
    for backend in FLAGS.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        command = [sys.executable, os.path.abspath(__file__), f"--worker={backend}", f"--repeats={FLAGS.repeats}"] + extra
        if shapes_flag:
            command.append(f"--shapes={shapes_flag}")
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        kind, value = worker_outcome(proc.returncode, proc.stdout, proc.stderr)
        if kind == "results":
            results.extend(value)
        elif kind == "skipped":
            print(f"{backend}: skipped: {value}")
        else:
            failures.append(f"{backend}: {value}")
    if FLAGS.sweep:
        print(format_sweep_table(
            results, FLAGS.sweep_classes_batch, FLAGS.sweep_batches_classes
        ))
    else:
        _print_table(results)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _print_table(results):
    by_key = {(r["backend"], r["shape"], r["loss"]): r["ms"] for r in results}
    rows = sorted({(r["backend"], r["shape"]) for r in results}, key=lambda k: (k[0], int(k[1].split("x")[0]) * int(k[1].split("x")[1])))
    print(f"{'backend':<18}{'batch x classes':>16}{'CSL ms':>10}{'BCE ms':>10}{'CSL/BCE':>9}")
    for backend, shape in rows:
        csl, bce = by_key[(backend, shape, "csl")], by_key[(backend, shape, "bce")]
        print(f"{backend:<18}{shape:>16}{csl:>10.3f}{bce:>10.3f}{csl / bce:>9.2f}")


def format_sweep_table(results, classes_batch, batches_classes):
    """Two sections (against classes, against batch), ms and ms per 1k entries."""
    by_key = {(r["backend"], r["shape"], r["loss"]): r["ms"] for r in results}
    shapes = sorted({tuple(int(v) for v in r["shape"].split("x")) for r in results})
    backends = sorted({r["backend"] for r in results})
    header = (
        f"{'backend':<18}{'batch x classes':>16}{'entries':>10}{'CSL ms':>10}"
        f"{'BCE ms':>10}{'CSL/BCE':>9}{'CSL ms/1k':>11}{'BCE ms/1k':>11}"
    )
    sections = (
        (f"against classes (batch {classes_batch})",
         [s for s in shapes if s[0] == classes_batch], lambda s: s[1]),
        (f"against batch ({batches_classes:,} classes)",
         [s for s in shapes if s[1] == batches_classes], lambda s: s[0]),
    )
    lines = []
    for title, section_shapes, order in sections:
        lines += ["", title, header]
        for backend in backends:
            for batch, classes in sorted(section_shapes, key=order):
                shape = f"{batch}x{classes}"
                if (backend, shape, "csl") not in by_key:
                    continue
                csl, bce = by_key[(backend, shape, "csl")], by_key[(backend, shape, "bce")]
                thousands = batch * classes / 1000
                lines.append(
                    f"{backend:<18}{shape:>16}{batch * classes:>10}{csl:>10.3f}"
                    f"{bce:>10.3f}{csl / bce:>9.2f}{csl / thousands:>11.4f}"
                    f"{bce / thousands:>11.4f}"
                )
    return "\n".join(lines[1:])


if __name__ == "__main__":
    app.run(main)
