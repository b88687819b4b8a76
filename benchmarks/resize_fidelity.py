r"""The resize methods against Pillow: pixel differences and speed, side by side.

    python benchmarks/resize_fidelity.py                          # the docs' run
    python benchmarks/resize_fidelity.py --image_size=448
    python benchmarks/resize_fidelity.py --images=64 --rounds=1   # smoke, ~30 s

On the 53 real COCO JPEGs of ../shared/data/coco-sample (about 640 x 480),
each way keras-csl can turn a JPEG into a `S x S` squash-resized model
input (`keras_csl.data.preprocessing.preprocess_encoded`) is compared
with what the CSL authors' `infer.py` feeds their model:
`PIL.Image.open(path).convert("RGB").resize((S, S))` (Pillow's default
filter, antialiased bicubic). The ways (the card fields in brackets):

- `bilinear+downscale` (`resize_method="bilinear"`, `jpeg_downscale=True`):
  keras-csl's default, what every model it trains uses unless told;
- `bilinear` (`"bilinear"`, `False`): the same after a full decode;
- `pillow_bicubic` (`"pillow_bicubic"`, `False`): what the checkpoint
  converter writes for the authors' checkpoints;
- `pillow_bicubic+downscale` (`"pillow_bicubic"`, `True`).

and, for the pixel table only, two steps on the way (not card settings):
`tf_bicubic_aa` (a full decode with TensorFlow's default, fast IDCT and one
`tf.image.resize(..., "bicubic", antialias=True)` in float: the obvious
TensorFlow version of Pillow's resize) and `pillow_bicubic_fast_idct`
(`pillow_bicubic`'s resize after the fast IDCT): what the accurate IDCT
and the rounded passes each buy; and, for scale, `pillow_bilinear`:
Pillow's own `resize((S, S), BILINEAR)`, what torchvision's
`Resize((S, S))` gives, the authors' COCO training and validation
transform (`src/helper_functions/get_data.py`), against their demo's
bicubic.

Pixel table, per way: the mean absolute difference from Pillow's pixels in
grey levels (0-255; averaged over the photos, and the worst photo), the
largest difference of any value, and the share of values that differ at
all. Nothing here is timed.

Speed table: images/s of each way in a `tf.data` pipeline over the JPEG
bytes held in memory (parallel map, batch `--batch_size`, prefetch), with
`--threads` threads (1 by default: per-core figures), next to Pillow's
decode + resize in this process (one thread). Each way is timed for
`--images` images after a warm-up, in `--rounds` interleaved rounds; the
table gives the median images/s, the median over rounds of the ratio to
`bilinear+downscale` **timed in the same round** (load from other
processes hits neighbouring measurements alike), and the CPU time per
image of this process, which other processes disturb less than wall time.
On a shared machine read the ratios and the CPU times, not the images/s.

Time with the defaults: 71 s on 2 quiet cores (`/usr/bin/time`,
2026-11-30; `--images=64 --rounds=1` took 18 s on a loaded machine).
Prints a note and exits 0 when
../shared/data/coco-sample is absent.
"""

import io
import json
import os
import pathlib
import statistics
import sys
import time

from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # _machine

from _machine import load_average, machine  # noqa: E402

