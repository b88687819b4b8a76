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

RandAugment ops (`RANDAUGMENT_OPS`) take a `strength` in [-1, 1]: its
absolute value is the level (1 = the package's level 9, the strongest), its
sign the direction of signed ops. Strength 0 is the identity for every op
except `invert`, `auto_contrast` and `equalize`, which have no level.

| op | at strength s | package's max |
|---|---|---|
| shear_x, shear_y | shear `0.3 s` about the centre | 0.3 |
| translate_x, translate_y | move by `round(s * 150/331 * side)` pixels | 150/331 |
| rotate | `30 s` degrees counter-clockwise about the centre | 30 |
| color, contrast, brightness, sharpness | PIL enhance factor `1 + 0.9 s` | 1 +- 0.9 |
| posterize | keep `8 - round(4 abs(s))` bits | 4 bits |
| solarize | invert values `>= 256 (1 - abs(s))` | threshold 0 |
| cutout | box of side `round(abs(s) * 20/224 * side)`, colour (125, 122, 113) | 20 px at 224 |
| invert, auto_contrast, equalize | as PIL's ImageOps | |

Geometric ops sample the nearest pixel (PIL's default for the package's
rotate and translate) and fill uncovered pixels with grey 128, as the
package does. Differences from the package, on purpose: the level is
continuous (uniform in `[0, magnitude / 10]`) rather than one of 9 steps;
rotations go both ways (the package only turns counter-clockwise; with the
flip on, the two are the same distribution); shears are about the centre,
not the top-left corner, so they keep the image centred; shears sample the
nearest pixel instead of bicubic interpolation.
"""

import math

import tensorflow as tf

RANDAUGMENT_OPS = (
    "invert",
    "cutout",
    "sharpness",
    "auto_contrast",
    "posterize",
    "shear_x",
    "translate_x",
    "translate_y",
    "shear_y",
    "rotate",
    "equalize",
    "contrast",
    "color",
    "solarize",
    "brightness",
)

# The `randaugment` package's ranges (its level 9 of 9) and fill colours.
MAX_SHEAR = 0.3
MAX_TRANSLATE = 150.0 / 331.0
MAX_ROTATE_DEGREES = 30.0
MAX_ENHANCE = 0.9
MAX_POSTERIZE_BITS = 4
MAX_SMALL_CUTOUT = 20.0 / 224.0
GEOMETRIC_FILL = 128.0
SMALL_CUTOUT_FILL = (125.0, 122.0, 113.0)
# ITU-R 601-2 luma, as PIL's convert("L").
_LUMA = (0.299, 0.587, 0.114)


def _uniform(shape, seed):
    # One draw per call: each random op costs a few microseconds per image.
    return tf.random.stateless_uniform(shape, tf.convert_to_tensor(seed))


def _select(condition, x, y):
    # Same-shape select: tf.where (SelectV2) took ~5x as long on CPU.
    return tf.raw_ops.Select(condition=condition, x=x, y=y)


def _clip(image):
    return tf.clip_by_value(image, 0.0, 255.0)


def _enhance_factor(strength):
    return 1.0 + MAX_ENHANCE * strength


def _size(image):
    shape = tf.shape(image)
    return shape[0], shape[1]


# --- The RandAugment ops: (image [H, W, 3], strength scalar, noise) ---------
# `noise` is float [2], uniform in [0, 1): the randomness an op may need.


def _invert(image, strength, noise):
    del strength, noise
    return 255.0 - image


def _channel_min_max(image):
    """Per-channel minimum and maximum, `[3]` each."""
    # Reducing [H, W * 3] over rows first measured 2x faster than [H * W, 3].
    width = tf.shape(image)[1]
    rows = tf.reshape(image, tf.stack([-1, width * 3]))
    low = tf.reduce_min(tf.reshape(tf.reduce_min(rows, axis=0), [-1, 3]), axis=0)
    high = tf.reduce_max(tf.reshape(tf.reduce_max(rows, axis=0), [-1, 3]), axis=0)
    return low, high


def _channel_mean(image):
    width = tf.shape(image)[1]
    rows = tf.reshape(image, tf.stack([-1, width * 3]))
    return tf.reduce_mean(tf.reshape(tf.reduce_mean(rows, axis=0), [-1, 3]), axis=0)


def _auto_contrast(image, strength, noise):
    """Stretches each channel to [0, 255], as PIL's autocontrast(cutoff=0)."""
    del strength, noise
    low, high = _channel_min_max(image)
    spread = high - low
    scale = tf.where(spread > 0, 255.0 / tf.maximum(spread, 1e-6), 1.0)
    offset = tf.where(spread > 0, -low * scale, 0.0)
    # Broadcasting a [3] vector over [H, W, 3] was ~3x slower than a
    # [W * 3] vector over the rows of [H, W * 3].
    height, width = _size(image)
    rows = tf.reshape(image, tf.stack([height, width * 3]))
    rows = rows * tf.tile(scale, [width]) + tf.tile(offset, [width])
    return _clip(tf.reshape(rows, tf.shape(image)))


def _equalize(image, strength, noise):
    """Histogram equalization of each channel, PIL's algorithm."""
    del strength, noise
    height, width = _size(image)
    # Channel c's integer values go to bins 256 c .. 256 c + 255; the
    # offsets are added on the [H, W * 3] view (a [3] broadcast is slow).
    rows = tf.reshape(image, tf.stack([height, width * 3]))
    offsets = tf.tile(tf.constant([0.0, 256.0, 512.0]), tf.reshape(width, [1]))
    values = tf.floor(_clip(rows)) + offsets
    histogram = tf.reshape(
        tf.histogram_fixed_width(values, [0.0, 768.0], nbins=768), [3, 256]
    )
    last_bin = 255 - tf.argmax(
        tf.reverse(tf.cast(histogram > 0, tf.int32), axis=[1]),
        axis=1,
        output_type=tf.int32,
    )
    last_count = tf.gather(histogram, last_bin, batch_dims=1)
    step = (tf.reduce_sum(histogram, axis=1) - last_count) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    below = tf.cumsum(histogram, axis=1, exclusive=True)
    lut = tf.minimum((below + safe_step // 2) // safe_step, 255)
    # A channel with a single value (step 0) is left as it is, as PIL does.
    lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None, :])
    lut = tf.cast(tf.reshape(lut, [-1]), tf.float32)
    equalized = tf.gather(lut, tf.cast(values, tf.int32))
    return tf.reshape(equalized, tf.shape(image))


def _posterize(image, strength, noise):
    del noise
    shift = tf.round(tf.abs(strength) * MAX_POSTERIZE_BITS)
    quantum = tf.pow(2.0, shift)
    return tf.cond(
        shift > 0, lambda: tf.floor(image / quantum) * quantum, lambda: image
    )


def _solarize(image, strength, noise):
    del noise
    threshold = 256.0 * (1.0 - tf.abs(strength))
    return _select(image >= threshold, 255.0 - image, image)


def _color(image, strength, noise):
    """Blend with the grayscale image: x M, M = f I + (1 - f) luma^T."""
    del noise
    factor = _enhance_factor(strength)
    luma = tf.constant(_LUMA)[:, None]
    matrix = factor * tf.eye(3) + (1.0 - factor) * tf.tile(luma, [1, 3])
    height, width = _size(image)
    mixed = tf.matmul(tf.reshape(image, [-1, 3]), matrix)
    return _clip(tf.reshape(mixed, [height, width, 3]))


def _contrast(image, strength, noise):
    """Blend with the mean grey level, as PIL's Contrast."""
    del noise
    factor = _enhance_factor(strength)
    mean = tf.reduce_sum(_channel_mean(image) * tf.constant(_LUMA))
    return _clip(image * factor + mean * (1.0 - factor))


def _brightness(image, strength, noise):
    del noise
    return _clip(image * _enhance_factor(strength))


def _sharpness(image, strength, noise):
    """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, / 13).

    Border pixels keep their value, as in PIL.
    """
    del noise
    factor = _enhance_factor(strength)
    height, width = _size(image)
    # On the [H, W * 3] view a one-pixel shift is a 3-column slice.
    rows = tf.reshape(image, tf.stack([height, width * 3]))
    across = rows[:, :-6] + rows[:, 3:-3] + rows[:, 6:]
    box = across[:-2] + across[1:-1] + across[2:]
    center = rows[1:-1, 3:-3]
    smooth = (box + 4.0 * center) / 13.0
    inner = _clip(smooth + factor * (center - smooth))
    rows = rows + tf.pad(inner - center, [[1, 1], [3, 3]])
    return tf.reshape(rows, tf.shape(image))


def _warp(image, source_x, source_y):
    """Nearest-pixel resampling: output (y, x) takes input (source_y, source_x).

    `source_x`, `source_y`: float `[H, W]`; points outside get grey 128.
    """
    height, width = _size(image)
    col = tf.cast(tf.round(source_x), tf.int32)
    row = tf.cast(tf.round(source_y), tf.int32)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    # Row `height` of the padded image is the fill colour.
    row = _select(inside, row, tf.fill(tf.shape(row), height))
    col = _select(inside, col, tf.zeros_like(col))
    padded = tf.pad(image, [[0, 1], [0, 0], [0, 0]], constant_values=GEOMETRIC_FILL)
    return tf.gather_nd(padded, tf.stack([row, col], axis=-1))


def _centered_grid(image):
    """Output pixel coordinates relative to the image centre, `[H, 1]`, `[1, W]`."""
    height, width = _size(image)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    y = tf.range(height)[:, None] - (height - 1.0) / 2.0
    x = tf.range(width)[None, :] - (width - 1.0) / 2.0
    return y, x, (height - 1.0) / 2.0, (width - 1.0) / 2.0


def _affine(image, a, b, c, d):
    """Output point p (relative to the centre) samples input [[a, b], [c, d]] p."""
    y, x, center_y, center_x = _centered_grid(image)
    return _warp(image, a * x + b * y + center_x, c * x + d * y + center_y)


def _shear_x(image, strength, noise):
    """Positive strength moves rows below the centre to the right."""
    del noise
    return _affine(image, 1.0, -MAX_SHEAR * strength, 0.0, 1.0)


def _shear_y(image, strength, noise):
    """Positive strength moves columns right of the centre down."""
    del noise
    return _affine(image, 1.0, 0.0, -MAX_SHEAR * strength, 1.0)


def _rotate(image, strength, noise):
    """Positive strength turns the content counter-clockwise (as displayed)."""
    del noise
    angle = MAX_ROTATE_DEGREES * math.pi / 180.0 * strength
    cos, sin = tf.cos(angle), tf.sin(angle)
    # With y pointing down, the inverse of a counter-clockwise turn by `angle`.
    return _affine(image, cos, -sin, sin, cos)


def _shift(image, offset, axis):
    """Moves the content by an integer `offset` along `axis`, fill 128."""
    height, width = _size(image)
    length = height if axis == 0 else width
    offset = tf.clip_by_value(offset, -length, length)
    # Rows of the [H, W * 3] view: a column shift moves row segments.
    step = 1 if axis == 0 else 3
    rows = tf.reshape(image, tf.stack([height, width * 3]))
    paddings = [[0, 0], [0, 0]]
    paddings[axis] = [tf.maximum(offset, 0) * step, tf.maximum(-offset, 0) * step]
    padded = tf.pad(rows, paddings, constant_values=GEOMETRIC_FILL)
    begin = [0, 0]
    begin[axis] = tf.maximum(-offset, 0) * step
    rows = tf.slice(padded, tf.stack(begin), tf.stack([height, width * 3]))
    return tf.reshape(rows, tf.shape(image))


def _translate_x(image, strength, noise):
    """Positive strength moves the content right."""
    del noise
    width = tf.cast(tf.shape(image)[1], tf.float32)
    return _shift(
        image, tf.cast(tf.round(MAX_TRANSLATE * strength * width), tf.int32), 1
    )


def _translate_y(image, strength, noise):
    """Positive strength moves the content down."""
    del noise
    height = tf.cast(tf.shape(image)[0], tf.float32)
    return _shift(
        image, tf.cast(tf.round(MAX_TRANSLATE * strength * height), tf.int32), 0
    )


def _fill_box(image, top, left, box_height, box_width, colour):
    """Fills a box with `colour` (`[3]`, the image dtype), cut at the border."""
    height, width = _size(image)
    bottom = tf.clip_by_value(top + box_height, 0, height)
    right = tf.clip_by_value(left + box_width, 0, width)
    top = tf.clip_by_value(top, 0, height)
    left = tf.clip_by_value(left, 0, width)
    # On the [H, W * 3] view every copy moves whole row segments; building
    # the box by broadcasting a [3] colour over [h, w, 3] took 5x as long.
    rows = tf.reshape(image, tf.stack([height, width * 3]))
    box_row = tf.reshape(tf.tile(colour, tf.reshape(right - left, [1])), [1, -1])
    box = tf.broadcast_to(box_row, tf.stack([bottom - top, (right - left) * 3]))
    band = rows[top:bottom]
    band = tf.concat([band[:, : left * 3], box, band[:, right * 3 :]], axis=1)
    rows = tf.concat([rows[:top], band, rows[bottom:]], axis=0)
    return tf.reshape(rows, tf.shape(image))


def _random_box(image, box_height, box_width, noise):
    """Top-left corner of a box around a random centre pixel (`noise` [2])."""
    height, width = _size(image)
    size = tf.cast(tf.stack([height, width]), tf.float32)
    center = tf.minimum(tf.cast(noise * size, tf.int32), tf.stack([height, width]) - 1)
    return center[0] - box_height // 2, center[1] - box_width // 2


def _small_cutout(image, strength, noise):
    height, width = _size(image)
    side = tf.cast(
        tf.round(
            tf.abs(strength)
            * MAX_SMALL_CUTOUT
            * tf.cast(tf.minimum(height, width), tf.float32)
        ),
        tf.int32,
    )
    top, left = _random_box(image, side, side, noise)
    return _fill_box(image, top, left, side, side, tf.constant(SMALL_CUTOUT_FILL))


_OPS = {
    "invert": _invert,
    "cutout": _small_cutout,
    "sharpness": _sharpness,
    "auto_contrast": _auto_contrast,
    "posterize": _posterize,
    "shear_x": _shear_x,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
    "shear_y": _shear_y,
    "rotate": _rotate,
    "equalize": _equalize,
    "contrast": _contrast,
    "color": _color,
    "solarize": _solarize,
    "brightness": _brightness,
}


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
    if name not in _OPS:
        raise ValueError(
            f"Invalid value for argument `name`. Expected one of "
            f"{RANDAUGMENT_OPS}. Received: name={name!r}"
        )
    image = _check_image(image)
    strength = tf.convert_to_tensor(strength, tf.float32)
    out = _OPS[name](image, strength, _uniform([2], seed))
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
    if not ops or any(name not in _OPS for name in ops):
        raise ValueError(
            f"Invalid value for argument `ops`. Expected a non-empty subset of "
            f"{RANDAUGMENT_OPS}. Received: ops={ops!r}"
        )
    image = _check_image(image)
    static_shape = image.shape
    # Per round: op, applied?, level, sign, and 2 numbers for the op.
    noise = _uniform([max(num_ops, 1), 6], seed)
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
            (lambda op=_OPS[name], x=image: op(x, strength, op_noise)) for name in ops
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
    noise = _uniform([5], seed)
    height, width = _size(image)
    box_height = tf.cast(
        tf.round(size_fraction * tf.cast(height, tf.float32)), tf.int32
    )
    box_width = tf.cast(tf.round(size_fraction * tf.cast(width, tf.float32)), tf.int32)
    top, left = _random_box(image, box_height, box_width, noise[:2])
    colour = tf.cast(tf.floor(noise[2:] * 256.0), image.dtype)
    out = _fill_box(image, top, left, box_height, box_width, colour)
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
    flip = _uniform([], seed) < probability
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
