"""Label overlays in the input pipeline: new labels for images, by id.

A label overlay (`keras_csl.data.features.write_label_overlay`, a CSV
`image_id,positive,negative`) replaces the labels of a converted dataset
without rewriting its images, e.g. a simulated partial annotation.
`make_dataset(..., label_overlay=path)` applies it per batch with
`LabelOverlay` and logs how many images it did not hold (`overlay_logger`).
"""

import logging

import numpy as np
import tensorflow as tf

from keras_csl.data import features
from keras_csl.data.features import targets_from_lists

logger = logging.getLogger(__name__)


class LabelOverlay:
    """A label overlay (`features.read_label_overlay`) looked up by image id.

    Images whose id is in the overlay get its positive and negative lists
    instead of those of the TFRecords; the others keep their TFRecord labels.

    Args:
        path: the overlay CSV (`image_id,positive,negative`).
        num_classes: every class index must be in `[0, num_classes)`.

    Raises:
        ValueError: for a class index out of range.
    """

    def __init__(self, path, num_classes):
        overlay = features.read_label_overlay(path)
        self.path = path
        self.num_classes = num_classes
        self.size = len(overlay)
        ids = sorted(overlay)
        positives = [overlay[i][0] for i in ids]
        negatives = [overlay[i][1] for i in ids]
        for name, lists in (("positive", positives), ("negative", negatives)):
            for image_id, classes in zip(ids, lists):
                bad = [c for c in classes if not 0 <= c < num_classes]
                if bad:
                    raise ValueError(
                        f"Invalid label overlay {path}: image {image_id!r} has "
                        f"{name} class indices {bad} outside [0, {num_classes})"
                    )
        if not ids:
            raise ValueError(
                f"Invalid label overlay {path}: it holds no image (only a "
                "header). Expected one row per image: image_id,positive,negative"
            )
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(ids, tf.string), tf.range(len(ids), dtype=tf.int64)
            ),
            default_value=-1,
        )
        # Ragged: memory linear in the number of labels.
        self._positive = self._ragged(positives)
        self._negative = self._ragged(negatives)

    @staticmethod
    def _ragged(lists):
        values = np.fromiter((c for row in lists for c in row), np.int64)
        splits = np.zeros(len(lists) + 1, np.int64)
        np.cumsum([len(row) for row in lists], out=splits[1:])
        return tf.RaggedTensor.from_row_splits(
            tf.constant(values, tf.int64), tf.constant(splits, tf.int64)
        )

    def apply(self, image_ids, targets):
        """Replaces the targets of the images in the overlay.

        Args:
            image_ids: string `[B]`.
            targets: float32 `[B, num_classes]`, the TFRecord labels.

        Returns:
            `(targets, missing)`: the targets, with the rows of images in
            the overlay replaced, and a bool `[B]`, true for images not in
            the overlay.
        """
        rows = self._table.lookup(image_ids)
        missing = rows < 0
        if self.size == 0:
            return targets, missing
        safe_rows = tf.maximum(rows, 0)
        overlay = targets_from_lists(
            tf.gather(self._positive, safe_rows),
            tf.gather(self._negative, safe_rows),
            self.num_classes,
        )
        return tf.where(missing[:, None], targets, overlay), missing


def overlay_logger(path):
    """A `Dataset.scan` step counting and logging images missing from an overlay."""

    def log(missing, seen):
        logger.warning(
            "Label overlay %s: %d of the first %d images read are not in it; "
            "they keep the labels of the TFRecords.",
            path,
            int(missing),
            int(seen),
        )

    def step(state, batch):
        batches, seen, missing = state
        batches += 1
        seen += tf.size(batch["overlay_missing"], out_type=tf.int64)
        missing += tf.reduce_sum(tf.cast(batch["overlay_missing"], tf.int64))
        # Log at batches 1, 2, 4, 8, ... while any image was missing.
        should_log = tf.logical_and(
            tf.equal(tf.bitwise.bitwise_and(batches, batches - 1), 0), missing > 0
        )

        def do_log():
            tf.py_function(log, [missing, seen], [])
            return tf.constant(True)

        logged = tf.cond(should_log, do_log, lambda: tf.constant(False))
        with tf.control_dependencies([logged]):
            batch = {k: tf.identity(v) for k, v in batch.items()}
        return (batches, seen, missing), batch

    zero = tf.constant(0, tf.int64)
    return (zero, zero, zero), step
