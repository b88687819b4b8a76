"""Writes labelled images into sharded TFRecords (TensorFlow only).

The format converters (`keras_csl.data.converters`) turn each annotation
format into a list of `Item`s (image id, image path, class indices) and a
list of `Problem`s (rejected input rows); `write_dataset` does the rest, the
same way for every format:

- Images are sorted by id and dealt round-robin to `num_shards` shards
  (image `k` of the sorted list goes to shard `k % num_shards`), so the
  layout depends on nothing but the inputs.
- Each shard is written by one worker process to `<name>.tmp`, then renamed
  to `<split>-%05d-of-%05d.tfrecord`; only after that rename a marker
  `.<split>-progress/<name>.json` records its fingerprint (a hash of the
  shard's image ids and paths, labels and options), its size, and a hash
  of the size and modification time of each of its image files. A rerun
  skips every shard whose marker, size and image files match, so an
  interrupted conversion resumes where it stopped, and a changed input
  rewrites exactly the shards it touches: changed labels, an image file
  replaced at the same path, or an image skipped as missing that now
  exists. Checking the image files costs one stat per image of every
  complete shard on each rerun, in the calling process: 5 us per image on
  a local disk with cached metadata (measured on 2 shared cores: 5 s per
  million images), more on a network file system, and one metadata
  request per image for URLs (`gs://...`).
- Examples are serialized with deterministic protobuf map order, so equal
  inputs give byte-identical shards whatever the number of workers.
- Every image that cannot be stored (missing, empty, undecodable) and every
  rejected label row is counted in the summary and listed with its reason
  in the report; with `strict=True` the first one raises instead.

Images are stored as their original bytes (JPEG or PNG, told apart by their
magic bytes; other formats TensorFlow decodes, e.g. BMP or GIF, are
transcoded to RGB PNG). With `resize_short_side=N`, images whose short
side exceeds `N` are resized (bilinear, antialiased) to a short side of
exactly `N` and re-encoded as JPEG; smaller ones keep their bytes. With
`validate_images` (the default) every image is decoded once to check it;
note that libjpeg silently recovers from some corrupt JPEG data (e.g.
garbage inside the entropy-coded segment): such images decode, with a
warning on stderr, and are stored as they are.

Output files, next to the shards: `classes.csv`
(`keras_csl.data.features.write_classes_csv`), `<split>-summary.json`
(counts, sizes, timings) and `<split>-report.csv` (`file,line,value,reason`,
one row per skipped item).
"""

import array
import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import time

import numpy as np
import tensorflow as tf

from keras_csl.data import features
from keras_csl.data import preprocessing

logger = logging.getLogger(__name__)

# Bumped whenever the bytes written for the same input change, so that a
# resumed conversion never mixes shards of two versions.
FORMAT_VERSION = 1
REPORT_HEADER = ("file", "line", "value", "reason")
SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The default number of workers is at most one per this many images.
IMAGES_PER_WORKER = 1000


@dataclasses.dataclass(frozen=True)
class Problem:
    """One rejected input: where it is, what it was and why."""

    file: str
    line: str
    value: str
    reason: str

    def message(self):
        where = _where(self.file, self.line)
        return f"{where}: {self.reason}. Received: {self.value!r}"


def _where(file, line):
    """`"file, line 3"`, or `"file"` without a line, for messages."""
    return f"{file}, line {line}" if line != "" else file


class Problems:
    """Collects rejected inputs; raises on the first one when `strict`."""

    def __init__(self, strict=False):
        self.strict = strict
        self.rows = []

    def add(self, file, line, value, reason):
        problem = Problem(str(file), str(line), str(value), reason)
        if self.strict:
            raise ValueError(problem.message())
        self.rows.append(problem)

    def counts(self):
        return dict(collections.Counter(_reason_kind(p.reason) for p in self.rows))


