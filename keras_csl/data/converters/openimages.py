"""OpenImages human-verified image-level labels -> sharded TFRecords."""

import csv
import logging
import os
import time

from keras_csl.data import writer
from keras_csl.data.converters import common

logger = logging.getLogger(__name__)

_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")
_REQUIRED = ("ImageID", "LabelName", "Confidence")
_CONFIDENCE = {"1": 1, "0": 0}
EXPECTED = (
    "label CSVs with the header ImageID,Source,LabelName,Confidence (columns "
    "in any order, Source optional) or headerless rows of these 4 columns in "
    "this order, Confidence 1 or 0, LabelName a class of the classes file"
)
# What `python -m keras_csl.data.convert openimages --help` says of the input.
INPUT_HELP = """\
Label CSVs (--labels_csv, repeatable, read in order):
  ImageID,Source,LabelName,Confidence
  A header row with these names (any order, any case; Source may be left
  out), or headerless rows of these 4 columns in this order. Confidence 1 =
  verified present, 0 = verified absent; every class an image has no row
  for is un-annotated. Rows of classes outside --trainable_classes_csv are
  dropped and counted; rows with an unknown LabelName, another Confidence
  or too few columns are rejected and reported.
Classes (--classes_csv): LabelName,DisplayName rows, header optional: the
  class set, in file order.
Trainable classes (--trainable_classes_csv, optional): one LabelName a
  line; restricts the classes to these, in this order.
Images (--images_dir): <images_dir>/<ImageID>.jpg (JPEG, PNG or any format
  TensorFlow decodes, whatever the extension).
"""


def convert_openimages(
    labels_csv,
    classes_csv,
    images_dir,
    output_dir,
    options=None,
    *,
    trainable_classes_csv=None,
    **writer_options,
):
    """Converts OpenImages image-level labels to sharded TFRecords.

    Reads the human-verified label CSVs (`ImageID,Source,LabelName,
    Confidence`: 1 = positive, 0 = verified negative; streamed, holding
    about 600 bytes per image, some 5.6 GB for the 9M images of the full
    train file), keyed by `LabelName` (MID): every class an image has no
    row for is un-annotated. The class set is the class-descriptions file
    (`LabelName,DisplayName`, with or without the header), in its order,
    or the trainable-classes list (one MID per line) in its order. Images
    are `<images_dir>/<ImageID>.jpg`. `INPUT_HELP` spells the columns out.

    Rows for a known class outside the trainable list are dropped and
    counted (`inputs.rows_not_trainable`); rows with an unknown MID, bad
    Confidence or too few columns, and images that are missing or cannot be
    decoded, are skipped, listed in `<split>-report.csv` and summed up in
    one WARNING line per kind. Images keep their remaining labels; an image
    whose rows were all dropped is kept with every class un-annotated. The
    conversion refuses to write (before any image is read) when no label
    row is usable, or when more than `max_rejected_fraction` of them are
    rejected; the message names the expected header and each file's first
    row.

    See `keras_csl.data.writer` for the shard layout, resumption and the
    output files.

    Example:

    ```python
    summary = keras_csl.data.convert_openimages(
        ["oidv6-train-annotations-human-imagelabels.csv"],
        "oidv6-class-descriptions.csv", "/data/oi/train", "/data/oi-tfr",
        trainable_classes_csv="oidv6-classes-trainable.txt",
        num_shards=1024, resize_short_side=256)
    summary["images"], summary["num_classes"]
    ```

    Args:
        labels_csv: a label CSV path, or a list of them (e.g. train and
            validation), read in order.
        classes_csv: the class-descriptions CSV.
        images_dir: folder of `<ImageID>.jpg` files.
        output_dir: output folder (created if needed).
        options: a `keras_csl.data.WriterOptions`, or `None`.
        trainable_classes_csv: optional list of MIDs restricting the classes.
        **writer_options: fields of `WriterOptions` by keyword
            (`num_shards` is required, `split`, `resize_short_side`,
            `jpeg_quality`, `validate_images`, `strict`,
            `max_rejected_fraction`, `num_workers`, `verbose`).

    Returns:
        The summary dict (also in `<split>-summary.json`).

    Raises:
        ValueError: on invalid arguments, an empty classes file, a label
            file whose first row is neither the header nor a label row,
            no usable label row, too many rejected label rows, no image
            stored, or any bad input when `strict`. The message names the
            file, line and value.
    """
    start = time.perf_counter()
    options = writer.WriterOptions.resolve(
        options, "convert_openimages", **writer_options
    )
    labels_csv = common.as_list(labels_csv)
    problems = writer.Problems(options.strict)
    class_ids, names = common.read_class_descriptions(classes_csv, problems)
    described = set(class_ids)
    if trainable_classes_csv:
        class_ids, names = common.read_class_subset(
            trainable_classes_csv, class_ids, names, problems
        )
    class_index = {class_id: index for index, class_id in enumerate(class_ids)}

    table = common.LabelTable(labels_csv)
    counts = {"rows": 0, "rows_not_trainable": 0}
    for file_index, path in enumerate(labels_csv):
        _read_labels(path, file_index, class_index, described, table, problems, counts)
    items = []
    for image_id, file, line, positive, negative in table.resolve(class_ids, problems):
        items.append(
            writer.Item(
                image_id=image_id,
                path=os.path.join(images_dir, image_id + ".jpg"),
                positive=positive,
                negative=negative,
                source_file=file,
                source_line=line,
            )
        )
    label_rows = writer.check_label_rows(
        problems,
        counts["rows"],
        options.max_rejected_fraction,
        expected=EXPECTED,
        found=common.first_rows(labels_csv),
        dropped=counts["rows_not_trainable"],
    )
    counts["duplicate_rows"] = table.duplicate_rows
    counts["images_without_annotations"] = sum(
        1 for item in items if not item.positive and not item.negative
    )
    read_seconds = time.perf_counter() - start
    logger.info(
        "Read %d label rows (%d usable) for %d images and %d classes in %.1f s.",
        counts["rows"],
        label_rows["usable"],
        len(items),
        len(class_ids),
        read_seconds,
    )
    return writer.write_dataset(
        items,
        class_ids,
        names,
        output_dir,
        options,
        problems=problems,
        summary_extra={
            "format": "openimages",
            "inputs": dict(
                counts,
                label_rows=label_rows,
                labels_csv=labels_csv,
                classes_csv=os.fspath(classes_csv),
                trainable_classes_csv=trainable_classes_csv
                and os.fspath(trainable_classes_csv),
                images_dir=os.fspath(images_dir),
            ),
        },
        read_seconds=read_seconds,
    )


