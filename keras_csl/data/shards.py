"""Shard files: the names the converters write, and the check that a set is whole.

A converted split in a folder is

- `<split>-NNNNN-of-MMMMM.tfrecord` for every `NNNNN` in `[0, MMMMM)`
  (zero-padded to five digits, more when needed);
- `classes.csv` (`keras_csl.data.features`), shared by every split of the
  folder;
- `<split>-summary.json`, written when the conversion finishes;
- `.<split>-incomplete` while a converter (or `simulate_partial_labels`)
  writes the split: created before the first shard is written, removed
  after the summary. It survives an interrupted run.

`check_shard_set` holds a list of files against that layout; the readers
(`keras_csl.data.make_dataset`, `keras_csl.data.read_labels`) call it
unless told not to (`check_shards=False`, for hand-made shards). It costs a
folder listing and reads two small files per folder, whatever the number
of records.
"""

import json
import logging
import os
import re

import tensorflow as tf

logger = logging.getLogger(__name__)

SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"
SUMMARY_PATTERN = "{split}-summary.json"
INCOMPLETE_PATTERN = ".{split}-incomplete"
_SHARD_RE = re.compile(
    r"(?P<split>.+)-(?P<index>\d{5,})-of-(?P<count>\d{5,})\.tfrecord"
)
# Names listed at most in an error message.
_NAMES_IN_ERRORS = 3
_OPT_OUT = "To read hand-made shards as they are, pass check_shards=False."


def shard_name(split, index, count):
    """`"train-00003-of-00008.tfrecord"` for `("train", 3, 8)`."""
    return SHARD_PATTERN.format(split=split, index=index, count=count)


def parse_shard_name(name):
    """`(split, index, count)` of a shard file name, or `None` for another name.

    Example:

    >>> parse_shard_name("val-00002-of-00032.tfrecord")
    ('val', 2, 32)
    """
    match = _SHARD_RE.fullmatch(os.path.basename(name))
    if match is None:
        return None
    return match["split"], int(match["index"]), int(match["count"])


def _examples(names):
    names = sorted(names)
    more = f", ... ({len(names)} in all)" if len(names) > _NAMES_IN_ERRORS else ""
    return ", ".join(names[:_NAMES_IN_ERRORS]) + more


def split_files(folder, split="train"):
    """The complete shard set of one split of a converted folder, sorted.

    Raises:
        ValueError: if the folder holds no shard of `split`, shards of two
            sets, or an incomplete set.
    """
    folder = os.fspath(folder)
    names = [
        name
        for name in tf.io.gfile.listdir(folder)
        if (parsed := parse_shard_name(name)) is not None and parsed[0] == split
    ]
    if not names:
        raise ValueError(
            f"Expected one complete set of shards {split}-NNNNN-of-NNNNN.tfrecord "
            f"in {folder}. Received: no shard of split '{split}'."
        )
    files = [os.path.join(folder, name) for name in names]
    check_shard_set(files)
    return sorted(files)


def check_stale_shards(output_dir, split, num_shards):
    """Refuses to write `num_shards` shards next to a set of another size.

    Raises:
        ValueError: naming the stale files.
    """
    stale = [
        name
        for name in tf.io.gfile.listdir(output_dir)
        if (parsed := parse_shard_name(name)) is not None
        and parsed[0] == split
        and parsed[2] != num_shards
    ]
    if stale:
        raise ValueError(
            f"{output_dir} holds shards of another conversion of split "
            f"'{split}' ({_examples(stale)}) that a reader would mix with the "
            f"{num_shards} new ones. Remove them or use another `output_dir`."
        )


def mark_incomplete(output_dir, split, writer):
    """Marks a split as being written (see the module docstring)."""
    path = os.path.join(output_dir, INCOMPLETE_PATTERN.format(split=split))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(f"{writer} is writing split '{split}'; removed when it finishes.\n")


def mark_complete(output_dir, split):
    """Removes the marker of `mark_incomplete`, once the summary is written."""
    path = os.path.join(output_dir, INCOMPLETE_PATTERN.format(split=split))
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


