"""The tf.data readers: sharded TFRecords to `(images, targets)` batches.

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

`read_labels` reads the labels alone (no image), for the prior estimation
and the partial-label simulation. Both readers first check the files
against the shard set the converter wrote (`keras_csl.data.shards`) and
parse labels with the same `features.decode_example` and
`features.parse_labels`.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from keras_csl.data import augment as augment_lib
from keras_csl.data import features
from keras_csl.data import preprocessing
from keras_csl.data import shards
from keras_csl.data.features import targets_from_lists  # noqa: F401 (public here)
from keras_csl.data.overlay import LabelOverlay
from keras_csl.data.overlay import overlay_logger

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
# Files read at once by `interleave`.
MAX_CYCLE_LENGTH = 16
# The features the reader needs; the class lists stay sparse until batched.
_READ_KEYS = (features.IMAGE_KEY,) + features.LABEL_KEYS


def list_files(file_pattern):
    """Sorted, de-duplicated files matching a glob pattern or a list of them.

    Raises:
        ValueError: if nothing matches.
    """
    if isinstance(file_pattern, (str, os.PathLike)):
        patterns = [file_pattern]
    else:
        patterns = list(file_pattern)
    files = sorted(
        {f for pattern in patterns for f in tf.io.gfile.glob(os.fspath(pattern))}
    )
    if not files:
        raise ValueError(
            "Invalid value for argument `file_pattern`. Expected a glob "
            f"pattern (or a list) matching TFRecord files. Received: "
            f"file_pattern={file_pattern!r}, which matches no file"
        )
    return files


def _derive_seed(seed, pipeline_id, purpose):
    """An independent int seed per (base seed, input pipeline, purpose)."""
    if seed is None:
        return None
    state = np.random.SeedSequence([seed, pipeline_id, purpose]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


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
    resize_method="bilinear",
    deterministic=False,
    seed=None,
    label_overlay=None,
    repeat=False,
    cache=False,
    return_ids=False,
    check_shards=True,
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
        resize_method: `"bilinear"` (default, fast) or `"pillow_bicubic"`
            (the pixels of Pillow's default resize, as the CSL authors'
            `infer.py`; pair it with `jpeg_downscale=False`); see
            `keras_csl.data.preprocessing`. Keep the value the serving
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
        check_shards: check the files against what the converter wrote
            before reading (`keras_csl.data.shards.check_shard_set`): names
            `<split>-NNNNN-of-MMMMM.tfrecord`, all `MMMMM` shards of one
            set and nothing else, no unfinished conversion, and
            `num_classes` equal to the `classes.csv` (and
            `<split>-summary.json`) beside them. `False` reads the files as
            given, for hand-made shards or a part of a set on purpose.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        ValueError: for invalid arguments, when no file matches, or (with
            `check_shards`) for an incomplete or mixed shard set, an
            unfinished conversion or a class count that disagrees with the
            dataset's; the message names the files and values.
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
    if resize_method not in preprocessing.RESIZE_METHODS:
        raise ValueError(
            f"Invalid value for argument `resize_method`. Expected one of "
            f"{preprocessing.RESIZE_METHODS}. Received: "
            f"resize_method={resize_method!r}"
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
    if check_shards:
        shards.check_shard_set(files, num_classes)

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

    def load(serialized, augment_seed=None):
        decoded = features.decode_example(serialized, _READ_KEYS)
        image = preprocessing.preprocess_encoded(
            decoded.pop(features.IMAGE_KEY), image_size, resize_mode, jpeg_downscale,
            resize_method,
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
        return dict(decoded, image=image)

    def make_targets(batch):
        labels = features.parse_labels(batch, num_classes)
        targets = labels["targets"]
        batch = {"image": batch["image"], "id": labels["id"]}
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
        initial_state, step = overlay_logger(label_overlay)
        ds = ds.scan(initial_state, step)

    def to_tuple(batch):
        if return_ids:
            return batch["image"], batch["targets"], batch["id"]
        return batch["image"], batch["targets"]

    ds = ds.map(to_tuple).prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = ordered
    return ds.with_options(options)


def read_labels(
    file_pattern, num_classes, *, batch_size=1024, with_targets=True, check_shards=True
):
    """The TFRecord label reader: batches of image ids and labels, no images.

    Reads only the ids and class lists of the examples (the image bytes are
    skipped by the parser), in file order (files sorted by name), with the
    same decoder and label rule as `make_dataset`. The prior estimation
    (`keras_csl.training`, "true" frequencies from complete labels) and
    `simulate_partial_labels` read labels through it.

    Example:

    ```python
    for batch in read_labels("data/coco/train-*.tfrecord", 80):
        batch["id"].shape, batch["targets"].shape  # (1024,), (1024, 80)
    ```

    Args:
        file_pattern: glob pattern, or a list of them, of the TFRecords.
        num_classes: number of classes (rows of `classes.csv`).
        batch_size: examples per batch (the last one may be smaller).
        with_targets: also yield the dense float32 targets in {1, 0, -1}.
        check_shards: check the files first, as `make_dataset` does.

    Returns:
        A `tf.data.Dataset` of dicts: `"id"` (string `[B]`), `"positive"`
        and `"negative"` (int64 `tf.RaggedTensor` `[B, None]` of class
        indices) and, `with_targets`, `"targets"` (float32
        `[B, num_classes]`).

    Raises:
        ValueError: as `make_dataset`, for no matching file or (with
            `check_shards`) a shard set or class count that disagrees with
            what the converter wrote.
        tf.errors.InvalidArgumentError: (when iterating) for a class index
            outside `[0, num_classes)`, naming the images.
    """
    num_classes = preprocessing.check_positive_int("num_classes", num_classes)
    batch_size = preprocessing.check_positive_int("batch_size", batch_size)
    files = list_files(file_pattern)
    if check_shards:
        shards.check_shard_set(files, num_classes)

    def parse(serialized):
        decoded = features.decode_example(serialized, features.LABEL_KEYS)
        return features.parse_labels(decoded, num_classes, with_targets)

    dataset = tf.data.TFRecordDataset(files, buffer_size=1 << 20).batch(batch_size)
    return dataset.map(parse).prefetch(AUTOTUNE)
