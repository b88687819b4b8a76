"""Dataset functions for `keras_csl.training.train` (TensorFlow only).

`train` takes the data as two functions, so that each worker builds its own
input pipeline under any strategy:

- `train_data(input_context, epoch)`: a `tf.data.Dataset` of
  `(images, targets)` batches of
  `input_context.get_per_replica_batch_size(global_batch_size)` rows, with
  at least `steps_per_epoch` batches per replica of this pipeline. Make its
  order depend on `epoch` (and a seed) only: a resumed run then sees the
  same batches as an uninterrupted one.
- `val_data(input_context)`: a finite dataset of `(images, targets)`
  batches of at most that many rows; this pipeline's share of the
  validation set.

Images are float32 `[B, S, S, 3]` RGB in [0, 255]; targets float32
`[B, C]` in {1, 0, -1}.
"""

import json
import logging
import os

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)


def _replicas_per_pipeline(input_context):
    return input_context.num_replicas_in_sync // input_context.num_input_pipelines


def in_memory_train_data(images, targets, global_batch_size, seed=0, shuffle=True):
    """Training batches from arrays, the same global batches under any strategy.

    Each epoch draws a permutation from `(seed, epoch)` and cuts it into
    global batches of `global_batch_size` rows (the remainder is dropped).
    Pipeline `p` of `P` takes the `p`-th slice of every global batch and
    cuts it into per-replica batches, so one process, 2 replicas or 2
    workers all train on exactly the same global batches. The dataset
    repeats (a new permutation each pass).

    Args:
        images: array `[N, S, S, 3]`.
        targets: array `[N, C]`.
        global_batch_size: rows per step over all replicas.
        seed: base seed of the order.
        shuffle: draw a permutation each epoch (else the array order).

    Returns:
        `fn(input_context, epoch) -> tf.data.Dataset`.
    """
    images = np.asarray(images, dtype="float32")
    targets = np.asarray(targets, dtype="float32")
    count = len(images)
    if count < global_batch_size:
        raise ValueError(
            "Invalid value for argument `global_batch_size`. Expected at most "
            f"the number of rows ({count}). Received: "
            f"global_batch_size={global_batch_size}"
        )

    def dataset_fn(input_context, epoch):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        share = per_replica * _replicas_per_pipeline(input_context)
        start = input_context.input_pipeline_id * share
        steps = count // global_batch_size

        def one_pass(pass_index):
            rows = tf.range(count, dtype=tf.int64)
            if shuffle:
                pass_seed = tf.stack(
                    [tf.constant(seed, tf.int64), epoch * 1_000_003 + pass_index]
                )
                rows = tf.random.experimental.stateless_shuffle(rows, pass_seed)
            rows = tf.reshape(rows[: steps * global_batch_size],
                              [steps, global_batch_size])
            rows = tf.reshape(rows[:, start:start + share], [-1])
            return tf.data.Dataset.from_tensor_slices(rows)

        data = tf.data.Dataset.range(1 << 62).flat_map(one_pass)
        data = data.batch(per_replica, drop_remainder=True)
        return data.map(
            lambda index: (tf.gather(images, index), tf.gather(targets, index))
        )

    return dataset_fn


def in_memory_val_data(images, targets, global_batch_size):
    """Validation batches from arrays: pipeline `p` of `P` takes rows `p::P`.

    Returns:
        `fn(input_context) -> tf.data.Dataset` (finite), with the number
        of rows as its `num_examples` attribute.
    """
    images = np.asarray(images, dtype="float32")
    targets = np.asarray(targets, dtype="float32")

    def dataset_fn(input_context):
        per_replica = input_context.get_per_replica_batch_size(global_batch_size)
        data = tf.data.Dataset.from_tensor_slices((images, targets))
        data = data.shard(
            input_context.num_input_pipelines, input_context.input_pipeline_id
        )
        return data.batch(per_replica)

    # Lets the validation choose the exact mAP where its buffers fit.
    dataset_fn.num_examples = len(images)
    return dataset_fn


