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

Reading follows TF Model Garden: `decode_example` decodes serialized
examples to tensors, `parse_labels` turns a decoded batch into ids, class
lists and targets (`targets_from_lists`, the one label rule).
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

# The features a label reader needs.
LABEL_KEYS = (ID_KEY, POSITIVE_KEY, NEGATIVE_KEY)
# Image ids an out-of-range class index error lists, at most.
_IDS_IN_ERRORS = 10

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


def decode_example(serialized, keys=None):
    """The decoder: serialized `tf.train.Example`s to a dict of tensors.

    Only decodes (as TF Model Garden's decoders do); `parse_labels` turns
    the class lists into targets. Class lists come back as int64
    `tf.SparseTensor`s (rank 1 for one example, rank 2 for a batch), which
    `tf.data.Dataset.batch` stacks.

    Example:

    >>> record = encode_example(b"...", "img1", positive=[2], negative=[0])
    >>> decoded = decode_example(record, LABEL_KEYS)
    >>> decoded[ID_KEY].numpy(), decoded[POSITIVE_KEY].values.numpy().tolist()
    (b'img1', [2])

    Args:
        serialized: a string scalar or `[B]` vector of serialized examples.
        keys: the feature keys to decode (default: all of `FEATURE_SPEC`).

    Returns:
        `{key: tensor}` for each key.

    Raises:
        ValueError: for a key outside `FEATURE_SPEC`.
    """
    keys = tuple(FEATURE_SPEC) if keys is None else tuple(keys)
    unknown = [key for key in keys if key not in FEATURE_SPEC]
    if unknown:
        raise ValueError(
            f"Invalid value for argument `keys`. Expected keys of "
            f"FEATURE_SPEC {tuple(FEATURE_SPEC)}. Received: {unknown}"
        )
    return tf.io.parse_example(serialized, {key: FEATURE_SPEC[key] for key in keys})


def _rows_outside(lists, num_classes):
    """Bool `[B]`: rows of a ragged `[B, None]` with an index outside [0, n)."""
    outside = tf.logical_or(lists < 0, lists >= num_classes)
    return tf.reduce_any(outside, axis=1)


def parse_labels(decoded, num_classes, with_targets=True):
    """The label parser: a decoded batch to image ids, class lists and targets.

    The one way labels are read from TFRecords: the input pipeline
    (`make_dataset`) and the label reader (`keras_csl.data.read_labels`,
    behind the prior estimation and the simulation) both call it on the
    output of `decode_example` for a batch.

    Example:

    >>> records = [encode_example(b"", "a", [1], [0]),
    ...            encode_example(b"", "b", [], [2])]
    >>> labels = parse_labels(decode_example(records, LABEL_KEYS), 3)
    >>> labels["targets"].numpy().tolist()
    [[0.0, 1.0, -1.0], [-1.0, -1.0, 0.0]]

    Args:
        decoded: `decode_example` of a `[B]` batch, with at least
            `LABEL_KEYS`.
        num_classes: number of classes; every index must be in
            `[0, num_classes)`.
        with_targets: also build the dense targets.

    Returns:
        `{"id": string [B], "positive": int64 RaggedTensor [B, None],
        "negative": the same, "targets": float32 [B, num_classes]}`
        (`targets` only `with_targets`).

    Raises:
        tf.errors.InvalidArgumentError: when run, for a class index outside
            `[0, num_classes)`; the message lists the ids of the images of
            that batch that have one.
    """
    positive = tf.RaggedTensor.from_sparse(decoded[POSITIVE_KEY])
    negative = tf.RaggedTensor.from_sparse(decoded[NEGATIVE_KEY])
    image_ids = decoded[ID_KEY]
    out_of_range = tf.logical_or(
        _rows_outside(positive, num_classes), _rows_outside(negative, num_classes)
    )
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(out_of_range)),
        [
            "A class index in the TFRecords is outside "
            f"[0, num_classes={num_classes}) in the images with ids",
            tf.boolean_mask(image_ids, out_of_range),
        ],
        summarize=_IDS_IN_ERRORS,
    )
    with tf.control_dependencies([check]):
        labels = {
            "id": tf.identity(image_ids),
            "positive": positive.with_flat_values(tf.identity(positive.flat_values)),
            "negative": negative.with_flat_values(tf.identity(negative.flat_values)),
        }
        if with_targets:
            labels["targets"] = targets_from_lists(positive, negative, num_classes)
    return labels


def relabel_example(serialized, labels_of):
    """A serialized example with new class lists (same image, same id).

    Args:
        serialized: one serialized example (bytes).
        labels_of: a function `image_id (str) -> (positive, negative)`.

    Returns:
        The new serialized example (deterministic bytes).
    """
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    image_id = feature[ID_KEY].bytes_list.value[0].decode("utf-8")
    positive, negative = labels_of(image_id)
    feature[POSITIVE_KEY].int64_list.value[:] = sorted(int(c) for c in positive)
    feature[NEGATIVE_KEY].int64_list.value[:] = sorted(int(c) for c in negative)
    return example.SerializeToString(deterministic=True)


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

    One example's `targets_from_lists`; padding entries (-1) are ignored.

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
