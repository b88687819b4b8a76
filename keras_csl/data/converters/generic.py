"""A generic labels CSV (image path, positive ids, negative ids) -> TFRecords."""

import csv
import logging
import os
import time

from keras_csl.data import writer
from keras_csl.data.converters import common

logger = logging.getLogger(__name__)

HEADER = ("image", "positive", "negative")
# A first row whose first cell is one of these is a header, not an image.
_IMAGE_HEADERS = ("image", "path", "file", "filename", "image_path", "file_name")
EXPECTED = (
    "rows image,positive,negative (header row optional): an image path, then "
    "the space-separated ids of its positive and of its verified negative "
    "classes"
)
# What `python -m keras_csl.data.convert csv --help` says of the input.
INPUT_HELP = """\
Label CSVs (--labels_csv, repeatable): image,positive,negative
  One row per image (rows of one image are merged): the image path,
  relative to --images_dir (default: the CSV's folder) or absolute; the
  ids of its positive classes, separated by spaces; the ids of its
  verified negative classes (the column may be left out). Every other
  class is un-annotated. A first row starting with image, path, file or
  filename is a header. The image id is the path without its extension.
Classes (--classes_csv, optional): class_id,display_name rows (or one id a
  line), header optional: the class set, in file order. Without it, the
  ids found in the labels, sorted (numerically when all are integers).
"""


def convert_csv(
    labels_csv,
    images_dir,
    output_dir,
    options=None,
    *,
    classes_csv=None,
    **writer_options,
):
    """Converts a generic labels CSV to sharded TFRecords.

    Each row is `image,positive,negative` (the header row is optional): an
    image path (relative to `images_dir`, or absolute), then the ids of its
    positive classes and of its verified negative classes, separated by
    spaces (the last column may be left out). Every other class is
    un-annotated. The image id is the path as written, without its
    extension. Rows of one image are merged; a class that is positive in
    one row and negative in another is reported and left un-annotated.

    Classes come from `classes_csv` (`class_id,display_name`, or one id per
    line, header optional) in its order; without it, from the ids found in
    the labels, sorted (numerically when all are integers).

    Each class id in a row is one label row for `max_rejected_fraction`
    (`convert_openimages` explains the refusal rules).

    Example:

    ```python
    # labels.csv:  image,positive,negative
    #              cats/1.jpg,cat,dog
    summary = keras_csl.data.convert_csv("labels.csv", "/data/pets",
                                         "/data/pets-tfr", num_shards=1)
    summary["labels"]  # {"positive": 1, "negative": 1, ...}
    ```

    Args:
        labels_csv: a labels CSV path, or a list of them.
        images_dir: folder the image paths are relative to (`None`: the
            folder of each CSV).
        output_dir: output folder (created if needed).
        options: a `keras_csl.data.WriterOptions`, or `None`.
        classes_csv: optional classes file.
        **writer_options: fields of `WriterOptions` by keyword
            (`num_shards` is required).

    Returns:
        The summary dict (also in `<split>-summary.json`).

    Raises:
        ValueError: on invalid arguments, an empty classes file, no usable
            label row, too many rejected label rows, no image stored, or
            any bad input when `strict`.
    """
    start = time.perf_counter()
    options = writer.WriterOptions.resolve(options, "convert_csv", **writer_options)
    labels_csv = common.as_list(labels_csv)
    problems = writer.Problems(options.strict)
    if classes_csv:
        class_ids, names = common.read_class_descriptions(classes_csv, problems)
    else:
        class_ids = _collect_class_ids(labels_csv)
        names = list(class_ids)
    class_index = {class_id: index for index, class_id in enumerate(class_ids)}

    table = common.LabelTable(labels_csv)
    paths = {}
    rows = labels_read = 0
    for file_index, labels_path in enumerate(labels_csv):
        base = images_dir if images_dir is not None else os.path.dirname(labels_path)
        num_rows = 0
        for line, row in _rows(labels_path):
            image = row[0].strip()
            ids = [
                (value, class_id)
                for value, column in ((1, 1), (0, 2))
                for class_id in (row[column].split() if len(row) > column else ())
            ]
            if not image:
                # A row without an image: its ids (at least one row) are lost.
                labels_read += max(1, len(ids))
                problems.reject_labels(
                    labels_path, line, ",".join(row), "malformed row", max(1, len(ids))
                )
                continue
            labels_read += len(ids)
            num_rows += 1
            image_id = os.path.splitext(image)[0]
            path = os.path.join(base, image)
            if paths.setdefault(image_id, path) != path:
                problems.reject_labels(
                    labels_path,
                    line,
                    image,
                    f"duplicate image id {image_id!r} (first {paths[image_id]})",
                    len(ids),
                )
                continue
            table.touch(image_id, file_index, line)
            for value, class_id in ids:
                if class_id not in class_index:
                    problems.reject_labels(
                        labels_path, line, class_id, "unknown class id"
                    )
                    continue
                table.add(image_id, class_index[class_id], value, file_index, line)
        if not num_rows:
            problems.add(labels_path, "", "", "empty file")
        rows += num_rows

    items = [
        writer.Item(
            image_id=image_id,
            path=paths[image_id],
            positive=positive,
            negative=negative,
            source_file=file,
            source_line=line,
        )
        for image_id, file, line, positive, negative in table.resolve(
            class_ids, problems
        )
    ]
    label_rows = writer.check_label_rows(
        problems,
        labels_read,
        options.max_rejected_fraction,
        expected=EXPECTED
        + (f", ids of the classes in {classes_csv}" if classes_csv else ""),
        found=common.first_rows(labels_csv),
    )
    read_seconds = time.perf_counter() - start
    logger.info("Read %d rows for %d images in %.1f s.", rows, len(items), read_seconds)
    return writer.write_dataset(
        items,
        class_ids,
        names,
        output_dir,
        options,
        problems=problems,
        summary_extra={
            "format": "csv",
            "inputs": {
                "labels_csv": labels_csv,
                "classes_csv": classes_csv and os.fspath(classes_csv),
                "images_dir": images_dir and os.fspath(images_dir),
                "rows": rows,
                "duplicate_labels": table.duplicate_rows,
                "label_rows": label_rows,
            },
        },
        read_seconds=read_seconds,
    )


def _rows(path):
    """Yields `(line, row)`, skipping the header and blank lines."""
    with writer.open_text(path) as f:
        reader = csv.reader(f)
        for row in reader:
            first_cell = row[0].strip().lower() if row else ""
            if reader.line_num == 1 and first_cell in _IMAGE_HEADERS:
                continue
            if not any(cell.strip() for cell in row):
                continue
            yield reader.line_num, row


def _collect_class_ids(labels_csv):
    class_ids = set()
    for path in labels_csv:
        for _, row in _rows(path):
            for column in row[1:3]:
                class_ids.update(column.split())
    if not class_ids:
        raise ValueError(
            f"No usable label row: no class id found in {', '.join(labels_csv)}."
            f"\nExpected {EXPECTED}.\nFound: {common.first_rows(labels_csv)}."
        )
    if all(class_id.lstrip("-").isdigit() for class_id in class_ids):
        return sorted(class_ids, key=int)
    return sorted(class_ids)