def _reason_kind(reason):
    # "undecodable image (jpeg::Uncompress failed...)" -> "undecodable image"
    return reason.split(" (", 1)[0]


@dataclasses.dataclass(slots=True)
class Item:
    """One image to store: its id, path, labels and where it was defined.

    `positive`, `negative` and `not_exhaustive` are class indices
    (`array("i")` keeps millions of them compact); `source_file` and
    `source_line` point at the input that introduced the image, for the
    report.
    """

    image_id: str
    path: str
    positive: array.array
    negative: array.array
    not_exhaustive: array.array = dataclasses.field(
        default_factory=lambda: array.array("i")
    )
    source_file: str = ""
    source_line: str = ""


def shard_name(split, index, count):
    return SHARD_PATTERN.format(split=split, index=index, count=count)


def open_text(path):
    """Opens a text file for csv: local files natively, URLs via tf.io.gfile."""
    if "://" in str(path):
        return tf.io.gfile.GFile(path, "r")
    return open(path, "r", newline="", encoding="utf-8-sig")


def atomic_write_text(path, text):
    """Writes a text file through a temporary name, so it is whole or absent."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


# ---------------------------------------------------------------- images


def _tf_message(error):
    message = error.message.splitlines()[0] if error.message else str(error)
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", message)
    return re.sub(r"\s*\[Op:\w+\]$", "", message)


_Image = collections.namedtuple("_Image", "data format reason change size_in")


def _rejected(reason):
    return _Image(None, None, reason, None, 0)


def _load_image(path, resize_short_side=None, jpeg_quality=90, validate=True):
    """Reads one image; returns an `_Image`.

    `reason` is set when the image cannot be used; `change` is None,
    "resized" or "transcoded" (to RGB PNG); `size_in` is the file size.
    """
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except tf.errors.NotFoundError:
        return _rejected("missing image")
    except (tf.errors.OpError, OSError) as error:
        message = _tf_message(error) if isinstance(error, tf.errors.OpError) else error
        return _rejected(f"unreadable image ({message})")
    if not data:
        return _rejected("empty image file")
    if data.startswith(JPEG_MAGIC):
        image_format = "jpeg"
    elif data.startswith(PNG_MAGIC):
        image_format = "png"
    else:
        image_format = None
    if image_format and not validate and not resize_short_side:
        return _Image(data, image_format, None, None, len(data))
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        return _rejected(f"undecodable image ({_tf_message(error)})")
    height, width = int(image.shape[0]), int(image.shape[1])
    if resize_short_side and min(height, width) > resize_short_side:
        scale = resize_short_side / min(height, width)
        size = (
            resize_short_side if height <= width else round(height * scale),
            resize_short_side if width < height else round(width * scale),
        )
        resized = tf.image.resize(image, size, method="bilinear", antialias=True)
        resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
        encoded = tf.io.encode_jpeg(resized, quality=jpeg_quality)
        return _Image(encoded.numpy(), "jpeg", None, "resized", len(data))
    if image_format is None:
        # Lossless (but RGB), so the stored pixels are the original ones.
        encoded = tf.io.encode_png(image)
        return _Image(encoded.numpy(), "png", None, "transcoded", len(data))
    return _Image(data, image_format, None, None, len(data))


# ---------------------------------------------------------------- shards


@dataclasses.dataclass
class _ShardTask:
    index: int
    path: str
    marker_path: str
    fingerprint: str
    items: list
    resize_short_side: int
    jpeg_quality: int
    validate_images: bool
    strict: bool


def _fingerprint(items, options):
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for item in items:
        digest.update(
            json.dumps(
                [
                    item.image_id,
                    item.path,
                    sorted(item.positive),
                    sorted(item.negative),
                    sorted(item.not_exhaustive),
                ]
            ).encode()
        )
    return digest.hexdigest()


def _image_stat(path):
    """`[size, mtime in ns]` of an image file; None if it cannot be stat'ed."""
    try:
        if "://" in path:
            stat = tf.io.gfile.stat(path)
            return [stat.length, stat.mtime_nsec]
        stat = os.stat(path)
        return [stat.st_size, stat.st_mtime_ns]
    except (OSError, tf.errors.OpError):
        return None


