"""The TFRecord layout of keras-csl datasets (TensorFlow only).

One `tf.train.Example` per image. Class lists hold class *indices* into the
dataset's classes file, so a reader needs nothing but `num_classes`:

- `image/encoded`: the encoded image (JPEG or PNG bytes).
- `image/format`: `b"jpeg"` or `b"png"`.
- `image/id`: the image id (e.g. the OpenImages ImageID).
- `image/class/positive`: int64 list, classes present.
- `image/class/negative`: int64 list, classes verified absent.
- `image/class/not_exhaustive`: int64 list (LVIS), informational.

Every class in neither list is un-annotated (-1). The classes file next to
the shards (`classes.csv`: `index,class_id,display_name`) maps indices to
ids and names.
"""

import csv

import tensorflow as tf

IMAGE_KEY = "image/encoded"
FORMAT_KEY = "image/format"
ID_KEY = "image/id"
POSITIVE_KEY = "image/class/positive"
NEGATIVE_KEY = "image/class/negative"
NOT_EXHAUSTIVE_KEY = "image/class/not_exhaustive"

CLASSES_FILE = "classes.csv"
CLASSES_HEADER = ("index", "class_id", "display_name")

FEATURE_SPEC = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    FORMAT_KEY: tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
    ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    POSITIVE_KEY: tf.io.VarLenFeature(tf.int64),
    NEGATIVE_KEY: tf.io.VarLenFeature(tf.int64),
    NOT_EXHAUSTIVE_KEY: tf.io.VarLenFeature(tf.int64),
}


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def encode_example(
    image_bytes,
    image_id,
    positive,
    negative=(),
    image_format="jpeg",
    not_exhaustive=(),
):
    """Serializes one image and its labels to `tf.train.Example` bytes.

    Class lists are written sorted and the serialization is deterministic, so
    equal inputs give equal bytes in any process.
    """
    if isinstance(image_id, str):
        image_id = image_id.encode("utf-8")
    if isinstance(image_format, str):
        image_format = image_format.encode("ascii")
    feature = {
        IMAGE_KEY: _bytes([image_bytes]),
        FORMAT_KEY: _bytes([image_format]),
        ID_KEY: _bytes([image_id]),
        POSITIVE_KEY: _ints(sorted(int(c) for c in positive)),
        NEGATIVE_KEY: _ints(sorted(int(c) for c in negative)),
    }
    if len(not_exhaustive):
        feature[NOT_EXHAUSTIVE_KEY] = _ints(sorted(int(c) for c in not_exhaustive))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Protobuf orders the feature map differently in each process unless
    # asked not to; shards must be byte-identical across runs.
    return example.SerializeToString(deterministic=True)


def parse_example(serialized):
    """Parses serialized examples (a scalar or a batch) to a dict of tensors.

    Class lists come back dense (`tf.int64`, padded with -1 in a batch).
    """
    parsed = tf.io.parse_example(serialized, FEATURE_SPEC)
    for key in (POSITIVE_KEY, NEGATIVE_KEY, NOT_EXHAUSTIVE_KEY):
        parsed[key] = tf.sparse.to_dense(parsed[key], default_value=-1)
    return parsed


def targets_from_lists(positive, negative, num_classes):
    """Float32 targets `[B, num_classes]` in {1, 0, -1} from ragged lists.

    The one implementation of the label rule: every class starts
    un-annotated (-1), listed negatives become 0, listed positives 1 (a
    class in both lists counts as positive; converters never write such
    conflicts). The input pipeline calls it per batch, `make_targets` per
    example.

    Example:

    >>> positive = tf.ragged.constant([[1], []], dtype=tf.int64)
    >>> negative = tf.ragged.constant([[0, 1], [2]], dtype=tf.int64)
    >>> targets_from_lists(positive, negative, 3).numpy().tolist()
    [[0.0, 1.0, -1.0], [-1.0, -1.0, 0.0]]

    Args:
        positive: int64 `tf.RaggedTensor` `[B, None]` of class indices.
        negative: int64 `tf.RaggedTensor` `[B, None]` of class indices.
        num_classes: number of classes.

    Returns:
        float32 `[B, num_classes]`.
    """
    batch = positive.nrows()
    targets = tf.fill(tf.stack([batch, tf.cast(num_classes, batch.dtype)]), -1.0)
    for lists, value in ((negative, 0.0), (positive, 1.0)):
        indices = tf.stack(
            [lists.value_rowids(), tf.cast(lists.values, lists.row_splits.dtype)],
            axis=1,
        )
        targets = tf.tensor_scatter_nd_update(
            targets, indices, tf.fill(tf.shape(lists.values), value)
        )
    return targets


