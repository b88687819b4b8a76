"""Images/s of the input pipelines against bare decode + resize.

    python benchmarks/pipeline_speed.py                  # 224 px, all threads
    python benchmarks/pipeline_speed.py --threads=1,2    # per thread count
    python benchmarks/pipeline_speed.py --image_size=448 --rounds=5

Over the 53 real COCO JPEGs of ../shared/data/coco-sample (about 640x480,
170 KB), repeated, written once to temporary TFRecords with their labels,
one run measures side by side:

- `bare`: `tf.io.decode_jpeg` + `tf.image.resize` of in-memory bytes,
  parallel map, batch, prefetch (the floor a TF pipeline pays; 804 images/s
  in ../shared/BASELINES.md);
- `decode+resize`: the same with `preprocess_encoded`, the decode and resize
  that the pipelines and the serving export use (DCT-scaled JPEG decode);
- `eval`: `make_dataset(training=False)`, reading the TFRecords;
- `train`: `make_dataset(training=True)`, with cutout, RandAugment (2 ops)
  and flip;
- `train@256`: the same on shards whose images were re-encoded at a short
  side of 256 px (JPEG quality 90), as the converters write them with
  `resize_short_side=256`: the decoding, not the augmentation, dominates.

Each pipeline is timed for `--images` images after a warm-up, in `--rounds`
interleaved rounds; the table gives the median images/s, the median of the
per-round ratios to `bare` (load from other processes hits neighbouring
measurements alike, so the ratio is steadier than the rates; it is not the
ratio of the two medians shown), the ratio of the median to
the authors' PIL recipe (340 images/s on these machines, BASELINES.md) and
the process CPU time per image, which other processes disturb much less
than wall time: on a busy machine, compare the CPU columns. Targets: `train`
at least 0.85x `bare` and at least 2x the PIL recipe.

Expected time: about 2 minutes on 2 idle cores. Prints a note and exits 0
when ../shared/data/coco-sample is absent.
"""

import csv
import os
import pathlib
import platform
import statistics
import tempfile
import time

from absl import app
from absl import flags

PIL_RECIPE_IMAGES_PER_S = 340.0
DEFAULT_DATA = (
    pathlib.Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "coco-sample"
)

