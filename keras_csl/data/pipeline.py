"""The tf.data reader: sharded TFRecords to `(images, targets)` batches.

`make_dataset` reads the layout of `keras_csl.data.features`: file-level
sharding across input pipelines, interleaved reads, shuffling, decoding and
resizing with the functions of `keras_csl.data.preprocessing` (which the
serving export calls too), the authors' augmentation
(`keras_csl.data.augment`) in training, batching and prefetching.

Images are float32 RGB in [0, 255]; the model applies its backbone's own
preprocessing (docs/PIPELINE.md). Targets are float32 in {1, 0, -1}:
positive, verified negative, un-annotated.

Per example, the map does only what must be done per image (parse, decode,
augment, resize); targets and the label overlay are built per batch, where
a handful of ops serve the whole batch (on 2 cores, building targets per
example cost about 0.1 ms of CPU per image, 5% of the decoding).
"""

import logging

import numpy as np
import tensorflow as tf

from keras_csl.data import augment as augment_lib
from keras_csl.data import features
from keras_csl.data import preprocessing

# Defined with the layout, public here too: the batched label rule.
from keras_csl.data.features import targets_from_lists

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
# Files read at once by `interleave`.
MAX_CYCLE_LENGTH = 16
# Image ids an out-of-range class index error lists, at most.
_IDS_IN_ERRORS = 10
# The features the reader needs; the class lists stay sparse until batched.
_READ_KEYS = (
    features.IMAGE_KEY,
    features.ID_KEY,
    features.POSITIVE_KEY,
    features.NEGATIVE_KEY,
)


