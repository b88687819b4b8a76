"""COCO and LVIS instance annotations -> image-level sharded TFRecords."""

import array
import json
import logging
import os
import posixpath
import time

import tensorflow as tf

from keras_csl.data import writer

logger = logging.getLogger(__name__)

_JSON = (
    "a {name} JSON: `images` entries with `id` and {file}, `annotations` "
    "with the `image_id` of a listed image and the `category_id` of a listed "
    "category, `categories` with `id` and `name`"
)
EXPECTED = {
    "coco": _JSON.format(name="COCO instances", file="`file_name`"),
    "lvis": _JSON.format(name="LVIS", file="`coco_url` (or `file_name`)")
    + "; negative ids (`neg_category_ids`) of listed categories",
}
# What `python -m keras_csl.data.convert coco --help` says of the input.
INPUT_HELP = {
    "coco": """\
Annotations (--annotations_json): a COCO instances JSON (e.g.
  instances_train2017.json): `images` (id, file_name), `annotations`
  (image_id, category_id), `categories` (id, name). A class is positive
  for an image with at least one annotation of it (crowd ones included);
  COCO labels are exhaustive, so every other class is a verified negative.
  Classes are the categories sorted by id.
Images (--images_dir): the folder holding each image's file_name. The image
  id is the file name without its extension.
""",
    "lvis": """\
Annotations (--annotations_json): an LVIS v1 JSON: `images` (id, coco_url,
  neg_category_ids, not_exhaustive_category_ids), `annotations` (image_id,
  category_id), `categories` (id, name). Positives are the annotated
  categories, negatives the neg_category_ids; every other class is
  un-annotated (LVIS is federated). A category both annotated and listed
  as negative is reported and left un-annotated.
Images (--images_dir): the COCO images, <images_dir>/<train2017|val2017>/<name>
  when that folder exists, else <images_dir>/<name>.
""",
}


def _load_json(path):
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"{path}: empty file.")
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{path}: invalid JSON ({error}).") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(
                f"{path}: expected COCO-style lists `images`, `annotations` "
                f"and `categories`. Missing or not a list: `{key}`."
            )
    return data


def _categories(data, path):
    categories = sorted(data["categories"], key=lambda category: category["id"])
    if not categories:
        raise ValueError(f"{path}: no category found.")
    class_ids = [str(category["id"]) for category in categories]
    names = [category.get("name", str(category["id"])) for category in categories]
    index = {category["id"]: i for i, category in enumerate(categories)}
    return class_ids, names, index


def _image_path(image, images_dir, folders):
    """`file_name` (COCO, LVIS v0.5) or the last parts of `coco_url` (LVIS v1)."""
    if image.get("file_name"):
        name = image["file_name"]
        return name, os.path.join(images_dir, name)
    url = image.get("coco_url", "")
    folder, name = posixpath.split(posixpath.split(url)[0])[1], posixpath.basename(url)
    if not name:
        return None, None
    # LVIS v1 mixes COCO train2017 and val2017 images: use the folder of the
    # URL when images_dir has it, else look for the file in images_dir.
    if folder not in folders:
        folders[folder] = bool(folder) and tf.io.gfile.isdir(
            os.path.join(images_dir, folder)
        )
    if folders[folder]:
        return name, os.path.join(images_dir, folder, name)
    return name, os.path.join(images_dir, name)


def _read_images(data, path, images_dir, problems):
    """Returns `{coco image id: (Item, image entry)}` (no labels yet)."""
    images, seen_ids, folders = {}, set(), {}
    for i, image in enumerate(data["images"]):
        where = f"images[{i}]"
        if "id" not in image:
            problems.add(path, where, json.dumps(image)[:200], "malformed image entry")
            continue
        name, image_path = _image_path(image, images_dir, folders)
        if name is None:
            problems.add(
                path, where, image["id"], "image without file_name or coco_url"
            )
            continue
        image_id = os.path.splitext(name)[0]
        if image["id"] in images or image_id in seen_ids:
            problems.add(path, where, image["id"], "duplicate image")
            continue
        seen_ids.add(image_id)
        item = writer.Item(
            image_id=image_id,
            path=image_path,
            positive=array.array("i"),
            negative=array.array("i"),
            source_file=path,
            source_line=where,
        )
        images[image["id"]] = item, image
    if not images:
        problems.add(path, "images", "", "empty file")
    return images


