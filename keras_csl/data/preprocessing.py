"""Decoding and resizing shared by the input pipeline and the serving export.

Training, evaluation and the exported serving signature all turn encoded
bytes into model input with `preprocess_encoded`, so the three cannot drift.

Value range: images come out as float32 RGB in **[0, 255]** (not
normalised). The model factory puts the backbone's own preprocessing inside
the model (e.g. `keras.applications.resnet.preprocess_input` in a layer, or
`include_preprocessing=True` for EfficientNetV2 and ConvNeXt), so a training
batch and a serving request both feed raw pixels.

Resize modes (`RESIZE_MODES`):

- `"squash"`: resize to `S x S` ignoring the aspect ratio, as the authors do
  (`transforms.Resize((S, S))`).
- `"pad"`: keep the aspect ratio, fit the longer side to `S`, centre the
  image and pad the rest with black (0).
- `"crop"`: keep the aspect ratio, fit the shorter side to `S` and take the
  central `S x S` crop.

Resizing is bilinear with half-pixel centres, without an antialiasing filter
(`antialias=True` doubled the cost on 2 CPU cores). Large JPEGs are first
decoded at 1/2, 1/4 or 1/8 scale by libjpeg (DCT-domain scaling: cheaper
than a full decode, and an area filter): the largest ratio at which the
shorter side stays at least `3/4 S`. On the 53 COCO photos of
`../shared/data/coco-sample` at `S = 224` this matched the authors' PIL
(antialiased) resize far better than a full decode + bilinear resize (mean
PSNR 35.8 dB against 30.9 dB; requiring the shorter side to stay `>= S`
gave 34.5 dB), and saved about a tenth of the decoding time.
"""

import math

import numpy as np
import tensorflow as tf

from keras_csl.models.card import RESIZE_MODES

_JPEG_RATIOS = (1, 2, 4, 8)
# A JPEG is decoded at 1/r scale while its shorter side stays >= 3/4 S.
_JPEG_MIN_SCALED_SIDE = 0.75


def _check_mode(mode):
    if mode not in RESIZE_MODES:
        raise ValueError(
            f"Invalid value for argument `mode`. Expected one of "
            f"{RESIZE_MODES}. Received: mode={mode!r}"
        )


def check_positive_int(name, value, allow_none=False):
    """Validates an integer argument `>= 1`; returns it as a Python `int`.

    The one check of the data package (`make_dataset`, `write_dataset` and
    the functions here): Python and NumPy integers pass, `bool` does not.
    Returning a Python `int` keeps NumPy scalars out of TensorFlow traces
    and of JSON summaries.

    Example:

    >>> check_positive_int("image_size", np.int64(224))
    224

    Raises:
        ValueError: naming the argument and the value received.
    """
    if value is None and allow_none:
        return None
    # bool is an int subclass; numpy.bool_ is not an integer type.
    is_integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_integer or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive "
            f"integer. Received: {name}={value!r}"
        )
    return int(value)


