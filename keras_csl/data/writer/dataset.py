"""`write_dataset`: `Item`s to a converted split (shards, classes, summary, report)."""

import array
import concurrent.futures
import csv
import dataclasses
import io
import json
import logging
import multiprocessing
import os
import time

import numpy as np
import tensorflow as tf

from keras_csl.data import features
from keras_csl.data import shards
from keras_csl.data.writer import shard as shard_lib
from keras_csl.data.writer.files import atomic_write_text
from keras_csl.data.writer.options import WriterOptions
from keras_csl.data.writer.problems import Problem
from keras_csl.data.writer.problems import Problems
from keras_csl.data.writer.problems import where

logger = logging.getLogger(__name__)

REPORT_HEADER = ("file", "line", "value", "reason")
# The default number of workers is at most one per this many images.
IMAGES_PER_WORKER = 1000


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


def _check_items(items, num_classes):
    """Sorts items by id; raises on duplicate ids or out-of-range classes."""
    items = sorted(items, key=lambda item: item.image_id)
    for previous, item in zip(items, items[1:]):
        if previous.image_id == item.image_id:
            first, second = [
                where(str(i.source_file), str(i.source_line))
                or "an item without source_file"
                for i in (previous, item)
            ]
            raise ValueError(
                f"Duplicate image id {item.image_id!r} in `items`: {first} "
                f"and {second}."
            )
    for field in ("positive", "negative", "not_exhaustive"):
        flat = _flat(items, field)
        if flat.size and (flat.min() < 0 or flat.max() >= num_classes):
            bad = next(
                item
                for item in items
                if any(not 0 <= c < num_classes for c in getattr(item, field))
            )
            raise ValueError(
                f"Invalid class index in `{field}` of image {bad.image_id!r}: "
                f"expected indices in [0, {num_classes}). "
                f"Received: {list(getattr(bad, field))}"
            )
    return items


def _plan(items, output_dir, options):
    """Shard tasks to write, and the markers of the shards a rerun resumes."""
    marker_dir = os.path.join(output_dir, f".{options.split}-progress")
    tf.io.gfile.makedirs(marker_dir)
    tasks, resumed = [], {}
    for index in range(options.num_shards):
        shard_items = items[index :: options.num_shards]
        name = shards.shard_name(options.split, index, options.num_shards)
        task = shard_lib.ShardTask(
            index=index,
            path=os.path.join(output_dir, name),
            marker_path=os.path.join(marker_dir, name + ".json"),
            fingerprint=shard_lib.fingerprint(shard_items, options),
            items=shard_items,
            options=options,
        )
        marker = shard_lib.completed_marker(task)
        if marker is None:
            tasks.append(task)
            continue
        if options.strict and marker["skipped"]:
            # An image that an earlier, lenient run skipped is unchanged (or
            # still missing): fail as a fresh strict run would, before writing.
            raise ValueError(Problem(*marker["skipped"][0][:4]).message())
        resumed[index] = marker
    return tasks, resumed


def _run(tasks, num_workers, verbose):
    """Writes the shards (in worker processes); returns `{index: marker}`."""
    sizes = {task.index: len(task.items) for task in tasks}
    progbar = None
    if verbose:
        import keras  # Only the parent process needs it.

        progbar = keras.utils.Progbar(sum(sizes.values()), unit_name="image")
    if num_workers == 1:
        executor = None
        results = map(shard_lib.write_shard, tasks)
    else:
        # "spawn": TensorFlow is not fork-safe once its runtime has started.
        # Unlike multiprocessing.Pool, the executor fails (BrokenProcessPool)
        # instead of hanging when a worker dies, e.g. killed for memory.
        executor = concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context("spawn")
        )
        futures = [executor.submit(shard_lib.write_shard, task) for task in tasks]
        results = (f.result() for f in concurrent.futures.as_completed(futures))
    markers, done = {}, 0
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
    return markers