flags.DEFINE_string("data", str(DEFAULT_DATA), "The coco-sample folder.")
flags.DEFINE_integer("image_size", 224, "Side of the output images.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("images", 1500, "Images timed per measurement.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds; the table shows medians.")
flags.DEFINE_list(
    "threads", ["0"],
    "tf.data private thread pool sizes to compare (0: tf.data's default, one "
    "thread per core).",
)
flags.DEFINE_list(
    "pipelines",
    ["bare", "decode+resize", "eval", "train", "train@256"],
    "Pipelines to time (bare is always timed).",
)
FLAGS = flags.FLAGS


def _read_sample(folder):
    """JPEG bytes, ids and `(positives, negatives)` of the coco sample."""
    with open(folder / "class-descriptions.csv", newline="") as f:
        class_index = {row[0]: i for i, row in enumerate(csv.reader(f))}
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


def _shrink(data, short_side=256, quality=90):
    """JPEG bytes re-encoded at the given short side (antialiased resize)."""
    import tensorflow as tf

    image = tf.io.decode_jpeg(data, channels=3)
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    if scale >= 1:
        return data
    resized = tf.image.resize(
        image, [round(height * scale), round(width * scale)], antialias=True
    )
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    return tf.io.encode_jpeg(resized, quality=quality).numpy()


def _write_shards(images, folder, num_shards=4):
    import tensorflow as tf

    from keras_csl.data import features

    folder.mkdir(parents=True, exist_ok=True)
    writers = [
        tf.io.TFRecordWriter(
            str(folder / f"train-{i:05d}-of-{num_shards:05d}.tfrecord")
        )
        for i in range(num_shards)
    ]
    for k, (image_id, data, positive, negative) in enumerate(images):
        writers[k % num_shards].write(
            features.encode_example(data, image_id, positive, negative)
        )
    for writer in writers:
        writer.close()
    return str(folder / "train-*.tfrecord")


def _pipelines(images, patterns, num_classes, size, batch):
    import tensorflow as tf

    from keras_csl.data import make_dataset
    from keras_csl.data import preprocess_encoded

    encoded = [data for _, data, _, _ in images]

    def bare():
        def decode_resize(data):
            return tf.image.resize(tf.io.decode_jpeg(data, channels=3), [size, size])

        ds = tf.data.Dataset.from_tensor_slices(encoded).repeat()
        ds = ds.map(decode_resize, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch).prefetch(tf.data.AUTOTUNE)

    def shared_decode_resize():
        ds = tf.data.Dataset.from_tensor_slices(encoded).repeat()
        ds = ds.map(
            lambda data: preprocess_encoded(data, size),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return ds.batch(batch).prefetch(tf.data.AUTOTUNE)

    def reader(pattern, training):
        return lambda: make_dataset(
            pattern, num_classes, size, batch, training=training, repeat=True
        )

    return {
        "bare": bare,
        "decode+resize": shared_decode_resize,
        "eval": reader(patterns["original"], False),
        "train": reader(patterns["original"], True),
        "train@256": reader(patterns["short256"], True),
    }


def _measure(make, threads, num_images):
    """(images/s, CPU ms per image) after a warm-up of 3 batches."""
    import tensorflow as tf

    ds = make()
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        ds = ds.with_options(options)
    iterator = iter(ds)
    for _ in range(3):
        next(iterator)
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while count < num_images:
        count += int(tf.nest.flatten(next(iterator))[0].shape[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, 1e3 * cpu / count


def _machine():
    import tensorflow as tf

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}"
    )


def _load():
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def main(argv):
    del argv
    folder = pathlib.Path(FLAGS.data)
    if not (folder / "images").is_dir():
        print(f"Skipped: the coco sample is not at {folder} (see --data).")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    images, num_classes = _read_sample(folder)
    print(f"{len(images)} JPEGs from {folder}, {FLAGS.image_size} px, ", end="")
    print(f"batch {FLAGS.batch_size}")
    print(_machine())
    print(f"before: {_load()}")
    with tempfile.TemporaryDirectory() as tmp:
        small = [(i, _shrink(data), p, n) for i, data, p, n in images]
        patterns = {
            "original": _write_shards(images, pathlib.Path(tmp) / "original"),
            "short256": _write_shards(small, pathlib.Path(tmp) / "short256"),
        }
        makers = _pipelines(
            images, patterns, num_classes, FLAGS.image_size, FLAGS.batch_size
        )
        names = ["bare"] + [n for n in FLAGS.pipelines if n in makers and n != "bare"]
        for threads in [int(t) for t in FLAGS.threads]:
            rates = {name: [] for name in names}
            cpu = {name: [] for name in names}
            for _ in range(FLAGS.rounds):
                for name in names:
                    rate, ms = _measure(makers[name], threads, FLAGS.images)
                    rates[name].append(rate)
                    cpu[name].append(ms)
            label = (
                f"{threads} thread(s)" if threads
                else f"default threads ({os.cpu_count()} cores)"
            )
            print(
                f"\n{label}, median of {FLAGS.rounds} rounds of {FLAGS.images} images"
            )
            print(
                "| pipeline | images/s | median per-round ratio to bare | "
                "x PIL recipe (340/s) | CPU ms/image |"
            )
            print("|---|---|---|---|---|")
            for name in names:
                ratio = statistics.median(
                    r / b for r, b in zip(rates[name], rates["bare"])
                )
                median_rate = statistics.median(rates[name])
                print(
                    f"| {name} | {median_rate:.0f} | {ratio:.2f} | "
                    f"{median_rate / PIL_RECIPE_IMAGES_PER_S:.2f} | "
                    f"{statistics.median(cpu[name]):.2f} |"
                )
    print(f"\nafter: {_load()}")
    return 0


if __name__ == "__main__":
    app.run(main)