def _read_positives(data, path, images, class_index, problems):
    """Returns `{coco image id: set of class indices}` from the annotations."""
    positives = {image_id: set() for image_id in images}
    for i, annotation in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        image_id = annotation.get("image_id")
        category = annotation.get("category_id")
        if image_id not in images:
            problems.reject_labels(path, where, image_id, "unknown image id")
        elif category not in class_index:
            problems.reject_labels(path, where, category, "unknown class id")
        else:
            positives[image_id].add(class_index[category])
    return positives


def _convert(fmt, data, path, images_dir, output_dir, options, start):
    path = os.fspath(path)
    problems = writer.Problems(options.strict)
    class_ids, names, class_index = _categories(data, path)
    images = _read_images(data, path, images_dir, problems)
    positives = _read_positives(data, path, images, class_index, problems)
    conflicts = 0
    for coco_id, (item, image) in images.items():
        positive = positives[coco_id]
        if fmt == "coco":
            # COCO labels are exhaustive: every absent class is verified absent.
            negative = set(range(len(class_ids))) - positive
            not_exhaustive = set()
        else:
            negative = _lvis_ids(
                image, "neg_category_ids", path, item, class_index, problems
            )
            not_exhaustive = _lvis_ids(
                image, "not_exhaustive_category_ids", path, item, class_index, problems
            )
            for index in sorted(positive & negative):
                conflicts += 1
                problems.reject_labels(
                    path,
                    item.source_line,
                    f"{item.image_id},{class_ids[index]}",
                    "conflicting labels (annotated and in neg_category_ids; "
                    "left un-annotated)",
                )
            positive, negative = positive - negative, negative - positive
        item.positive = array.array("i", sorted(positive))
        item.negative = array.array("i", sorted(negative))
        item.not_exhaustive = array.array("i", sorted(not_exhaustive))
    labels_read = len(data["annotations"])
    if fmt == "lvis":
        labels_read += sum(
            len(image.get(key, ()))
            for _, image in images.values()
            for key in ("neg_category_ids", "not_exhaustive_category_ids")
        )
    label_rows = writer.check_label_rows(
        problems,
        labels_read,
        options.max_rejected_fraction,
        expected=EXPECTED[fmt],
        found=_describe(data, path),
    )
    read_seconds = time.perf_counter() - start
    inputs = {
        "annotations_json": os.fspath(path),
        "images_dir": os.fspath(images_dir),
        "annotations": len(data["annotations"]),
        "images_without_annotations": sum(1 for p in positives.values() if not p),
        "label_rows": label_rows,
    }
    logger.info(
        "Read %d annotations for %d images and %d classes in %.1f s.",
        len(data["annotations"]),
        len(images),
        len(class_ids),
        read_seconds,
    )
    return writer.write_dataset(
        [item for item, _ in images.values()],
        class_ids,
        names,
        output_dir,
        options,
        problems=problems,
        summary_extra={"format": fmt, "inputs": inputs},
        read_seconds=read_seconds,
    )


def _describe(data, path):
    """What the JSON held, for the message of a refused conversion."""
    parts = []
    for key in ("images", "annotations", "categories"):
        entries = data[key]
        first = f", first {json.dumps(entries[0])[:150]}" if entries else ""
        parts.append(f"{len(entries)} {key}{first}")
    return f"{path} holds " + "; ".join(parts)