def _images_digest(stats):
    """A hash of the `_image_stat`s of a shard's images, in order."""
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def _write_shard(task):
    """Writes one shard (in a worker process); returns its marker dict."""
    start = time.perf_counter()
    # A marker must never outlive the shard it describes.
    if tf.io.gfile.exists(task.marker_path):
        tf.io.gfile.remove(task.marker_path)
    tmp_path = task.path + ".tmp"
    skipped, stats = [], []
    records = bytes_in = 0
    changed_counts = {"resized": 0, "transcoded": 0}
    with tf.io.TFRecordWriter(tmp_path) as writer:
        for item in task.items:
            # Before reading: a file changed in between then differs from
            # its recorded stat on the next run, which rewrites the shard.
            stats.append(_image_stat(item.path))
            image = _load_image(
                item.path,
                task.resize_short_side,
                task.jpeg_quality,
                task.validate_images,
            )
            if image.reason:
                problem = Problem(
                    str(item.source_file),
                    str(item.source_line),
                    item.path,
                    image.reason,
                )
                if task.strict:
                    raise ValueError(problem.message())
                skipped.append(dataclasses.astuple(problem) + (item.image_id,))
                continue
            bytes_in += image.size_in
            if image.change:
                changed_counts[image.change] += 1
            writer.write(
                features.encode_example(
                    image.data,
                    item.image_id,
                    item.positive,
                    item.negative,
                    image_format=image.format,
                    not_exhaustive=item.not_exhaustive,
                )
            )
            records += 1
    tf.io.gfile.rename(tmp_path, task.path, overwrite=True)
    marker = {
        "fingerprint": task.fingerprint,
        "images": _images_digest(stats),
        "records": records,
        "size": tf.io.gfile.stat(task.path).length,
        "bytes_in": bytes_in,
        "resized": changed_counts["resized"],
        "transcoded": changed_counts["transcoded"],
        "skipped": skipped,
        "seconds": round(time.perf_counter() - start, 3),
    }
    # The marker is written only once the shard is complete and in place.
    atomic_write_text(task.marker_path, json.dumps(marker, sort_keys=True))
    return task.index, marker


def _is_complete(task):
    """The marker of a shard that needs no rewriting, else None.

    A shard is rewritten when its marker is missing or unreadable, when its
    images, labels or options changed (`fingerprint`), when its size
    differs from the marker's, or when any of its image files changed size
    or modification time, appeared or vanished since it was written
    (`images`): so a rerun retries the images it skipped as missing, and
    picks up images replaced at the same path. That costs one stat per
    image of every complete shard, in this process.
    """
    if not (tf.io.gfile.exists(task.marker_path) and tf.io.gfile.exists(task.path)):
        return None
    try:
        with tf.io.gfile.GFile(task.marker_path, "r") as f:
            marker = json.load(f)
    except (ValueError, tf.errors.OpError):
        return None
    if marker.get("fingerprint") != task.fingerprint:
        return None
    if tf.io.gfile.stat(task.path).length != marker.get("size"):
        return None
    stats = [_image_stat(item.path) for item in task.items]
    if marker.get("images") != _images_digest(stats):
        logger.info(
            "%s: image files changed, appeared or vanished since it was "
            "written; rewriting it.",
            task.path,
        )
        return None
    return marker


