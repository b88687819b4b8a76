"""Forward + backward time of the CSL loss, side by side with what it is compared to.

    python benchmarks/loss_speed.py              # TF graph, TF XLA, JAX
    python benchmarks/loss_speed.py --authors_loss=PATH/partial_asymmetric_loss.py
    python benchmarks/loss_speed.py --threads=1 --authors_loss=PATH/...   # one thread each
    python benchmarks/loss_speed.py --backends=tensorflow --repeats=50
    python benchmarks/loss_speed.py --sweep      # growth with classes, batch

Each backend runs in its own process (Keras fixes the backend at import).
For every shape and mode, in that process and on the same inputs, these
are timed in alternation (round r calls each once, in rotating order; the
figures are medians over `--repeats` rounds, the ratios medians of the
per-round ratios, which load from other processes disturbs least):

- `CSL`: `keras_csl.ClassAwareSelectiveLoss` in its default selective mode
  (prior set, likelihood top-k 5, batch scope), with its input checks;
- `no-check`: the same loss object without the input checks
  (`selective_loss(..., check_inputs=False)` in its `call`): `check %` is
  what the checks of target values and shapes cost;
- `BCE`: `keras.losses.BinaryCrossentropy(from_logits=True)`;
- `BCE 1exp`: binary cross-entropy written with one `exp` per entry
  (`max(x, 0) - x y + log1p(exp(-|x|))`), as TensorFlow's
  `sigmoid_cross_entropy_with_logits` computes it. Keras's BCE on JAX
  evaluates `log_sigmoid` twice (of `x` and of `-x`): its compiled step
  holds 6 exp/log1p instructions per entry against 2 for CSL (one `exp`
  and one `log1p`, the gradient written by hand) and for this BCE; the
  script prints these counts for JAX. That is why CSL can come out below
  Keras's BCE on JAX: a real difference of work, not a timing artefact;
- `authors` (with `--authors_loss`): the authors' `PartialSelectiveLoss`
  from their unmodified file (see benchmarks/authors_loss.py for how it
  runs on a CPU), in PyTorch, with the same settings and prior. Before
  timing, its value and gradient are compared with ours (the worker fails
  when they differ by more than 1e-4 relative).

Each figure is a call of a compiled function returning the loss and its
gradient with respect to the logits (PyTorch: forward and `backward()`).
`--threads=1` runs every framework on one thread (TensorFlow's intra-
and inter-op pools, XLA's CPU backend for JAX, PyTorch): the work of each
loss, compared without thread pools. On a shared 2-core machine this is
the steadier comparison: while other processes held a core, PyTorch with
2 threads was several times slower than with one and varied by an order
of magnitude from call to call (seen while this script was written, load
average about 3), and a PyTorch call right after a TensorFlow call in the
same process was slowed too (both keep threads spinning after their
work). `--threads=0` (default) leaves each framework's own choice; the
thread counts used are printed.

`--sweep` times how the cost grows instead: against the number of classes
(`--sweep_classes`, default 80, 1,000, 9,605 and 20,000, at batch
`--sweep_classes_batch` 64) and against the batch (`--sweep_batches`,
default 16, 64 and 256, at `--sweep_batches_classes` 9,605 classes), with
TF graph mode only (`--tf_modes=graph,xla` adds XLA) and JAX when
`--backends` includes it. Its table adds the number of entries (batch x
classes) and the ms per 1,000 entries of each loss: a flat column is cost
linear in the entries.

A backend that is not installed is reported as skipped; a worker that
fails otherwise (also a mismatch with the authors' loss) is reported with
its error, after the table of the others, and the script exits with
status 1.

Time on 2 quiet cores (`/usr/bin/time`, 2026-11-30, `--repeats=50`):
35-39 s; with `--authors_loss` about 2 minutes (their loss takes 0.3-0.4 s
at 256 x 9,605); `--sweep --repeats=30` 45 s.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # authors_loss

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
flags.DEFINE_string(
    "authors_loss", None,
    "Path to the authors' unmodified partial_asymmetric_loss.py, to time it too.",
)
flags.DEFINE_integer(
    "threads", 0, "1: every framework on one thread; 0: each framework's default."
)
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


def alternating_rounds(fns, repeats):
    """ms of each call, per round: `{name: [ms of round 0, ...]}`.

    Every function is called twice first (compilation, warm-up); then each
    round calls every function once, in an order rotated from round to
    round, so that drifting load hits all of them alike.
    """
    names = list(fns)
    for name in names:
        fns[name]()
        fns[name]()
    rounds = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            fns[name]()
            rounds[name].append(1e3 * (time.perf_counter() - start))
    return rounds


def _rows(backend, batch, classes, rounds):
    import numpy as np

    return [
        dict(backend=backend, shape=f"{batch}x{classes}", loss=name,
             ms=float(np.median(values)), rounds=values)
        for name, values in rounds.items()
    ]


def _lean_bce(labels, logits):
    """Binary cross-entropy from logits with one exp per entry, batch mean."""
    from keras import ops

    x = ops.cast(logits, "float32")
    per_entry = ops.maximum(x, 0.0) - x * labels + ops.log1p(ops.exp(-ops.abs(x)))
    return ops.mean(per_entry)


def _unchecked(prior):
    """`ClassAwareSelectiveLoss` without its input checks, all else equal.

    The same Keras `Loss` (conversions, reduction, the prior read from its
    variable), so that "check %" is the cost of the checks alone.
    """
    import keras_csl
    from keras_csl.losses.selective import selective_loss

    class Unchecked(keras_csl.ClassAwareSelectiveLoss):
        def call(self, y_true, y_pred):
            return selective_loss(
                y_true, y_pred, self.settings, prior=self.prior_variable.value,
                check_inputs=False,
            )

    return Unchecked(prior=prior)


def _losses(targets, prior):
    """`{name: (loss fn, labels)}` of every loss timed, for one shape."""
    import keras

    import keras_csl

    labels01 = (targets > 0).astype("float32")
    return {
        "csl": (keras_csl.ClassAwareSelectiveLoss(prior=prior), targets),
        "csl_unchecked": (_unchecked(prior), targets),
        "bce": (keras.losses.BinaryCrossentropy(from_logits=True), labels01),
        "bce_lean": (_lean_bce, labels01),
    }


def _time_tensorflow(shapes, repeats, modes=("graph", "xla"), authors=None):
    import tensorflow as tf

    results, checks = [], []
    for batch, classes in shapes:
        targets, logits, prior = _inputs(batch, classes)
        if authors is not None:
            import authors_loss

            checks.append(dict(shape=f"{batch}x{classes}", **authors.check(
                targets, logits, prior, *authors_loss.our_sum_and_gradient(targets, logits, prior)
            )))
        x = tf.constant(logits)
        for mode, xla in (("graph", False), ("xla", True)):
            if mode not in modes:
                continue
            fns = {}
            for name, (loss, labels) in _losses(targets, prior).items():

                @tf.function(jit_compile=xla)
                def step(labels, x, loss=loss):
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        value = loss(labels, x)
                    return value, tape.gradient(value, x)

                labels = tf.constant(labels)
                fns[name] = lambda step=step, labels=labels: [
                    t.numpy() for t in step(labels, x)
                ]
            if authors is not None:
                fns["authors"] = authors.step(targets, logits, prior)[0]
            results += _rows(f"tensorflow-{mode}", batch, classes, alternating_rounds(fns, repeats))
    return results, checks


def _time_jax(shapes, repeats, authors=None):
    import jax

    results, checks = [], []
    for batch, classes in shapes:
        targets, logits, prior = _inputs(batch, classes)
        if authors is not None:
            import authors_loss

            checks.append(dict(shape=f"{batch}x{classes}", **authors.check(
                targets, logits, prior, *authors_loss.our_sum_and_gradient(targets, logits, prior)
            )))
        # On the device first: the copy of the inputs is not the loss's cost.
        x = jax.device_put(logits)
        fns, transcendentals = {}, {}
        for name, (loss, labels) in _losses(targets, prior).items():
            step = jax.jit(jax.value_and_grad(lambda x, labels, loss=loss: loss(labels, x)))
            labels = jax.device_put(labels)
            fns[name] = lambda step=step, labels=labels: jax.block_until_ready(step(x, labels))
            transcendentals[name] = count_transcendentals(
                step.lower(x, labels).compile().as_text()
            )
        if authors is not None:
            fns["authors"] = authors.step(targets, logits, prior)[0]
        rows = _rows("jax-jit", batch, classes, alternating_rounds(fns, repeats))
        for row in rows:
            if row["loss"] in transcendentals:
                row["transcendentals"] = transcendentals[row["loss"]]
        results += rows
    return results, checks


def count_transcendentals(hlo_text):
    """exp, log and log1p instructions in compiled HLO: per-entry work.

    Each elementwise instruction runs once per entry of the batch, so the
    count tells how many of these costly functions a loss evaluates per
    entry, forward and backward together.
    """
    import re

    return sum(
        len(re.findall(rf"\b{op}\(", hlo_text))
        for op in ("exponential", "log", "log-plus-one")
    )


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


SINGLE_THREAD_XLA = " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

# The packages whose absence means "backend not installed" (a skip).
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib")}


def _run_worker(backend, shapes, repeats, tf_modes, authors_path=None, threads=0):
    """Prints the worker's timings as one `RESULTS` line, or `SKIPPED` why."""
    try:
        if backend == "tensorflow" and threads:
            import tensorflow as tf

            # Before TensorFlow runs anything.
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        authors, info = None, {}
        if authors_path:
            import torch

            import authors_loss

            authors = authors_loss.AuthorsLoss(authors_path, threads)
            info = dict(
                authors_file=os.path.abspath(authors_path),
                authors_sha256=authors_loss.file_digest(authors_path),
                torch=torch.__version__, torch_threads=torch.get_num_threads(),
            )
        if backend == "tensorflow":
            results, checks = _time_tensorflow(shapes, repeats, tf_modes, authors)
            import tensorflow as tf

            info["threads"] = (
                f"TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads()}, "
                f"inter-op {tf.config.threading.get_inter_op_parallelism_threads()} (0: default)"
            )
        else:
            results, checks = _time_jax(shapes, repeats, authors)
            info["threads"] = f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    except ImportError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in BACKEND_PACKAGES[backend]:
            raise
        print(f"SKIPPED {backend} is not installed ({error})")
        return
    print("RESULTS " + json.dumps(dict(rows=results, checks=checks, info=info)))


