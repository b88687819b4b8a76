"""Forward + backward time of the CSL loss against Keras's plain BCE.

    python benchmarks/loss_speed.py              # TF graph, TF XLA, JAX
    python benchmarks/loss_speed.py --backends=tensorflow --repeats=50

Each backend runs in its own process (Keras fixes the backend at import).
For every shape, the CSL loss in its default selective mode (prior set,
likelihood top-k 5, batch scope) and `keras.losses.BinaryCrossentropy(
from_logits=True)` are timed in the same process, on the same inputs:
median of `--repeats` calls of a compiled function returning the loss and its
gradient with respect to the logits. Targets: CSL at most 3x plain BCE, and
at 64 x 9,605 at most 4 ms on a 2-core CPU (the authors' PyTorch loss takes
about 207 ms there; ../shared/BASELINES.md).

Expected time: about 1 minute on 2 cores.
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


def _time_tensorflow(shapes, repeats):
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


def main(argv):
    del argv
    shapes = _parse_shapes(FLAGS.shapes)
    if FLAGS.worker:
        timer = _time_tensorflow if FLAGS.worker == "tensorflow" else _time_jax
        print("RESULTS " + json.dumps(timer(shapes, FLAGS.repeats)))
        return
    results = []
    for backend in FLAGS.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        command = [sys.executable, os.path.abspath(__file__), f"--worker={backend}", f"--repeats={FLAGS.repeats}"]
        if FLAGS.shapes:
            command.append(f"--shapes={FLAGS.shapes}")
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
        if proc.returncode or not lines:
            print(f"{backend}: skipped ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'})")
            continue
        results.extend(json.loads(lines[-1][len("RESULTS "):]))
    _print_table(results)


def _print_table(results):
    by_key = {(r["backend"], r["shape"], r["loss"]): r["ms"] for r in results}
    rows = sorted({(r["backend"], r["shape"]) for r in results}, key=lambda k: (k[0], int(k[1].split("x")[0]) * int(k[1].split("x")[1])))
    print(f"{'backend':<18}{'batch x classes':>16}{'CSL ms':>10}{'BCE ms':>10}{'CSL/BCE':>9}")
    for backend, shape in rows:
        csl, bce = by_key[(backend, shape, "csl")], by_key[(backend, shape, "bce")]
        print(f"{backend:<18}{shape:>16}{csl:>10.3f}{bce:>10.3f}{csl / bce:>9.2f}")


if __name__ == "__main__":
    app.run(main)