def write_classes(output_dir, class_ids, display_names):
    """Writes `<output_dir>/classes.csv` atomically; returns its path.

    An existing file with the same classes is kept; one with other classes
    raises, since all splits (and derived datasets) in one folder must
    share them.

    Raises:
        ValueError: if `output_dir` holds a `classes.csv` with other classes.
    """
    path = os.path.join(output_dir, features.CLASSES_FILE)
    if tf.io.gfile.exists(path):
        existing = features.read_classes_csv(path)
        if existing != (list(class_ids), list(display_names)):
            raise ValueError(
                f"{path} already exists with other classes ({len(existing[0])} "
                f"classes, first {existing[0][:3]}; now {len(class_ids)}, first "
                f"{list(class_ids)[:3]}). All splits in one folder must share "
                "their classes: use another `output_dir` or remove the file."
            )
        return path
    tmp = path + ".tmp"
    features.write_classes_csv(tmp, class_ids, display_names)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return path


def check_stale_shards(output_dir, split, num_shards):
    stale = [
        name
        for name in tf.io.gfile.listdir(output_dir)
        if re.fullmatch(rf"{re.escape(split)}-\d{{5}}-of-(\d{{5}})\.tfrecord", name)
        and not name.endswith(f"-of-{num_shards:05d}.tfrecord")
    ]
    if stale:
        raise ValueError(
            f"{output_dir} holds shards of another conversion of split "
            f"'{split}' ({sorted(stale)[0]}, ... {len(stale)} files) that a "
            f"reader would mix with the {num_shards} new ones. Remove them or "
            "use another `output_dir`."
        )


def _progress(total, verbose):
    if not verbose:
        return None
    import keras  # Only the parent process needs it.

    return keras.utils.Progbar(total, unit_name="image")