DEFAULT_DATA = (
    pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"
)
# name -> preprocess_encoded arguments; the first is the speed baseline.
WAYS = {
    "bilinear+downscale": dict(method="bilinear", jpeg_downscale=True),
    "bilinear": dict(method="bilinear", jpeg_downscale=False),
    "pillow_bicubic": dict(method="pillow_bicubic", jpeg_downscale=False),
    "pillow_bicubic+downscale": dict(method="pillow_bicubic", jpeg_downscale=True),
}
STEPS = ("tf_bicubic_aa", "pillow_bicubic_fast_idct", "pillow_bilinear")
BASELINE = "bilinear+downscale"
PILLOW = "pillow (1 thread)"

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("data", str(DEFAULT_DATA), "The coco-sample folder.")
    flags.DEFINE_integer("image_size", 224, "Side S of the model input.")
    flags.DEFINE_integer("batch_size", 32, "Batch size of the timed pipelines.")
    flags.DEFINE_integer("images", 1000, "Images timed per measurement.")
    flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds; medians shown.")
    flags.DEFINE_integer(
        "threads", 1, "tf.data threads (0: tf.data's default pool); Pillow uses 1."
    )
    flags.DEFINE_bool("speed", True, "Time the ways (--nospeed: pixels only).")
    flags.DEFINE_string("json", None, "Also write every figure to this JSON file.")


def read_photos(folder):
    """`[(file name, JPEG bytes)]` of the sample's photos, sorted by name."""
    paths = sorted(pathlib.Path(folder, "images").glob("*.jpg"))
    return [(path.name, path.read_bytes()) for path in paths]


def pillow_pixels(data, size):
    """What the authors' `infer.py` feeds their model, before `/ 255`."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(image.resize((size, size)), dtype=np.uint8)


def way_fn(name, size):
    """The function from JPEG bytes to float32 `[S, S, 3]` of a way or step."""
    import numpy as np
    import tensorflow as tf

    from keras_csl.data import preprocessing

    if name in WAYS:
        return lambda data: preprocessing.preprocess_encoded(data, size, **WAYS[name])
    if name == "tf_bicubic_aa":
        def one_pass(data):
            image = preprocessing.decode_image(data)
            out = tf.image.resize(image, [size, size], "bicubic", antialias=True)
            return tf.clip_by_value(out, 0.0, 255.0)

        return one_pass
    if name == "pillow_bicubic_fast_idct":
        return lambda data: preprocessing.resize_image(
            preprocessing.decode_image(data), size, method="pillow_bicubic"
        )
    if name == "pillow_bilinear":
        from PIL import Image

        def bilinear(data):
            image = Image.open(io.BytesIO(bytes(data))).convert("RGB")
            return np.asarray(image.resize((size, size), Image.BILINEAR), np.float32)

        return bilinear
    raise ValueError(f"Unknown way {name!r}: expected one of {list(WAYS) + list(STEPS)}")


def pixel_differences(photos, size, names):
    """`{name: figures}` of each way's pixels against Pillow's, per photo.

    Figures: `mean` (mean absolute difference, averaged over photos),
    `worst_mean` (the largest per-photo mean), `max` (the largest
    difference of any value) and `differing` (share of values that differ,
    over all photos), in grey levels 0-255.
    """
    import numpy as np

    references = [pillow_pixels(data, size).astype(np.float64) for _, data in photos]
    results = {}
    for name in names:
        fn = way_fn(name, size)
        means, largest, differing, values = [], 0.0, 0, 0
        for (_, data), reference in zip(photos, references):
            difference = np.abs(np.asarray(fn(data), np.float64) - reference)
            means.append(float(difference.mean()))
            largest = max(largest, float(difference.max()))
            differing += int((difference > 0).sum())
            values += difference.size
        results[name] = dict(
            mean=float(np.mean(means)), worst_mean=float(np.max(means)),
            max=largest, differing=differing / values,
        )
    return results


def measure_tf(name, encoded, size, batch_size, threads, num_images, warmup=2):
    """(images/s, CPU ms per image) of one way in a tf.data pipeline."""
    import tensorflow as tf

    fn = way_fn(name, size)
    ds = (
        tf.data.Dataset.from_tensor_slices(encoded)
        .repeat()
        .map(fn, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(2)
    )
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while count < num_images:
        count += int(next(iterator).shape[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, 1e3 * cpu / count


def measure_pillow(encoded, size, num_images, warmup=8):
    """(images/s, CPU ms per image) of Pillow's decode + resize, one thread."""
    for data in encoded[:warmup]:
        pillow_pixels(data, size)
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while count < num_images:
        pillow_pixels(encoded[count % len(encoded)], size)
        count += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, 1e3 * cpu / count