def worker_outcome(returncode, stdout, stderr):
    """`("results", list)`, `("skipped", reason)` or `("failed", reason)`."""
    if returncode == 0:
        for line in reversed(stdout.splitlines()):
            if line.startswith("RESULTS "):
                value = json.loads(line[len("RESULTS "):])
                if isinstance(value, list):  # Rows alone.
                    value = dict(rows=value, checks=[], info={})
                return "results", value
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
        _run_worker(
            FLAGS.worker, shapes, FLAGS.repeats, FLAGS.tf_modes,
            FLAGS.authors_loss, FLAGS.threads,
        )
        return 0
    _check_authors_flag(FLAGS.authors_loss)
    shapes_flag = FLAGS.shapes
    extra = [f"--tf_modes={','.join(FLAGS.tf_modes)}"] if FLAGS["tf_modes"].present else []
    if FLAGS.sweep:
        if not FLAGS["tf_modes"].present:
            extra = ["--tf_modes=graph"]
        shapes_flag = _format_shapes(sweep_shapes(
            FLAGS.sweep_classes, FLAGS.sweep_classes_batch,
            FLAGS.sweep_batches, FLAGS.sweep_batches_classes,
        ))
    if FLAGS.authors_loss:
        extra += [f"--authors_loss={os.path.abspath(FLAGS.authors_loss)}"]
    if FLAGS.threads:
        if FLAGS.threads != 1:
            raise app.UsageError(
                "Invalid value for --threads. Expected 0 (defaults) or 1 (XLA's "
                f"CPU backend has no other fixed count). Received: {FLAGS.threads}"
            )
        extra.append(f"--threads={FLAGS.threads}")
    results, checks, infos, failures = [], [], [], []
    for backend in FLAGS.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        if FLAGS.threads == 1:  # Read by XLA when JAX starts (also TF's XLA).
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + SINGLE_THREAD_XLA).strip()
        command = [sys.executable, os.path.abspath(__file__), f"--worker={backend}", f"--repeats={FLAGS.repeats}"] + extra
        if shapes_flag:
            command.append(f"--shapes={shapes_flag}")
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        kind, value = worker_outcome(proc.returncode, proc.stdout, proc.stderr)
        if kind == "results":
            results.extend(value["rows"])
            checks += [dict(backend=backend, **c) for c in value["checks"]]
            if value["info"]:
                infos.append(dict(value["info"], backend=backend))
        elif kind == "skipped":
            print(f"{backend}: skipped: {value}")
        else:
            failures.append(f"{backend}: {value}")
    if FLAGS.sweep:
        print(format_sweep_table(
            results, FLAGS.sweep_classes_batch, FLAGS.sweep_batches_classes
        ))
    else:
        print(format_table(results))
        print(format_transcendentals(results))
    for info in infos:
        print(f"{info['backend']} threads: {info['threads']}")
    authors_infos = [info for info in infos if "authors_file" in info]
    if authors_infos:
        print(format_authors_info(authors_infos[0], checks))
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _check_authors_flag(path):
    if not path:
        return
    import importlib.util

    if not os.path.isfile(path):
        raise app.UsageError(
            "Invalid value for --authors_loss. Expected the path of the "
            "authors' partial_asymmetric_loss.py. Received: "
            f"{path!r} (no such file)"
        )
    if importlib.util.find_spec("torch") is None:
        raise app.UsageError("--authors_loss needs PyTorch (pip install torch).")