def list_files(file_pattern):
    """Sorted, de-duplicated files matching a glob pattern or a list of them.

    Raises:
        ValueError: if nothing matches.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(pattern)})
    if not files:
        raise ValueError(
            "Invalid value for argument `file_pattern`. Expected a glob "
            f"pattern (or a list) matching TFRecord files. Received: "
            f"file_pattern={file_pattern!r}, which matches no file"
        )
    return files


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


def _has_index_outside(lists, num_classes):
    """Bool `[B]`: rows of a ragged `[B, None]` with an index outside [0, n)."""
    outside = tf.logical_or(lists < 0, lists >= num_classes)
    return tf.reduce_any(outside, axis=1)


def _derive_seed(seed, pipeline_id, purpose):
    """An independent int seed per (base seed, input pipeline, purpose)."""
    if seed is None:
        return None
    state = np.random.SeedSequence([seed, pipeline_id, purpose]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def _overlay_logger(path):
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


def make_dataset(
    file_pattern,
    num_classes,
    image_size,
    batch_size,
    training,
    *,
    input_context=None,
    shuffle_buffer=1024,
    augment=None,
    randaugment_num_ops=2,
    randaugment_magnitude=10.0,
    cutout=True,
    flip=True,
    resize_mode="squash",
    jpeg_downscale=True,
    deterministic=False,
    seed=None,
    label_overlay=None,
    repeat=False,
    cache=False,
    return_ids=False,
):
    """Batches of `(images, targets)` from TFRecords with partial labels.

    Images are float32 `[batch, S, S, 3]` RGB in **[0, 255]**: put the
    backbone's own preprocessing inside the model (e.g.
    `keras.applications.resnet.preprocess_input`, or
    `include_preprocessing=True` for EfficientNetV2 and ConvNeXt), so that
    training and serving both feed raw pixels. Targets are float32
    `[batch, num_classes]` in {1 (positive), 0 (verified negative),
    -1 (un-annotated)}.

    Training (`training=True`): files and examples are shuffled, the
    authors' augmentation is applied to each resized image
    (`augment.augment_image`: a random-colour cutout of half the image,
    RandAugment with `randaugment_num_ops` ops, a horizontal flip), and the
    last partial batch is dropped. Evaluation: files are
    read in order, no augmentation, the last partial batch is kept, and the
    output is deterministic.

    Distribution: pass the `tf.distribute.InputContext` that
    `strategy.distribute_datasets_from_function` gives. `batch_size` is the
    global batch; each input pipeline reads every
    `num_input_pipelines`-th file (sorted by name) and batches
    `input_context.get_per_replica_batch_size(batch_size)`. With fewer
    files than pipelines, it falls back to example-level sharding and logs
    a warning: every pipeline reads all files in the same order (sorted,
    interleaved in order, whatever `deterministic`) and keeps every
    `num_input_pipelines`-th example, so each example goes to exactly one
    pipeline per epoch; in training the kept examples are then shuffled
    (the files are not). Correct, but each pipeline reads the whole dataset.

    Example:

    >>> ds = make_dataset("data/train-*.tfrecord", num_classes=80,
    ...                   image_size=224, batch_size=64, training=True,
    ...                   repeat=True)  # doctest: +SKIP
    >>> images, targets = next(iter(ds))  # doctest: +SKIP
    >>> images.shape, targets.shape  # doctest: +SKIP
    (TensorShape([64, 224, 224, 3]), TensorShape([64, 80]))

    Args:
        file_pattern: glob pattern, or a list of them, of the TFRecords.
        num_classes: number of classes (rows of `classes.csv`).
        image_size: side `S` of the square images.
        batch_size: global batch size.
        training: training (shuffle, augment, drop the remainder) or
            evaluation mode.
        input_context: a `tf.distribute.InputContext`, or `None`.
        shuffle_buffer: examples in the shuffle buffer (training).
        augment: apply the training augmentation; defaults to `training`.
        randaugment_num_ops: RandAugment ops per image (0: none).
        randaugment_magnitude: RandAugment magnitude on a 0-10 scale, 10 the
            authors' strongest; each op draws its level up to it.
        cutout: apply the half-size random-colour cutout.
        flip: apply a random horizontal flip.
        resize_mode: `"squash"` (the authors'), `"pad"` or `"crop"`; see
            `keras_csl.data.preprocessing`.
        jpeg_downscale: decode large JPEGs at a reduced DCT scale
            (`preprocessing.decode_image`); keep the value the serving
            export uses.
        deterministic: reproducible order and augmentation in training too
            (parallel stages then keep their order, which can be slower).
            Evaluation is always deterministic.
        seed: int seed of the shuffles and augmentation; `None` draws one,
            unless `deterministic`, where it defaults to 0.
        label_overlay: path of a label overlay CSV
            (`features.write_label_overlay`), applied by image id; images
            missing from it keep their TFRecord labels, and their number
            is logged (warnings at batches 1, 2, 4, 8, ... while any is
            missing).
        repeat: repeat the data indefinitely (epochs stay whole: shuffle,
            then repeat).
        cache: cache the serialized records in memory (`True`) or in a file
            (a path); decoding and augmentation still run every epoch. The
            cache sits after the file shuffle and the interleave, so in
            training later epochs replay the first epoch's file order and
            only the shuffle buffer reorders them (a warning says so); a
            `shuffle_buffer` as large as the (per-pipeline) dataset restores
            a full reshuffle, at the memory of that many records.
        return_ids: yield `(images, targets, image_ids)`.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: for invalid arguments, or when no file matches.
        tf.errors.InvalidArgumentError: (when iterating) for a class index
            outside `[0, num_classes)` in the TFRecords; the message lists
            the ids of the images of that batch that have one.
    """
    num_classes = preprocessing.check_positive_int("num_classes", num_classes)
    image_size = preprocessing.check_positive_int("image_size", image_size)
    batch_size = preprocessing.check_positive_int("batch_size", batch_size)
    if resize_mode not in preprocessing.RESIZE_MODES:
        raise ValueError(
            f"Invalid value for argument `resize_mode`. Expected one of "
            f"{preprocessing.RESIZE_MODES}. Received: resize_mode={resize_mode!r}"
        )
    if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(
            "Invalid value for argument `seed`. Expected None or an int >= 0. "
            f"Received: seed={seed!r}"
        )
    augment = training if augment is None else augment
    ordered = deterministic or not training
    if deterministic and seed is None:
        seed = 0
    files = list_files(file_pattern)

    num_pipelines, pipeline_id, per_replica_batch = 1, 0, batch_size
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        per_replica_batch = input_context.get_per_replica_batch_size(batch_size)
    example_sharding = False
    if num_pipelines > 1:
        if len(files) >= num_pipelines:
            files = files[pipeline_id::num_pipelines]
        else:
            example_sharding = True
            logger.warning(
                "%d files for %d input pipelines: falling back to example-level "
                "sharding (each pipeline reads all files and keeps every %d-th "
                "example). Write at least %d shards to shard by file.",
                len(files),
                num_pipelines,
                num_pipelines,
                num_pipelines,
            )

    overlay = None
    if label_overlay is not None:
        overlay = LabelOverlay(label_overlay, num_classes)
        logger.info(
            "Label overlay %s: %d images; images not in it keep their labels.",
            label_overlay,
            overlay.size,
        )

    ds = tf.data.Dataset.from_tensor_slices(files)
    # With example-level sharding, `shard` deals each example to exactly one
    # pipeline only if every pipeline reads the same stream: the files keep
    # their sorted order and the interleave its order, whatever the seed or
    # `deterministic`; the examples are shuffled after the shard.
    if training and not example_sharding:
        ds = ds.shuffle(
            len(files),
            seed=_derive_seed(seed, pipeline_id, 0),
            reshuffle_each_iteration=True,
        )
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), MAX_CYCLE_LENGTH),
        num_parallel_calls=AUTOTUNE,
        deterministic=ordered or example_sharding,
    )
    if example_sharding:
        ds = ds.shard(num_pipelines, pipeline_id)
    if cache:
        if training:
            logger.warning(
                "cache=%r in training: later epochs replay the file order and "
                "interleaving of the first one; only the shuffle buffer "
                "(shuffle_buffer=%d examples) reorders them each epoch.",
                cache,
                shuffle_buffer,
            )
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if training and shuffle_buffer > 1:
        ds = ds.shuffle(
            shuffle_buffer,
            seed=_derive_seed(seed, pipeline_id, 1),
            reshuffle_each_iteration=True,
        )
    if repeat:
        ds = ds.repeat()

    spec = {key: features.FEATURE_SPEC[key] for key in _READ_KEYS}

    def load(serialized, augment_seed=None):
        parsed = tf.io.parse_example(serialized, spec)
        image = preprocessing.preprocess_encoded(
            parsed[features.IMAGE_KEY], image_size, resize_mode, jpeg_downscale
        )
        if augment_seed is not None:
            image = augment_lib.augment_image(
                image,
                augment_seed,
                randaugment_num_ops=randaugment_num_ops,
                randaugment_magnitude=randaugment_magnitude,
                cutout=cutout,
                flip=flip,
            )
        return {
            "image": image,
            "id": parsed[features.ID_KEY],
            "positive": parsed[features.POSITIVE_KEY],
            "negative": parsed[features.NEGATIVE_KEY],
        }

    def make_targets(batch):
        positive = tf.RaggedTensor.from_sparse(batch.pop("positive"))
        negative = tf.RaggedTensor.from_sparse(batch.pop("negative"))
        out_of_range = tf.logical_or(
            _has_index_outside(positive, num_classes),
            _has_index_outside(negative, num_classes),
        )
        check = tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(out_of_range)),
            [
                "A class index in the TFRecords is outside "
                f"[0, num_classes={num_classes}) in the images with ids",
                tf.boolean_mask(batch["id"], out_of_range),
            ],
            summarize=_IDS_IN_ERRORS,
        )
        with tf.control_dependencies([check]):
            targets = targets_from_lists(positive, negative, num_classes)
        if overlay is not None:
            targets, batch["overlay_missing"] = overlay.apply(batch["id"], targets)
        batch["targets"] = targets
        return batch

    if augment:
        # One stateless seed per example: reproducible with a seed, new
        # draws each epoch (rerandomize_each_iteration).
        seeds = tf.data.Dataset.random(
            seed=_derive_seed(seed, pipeline_id, 2), rerandomize_each_iteration=True
        ).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=ordered)
    ds = ds.batch(
        per_replica_batch,
        drop_remainder=training,
        num_parallel_calls=AUTOTUNE,
        deterministic=ordered,
    )
    ds = ds.map(make_targets, num_parallel_calls=AUTOTUNE, deterministic=ordered)
    if overlay is not None:
        initial_state, step = _overlay_logger(label_overlay)
        ds = ds.scan(initial_state, step)

    def to_tuple(batch):
        if return_ids:
            return batch["image"], batch["targets"], batch["id"]
        return batch["image"], batch["targets"]

    ds = ds.map(to_tuple).prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = ordered
    return ds.with_options(options)
