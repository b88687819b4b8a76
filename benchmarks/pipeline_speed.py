"""Images/s of the input pipelines, PIL and TensorFlow, on the same inputs.

    python benchmarks/pipeline_speed.py --threads=1,0      # the docs' run
    python benchmarks/pipeline_speed.py --image_size=448 --rounds=5
    python benchmarks/pipeline_speed.py --images=64 --rounds=1 --threads=1  # smoke

Over the 53 real COCO JPEGs of ../shared/data/coco-sample (about 640x480,
170 KB), repeated, every pipeline runs on each of two inputs:

- `original`: the JPEGs as they are;
- `short256`: the same photos re-encoded once at a short side of 256 px
  (antialiased resize, JPEG quality 90), as the converters write them with
  `resize_short_side=256`.

Pipelines (each makes float32 `[batch, S, S, 3]` batches in this process):

- `pil`: PIL decode + `resize((S, S), BILINEAR)` (what torchvision's
  `Resize((S, S))` does), in worker processes, one batch per task, as a
  PyTorch `DataLoader` would; workers return uint8 batches, cast to float32
  here;
- `pil_recipe`: the authors' training transform, same workers: resize, a
  random half-size cutout filled with one random colour (their
  `CutoutPIL(0.5)`), `RandAugment()` of the `randaugment` package (1.0.2;
  the row is skipped, with the reason, when it is not installed:
  `pip install randaugment==1.0.2`, it needs only PIL and NumPy; the
  workers give it back the `np.int` alias that NumPy 1.24 removed);
- `tf_bare`: `tf.io.decode_jpeg` + `tf.image.resize` of in-memory bytes,
  parallel map, batch, prefetch (the floor a TF pipeline pays);
- `decode+resize`: the same with `preprocess_encoded`, the decode and
  resize of `make_dataset` and the serving export (DCT-scaled decode);
- `eval`: `make_dataset(training=False)` reading TFRecords of that input;
- `train`: `make_dataset(training=True)`: cutout, RandAugment (2 ops), flip;
- on request (`--pipelines=tf_bare,train_no_aug,...`), the parts of the
  augmentation: `train_no_aug` (`augment=False`), and `train_flip`,
  `train_cutout`, `train_ra1`, `train_ra2` (flip only, cutout only,
  RandAugment with 1 or 2 ops only).

`--threads=N` gives tf.data a private pool of N threads and PIL N worker
processes; 0 means tf.data's default pool and one PIL worker per core.
Each pipeline is timed for `--images` images after a warm-up of 3 batches,
in `--rounds` interleaved rounds. The table gives, per input, the median
images/s, the median over rounds of the ratio to `tf_bare`, `pil` and
`pil_recipe` **on the same input in the same round** (so every ratio
compares the same work on the same bytes; load from other processes hits
neighbouring measurements alike), and the CPU time per image (this
process's, plus the PIL workers' own time per task), which other processes
disturb less than wall time. The last table sets each pipeline on
`short256` against itself on `original`: what re-encoding the shards buys.

Time with the defaults and `--threads=1,0`: 4 min 56 s on 2 quiet cores
(`/usr/bin/time`, 2026-11-30); the per-part run of docs/PIPELINE.md
(`--inputs=original --pipelines=tf_bare,eval,train_no_aug,...`) 1 min 41 s.
Prints a note and exits 0 when ../shared/data/coco-sample is absent.
"""

import csv
import importlib.util
import io
import json
import multiprocessing
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

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"
INPUTS = ("original", "short256")
PIPELINES = ("pil", "pil_recipe", "tf_bare", "decode+resize", "eval", "train")
PARTS = ("train_no_aug", "train_flip", "train_cutout", "train_ra1", "train_ra2")
BASELINES = ("tf_bare", "pil", "pil_recipe")

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("data", str(DEFAULT_DATA), "The coco-sample folder.")
    flags.DEFINE_integer("image_size", 224, "Side of the output images.")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_integer("images", 1500, "Images timed per measurement.")
    flags.DEFINE_integer("rounds", 3, "Interleaved rounds; the table shows medians.")
    flags.DEFINE_list(
        "threads", ["0"],
        "tf.data private thread pool sizes and PIL worker counts to compare (0: "
        "tf.data's default pool, one PIL worker per core).",
    )
    flags.DEFINE_list(
        "pipelines", list(PIPELINES),
        f"Pipelines to time, of {PIPELINES}; also the parts of the augmentation {PARTS}.",
    )
    flags.DEFINE_list("inputs", list(INPUTS), "Inputs to time them on.")
    flags.DEFINE_string("json", None, "Also write every measurement to this JSON file.")



