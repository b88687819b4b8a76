"""OpenImages human-verified image-level labels -> sharded TFRecords."""

import csv
import logging
import os
import time

from keras_csl.data import writer
from keras_csl.data.converters import common

logger = logging.getLogger(__name__)

_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")
_CONFIDENCE = {"1": 1, "0": 0}


def convert_openimages(
    labels_csv,
    classes_csv,
    images_dir,
    output_dir,
    num_shards,
    trainable_classes_csv=None,
    split="train",
    resize_short_side=None,
    strict=False,
    num_workers=None,
    verbose=1,
    jpeg_quality=90,
    validate_images=True,
):
    """Converts OpenImages image-level labels to sharded TFRecords.

    Reads the human-verified label CSVs (`ImageID,Source,LabelName,
    Confidence`: 1 = positive, 0 = verified negative; streamed, holding
    about 600 bytes per image, some 5.6 GB for the 9M images of the full
    train file), keyed by `LabelName` (MID): every
    class an image has no row for is un-annotated. The class set is the
    class-descriptions file (`LabelName,DisplayName`, with or without the
    header), in its order, or the trainable-classes list (one MID per line)
    in its order. Images are `<images_dir>/<ImageID>.jpg`.

    Rows for a known class outside the trainable list are dropped and
    counted (`inputs.rows_not_trainable`); rows with an unknown MID, bad
    Confidence or too few columns, and images that are missing or cannot be
    decoded, are skipped and listed in `<split>-report.csv`. Images keep
    their remaining labels; an image whose rows were all dropped is kept
    with every class un-annotated.

    See `keras_csl.data.writer` for the shard layout, resumption and the
    output files.

    Example:

    ```python
    summary = keras_csl.data.convert_openimages(
        ["oidv6-train-annotations-human-imagelabels.csv"],
        "oidv6-class-descriptions.csv", "/data/oi/train", "/data/oi-tfr",
        num_shards=1024, trainable_classes_csv="oidv6-classes-trainable.txt",
        resize_short_side=256)
    summary["images"], summary["num_classes"]
    ```

    Args:
        labels_csv: a label CSV path, or a list of them (e.g. train and
            validation), read in order.
        classes_csv: the class-descriptions CSV.
        images_dir: folder of `<ImageID>.jpg` files.
        output_dir: output folder (created if needed).
        num_shards: number of TFRecord shards.
        trainable_classes_csv: optional list of MIDs restricting the classes.
        split: name prefix of the output files.
        resize_short_side: if set, images with a larger short side are
            resized to it and re-encoded as JPEG (the authors used 256).
        strict: raise `ValueError` on the first bad input instead of
            skipping and reporting it.
        num_workers: worker processes; 1 writes in this process. The
            default is `min(CPUs, images to write // 1000, shards to
            write)`, at least 1 (`writer.write_dataset`).
        verbose: 1 shows a progress bar.
        jpeg_quality: quality of re-encoded JPEGs.
        validate_images: decode each image to check it.

    Returns:
        The summary dict (also in `<split>-summary.json`).

    Raises:
        ValueError: on invalid arguments, an empty classes file, a label
            file without the expected columns, or any bad input when
            `strict`. The message names the file, line and value.
    """
    start = time.perf_counter()
    labels_csv = common.as_list(labels_csv)
    problems = writer.Problems(strict)
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
    counts["duplicate_rows"] = table.duplicate_rows
    counts["images_without_annotations"] = sum(
        1 for item in items if not item.positive and not item.negative
    )
    read_seconds = time.perf_counter() - start
    logger.info(
        "Read %d label rows for %d images and %d classes in %.1f s.",
        counts["rows"],
        len(items),
        len(class_ids),
        read_seconds,
    )
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
            "format": "openimages",
            "inputs": dict(
                counts,
                labels_csv=labels_csv,
                classes_csv=os.fspath(classes_csv),
                trainable_classes_csv=trainable_classes_csv
                and os.fspath(trainable_classes_csv),
                images_dir=os.fspath(images_dir),
            ),
        },
        read_seconds=read_seconds,
    )


def _read_labels(path, file_index, class_index, described, table, problems, counts):
    with writer.open_text(path) as f:
        reader = csv.reader(f)
        first = next(reader, None)
        if first is None or not any(cell.strip() for cell in first):
            problems.add(path, 1, "", "empty file")
            return
        if all(column in first for column in ("ImageID", "LabelName", "Confidence")):
            columns = [first.index(c) for c in ("ImageID", "LabelName", "Confidence")]
            rows = reader
        elif len(first) == len(_COLUMNS):
            columns = [0, 2, 3]
            rows = _chain(first, reader)
        else:
            raise ValueError(
                f"{path}, line 1: expected the header "
                f"{','.join(_COLUMNS)} or rows of {len(_COLUMNS)} columns. "
                f"Received: {first!r}"
            )
        image_col, label_col, confidence_col = columns
        width = max(columns) + 1
        num_rows = 0
        for row in rows:
            line = reader.line_num
            if len(row) < width or not row[image_col]:
                if any(cell.strip() for cell in row):
                    problems.add(path, line, ",".join(row), "malformed row")
                continue
            num_rows += 1
            image_id = row[image_col]
            value = _CONFIDENCE.get(row[confidence_col])
            if value is None:
                value = _parse_confidence(row[confidence_col])
                if value is None:
                    problems.add(
                        path, line, ",".join(row), "invalid Confidence (not 0 or 1)"
                    )
                    table.touch(image_id, file_index, line)
                    continue
            index = class_index.get(row[label_col])
            if index is None:
                if row[label_col] in described:
                    counts["rows_not_trainable"] += 1
                else:
                    problems.add(path, line, row[label_col], "unknown class id")
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