def tfrecord_data(config, global_batch_size):
    """Dataset functions over the TFRecords of `config` (`keras_csl.data`).

    Training batches are augmented (cutout, RandAugment, optional flip, as
    set in the config), shuffled with the seed `config.seed + epoch`, and
    repeated, so every pipeline has its `steps_per_epoch` batches whatever
    its share of the files. Images are resized with `config.resize_mode`,
    `config.resize_method` and `config.jpeg_downscale` (what the model card
    records). Pass `dataset_options={"deterministic": True}` for a
    bit-reproducible order (slower). Other `dataset_options` go to
    `keras_csl.data.make_dataset` as they are (e.g. `label_overlay`,
    `shuffle_buffer`, `cache`); a `label_overlay` applies to the training
    images only.

    Returns:
        `(train_data, val_data, steps_per_epoch)`; `val_data` is `None`
        without `config.val_files`, and carries the number of validation
        images as `num_examples` when `val-summary.json` gives it.
    """
    from keras_csl.data import make_dataset

    options = dict(config.dataset_options, resize_mode=config.resize_mode,
                   resize_method=config.resize_method,
                   jpeg_downscale=config.jpeg_downscale)
    augment = dict(
        cutout=config.cutout,
        randaugment_num_ops=config.randaugment_num_ops,
        randaugment_magnitude=config.randaugment_magnitude,
        flip=config.flip,
    )

    def train_data(input_context, epoch):
        return make_dataset(
            config.train_files,
            config.num_classes,
            config.image_size,
            global_batch_size,
            True,
            input_context=input_context,
            seed=config.seed + epoch,
            repeat=True,
            **augment,
            **options,
        )

    # A label overlay simulates partial labels of the training set; the
    # validation images keep their own labels.
    val_options = {k: v for k, v in options.items() if k != "label_overlay"}

    def val_data(input_context):
        return make_dataset(
            config.val_files,
            config.num_classes,
            config.image_size,
            global_batch_size,
            False,
            input_context=input_context,
            **val_options,
        )

    val_data.num_examples = None  # Unknown: the validation bounds memory.
    if config.val_files:
        # The split is the files' prefix: `val-*.tfrecord`, `test-*.tfrecord`.
        split = os.path.basename(config.val_files).split("-")[0]
        try:
            val_data.num_examples = count_examples(config.val_files, split)
        except ValueError:
            pass
    examples = config.train_examples
    if examples is None:
        examples = count_examples(config.train_files)
    steps = examples // global_batch_size
    if steps < 1:
        raise ValueError(
            f"Not enough training images for one step: {examples} images, "
            f"global batch {global_batch_size}."
        )
    return train_data, (val_data if config.val_files else None), steps


def count_examples(file_pattern, split="train"):
    """Number of images, from `<split>-summary.json` next to the files."""
    folder = os.path.dirname(file_pattern)
    path = os.path.join(folder, f"{split}-summary.json")
    if not tf.io.gfile.exists(path):
        raise ValueError(
            f"Cannot tell the number of training images: {path} not found. "
            "Set `train_examples` in the config."
        )
    with tf.io.gfile.GFile(path) as f:
        return int(json.load(f)["images"])


def dataset_classes(config):
    """Class ids and names from the `classes.csv` next to the training files.

    Returns:
        `(class_ids, display_names, path)`; without a classes file, the
        class indices as strings for both and `path=None` (logged).

    Raises:
        ValueError: if the file lists another number of classes than
            `config.num_classes`.
    """
    from keras_csl.data import features

    path = os.path.join(os.path.dirname(config.train_files), features.CLASSES_FILE)
    if not config.train_files or not tf.io.gfile.exists(path):
        logger.warning(
            "%s not found: classes are named by their index.", path
        )
        ids = [str(i) for i in range(config.num_classes)]
        return ids, list(ids), None
    class_ids, names = features.read_classes_csv(path)
    if len(class_ids) != config.num_classes:
        raise ValueError(
            f"Invalid value for config field `num_classes`. {path} lists "
            f"{len(class_ids)} classes. Received: num_classes={config.num_classes}"
        )
    return class_ids, names, path