# ------------------------------------------------------------------ inputs


def read_sample(folder):
    """JPEG bytes, ids and `(positives, negatives)` of the coco sample."""
    with open(folder / "class-descriptions.csv", newline="") as f:
        class_index = {row[0]: i for i, row in enumerate(csv.reader(f)) if row}
    labels = {}
    with open(folder / "image-labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            positive, negative = labels.setdefault(row["ImageID"], ([], []))
            target = positive if row["Confidence"] == "1" else negative
            target.append(class_index[row["LabelName"]])
    images = []
    for path in sorted((folder / "images").glob("*.jpg")):
        positive, negative = labels.get(path.stem, ([], []))
        images.append((path.stem, path.read_bytes(), positive, negative))
    return images, len(class_index)


def shrink(data, short_side=256, quality=90):
    """JPEG bytes re-encoded at the given short side (antialiased resize)."""
    import tensorflow as tf

    image = tf.io.decode_jpeg(data, channels=3)
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    if scale >= 1:
        return data
    resized = tf.image.resize(image, [round(height * scale), round(width * scale)], antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    return tf.io.encode_jpeg(resized, quality=quality).numpy()


def write_shards(images, num_classes, folder, num_shards=4):
    """TFRecords of `images` laid out as a converter writes them."""
    import tensorflow as tf

    from keras_csl.data import features

    folder.mkdir(parents=True, exist_ok=True)
    writers = [
        tf.io.TFRecordWriter(str(folder / f"train-{i:05d}-of-{num_shards:05d}.tfrecord"))
        for i in range(num_shards)
    ]
    for k, (image_id, data, positive, negative) in enumerate(images):
        writers[k % num_shards].write(features.encode_example(data, image_id, positive, negative))
    for writer in writers:
        writer.close()
    features.write_classes_csv(
        str(folder / "classes.csv"),
        [f"class_{c}" for c in range(num_classes)],
        [f"Class {c}" for c in range(num_classes)],
    )
    (folder / "train-summary.json").write_text(json.dumps(
        {"split": "train", "images": len(images), "num_classes": num_classes}))
    return str(folder / "train-*.tfrecord")


# ------------------------------------------------------------------ PIL


_WORKER = {}


def _pil_worker_init(encoded, size):
    _WORKER.update(encoded=encoded, size=size)
    if importlib.util.find_spec("randaugment") is not None:
        import numpy as np
        from randaugment import RandAugment

        # randaugment 1.0.2 builds its tables with `np.int`, removed in
        # NumPy 1.24; the alias it meant is the builtin.
        if "int" not in np.__dict__:
            np.int = int

        _WORKER["randaugment"] = RandAugment()


def _cutout(image, factor=0.5):
    """A box of `factor` x the image sides around a random centre, one random colour."""
    import random

    from PIL import ImageDraw

    width, height = image.size
    half_w, half_h = int(factor * width + 0.5) // 2, int(factor * height + 0.5) // 2
    cx, cy = random.randrange(width), random.randrange(height)
    box = [max(cx - half_w, 0), max(cy - half_h, 0), min(cx + half_w, width), min(cy + half_h, height)]
    ImageDraw.Draw(image).rectangle(box, fill=tuple(random.randrange(256) for _ in range(3)))
    return image


def _pil_batch(task):
    """One uint8 batch `[B, S, S, 3]` and the worker CPU seconds it took."""
    import numpy as np
    from PIL import Image

    input_name, recipe, start, count = task
    cpu = time.process_time()
    encoded, size = _WORKER["encoded"][input_name], _WORKER["size"]
    batch = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        image = Image.open(io.BytesIO(encoded[(start + i) % len(encoded)])).convert("RGB")
        image = image.resize((size, size), Image.BILINEAR)
        if recipe:
            image = _WORKER["randaugment"](_cutout(image))
        batch[i] = np.asarray(image)
    return batch, time.process_time() - cpu


class PilPipelines:
    """A pool of PIL worker processes (spawned: never forked from TensorFlow)."""

    def __init__(self, encoded, size, workers):
        context = multiprocessing.get_context("spawn")
        self.pool = context.Pool(workers, _pil_worker_init, (encoded, size))
        self.position = 0

    def measure(self, input_name, recipe, batch, num_images, warmup=3):
        """(images/s, CPU ms per image: workers' plus this process's)."""
        import numpy as np

        timed = -(-num_images // batch)
        tasks = []
        for _ in range(warmup + timed):
            tasks.append((input_name, recipe, self.position, batch))
            self.position += batch
        results = self.pool.imap(_pil_batch, tasks)
        for _ in range(warmup):
            next(results)
        count, worker_cpu = 0, 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(timed):
            images, seconds = next(results)
            images = images.astype(np.float32)  # What the TF pipelines hand over.
            count += images.shape[0]
            worker_cpu += seconds
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return count / wall, 1e3 * (cpu + worker_cpu) / count

    def close(self):
        self.pool.close()
        self.pool.join()


# ------------------------------------------------------------------ TensorFlow


def tf_pipelines(encoded, pattern, num_classes, size, batch):
    """Dataset makers of the TF pipelines on one input."""
    import tensorflow as tf

    from keras_csl.data import make_dataset
    from keras_csl.data import preprocess_encoded

    def from_bytes(fn):
        def make():
            ds = tf.data.Dataset.from_tensor_slices(encoded).repeat()
            ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
            return ds.batch(batch).prefetch(tf.data.AUTOTUNE)

        return make

    def reader(training, **options):
        return lambda: make_dataset(
            pattern, num_classes, size, batch, training=training, repeat=True, **options
        )

    parts = dict(cutout=False, flip=False, randaugment_num_ops=0)
    return {
        "tf_bare": from_bytes(lambda data: tf.image.resize(tf.io.decode_jpeg(data, channels=3), [size, size])),
        "decode+resize": from_bytes(lambda data: preprocess_encoded(data, size)),
        "eval": reader(False),
        "train": reader(True),
        # What each part of the augmentation costs (--pipelines=...).
        "train_no_aug": reader(True, augment=False),
        "train_flip": reader(True, **dict(parts, flip=True)),
        "train_cutout": reader(True, **dict(parts, cutout=True)),
        "train_ra1": reader(True, **dict(parts, randaugment_num_ops=1)),
        "train_ra2": reader(True, **dict(parts, randaugment_num_ops=2)),
    }


def measure_tf(make, threads, num_images, warmup=3):
    """(images/s, CPU ms per image) of a tf.data pipeline."""
    import tensorflow as tf

    ds = make()
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        ds = ds.with_options(options)
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while count < num_images:
        count += int(tf.nest.flatten(next(iterator))[0].shape[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, 1e3 * cpu / count


# ------------------------------------------------------------------ report


def format_tables(rows, inputs, pipelines):
    """Markdown tables from measurement rows (one per round, input, pipeline).

    Each row: `threads, round, input, pipeline, images_per_s, cpu_ms`.
    Ratios are medians over rounds of per-round ratios on the same input.
    """
    lines = []
    for threads in dict.fromkeys(r["threads"] for r in rows):
        mine = [r for r in rows if r["threads"] == threads]
        rounds = sorted({r["round"] for r in mine})
        rate = {(r["round"], r["input"], r["pipeline"]): r["images_per_s"] for r in mine}
        cpu = {(r["round"], r["input"], r["pipeline"]): r["cpu_ms"] for r in mine}
        label = f"{threads} thread(s) / PIL worker(s)" if threads else (
            f"default threads, {os.cpu_count()} PIL workers ({os.cpu_count()} cores)")
        baselines = [b for b in BASELINES if b in pipelines]
        lines.append(f"\n{label}: median of {len(rounds)} round(s)")
        lines.append(
            "| input | pipeline | images/s | "
            + " | ".join(f"x {b}, same input" for b in baselines) + " | CPU ms/image |"
        )
        lines.append("|---" * (4 + len(baselines)) + "|")

        def ratio(numerator, denominator):
            """Median over rounds of rate(numerator) / rate(denominator)."""
            values = [
                rate[(k, *numerator)] / rate[(k, *denominator)] for k in rounds
                if (k, *numerator) in rate and (k, *denominator) in rate
            ]
            return f"{statistics.median(values):.2f}" if values else "n/a"

        for input_name in inputs:
            for name in pipelines:
                if (rounds[0], input_name, name) not in rate:
                    continue
                rates = [rate[(k, input_name, name)] for k in rounds]
                cpus = [cpu[(k, input_name, name)] for k in rounds]
                cells = [ratio((input_name, name), (input_name, b)) for b in baselines]
                lines.append(
                    f"| {input_name} | {name} | {statistics.median(rates):.0f} | "
                    + " | ".join(cells) + f" | {statistics.median(cpus):.2f} |"
                )
        if len(inputs) > 1:
            lines.append(f"\n{label}: each pipeline on {inputs[1]} against itself on {inputs[0]}")
            lines.append("| pipeline | images/s ratio (median of per-round ratios) | CPU ms/image ratio |")
            lines.append("|---|---|---|")
            for name in pipelines:
                if (rounds[0], inputs[1], name) not in rate:
                    continue
                speed = ratio((inputs[1], name), (inputs[0], name))
                cpu_ratio = statistics.median(cpu[(k, inputs[1], name)] / cpu[(k, inputs[0], name)] for k in rounds)
                lines.append(f"| {name} | {speed} | {cpu_ratio:.2f} |")
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
    for flag, values, known in (("pipelines", FLAGS.pipelines, PIPELINES + PARTS), ("inputs", FLAGS.inputs, INPUTS)):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise app.UsageError(f"Invalid value for flag --{flag}. Expected some of {known}. Received: {unknown}")
    for flag in ("image_size", "batch_size", "images", "rounds"):
        if getattr(FLAGS, flag) < 1:
            raise app.UsageError(
                f"Invalid value for flag --{flag}. Expected an integer >= 1. "
                f"Received: {getattr(FLAGS, flag)}"
            )
    if not all(t.isdigit() for t in FLAGS.threads):
        raise app.UsageError(
            "Invalid value for flag --threads. Expected integers >= 0. "
            f"Received: {FLAGS.threads}"
        )
    pipelines = [p for p in PIPELINES + PARTS if p in FLAGS.pipelines]
    if "pil_recipe" in pipelines and importlib.util.find_spec("randaugment") is None:
        print("pil_recipe: skipped, the `randaugment` package is not installed "
              "(pip install randaugment==1.0.2).")
        pipelines.remove("pil_recipe")
    inputs = [i for i in INPUTS if i in FLAGS.inputs]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    images, num_classes = read_sample(folder)
    size, batch = FLAGS.image_size, FLAGS.batch_size
    print(f"{len(images)} JPEGs from {folder}, {size} px, batch {batch}")
    print(_machine())
    print(f"before: {load_average()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"original": images}
        if "short256" in inputs:
            sets["short256"] = [(i, shrink(data), p, n) for i, data, p, n in images]
        encoded = {name: [data for _, data, _, _ in sets[name]] for name in inputs}
        for name in inputs:
            mean_kb = sum(map(len, encoded[name])) / len(encoded[name]) / 1024
            print(f"{name}: {mean_kb:.0f} KB per JPEG on average")
        makers = {}
        for name in inputs:
            pattern = write_shards(sets[name], num_classes, pathlib.Path(tmp) / name)
            makers[name] = tf_pipelines(encoded[name], pattern, num_classes, size, batch)
        for threads in [int(t) for t in FLAGS.threads]:
            pil = None
            if {"pil", "pil_recipe"} & set(pipelines):
                pil = PilPipelines(encoded, size, threads or os.cpu_count())
            try:
                for k in range(FLAGS.rounds):
                    for input_name in inputs:
                        for name in pipelines:
                            if name.startswith("pil"):
                                rate, ms = pil.measure(input_name, name == "pil_recipe", batch, FLAGS.images)
                            else:
                                rate, ms = measure_tf(makers[input_name][name], threads, FLAGS.images)
                            rows.append(dict(threads=threads, round=k, input=input_name,
                                             pipeline=name, images_per_s=rate, cpu_ms=ms))
            finally:
                if pil is not None:
                    pil.close()
    print(format_tables(rows, inputs, pipelines))
    print(f"\nafter: {load_average()}")
    if FLAGS.json:
        pathlib.Path(FLAGS.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