def _lvis_ids(image, key, path, item, class_index, problems):
    indices = set()
    for category in image.get(key, ()):
        if category in class_index:
            indices.add(class_index[category])
        else:
            problems.reject_labels(
                path, item.source_line, f"{key}: {category}", "unknown class id"
            )
    return indices


def convert_coco(
    annotations_json, images_dir, output_dir, options=None, **writer_options
):
    """Converts COCO instance annotations to image-level sharded TFRecords.

    A class is positive for an image when it has at least one instance
    annotation (crowd ones included); COCO labels are exhaustive, so every
    other class is a verified negative. Classes are the categories sorted
    by id (`class_id` is the COCO category id, e.g. "1" for person); the
    image id is the file name without extension (e.g. "000000000030").
    Images without annotations are kept, with every class negative.
    Annotations of unknown images or categories, and missing or undecodable
    images, are skipped and listed in `<split>-report.csv` (the `line`
    column holds the JSON location, e.g. `annotations[12]`).

    Example:

    ```python
    summary = keras_csl.data.convert_coco(
        "annotations/instances_train2017.json", "train2017", "/data/coco-tfr",
        num_shards=64)
    summary["num_classes"]  # 80
    ```

    Args:
        annotations_json: the COCO instances JSON.
        images_dir: folder holding the images' `file_name`s.
        output_dir: output folder (created if needed).
        options: a `keras_csl.data.WriterOptions`, or `None`.
        **writer_options: fields of `WriterOptions` by keyword
            (`num_shards` is required).

    Returns:
        The summary dict (also in `<split>-summary.json`).

    Raises:
        ValueError: on an empty or invalid JSON, invalid arguments, no
            usable label (annotation), too many rejected ones (more than
            `max_rejected_fraction`), no image stored, or any bad input
            when `strict`.
    """
    start = time.perf_counter()
    options = writer.WriterOptions.resolve(
        options, "convert_coco", **writer_options
    )
    data = _load_json(annotations_json)
    return _convert(
        "coco", data, annotations_json, images_dir, output_dir, options, start
    )


def convert_lvis(
    annotations_json, images_dir, output_dir, options=None, **writer_options
):
    """Converts LVIS v1 annotations to image-level sharded TFRecords.

    LVIS is federated: each image lists `neg_category_ids` (verified
    absent) and `not_exhaustive_category_ids` (present, but not every
    instance is boxed). Positives are the categories with an annotation,
    negatives the `neg_category_ids`, every other class is un-annotated;
    `not_exhaustive_category_ids` is stored too (informational: the class
    is still positive for the image). A category both annotated and listed
    as negative is reported and left un-annotated.

    LVIS v1 images have no `file_name`: the path is taken from `coco_url`,
    `<images_dir>/<train2017|val2017>/<name>` when that folder exists, else
    `<images_dir>/<name>`.

    Example:

    ```python
    summary = keras_csl.data.convert_lvis(
        "lvis_v1_train.json", "/data/coco", "/data/lvis-tfr", num_shards=64)
    summary["num_classes"]  # 1203
    ```

    Args:
        annotations_json: the LVIS JSON.
        images_dir: folder of the COCO images (see above).
        output_dir: output folder (created if needed).
        options: a `keras_csl.data.WriterOptions`, or `None`.
        **writer_options: fields of `WriterOptions` by keyword
            (`num_shards` is required).

    Returns:
        The summary dict (also in `<split>-summary.json`).

    Raises:
        ValueError: on an empty or invalid JSON, invalid arguments, no
            usable label (annotation), too many rejected ones (more than
            `max_rejected_fraction`), no image stored, or any bad input
            when `strict`.
    """
    start = time.perf_counter()
    options = writer.WriterOptions.resolve(
        options, "convert_lvis", **writer_options
    )
    data = _load_json(annotations_json)
    return _convert(
        "lvis", data, annotations_json, images_dir, output_dir, options, start
    )
