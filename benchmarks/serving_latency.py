"""Latency of the exported `serving_default` signature, and what decoding costs.

    python benchmarks/serving_latency.py                  # tiny + ResNet50, 224 px
    python benchmarks/serving_latency.py --models=tiny --calls=50
    python benchmarks/serving_latency.py --quick          # a smoke run

One run measures side by side, in this process (`tf.saved_model.load`, no
network, no TF Serving batching):

- `serve`: the `serving_default` signature of `export_for_serving` on
  batches of encoded JPEGs, per model (`build_model(..., weights=None)`,
  80 classes), for each batch size;
- `decode (map_fn)` against `decode (flagging)`: the decoding and resizing
  of the same batches, once as a plain `tf.map_fn` over
  `preprocess_encoded` (which fails the whole batch on one bad file, the
  signature before the `valid` output) and once with
  `keras_csl.export.signatures.decode_valid_images` (what the signature
  does now), with their ratio per round.

Inputs: the JPEGs of ../shared/data/coco-sample/images as they are (about
640 x 480) where present, and generated 224 x 224 JPEGs. Each figure is the
median over `--calls` calls after `--warmup` calls, in `--rounds`
interleaved rounds (the table shows the median of the rounds, the range in
brackets). The machine line gives the CPU count and model, the versions and
the load average:
numbers from a loaded machine are upper bounds.

Time with the defaults: 1 min 21 s on 2 quiet cores (`/usr/bin/time`,
2026-11-30; the ResNet50 calls dominate); `--quick` took 29 s on a
loaded 2-core machine.
"""

import os
import pathlib
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # _machine

from _machine import load_average, machine  # noqa: E402

DEFAULT_DATA = (
    pathlib.Path(__file__).resolve().parents[1].parent
    / "shared" / "data" / "coco-sample" / "images"
)

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_list("models", ["tiny", "resnet50"], "Backbones to export.")
    flags.DEFINE_list("batch_sizes", ["1", "8"], "Images per call.")
    flags.DEFINE_integer("image_size", 224, "Model input size.")
    flags.DEFINE_integer("num_classes", 80, "Number of classes.")
    flags.DEFINE_integer("calls", 20, "Timed calls per measurement.")
    flags.DEFINE_integer("warmup", 3, "Untimed calls before each measurement.")
    flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
    flags.DEFINE_string("data", str(DEFAULT_DATA), "Folder of real JPEGs (optional).")
    flags.DEFINE_bool("quick", False, "A smoke run: tiny model, 32 px, few calls.")



def inputs(image_size, data):
    """`{name: list of JPEG bytes}`: generated squares, and real photos."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:image_size, 0:image_size]
    squares = []
    for _ in range(8):
        noise = rng.integers(0, 60, (image_size, image_size, 3))
        pixels = np.clip((x + y)[..., None] * 255 / (2 * image_size) + noise, 0, 255)
        squares.append(tf.io.encode_jpeg(pixels.astype(np.uint8)).numpy())
    sets = {f"{image_size}x{image_size} JPEGs": squares}
    photos = sorted(pathlib.Path(data).glob("*.jpg"))[:8] if data else []
    if photos:
        sets["COCO photos as they are"] = [p.read_bytes() for p in photos]
    return sets


def median_ms(fn, batch, calls, warmup):
    """Median wall time of `fn(batch)` in milliseconds."""
    for _ in range(warmup):
        fn(batch)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(batch)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def measure(models, batch_sizes, image_size, num_classes, calls, warmup, rounds, data):
    """Rows `(what, model, inputs, batch, [ms per round])`, all in one run."""
    import tensorflow as tf

    from keras_csl.data.preprocessing import preprocess_encoded
    from keras_csl.export import export_for_serving
    from keras_csl.export import load_for_serving
    from keras_csl.export.signatures import decode_valid_images
    from keras_csl.models import build_model

    signatures = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            model = build_model(name, num_classes, image_size=image_size, weights=None)
            path = export_for_serving(model, os.path.join(folder, name))
            signatures[name] = load_for_serving(path)[0]
    spec = [tf.TensorSpec([None], tf.string)]
    decoders = {
        "decode (map_fn)": tf.function(
            lambda e: preprocess_encoded(e, image_size), input_signature=spec
        ),
        "decode (flagging)": tf.function(
            lambda e: decode_valid_images(e, image_size)[0], input_signature=spec
        ),
    }
    jobs = []
    for input_name, encoded in inputs(image_size, data).items():
        for size in batch_sizes:
            batch = tf.constant((encoded * size)[:size])
            for what, fn in decoders.items():
                jobs.append((what, "-", input_name, size, fn, batch))
            for name, serve in signatures.items():
                jobs.append((
                    "serve", name, input_name, size,
                    lambda b, serve=serve: serve(image_bytes=b), batch,
                ))
    results = {job[:4]: [] for job in jobs}
    for _ in range(rounds):  # interleaved: load hits every job alike
        for what, model, input_name, size, fn, batch in jobs:
            results[(what, model, input_name, size)].append(
                median_ms(fn, batch, calls, warmup)
            )
    return [(*key, times) for key, times in results.items()]


def table(rows):
    lines = ["| what | model | inputs | batch | ms per call (range) |",
             "|---|---|---|---|---|"]
    for what, model, input_name, size, times in rows:
        lines.append(
            f"| {what} | {model} | {input_name} | {size} | "
            f"{statistics.median(times):.1f} ({min(times):.1f} to {max(times):.1f}) |"
        )
    lines.append("")
    for (what, input_name, size), ratios in decode_ratios(rows).items():
        lines.append(
            f"flagging / map_fn decode, {input_name}, batch {size}: "
            f"{statistics.median(ratios):.2f}x (rounds: "
            + ", ".join(f"{r:.2f}" for r in ratios) + ")"
        )
    return "\n".join(lines)


def decode_ratios(rows):
    """`{(what, inputs, batch): per-round ratios flagging / map_fn}`."""
    by_key = {(r[0], r[2], r[3]): r[4] for r in rows}
    ratios = {}
    for (what, input_name, size), times in by_key.items():
        if what == "decode (flagging)":
            base = by_key[("decode (map_fn)", input_name, size)]
            ratios[(what, input_name, size)] = [t / b for t, b in zip(times, base)]
    return ratios


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if FLAGS.quick:
        models, sizes, image_size = ["tiny"], [1, 2], 32
        calls, warmup, rounds = 3, 1, 1
    else:
        models, image_size = FLAGS.models, FLAGS.image_size
        sizes = [int(s) for s in FLAGS.batch_sizes]
        calls, warmup, rounds = FLAGS.calls, FLAGS.warmup, FLAGS.rounds
    rows = measure(
        models, sizes, image_size, FLAGS.num_classes, calls, warmup, rounds,
        FLAGS.data if pathlib.Path(FLAGS.data).is_dir() else None,
    )
    import tensorflow as tf

    print(
        f"Machine: {machine()}, TensorFlow {tf.__version__}; {load_average()} at the end; "
        f"{image_size} px, "
        f"{FLAGS.num_classes} classes, median of {calls} calls after {warmup}, "
        f"{rounds} rounds."
    )
    print(table(rows))


if __name__ == "__main__":
    define_flags()
    app.run(main)
