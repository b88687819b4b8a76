"""The 15 RandAugment image ops, in TensorFlow (`keras_csl.data.augment` draws them).

Each op takes one float32 RGB image `[H, W, 3]` in [0, 255], a strength
and a stateless noise vector.

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


def uniform(shape, seed):
    # One draw per call: each random op costs a few microseconds per image.
    return tf.random.stateless_uniform(shape, tf.convert_to_tensor(seed))


def _select(condition, x, y):
    # Same-shape select: tf.where (SelectV2) took ~5x as long on CPU.
    return tf.raw_ops.Select(condition=condition, x=x, y=y)


def _clip(image):
    return tf.clip_by_value(image, 0.0, 255.0)


def _enhance_factor(strength):
    return 1.0 + MAX_ENHANCE * strength


def image_hw(image):
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
    height, width = image_hw(image)
    rows = tf.reshape(image, tf.stack([height, width * 3]))
    rows = rows * tf.tile(scale, [width]) + tf.tile(offset, [width])
    return _clip(tf.reshape(rows, tf.shape(image)))


def _equalize(image, strength, noise):
    """Histogram equalization of each channel, PIL's algorithm."""
    del strength, noise
    height, width = image_hw(image)
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
    height, width = image_hw(image)
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
    height, width = image_hw(image)
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
    height, width = image_hw(image)
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
    height, width = image_hw(image)
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
    height, width = image_hw(image)
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


def fill_box(image, top, left, box_height, box_width, colour):
    """Fills a box with `colour` (`[3]`, the image dtype), cut at the border."""
    height, width = image_hw(image)
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


def random_box(image, box_height, box_width, noise):
    """Top-left corner of a box around a random centre pixel (`noise` [2])."""
    height, width = image_hw(image)
    size = tf.cast(tf.stack([height, width]), tf.float32)
    center = tf.minimum(tf.cast(noise * size, tf.int32), tf.stack([height, width]) - 1)
    return center[0] - box_height // 2, center[1] - box_width // 2


def _small_cutout(image, strength, noise):
    height, width = image_hw(image)
    side = tf.cast(
        tf.round(
            tf.abs(strength)
            * MAX_SMALL_CUTOUT
            * tf.cast(tf.minimum(height, width), tf.float32)
        ),
        tf.int32,
    )
    top, left = random_box(image, side, side, noise)
    return fill_box(image, top, left, side, side, tf.constant(SMALL_CUTOUT_FILL))


OPS = {
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