def write_dataset(
    items,
    class_ids,
    display_names,
    output_dir,
    num_shards,
    problems=None,
    split="train",
    resize_short_side=None,
    jpeg_quality=90,
    validate_images=True,
    strict=False,
    num_workers=None,
    verbose=1,
    summary_extra=None,
    read_seconds=0.0,
):
    """Writes `items` as sharded TFRecords plus classes, summary and report.

    Converters call this; it is public for new formats: build `Item`s with
    class indices into `class_ids`, collect rejected input in a `Problems`,
    and pass both.

    Example:

    ```python
    items = [writer.Item("cat1", "/img/cat1.jpg", array.array("i", [0]),
                         array.array("i", [1]))]
    summary = writer.write_dataset(items, ["cat", "dog"], ["Cat", "Dog"],
                                   "/tmp/pets", num_shards=1)
    summary["images"]  # 1
    ```

    Args:
        items: `Item`s, in any order (they are sorted by image id).
        class_ids: class ids, in index order.
        display_names: display names, in index order.
        output_dir: folder for the shards (created if needed).
        num_shards: number of shards.
        problems: `Problems` of the label reading, for the report.
        split: name prefix of the output files, e.g. `"train"`.
        resize_short_side: if set, larger images are resized to this short
            side and re-encoded as JPEG.
        jpeg_quality: JPEG quality of re-encoded images.
        validate_images: decode every image to check it (slower; without it
            only missing, empty and non-JPEG/PNG files are caught).
        strict: raise `ValueError` on the first bad image instead of
            skipping it; on a rerun, also for a bad image that an earlier
            run without `strict` skipped in a shard it resumes.
        num_workers: worker processes; 1 writes in this process. The
            default is `min(CPUs, images to write // 1000, shards to
            write)`, at least 1, where "to write" leaves out the shards a
            rerun resumes: starting a worker (importing TensorFlow) costs
            seconds.
        verbose: 1 shows a progress bar.
        summary_extra: dict merged into the summary (e.g. input counts).
        read_seconds: time the caller spent reading labels, for the summary.

    Returns:
        The summary dict, also written to `<split>-summary.json`.

    Raises:
        ValueError: on invalid arguments, on the first bad image when
            `strict`, or when `output_dir` holds shards of another conversion.
    """
    start = time.perf_counter()
    check = preprocessing.check_positive_int
    num_shards = check("num_shards", num_shards)
    resize_short_side = check("resize_short_side", resize_short_side, allow_none=True)
    num_workers = check("num_workers", num_workers, allow_none=True)
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(
            "Invalid value for argument `jpeg_quality`. Expected an integer "
            f"in [1, 100]. Received: jpeg_quality={jpeg_quality!r}"
        )
    if len(class_ids) != len(display_names):
        raise ValueError(
            f"`class_ids` and `display_names` differ in length: "
            f"{len(class_ids)} != {len(display_names)}"
        )
    problems = problems if problems is not None else Problems(strict)
    items = sorted(items, key=lambda item: item.image_id)
    for previous, item in zip(items, items[1:]):
        if previous.image_id == item.image_id:
            first, second = [
                _where(str(i.source_file), str(i.source_line))
                or "an item without source_file"
                for i in (previous, item)
            ]
            raise ValueError(
                f"Duplicate image id {item.image_id!r} in `items`: {first} "
                f"and {second}."
            )
    for field in ("positive", "negative", "not_exhaustive"):
        flat = _flat(items, field)
        if flat.size and (flat.min() < 0 or flat.max() >= len(class_ids)):
            bad = next(
                item
                for item in items
                if any(not 0 <= c < len(class_ids) for c in getattr(item, field))
            )
            raise ValueError(
                f"Invalid class index in `{field}` of image {bad.image_id!r}: "
                f"expected indices in [0, {len(class_ids)}). "
                f"Received: {list(getattr(bad, field))}"
            )

    output_dir = str(output_dir)
    tf.io.gfile.makedirs(output_dir)
    marker_dir = os.path.join(output_dir, f".{split}-progress")
    tf.io.gfile.makedirs(marker_dir)
    check_stale_shards(output_dir, split, num_shards)
    write_classes(output_dir, class_ids, display_names)

    options = {
        "version": FORMAT_VERSION,
        "resize_short_side": resize_short_side,
        "jpeg_quality": jpeg_quality if resize_short_side else None,
        "validate_images": validate_images,
    }
    tasks, resumed = [], {}
    for index in range(num_shards):
        shard_items = items[index::num_shards]
        name = shard_name(split, index, num_shards)
        task = _ShardTask(
            index=index,
            path=os.path.join(output_dir, name),
            marker_path=os.path.join(marker_dir, name + ".json"),
            fingerprint=_fingerprint(shard_items, options),
            items=shard_items,
            resize_short_side=resize_short_side,
            jpeg_quality=jpeg_quality,
            validate_images=validate_images,
            strict=strict,
        )
        marker = _is_complete(task)
        if marker is None:
            tasks.append(task)
            continue
        if strict and marker["skipped"]:
            # An image that an earlier, lenient run skipped is unchanged (or
            # still missing): fail as a fresh strict run would, before writing.
            raise ValueError(Problem(*marker["skipped"][0][:4]).message())
        resumed[index] = marker
    if resumed:
        logger.info(
            "Resuming: %d of %d shards in %s are complete.",
            len(resumed),
            num_shards,
            output_dir,
        )

    write_start = time.perf_counter()
    markers = dict(resumed)
    sizes = {task.index: len(task.items) for task in tasks}
    to_write = sum(sizes.values())
    progbar = _progress(to_write, verbose)
    done = 0
    if num_workers is None:
        # Starting a worker (importing TensorFlow) costs seconds.
        num_workers = min(os.cpu_count() or 1, to_write // IMAGES_PER_WORKER)
    num_workers = max(1, min(num_workers, len(tasks)))
    if num_workers == 1:
        executor = None
        results = map(_write_shard, tasks)
    else:
        # "spawn": TensorFlow is not fork-safe once its runtime has started.
        # Unlike multiprocessing.Pool, the executor fails (BrokenProcessPool)
        # instead of hanging when a worker dies, e.g. killed for memory.
        executor = concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context("spawn")
        )
        futures = [executor.submit(_write_shard, task) for task in tasks]
        results = (f.result() for f in concurrent.futures.as_completed(futures))
    try:
        for index, marker in results:
            markers[index] = marker
            done += sizes[index]
            if progbar is not None:
                progbar.update(done)
    finally:
        if executor is not None:
            # Shards already started are finished (and count on a rerun).
            executor.shutdown(wait=True, cancel_futures=True)
    write_seconds = time.perf_counter() - write_start

    # Per-class counts of the images actually stored.
    skipped_ids = set()
    for index in range(num_shards):
        for row in markers[index]["skipped"]:
            problems.add(*row[:4])
            skipped_ids.add(row[4])
    stored = [item for item in items if item.image_id not in skipped_ids]
    num_classes = len(class_ids)
    positive_counts = _count(stored, "positive", num_classes)
    negative_counts = _count(stored, "negative", num_classes)
    not_exhaustive_counts = _count(stored, "not_exhaustive", num_classes)

    report_path = os.path.join(output_dir, f"{split}-report.csv")
    buffer = io.StringIO()
    report = csv.writer(buffer, lineterminator="\n")
    report.writerow(REPORT_HEADER)
    for problem in problems.rows:
        report.writerow(dataclasses.astuple(problem))
    atomic_write_text(report_path, buffer.getvalue())

    images_written = sum(markers[task.index]["records"] for task in tasks)
    num_positive = int(positive_counts.sum())
    num_negative = int(negative_counts.sum())
    summary = {
        "split": split,
        "output_dir": output_dir,
        "num_shards": num_shards,
        "num_classes": num_classes,
        "images": len(stored),
        "images_skipped": len(items) - len(stored),
        "labels": {
            "positive": num_positive,
            "negative": num_negative,
            "unannotated": len(stored) * num_classes - num_positive - num_negative,
            "not_exhaustive": int(not_exhaustive_counts.sum()),
        },
        "skipped": problems.counts(),
        "report": report_path,
        "options": {
            "resize_short_side": resize_short_side,
            "jpeg_quality": jpeg_quality,
            "validate_images": validate_images,
            "strict": strict,
        },
        "bytes_in": sum(m["bytes_in"] for m in markers.values()),
        "bytes_out": sum(m["size"] for m in markers.values()),
        "images_resized": sum(m["resized"] for m in markers.values()),
        "images_transcoded": sum(m["transcoded"] for m in markers.values()),
        "this_run": {
            "shards_written": len(tasks),
            "shards_resumed": len(resumed),
            "images_written": images_written,
            "num_workers": num_workers if tasks else 0,
            "seconds_reading_labels": round(read_seconds, 3),
            "seconds_writing": round(write_seconds, 3),
            "images_per_second": (
                round(images_written / write_seconds, 1)
                if images_written and write_seconds > 0
                else None
            ),
        },
        "per_class": {
            "positive": positive_counts.tolist(),
            "negative": negative_counts.tolist(),
            "not_exhaustive": not_exhaustive_counts.tolist(),
        },
    }
    if summary_extra:
        summary.update(summary_extra)
    seconds = time.perf_counter() - start + read_seconds
    summary["this_run"]["seconds"] = round(seconds, 3)
    summary_path = os.path.join(output_dir, f"{split}-summary.json")
    atomic_write_text(summary_path, json.dumps(summary, indent=1) + "\n")
    logger.info(
        "Wrote %d images (%d skipped, %d shards resumed) to %s in %.1f s; "
        "report: %s",
        summary["images"],
        summary["images_skipped"],
        len(resumed),
        output_dir,
        seconds,
        report_path,
    )
    return summary


def _flat(items, field):
    """All class indices of one field, concatenated (int32)."""
    data = b"".join(array.array("i", getattr(item, field)).tobytes() for item in items)
    return np.frombuffer(data, np.int32)


def _count(items, field, num_classes):
    return np.bincount(_flat(items, field), minlength=num_classes).astype(np.int64)
