"""Fast TF-native training augmentation of resized images.

The authors' training transform (`src/helper_functions/get_data.py` of
Alibaba-MIIL/PartialLabelingCSL) is `Resize((S, S))`, `CutoutPIL(0.5)` (a
half-size box of one random colour), then `RandAugment()` of the
`randaugment` PyPI package (1.0.2). That `RandAugment()` draws 2 of 15 ops,
applies each with probability 0.5, at a level drawn uniformly from 1..9 of
9. `augment_image` does the same in TensorFlow, plus an optional horizontal
flip (the authors' transform has none).

Every function takes and returns one float32 RGB image `[H, W, 3]` in
[0, 255] (`keras_csl.data.preprocessing`) and draws its randomness from a
stateless `seed` (an integer tensor of shape `[2]`): equal seeds give equal
outputs. They run per image inside the `tf.data` map that decodes, so each
image pays only for the ops it draws (`tf.switch_case`); on 2 CPU cores this
measured cheaper than batch-vectorized ops, which must compute every op on
every image or partition the batch, and whose broadcasting `tf.where`
(SelectV2) costs about 5x an arithmetic pass (docs/PIPELINE.md). Keras's
`RandAugment` layer ran at 25-48 images/s on 2 cores (PITFALLS.md).

The ops themselves, their strengths and the differences from the package
are in `keras_csl.data.augment_ops`.
"""

import tensorflow as tf

# The ops and their ranges are public here too.
from keras_csl.data.augment_ops import GEOMETRIC_FILL  # noqa: F401
from keras_csl.data.augment_ops import MAX_ENHANCE  # noqa: F401
from keras_csl.data.augment_ops import MAX_POSTERIZE_BITS  # noqa: F401
from keras_csl.data.augment_ops import MAX_ROTATE_DEGREES  # noqa: F401
from keras_csl.data.augment_ops import MAX_SHEAR  # noqa: F401
from keras_csl.data.augment_ops import MAX_SMALL_CUTOUT  # noqa: F401
from keras_csl.data.augment_ops import MAX_TRANSLATE  # noqa: F401
from keras_csl.data.augment_ops import RANDAUGMENT_OPS
from keras_csl.data.augment_ops import SMALL_CUTOUT_FILL  # noqa: F401
from keras_csl.data.augment_ops import OPS
from keras_csl.data.augment_ops import fill_box
from keras_csl.data.augment_ops import image_hw
from keras_csl.data.augment_ops import random_box
from keras_csl.data.augment_ops import uniform


def _check_image(image):
    image = tf.convert_to_tensor(image, tf.float32)
    if image.shape.rank != 3 or image.shape[-1] not in (3, None):
        raise ValueError(
            "Invalid value for argument `image`. Expected one float32 image "
            f"of shape [H, W, 3]. Received: image with shape {image.shape}"
        )
    return image


def apply_op(image, name, strength, seed=(0, 0)):
    """Applies one RandAugment op at a given strength.

    Example:

    >>> image = tf.fill([4, 4, 3], 100.0)
    >>> float(apply_op(image, "brightness", 1.0)[0, 0, 0])  # factor 1.9
    190.0

    Args:
        image: float32 `[H, W, 3]` in [0, 255].
        name: one of `RANDAUGMENT_OPS`.
        strength: float scalar in [-1, 1]; see the module docstring for
            what it means per op.
        seed: stateless seed, shape `[2]` (only `cutout` is random: where).

    Returns:
        float32 `[H, W, 3]` in [0, 255].

    Raises:
        ValueError: for an unknown op name or an image that is not `[H, W, 3]`.
    """
    if name not in OPS:
        raise ValueError(
            f"Invalid value for argument `name`. Expected one of "
            f"{RANDAUGMENT_OPS}. Received: name={name!r}"
        )
    image = _check_image(image)
    strength = tf.convert_to_tensor(strength, tf.float32)
    out = OPS[name](image, strength, uniform([2], seed))
    out.set_shape(image.shape)
    return out


def rand_augment(
    image,
    seed,
    num_ops=2,
    magnitude=10.0,
    *,
    random_magnitude=True,
    probability=0.5,
    ops=RANDAUGMENT_OPS,
):
    """RandAugment: `num_ops` random ops, each applied with `probability`.

    Each round draws one op from `ops` uniformly, applies it with
    `probability`, at a level uniform in `[0, magnitude / 10]` (or exactly
    `magnitude / 10` with `random_magnitude=False`) and a random sign. The
    defaults follow the authors' `randaugment` package: 2 ops, probability
    0.5, level up to the package's strongest.

    Example:

    >>> image = tf.random.uniform([32, 32, 3], 0, 255)
    >>> out = rand_augment(image, seed=[1, 2], magnitude=0.0,
    ...                    ops=("rotate", "brightness"))
    >>> bool(tf.reduce_all(out == image))  # magnitude 0: identity
    True

    Args:
        image: float32 `[H, W, 3]` in [0, 255].
        seed: stateless seed, int tensor of shape `[2]`.
        num_ops: ops per image (the paper's N).
        magnitude: the paper's M on a 0-10 scale; 10 is the package's
            strongest level (e.g. a 30 degree rotation). With 0, every op
            that has a level is the identity.
        random_magnitude: draw each op's level uniformly in
            `[0, magnitude / 10]`, as the package does.
        probability: chance that each drawn op is applied.
        ops: names from `RANDAUGMENT_OPS` to draw from.

    Returns:
        float32 `[H, W, 3]` in [0, 255].

    Raises:
        ValueError: for an unknown op or an argument out of range.
    """
    if not isinstance(num_ops, int) or num_ops < 0:
        raise ValueError(
            "Invalid value for argument `num_ops`. Expected an int >= 0. "
            f"Received: num_ops={num_ops!r}"
        )
    if not 0.0 <= magnitude <= 10.0:
        raise ValueError(
            "Invalid value for argument `magnitude`. Expected a number in "
            f"[0, 10]. Received: magnitude={magnitude!r}"
        )
    if not 0.0 <= probability <= 1.0:
        raise ValueError(
            "Invalid value for argument `probability`. Expected a number in "
            f"[0, 1]. Received: probability={probability!r}"
        )
    ops = tuple(ops)
    if not ops or any(name not in OPS for name in ops):
        raise ValueError(
            f"Invalid value for argument `ops`. Expected a non-empty subset of "
            f"{RANDAUGMENT_OPS}. Received: ops={ops!r}"
        )
    image = _check_image(image)
    static_shape = image.shape
    # Per round: op, applied?, level, sign, and 2 numbers for the op.
    noise = uniform([max(num_ops, 1), 6], seed)
    for round_ in range(num_ops):
        u = noise[round_]
        choice = tf.minimum(tf.cast(u[0] * len(ops), tf.int32), len(ops) - 1)
        level = magnitude / 10.0
        if random_magnitude:
            level *= u[2]
        strength = tf.convert_to_tensor(level, tf.float32) * tf.where(
            u[3] < 0.5, -1.0, 1.0
        )
        op_noise = u[4:6]
        branches = [
            (lambda op=OPS[name], x=image: op(x, strength, op_noise)) for name in ops
        ]
        branches.append(lambda x=image: x)
        image = tf.switch_case(tf.where(u[1] < probability, choice, len(ops)), branches)
        image.set_shape(static_shape)
    return image