def check_shard_set(files, num_classes=None):
    """Checks files against the layout the converters write; raises if off.

    For each folder and split among `files`: every name follows
    `<split>-NNNNN-of-MMMMM.tfrecord`, all with the same `MMMMM`; the files
    are exactly the `MMMMM` shards of the set (none missing, none extra);
    no conversion of the split is unfinished (`.<split>-incomplete`); the
    `<split>-summary.json`, where present, names the same number of shards
    and classes; and `classes.csv`, where present, lists `num_classes`
    classes (without it, a warning says the class count is unchecked).

    Example:

    ```python
    check_shard_set(["data/train-00000-of-00002.tfrecord"], 80)
    # ValueError: ... matches 1 of the 2 shards of split 'train' ...
    ```

    Args:
        files: shard paths (e.g. `keras_csl.data.list_files(pattern)`).
        num_classes: the class count the reader will use, or `None` to
            skip the class checks.

    Raises:
        ValueError: naming the files or values that disagree, and the
            opt-out (`check_shards=False`) for hand-made shards.
    """
    from keras_csl.data import features  # features imports nothing of ours.

    groups = {}
    for path in files:
        parsed = parse_shard_name(path)
        if parsed is None:
            raise ValueError(
                "Invalid value for argument `file_pattern`. Expected shards "
                "named as the converters name them, "
                "<split>-NNNNN-of-NNNNN.tfrecord, so that the set can be "
                f"checked. Received: {path}. {_OPT_OUT}"
            )
        split, index, count = parsed
        group = groups.setdefault((os.path.dirname(path), split), {})
        group.setdefault(count, set()).add(index)

    for (folder, split), by_count in sorted(groups.items()):
        where = os.path.join(folder, f"{split}-*.tfrecord")
        if len(by_count) > 1:
            sets = ", ".join(
                f"-of-{count:05d} ({len(indices)} files)"
                for count, indices in sorted(by_count.items())
            )
            raise ValueError(
                f"{where} mixes shards of {len(by_count)} conversions of split "
                f"'{split}': {sets}. Expected one set. Remove the stray files "
                f"(or use a pattern that names one set). {_OPT_OUT}"
            )
        ((count, indices),) = by_count.items()
        beyond = sorted(i for i in indices if i >= count)
        if beyond:
            raise ValueError(
                f"{where}: {shard_name(split, beyond[0], count)} has an index "
                f"beyond its set of {count}. Expected indices 0 to {count - 1}. "
                f"{_OPT_OUT}"
            )
        marker = os.path.join(folder, INCOMPLETE_PATTERN.format(split=split))
        if tf.io.gfile.exists(marker):
            raise ValueError(
                f"The conversion of split '{split}' in {folder or '.'} has not "
                f"finished ({marker} exists): it was interrupted, or it is "
                "still running. Rerun the same command to resume it, and read "
                f"the data once it has finished. {_OPT_OUT}"
            )
        missing = sorted(set(range(count)) - indices)
        if missing:
            on_disk = set(tf.io.gfile.listdir(folder or "."))
            names = [shard_name(split, i, count) for i in missing]
            absent = [name for name in names if name not in on_disk]
            if absent:
                raise ValueError(
                    f"Incomplete shard set {where}: {len(absent)} of the {count} "
                    f"shards of split '{split}' are missing ({_examples(absent)}). "
                    "The conversion did not finish (rerun it to resume) or not "
                    f"every file was copied. {_OPT_OUT}"
                )
            raise ValueError(
                f"Invalid value for argument `file_pattern`: it matches "
                f"{len(indices)} of the {count} shards of split '{split}' in "
                f"{folder or '.'}. Expected the whole set (e.g. {where}). To "
                "read a part on purpose, pass check_shards=False."
            )
        if num_classes is not None:
            _check_classes(folder, num_classes, features)
        _check_summary(folder, split, count, num_classes)


def _check_summary(folder, split, count, num_classes):
    path = os.path.join(folder, SUMMARY_PATTERN.format(split=split))
    if not tf.io.gfile.exists(path):
        return
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            summary = json.load(f)
    except ValueError as error:
        raise ValueError(f"Invalid summary {path}: {error}.") from None
    if summary.get("num_shards", count) != count:
        raise ValueError(
            f"{path} says the split has {summary['num_shards']} shards, but the "
            f"files are a set of {count} ({shard_name(split, 0, count)}, ...). "
            f"The summary belongs to another conversion. {_OPT_OUT}"
        )
    if num_classes is not None and summary.get("num_classes", num_classes) != (
        num_classes
    ):
        raise ValueError(
            f"Invalid value for argument `num_classes`. Expected "
            f"{summary['num_classes']}, the number of classes in {path}. "
            f"Received: num_classes={num_classes}"
        )


def _check_classes(folder, num_classes, features):
    path = os.path.join(folder, features.CLASSES_FILE)
    if not tf.io.gfile.exists(path):
        logger.warning(
            "No %s next to the shards in %s: num_classes=%d is not checked.",
            features.CLASSES_FILE,
            folder or ".",
            num_classes,
        )
        return
    class_ids, _ = features.read_classes_csv(path)
    if len(class_ids) != num_classes:
        raise ValueError(
            f"Invalid value for argument `num_classes`. Expected "
            f"{len(class_ids)}, the number of classes in {path}. Received: "
            f"num_classes={num_classes}"
        )