def speed_rows(encoded, size, batch_size, threads, num_images, rounds, log=print):
    """One row per round and way: `round, way, images_per_s, cpu_ms`."""
    rows = []
    for round_index in range(rounds):
        for name in list(WAYS) + [PILLOW]:
            if name == PILLOW:
                rate, cpu = measure_pillow(encoded, size, num_images)
            else:
                rate, cpu = measure_tf(
                    name, encoded, size, batch_size, threads, num_images
                )
            rows.append(dict(round=round_index, way=name, images_per_s=rate, cpu_ms=cpu))
            log(f"round {round_index + 1}/{rounds} {name}: {rate:.0f} images/s, "
                f"{cpu:.2f} CPU ms/image")
    return rows


def format_pixel_table(results, size):
    lines = [
        f"\nPixels against Pillow's resize((S, S)), S = {size} (grey levels 0-255)",
        "| way | mean abs. difference | worst photo | largest | values differing |",
        "|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        lines.append(
            f"| {name} | {figures['mean']:.4f} | {figures['worst_mean']:.4f} | "
            f"{figures['max']:.0f} | {100 * figures['differing']:.3f}% |"
        )
    return "\n".join(lines)


def format_speed_table(rows, threads):
    rounds = sorted({r["round"] for r in rows})
    rate = {(r["round"], r["way"]): r["images_per_s"] for r in rows}
    cpu = {(r["round"], r["way"]): r["cpu_ms"] for r in rows}
    label = f"{threads} tf.data thread(s)" if threads else "tf.data's default threads"
    lines = [
        f"\nSpeed, {label}, Pillow 1 thread: median of {len(rounds)} round(s)",
        f"| way | images/s | x {BASELINE}, same round | CPU ms/image |",
        "|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["way"] for r in rows):
        ratios = [rate[(k, name)] / rate[(k, BASELINE)] for k in rounds]
        lines.append(
            f"| {name} | {statistics.median(rate[(k, name)] for k in rounds):.0f} | "
            f"{statistics.median(ratios):.2f} | "
            f"{statistics.median(cpu[(k, name)] for k in rounds):.2f} |"
        )
    return "\n".join(lines)


def _machine():
    import PIL
    import tensorflow as tf

    return f"{machine()}, TensorFlow {tf.__version__}, Pillow {PIL.__version__}"


def main(argv):
    del argv
    folder = pathlib.Path(FLAGS.data)
    if not (folder / "images").is_dir():
        print(f"Skipped: the coco sample is not at {folder} (see --data).")
        return 0
    for flag in ("image_size", "batch_size", "images", "rounds"):
        if getattr(FLAGS, flag) < 1:
            raise app.UsageError(
                f"Invalid value for flag --{flag}. Expected an integer >= 1. "
                f"Received: {getattr(FLAGS, flag)}"
            )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    photos = read_photos(folder)
    if not photos:
        raise app.UsageError(f"No .jpg file in {folder / 'images'}.")
    size = FLAGS.image_size
    print(f"{len(photos)} JPEGs from {folder}, {size} px")
    print(_machine())
    print(f"before: {load_average()}")
    pixels = pixel_differences(photos, size, list(WAYS) + list(STEPS))
    print(format_pixel_table(pixels, size))
    rows = []
    if FLAGS.speed:
        rows = speed_rows(
            [data for _, data in photos], size, FLAGS.batch_size, FLAGS.threads,
            FLAGS.images, FLAGS.rounds,
        )
        print(format_speed_table(rows, FLAGS.threads))
    print(f"after: {load_average()}")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(dict(image_size=size, machine=_machine(), pixels=pixels,
                           speed=rows, threads=FLAGS.threads), f, indent=1)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
