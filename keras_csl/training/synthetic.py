"""A small learnable multi-label image set, for smoke runs and the CPU demo.

Each class owns one cell of a grid over the image and a colour; an image
shows the coloured square of every class present, on noise. Classes have
different frequencies (from about 5% to 60%), so the class prior matters,
and a partial annotation drops each training label with a probability, as
the paper's RPS simulation does. A small CNN learns it in seconds at 32-64
px. `write_synthetic_dataset` stores it in the TFRecord layout of
`keras_csl.data`, so smoke runs exercise the real reader.
"""

import json
import math
import os

import numpy as np


def synthetic_images(num_examples, num_classes, image_size, seed=0):
    """Images and full labels.

    Example:

    >>> images, labels = synthetic_images(4, 3, 16)
    >>> images.shape, images.dtype, labels.shape
    ((4, 16, 16, 3), dtype('uint8'), (4, 3))

    Returns:
        `(images uint8 [N, S, S, 3], labels float32 [N, C] in {0, 1})`.
    """
    rng = np.random.default_rng([seed, 1])
    frequencies = np.linspace(0.6, 0.05, num_classes)
    labels = (rng.random((num_examples, num_classes)) < frequencies).astype("float32")
    colours = np.random.default_rng([seed, 2]).integers(40, 256, (num_classes, 3))
    grid = math.ceil(math.sqrt(num_classes))
    cell = image_size // grid
    images = rng.integers(0, 60, (num_examples, image_size, image_size, 3))
    for c in range(num_classes):
        top, left = (c // grid) * cell, (c % grid) * cell
        present = labels[:, c] > 0
        images[present, top:top + cell, left:left + cell] = colours[c]
    return images.astype("uint8"), labels


def drop_labels(labels, drop_probability, seed=0):
    """Un-annotates (-1) each label with `drop_probability` (RPS)."""
    rng = np.random.default_rng([seed, 3])
    dropped = rng.random(labels.shape) < drop_probability
    return np.where(dropped, -1.0, labels).astype("float32")


def write_synthetic_dataset(
    output_dir,
    num_train,
    num_val,
    num_classes,
    image_size,
    drop_probability=0.5,
    seed=0,
):
    """Writes `train-` and `val-00000-of-00001.tfrecord` (PNG images).

    Training labels are partial (`drop_labels`), validation labels full.
    Also writes `classes.csv` and `<split>-summary.json` (`{"images": N}`).

    Returns:
        `(train_pattern, val_pattern)` file patterns.
    """
    import tensorflow as tf

    from keras_csl.data import features

    tf.io.gfile.makedirs(output_dir)
    images, labels = synthetic_images(
        num_train + num_val, num_classes, image_size, seed
    )
    splits = {
        "train": (images[:num_train], drop_labels(labels[:num_train],
                                                  drop_probability, seed)),
        "val": (images[num_train:], labels[num_train:]),
    }
    for split, (split_images, split_labels) in splits.items():
        path = os.path.join(output_dir, f"{split}-00000-of-00001.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for index, (image, target) in enumerate(zip(split_images, split_labels)):
                writer.write(features.encode_example(
                    tf.io.encode_png(image).numpy(),
                    f"{split}-{index:06d}",
                    positive=np.flatnonzero(target == 1),
                    negative=np.flatnonzero(target == 0),
                    image_format="png",
                ))
        with tf.io.gfile.GFile(
            os.path.join(output_dir, f"{split}-summary.json"), "w"
        ) as f:
            json.dump({"split": split, "images": len(split_images),
                       "num_classes": num_classes}, f)
    features.write_classes_csv(
        os.path.join(output_dir, features.CLASSES_FILE),
        [f"class_{c}" for c in range(num_classes)],
        [f"Class {c}" for c in range(num_classes)],
    )
    return (
        os.path.join(output_dir, "train-*.tfrecord"),
        os.path.join(output_dir, "val-*.tfrecord"),
    )