def make_targets(positive, negative, num_classes):
    """Dense float32 targets `[num_classes]` in {1, 0, -1} from index lists.

    One example's `targets_from_lists`; padding entries (-1, as
    `parse_example` pads) are ignored.

    Example:

    >>> make_targets([1, -1], [0, 1], 3).numpy().tolist()
    [0.0, 1.0, -1.0]
    """

    def one_row(indices):
        indices = tf.cast(indices, tf.int64)
        indices = tf.boolean_mask(indices, indices >= 0)
        return tf.RaggedTensor.from_row_lengths(indices, tf.shape(indices, tf.int64))

    return targets_from_lists(one_row(positive), one_row(negative), num_classes)[0]


def write_classes_csv(path, class_ids, display_names):
    """Writes the classes file: `index,class_id,display_name`."""
    with tf.io.gfile.GFile(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CLASSES_HEADER)
        for index, (class_id, name) in enumerate(zip(class_ids, display_names)):
            writer.writerow([index, class_id, name])


def read_classes_csv(path):
    """Reads the classes file; returns `(class_ids, display_names)` lists."""
    with tf.io.gfile.GFile(path, "r") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0][:3]) != CLASSES_HEADER:
        raise ValueError(
            f"Invalid classes file {path}: expected the header "
            f"{','.join(CLASSES_HEADER)}. Received: {rows[0] if rows else 'an empty file'}"
        )
    class_ids, names = [], []
    for line, row in enumerate(rows[1:], 2):
        if len(row) < 3 or row[0] != str(len(class_ids)):
            raise ValueError(
                f"Invalid classes file {path}, line {line}: expected "
                f"index {len(class_ids)},class_id,display_name. Received: {row!r}"
            )
        class_ids.append(row[1])
        names.append(row[2])
    return class_ids, names


# A label overlay replaces the labels of a converted dataset without
# rewriting its images (e.g. a simulated partial annotation):
# CSV with the header below; class indices separated by spaces.
OVERLAY_HEADER = ("image_id", "positive", "negative")


def write_label_overlay(path, rows):
    """Writes `(image_id, positives, negatives)` rows as a label overlay."""
    with tf.io.gfile.GFile(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(OVERLAY_HEADER)
        for image_id, positive, negative in rows:
            writer.writerow(
                [
                    image_id,
                    " ".join(str(int(c)) for c in sorted(positive)),
                    " ".join(str(int(c)) for c in sorted(negative)),
                ]
            )


def read_label_overlay(path):
    """Reads a label overlay; returns `{image_id: (positives, negatives)}`.

    Raises:
        ValueError: for a missing header, a malformed row, or an image id on
            two rows (the message names the file and both lines).
    """
    with tf.io.gfile.GFile(path, "r") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0][:3]) != OVERLAY_HEADER:
        raise ValueError(
            f"Invalid label overlay {path}: expected the header "
            f"{','.join(OVERLAY_HEADER)}. Received: {rows[0] if rows else 'an empty file'}"
        )
    overlay, first_line = {}, {}
    for line, row in enumerate(rows[1:], 2):
        try:
            positive = [int(c) for c in row[1].split()]
            negative = [int(c) for c in row[2].split()]
        except (IndexError, ValueError):
            raise ValueError(
                f"Invalid label overlay {path}, line {line}: expected "
                f"image_id,positive,negative. Received: {row!r}"
            ) from None
        if row[0] in overlay:
            raise ValueError(
                f"Invalid label overlay {path}: image {row[0]!r} is on line "
                f"{first_line[row[0]]} and again on line {line}. Expected one "
                "row per image."
            )
        overlay[row[0]] = (positive, negative)
        first_line[row[0]] = line
    return overlay