def random_cutout(image, seed, size_fraction=0.5):
    """Fills a random box with one random colour (the authors' `CutoutPIL`).

    The box is `round(size_fraction * H) x round(size_fraction * W)` around
    a uniform random centre pixel, clipped at the border (so it is smaller
    when the centre is near a border); its colour is uniform in
    {0, ..., 255} per channel. The authors use `size_fraction=0.5`. Works on
    uint8 or float images with values in [0, 255].

    Example:

    >>> out = random_cutout(tf.zeros([8, 8, 3]), seed=[0, 1])
    >>> int(tf.reduce_sum(tf.cast(tf.reduce_any(out > 0, -1), tf.int32))) <= 16
    True

    Args:
        image: `[H, W, 3]` tensor, values in [0, 255].
        seed: stateless seed, int tensor of shape `[2]`.
        size_fraction: side of the box as a fraction of the image side.

    Returns:
        The image with the box filled, same shape and dtype.

    Raises:
        ValueError: if `size_fraction` is not in [0, 1].
    """
    if not 0.0 <= size_fraction <= 1.0:
        raise ValueError(
            "Invalid value for argument `size_fraction`. Expected a number "
            f"in [0, 1]. Received: size_fraction={size_fraction!r}"
        )
    image = tf.convert_to_tensor(image)
    noise = uniform([5], seed)
    height, width = image_hw(image)
    box_height = tf.cast(
        tf.round(size_fraction * tf.cast(height, tf.float32)), tf.int32
    )
    box_width = tf.cast(tf.round(size_fraction * tf.cast(width, tf.float32)), tf.int32)
    top, left = random_box(image, box_height, box_width, noise[:2])
    colour = tf.cast(tf.floor(noise[2:] * 256.0), image.dtype)
    out = fill_box(image, top, left, box_height, box_width, colour)
    out.set_shape(image.shape)
    return out


def random_flip_left_right(image, seed, probability=0.5):
    """Mirrors the image horizontally with `probability`.

    Example:

    >>> image = tf.reshape(tf.range(6.0), [1, 2, 3])
    >>> random_flip_left_right(image, [0, 0], probability=1.0)[0].numpy()
    array([[3., 4., 5.],
           [0., 1., 2.]], dtype=float32)

    Args:
        image: `[H, W, C]` tensor.
        seed: stateless seed, int tensor of shape `[2]`.
        probability: chance that the image is mirrored.

    Returns:
        The image, mirrored or not, same shape and dtype.
    """
    image = tf.convert_to_tensor(image)
    flip = uniform([], seed) < probability
    return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def augment_image(
    image,
    seed,
    *,
    randaugment_num_ops=2,
    randaugment_magnitude=10.0,
    cutout=True,
    flip=True,
):
    """The training augmentation: cutout, RandAugment, then a flip.

    The order is the authors' (`CutoutPIL` before `RandAugment`, so
    geometric ops move the cutout box too); the flip is ours.

    Example:

    >>> image = tf.random.uniform([64, 64, 3], 0, 255)
    >>> augment_image(image, seed=[3, 4]).shape
    TensorShape([64, 64, 3])

    Args:
        image: float32 `[S, S, 3]` in [0, 255].
        seed: stateless seed, int tensor of shape `[2]`.
        randaugment_num_ops: ops per image; 0 turns RandAugment off.
        randaugment_magnitude: the 0-10 magnitude of `rand_augment`.
        cutout: apply `random_cutout` with half the image size.
        flip: apply `random_flip_left_right`.

    Returns:
        float32 `[S, S, 3]` in [0, 255].
    """
    image = _check_image(image)
    seeds = tf.random.experimental.stateless_split(tf.convert_to_tensor(seed), 3)
    if cutout:
        image = random_cutout(image, seeds[0], size_fraction=0.5)
    if randaugment_num_ops:
        image = rand_augment(
            image, seeds[1], randaugment_num_ops, randaugment_magnitude
        )
    if flip:
        image = random_flip_left_right(image, seeds[2])
    return image