def decode_image(encoded, downscale_to=None):
    """Decodes JPEG, PNG, GIF or BMP bytes to a uint8 RGB image `[H, W, 3]`.

    Grayscale and palette images are expanded to 3 channels, an alpha
    channel is dropped, a GIF gives its first frame.

    Example:

    >>> png = tf.io.encode_png(tf.zeros([4, 6, 1], tf.uint8))
    >>> decode_image(png).shape
    TensorShape([4, 6, 3])

    Args:
        encoded: scalar `tf.string` tensor with the file bytes.
        downscale_to: `None` (decode at full size) or an int `S`: a JPEG is
            then decoded at 1/2, 1/4 or 1/8 scale, the largest ratio at
            which its shorter side stays `>= 3/4 S` (see the module
            docstring). Other formats are always decoded at full size.

    Returns:
        uint8 tensor of shape `[H, W, 3]`.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)

    def jpeg():
        if downscale_to is None:
            return tf.io.decode_jpeg(encoded, channels=3)
        shape = tf.io.extract_jpeg_shape(encoded)
        shorter = tf.minimum(shape[0], shape[1])
        # Number of ratios in (2, 4, 8) that keep the shorter side >= 3/4 S.
        min_side = math.ceil(_JPEG_MIN_SCALED_SIDE * downscale_to)
        branch = tf.reduce_sum(
            tf.cast(shorter >= min_side * tf.constant(_JPEG_RATIOS[1:]), tf.int32)
        )
        return tf.switch_case(
            branch,
            [
                (lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r))
                for r in _JPEG_RATIOS
            ],
        )

    def other():
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def resize_image(image, image_size, mode="squash"):
    """Resizes one image `[H, W, C]` to float32 `[S, S, C]` in [0, 255].

    Example:

    >>> image = tf.fill([100, 200, 3], tf.constant(200, tf.uint8))
    >>> out = resize_image(image, 50, mode="pad")
    >>> out.shape, float(out[0, 0, 0]), float(out[25, 25, 0])
    (TensorShape([50, 50, 3]), 0.0, 200.0)

    Args:
        image: uint8 or float tensor `[H, W, C]` with values in [0, 255].
        image_size: int `S`, the side of the output.
        mode: `"squash"`, `"pad"` or `"crop"` (see the module docstring).
            `"pad"` fits the image inside `S x S` (rows 12 to 37 above) and
            fills the rest with 0; `"crop"` fills `S x S` and cuts the centre.

    Returns:
        float32 tensor `[S, S, C]`.
    """
    _check_mode(mode)
    image_size = check_positive_int("image_size", image_size)
    image = tf.convert_to_tensor(image)
    size = image_size
    if mode == "squash":
        out = tf.image.resize(image, [size, size])
    else:
        shape = tf.shape(image)
        height = tf.cast(shape[0], tf.float32)
        width = tf.cast(shape[1], tf.float32)
        longer = tf.maximum(height, width)
        shorter = tf.minimum(height, width)
        scale = size / (longer if mode == "pad" else shorter)
        new_h = tf.maximum(1, tf.cast(tf.round(height * scale), tf.int32))
        new_w = tf.maximum(1, tf.cast(tf.round(width * scale), tf.int32))
        if mode == "pad":
            new_h = tf.minimum(new_h, size)
            new_w = tf.minimum(new_w, size)
            resized = tf.image.resize(image, tf.stack([new_h, new_w]))
            out = tf.image.pad_to_bounding_box(
                resized, (size - new_h) // 2, (size - new_w) // 2, size, size
            )
        else:
            new_h = tf.maximum(new_h, size)
            new_w = tf.maximum(new_w, size)
            resized = tf.image.resize(image, tf.stack([new_h, new_w]))
            out = tf.image.crop_to_bounding_box(
                resized, (new_h - size) // 2, (new_w - size) // 2, size, size
            )
    out = tf.clip_by_value(tf.cast(out, tf.float32), 0.0, 255.0)
    out.set_shape([size, size, image.shape[-1]])
    return out


def preprocess_encoded(encoded, image_size, mode="squash", jpeg_downscale=True):
    """Encoded image bytes (one or a batch) to float32 model input in [0, 255].

    The one function that training, evaluation and the serving signature
    share. Works eagerly, inside `tf.function`, `tf.data` and a SavedModel;
    a batch is mapped with `tf.map_fn` (images differ in size before
    resizing) and an empty batch gives an empty `[0, S, S, 3]` tensor.

    Example:

    >>> jpeg = tf.io.encode_jpeg(tf.zeros([480, 640, 3], tf.uint8))
    >>> preprocess_encoded(tf.stack([jpeg, jpeg]), 224).shape
    TensorShape([2, 224, 224, 3])

    Args:
        encoded: `tf.string` scalar or vector of JPEG/PNG/GIF/BMP bytes.
        image_size: int `S`.
        mode: `"squash"` (default, as the authors), `"pad"` or `"crop"`.
        jpeg_downscale: decode large JPEGs at a reduced DCT scale first
            (see `decode_image`). Keep the same value for training and
            serving.

    Returns:
        float32 tensor `[S, S, 3]` for a scalar, `[N, S, S, 3]` for a vector.

    Raises:
        ValueError: if `encoded` is neither a scalar nor a vector.
    """
    _check_mode(mode)
    image_size = check_positive_int("image_size", image_size)
    encoded = tf.convert_to_tensor(encoded, tf.string)

    def one(value):
        image = decode_image(value, image_size if jpeg_downscale else None)
        return resize_image(image, image_size, mode)

    if encoded.shape.rank == 0:
        return one(encoded)
    if encoded.shape.rank == 1:
        return tf.map_fn(
            one,
            encoded,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        )
    raise ValueError(
        "Invalid value for argument `encoded`. Expected a scalar or a vector "
        f"of encoded images. Received: encoded with shape {encoded.shape}"
    )