def ratio(by_key, backend, shape, numerator, denominator):
    """Median of the per-round ratios (or the ratio of the medians)."""
    import numpy as np

    a = by_key.get((backend, shape, numerator))
    b = by_key.get((backend, shape, denominator))
    if a is None or b is None:
        return None
    if a.get("rounds") and b.get("rounds") and len(a["rounds"]) == len(b["rounds"]):
        return float(np.median(np.asarray(a["rounds"]) / np.asarray(b["rounds"])))
    return a["ms"] / b["ms"]


COLUMNS = (
    # (header, width, what: a loss's ms or a ratio (numerator, denominator))
    ("CSL ms", 9, "csl"),
    ("no-check ms", 12, "csl_unchecked"),
    ("check %", 9, ("csl", "csl_unchecked")),
    ("BCE ms", 9, "bce"),
    ("BCE 1exp ms", 12, "bce_lean"),
    ("CSL/BCE", 9, ("csl", "bce")),
    ("authors ms", 11, "authors"),
    ("authors/CSL", 12, ("authors", "csl")),
)


def format_table(results):
    """One row per backend and shape; columns for the losses that were timed."""
    by_key = {(r["backend"], r["shape"], r["loss"]): r for r in results}
    losses = {r["loss"] for r in results}
    columns = [
        c for c in COLUMNS
        if (c[2] if isinstance(c[2], str) else c[2][0]) in losses
        and (isinstance(c[2], str) or c[2][1] in losses)
    ]
    rows = sorted(
        {(r["backend"], r["shape"]) for r in results},
        key=lambda k: (k[0], int(k[1].split("x")[0]) * int(k[1].split("x")[1])),
    )
    lines = [f"{'backend':<18}{'batch x classes':>16}" + "".join(
        f"{header:>{width}}" for header, width, _ in columns
    )]
    for backend, shape in rows:
        cells = []
        for header, width, what in columns:
            if isinstance(what, str):
                row = by_key.get((backend, shape, what))
                cells.append(f"{row['ms']:>{width}.3f}" if row else f"{'-':>{width}}")
                continue
            value = ratio(by_key, backend, shape, *what)
            if value is None:
                cells.append(f"{'-':>{width}}")
            elif header == "check %":
                cells.append(f"{100 * (value - 1):>{width}.1f}")
            else:
                cells.append(f"{value:>{width}.2f}")
        lines.append(f"{backend:<18}{shape:>16}" + "".join(cells))
    return "\n".join(lines)


def format_transcendentals(results):
    """One line per JAX shape: exp/log instructions in each compiled step."""
    names = dict(csl="CSL", csl_unchecked="no-check", bce="BCE", bce_lean="BCE 1exp")
    by_shape = {}
    for r in results:
        if "transcendentals" in r:
            by_shape.setdefault((r["backend"], r["shape"]), []).append(
                f"{names.get(r['loss'], r['loss'])} {r['transcendentals']}"
            )
    if not by_shape:
        return ""
    lines = ["", "exp/log/log1p instructions per compiled step (each runs once per entry):"]
    lines += [f"  {b} {s}: " + ", ".join(v) for (b, s), v in sorted(by_shape.items())]
    return "\n".join(lines)


def format_authors_info(info, checks):
    """What was compared with the authors' loss, and how closely it agreed."""
    lines = [
        "",
        f"authors: {info['authors_file']} (sha256 {info['authors_sha256'][:12]}), "
        f"torch {info['torch']}, {info['torch_threads']} thread(s)",
    ]
    for c in checks:
        lines.append(
            f"  {c['backend']} {c['shape']}: value and gradient agree with "
            f"ours to {c['value_error']:.1e} and {c['grad_error']:.1e} (relative)"
        )
    return "\n".join(lines)


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