def write_dataset(
    items,
    class_ids,
    display_names,
    output_dir,
    options=None,
    *,
    problems=None,
    summary_extra=None,
    read_seconds=0.0,
    **writer_options,
):
    """Writes `items` as sharded TFRecords plus classes, summary and report.

    Converters call this; it is public for new formats: build `Item`s with
    class indices into `class_ids`, collect rejected input in a `Problems`
    (and refuse unusable labels with `check_label_rows`), and pass both.
    Images are sorted by id and dealt round-robin to the shards (image `k`
    of the sorted list goes to shard `k % num_shards`), so the layout
    depends on nothing but the inputs; see `keras_csl.data.writer.shard`
    for resumption. Every image that cannot be stored is counted in the
    summary, listed in the report and summed up in one WARNING line per
    kind of problem (with the label-row problems of `problems`).

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
        options: a `WriterOptions`; or pass its fields as keywords.
        problems: `Problems` of the label reading, for the report.
        summary_extra: dict merged into the summary (e.g. input counts).
        read_seconds: time the caller spent reading labels, for the summary.
        **writer_options: fields of `WriterOptions` (`num_shards=8`, ...),
            overriding those of `options`.

    Returns:
        The summary dict, also written to `<split>-summary.json`.

    Raises:
        ValueError: on invalid arguments, on the first bad image when
            `strict`, when `output_dir` holds shards of another conversion,
            or when no image at all could be stored (after writing the
            summary and the report, which list why).
    """
    start = time.perf_counter()
    options = WriterOptions.resolve(options, "write_dataset", **writer_options)
    split = options.split
    if len(class_ids) != len(display_names):
        raise ValueError(
            f"`class_ids` and `display_names` differ in length: "
            f"{len(class_ids)} != {len(display_names)}"
        )
    problems = problems if problems is not None else Problems(options.strict)
    items = _check_items(items, len(class_ids))

    output_dir = str(output_dir)
    tf.io.gfile.makedirs(output_dir)
    shards.check_stale_shards(output_dir, split, options.num_shards)
    write_classes(output_dir, class_ids, display_names)
    tasks, resumed = _plan(items, output_dir, options)
    if resumed:
        logger.info(
            "Resuming: %d of %d shards in %s are complete.",
            len(resumed),
            options.num_shards,
            output_dir,
        )
    if tasks:
        shards.mark_incomplete(output_dir, split, "keras_csl.data.writer")

    write_start = time.perf_counter()
    num_workers = options.num_workers
    if num_workers is None:
        # Starting a worker (importing TensorFlow) costs seconds.
        to_write = sum(len(task.items) for task in tasks)
        num_workers = min(os.cpu_count() or 1, to_write // IMAGES_PER_WORKER)
    num_workers = max(1, min(num_workers, len(tasks)))
    markers = {**resumed, **_run(tasks, num_workers, options.verbose)}
    write_seconds = time.perf_counter() - write_start

    skipped_ids = set()
    for index in range(options.num_shards):
        for row in markers[index]["skipped"]:
            problems.add(*row[:4])
            skipped_ids.add(row[4])
    stored = [item for item in items if item.image_id not in skipped_ids]
    report_path = _write_report(output_dir, split, problems)
    summary = _summary(
        options, output_dir, class_ids, items, stored, problems, markers, report_path
    )
    images_written = sum(markers[task.index]["records"] for task in tasks)
    summary["this_run"] = {
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
    }
    if summary_extra:
        summary.update(summary_extra)
    seconds = time.perf_counter() - start + read_seconds
    summary["this_run"]["seconds"] = round(seconds, 3)
    summary_path = os.path.join(output_dir, shards.SUMMARY_PATTERN.format(split=split))
    atomic_write_text(summary_path, json.dumps(summary, indent=1) + "\n")
    shards.mark_complete(output_dir, split)
    problems.log_summary(logger)
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
    if items and not stored:
        lines = "".join(f"\n  {line}" for line in problems.summary_lines())
        raise ValueError(
            f"No image could be stored: all {len(items)} images were skipped:"
            f"{lines}\nCheck `images_dir` and the image paths; {report_path} "
            "lists every skipped image."
        )
    return summary


def _write_report(output_dir, split, problems):
    report_path = os.path.join(output_dir, f"{split}-report.csv")
    buffer = io.StringIO()
    report = csv.writer(buffer, lineterminator="\n")
    report.writerow(REPORT_HEADER)
    for problem in problems.rows:
        report.writerow(dataclasses.astuple(problem))
    atomic_write_text(report_path, buffer.getvalue())
    return report_path


def _summary(options, output_dir, class_ids, items, stored, problems, markers, report):
    """The summary dict, but for `this_run` (counts of stored images)."""
    num_classes = len(class_ids)
    positive_counts = _count(stored, "positive", num_classes)
    negative_counts = _count(stored, "negative", num_classes)
    not_exhaustive_counts = _count(stored, "not_exhaustive", num_classes)
    num_positive = int(positive_counts.sum())
    num_negative = int(negative_counts.sum())
    return {
        "split": options.split,
        "output_dir": output_dir,
        "num_shards": options.num_shards,
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
        "report": report,
        "options": {
            "resize_short_side": options.resize_short_side,
            "jpeg_quality": options.jpeg_quality,
            "validate_images": options.validate_images,
            "strict": options.strict,
            "max_rejected_fraction": options.max_rejected_fraction,
        },
        "bytes_in": sum(m["bytes_in"] for m in markers.values()),
        "bytes_out": sum(m["size"] for m in markers.values()),
        "images_resized": sum(m["resized"] for m in markers.values()),
        "images_transcoded": sum(m["transcoded"] for m in markers.values()),
        "per_class": {
            "positive": positive_counts.tolist(),
            "negative": negative_counts.tolist(),
            "not_exhaustive": not_exhaustive_counts.tolist(),
        },
    }


def _flat(items, field):
    """All class indices of one field, concatenated (int32)."""
    data = b"".join(array.array("i", getattr(item, field)).tobytes() for item in items)
    return np.frombuffer(data, np.int32)


def _count(items, field, num_classes):
    return np.bincount(_flat(items, field), minlength=num_classes).astype(np.int64)