def _columns(path, first):
    """`(image, label, confidence)` column indices and whether `first` is a header.

    Raises:
        ValueError: if the first row is neither the header nor a label row.
    """
    names = [cell.strip().lower() for cell in first]
    if all(column.lower() in names for column in _REQUIRED):
        return [names.index(column.lower()) for column in _REQUIRED], True
    if len(first) == len(_COLUMNS) and _parse_confidence(first[3].strip()) is not None:
        return [0, 2, 3], False
    raise ValueError(
        f"{path}, line 1: expected the header {','.join(_COLUMNS)} (columns in "
        f"any order, Source optional) or a label row of these {len(_COLUMNS)} "
        f"columns in this order. Received: {','.join(first)!r}"
    )


def _read_labels(path, file_index, class_index, described, table, problems, counts):
    with writer.open_text(path) as f:
        reader = csv.reader(f)
        first = next(reader, None)
        if first is None or not any(cell.strip() for cell in first):
            problems.add(path, 1, "", "empty file")
            return
        columns, has_header = _columns(path, first)
        rows = reader if has_header else _chain(first, reader)
        image_col, label_col, confidence_col = columns
        width = max(columns) + 1
        num_rows = 0
        for row in rows:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            num_rows += 1
            if len(row) < width or not row[image_col]:
                problems.reject_labels(path, line, ",".join(row), "malformed row")
                continue
            image_id = row[image_col]
            value = _CONFIDENCE.get(row[confidence_col])
            if value is None:
                value = _parse_confidence(row[confidence_col])
                if value is None:
                    problems.reject_labels(
                        path, line, ",".join(row), "invalid Confidence (not 0 or 1)"
                    )
                    table.touch(image_id, file_index, line)
                    continue
            index = class_index.get(row[label_col])
            if index is None:
                if row[label_col] in described:
                    counts["rows_not_trainable"] += 1
                else:
                    problems.reject_labels(
                        path, line, row[label_col], "unknown class id"
                    )
                table.touch(image_id, file_index, line)
                continue
            table.add(image_id, index, value, file_index, line)
        counts["rows"] += num_rows
        if not num_rows:
            problems.add(path, reader.line_num, "", "empty file")


def _chain(first, rows):
    yield first
    yield from rows


def _parse_confidence(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None
