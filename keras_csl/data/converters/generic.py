"""A generic labels CSV (image path, positive ids, negative ids) -> TFRecords."""

import csv
import logging
import os
import time

from keras_csl.data import writer
from keras_csl.data.converters import common

logger = logging.getLogger(__name__)

HEADER = ("image", "positive", "negative")


def convert_csv(
    labels_csv,
    images_dir,
    output_dir,
    num_shards,
    classes_csv=None,
    split="train",
    resize_short_side=None,
    strict=False,
    num_workers=None,
    verbose=1,
    jpeg_quality=90,
    validate_images=True,
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
        output_dir, num_shards, split, resize_short_side, strict,
        num_workers, verbose, jpeg_quality, validate_images: as in
            `convert_openimages`.
        classes_csv: optional classes file.

    Returns:
        The summary dict (also in `<split>-summary.json`).

    Raises:
        ValueError: on invalid arguments, an empty classes file, or any bad
            input when `strict`.
    """
    start = time.perf_counter()
    labels_csv = common.as_list(labels_csv)
    problems = writer.Problems(strict)
    if classes_csv:
        class_ids, names = common.read_class_descriptions(classes_csv, problems)
    else:
        class_ids = _collect_class_ids(labels_csv)
        names = list(class_ids)
    class_index = {class_id: index for index, class_id in enumerate(class_ids)}

    table = common.LabelTable(labels_csv)
    paths = {}
    rows = 0
    for file_index, labels_path in enumerate(labels_csv):
        base = images_dir if images_dir is not None else os.path.dirname(labels_path)
        num_rows = 0
        for line, row in _rows(labels_path):
            image = row[0].strip()
            if not image:
                problems.add(labels_path, line, ",".join(row), "malformed row")
                continue
            num_rows += 1
            image_id = os.path.splitext(image)[0]
            path = os.path.join(base, image)
            if paths.setdefault(image_id, path) != path:
                problems.add(
                    labels_path,
                    line,
                    image,
                    f"duplicate image id {image_id!r} (first {paths[image_id]})",
                )
                continue
            table.touch(image_id, file_index, line)
            for value, column in ((1, 1), (0, 2)):
                for class_id in row[column].split() if len(row) > column else ():
                    if class_id not in class_index:
                        problems.add(labels_path, line, class_id, "unknown class id")
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
    read_seconds = time.perf_counter() - start
    logger.info("Read %d rows for %d images in %.1f s.", rows, len(items), read_seconds)
    return writer.write_dataset(
        items,
        class_ids,
        names,
        output_dir,
        num_shards,
        problems=problems,
        split=split,
        resize_short_side=resize_short_side,
        jpeg_quality=jpeg_quality,
        validate_images=validate_images,
        strict=strict,
        num_workers=num_workers,
        verbose=verbose,
        summary_extra={
            "format": "csv",
            "inputs": {
                "labels_csv": labels_csv,
                "classes_csv": classes_csv and os.fspath(classes_csv),
                "images_dir": images_dir and os.fspath(images_dir),
                "rows": rows,
                "duplicate_labels": table.duplicate_rows,
            },
        },
        read_seconds=read_seconds,
    )


def _rows(path):
    """Yields `(line, row)`, skipping the header and blank lines."""
    with writer.open_text(path) as f:
        reader = csv.reader(f)
        for row in reader:
            if (
                reader.line_num == 1
                and tuple(c.strip().lower() for c in row[:1]) == HEADER[:1]
            ):
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
        raise ValueError(f"No class id found in {', '.join(labels_csv)}.")
    if all(class_id.lstrip("-").isdigit() for class_id in class_ids):
        return sorted(class_ids, key=int)
    return sorted(class_ids)
