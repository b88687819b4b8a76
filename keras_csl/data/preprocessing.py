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

Resize methods (`RESIZE_METHODS`), how the resized pixels are computed:

- `"bilinear"` (default): TensorFlow's bilinear resize with half-pixel
  centres, without an antialiasing filter (`antialias=True` doubled the
  cost on 2 CPU cores). With `jpeg_downscale`, large JPEGs are first
  decoded at 1/2, 1/4 or 1/8 scale by libjpeg (DCT-domain scaling: cheaper
  than a full decode, and an area filter): the largest ratio at which the
  shorter side stays at least `3/4 S`. On the 53 COCO photos of
  `../shared/data/coco-sample` at `S = 224` this matched the authors' PIL
  (antialiased) resize far better than a full decode + bilinear resize
  (mean PSNR 35.8 dB against 30.9 dB; requiring the shorter side to stay
  `>= S` gave 34.5 dB), and saved about a tenth of the decoding time.
- `"pillow_bicubic"`: the pixels of Pillow's `Image.open(path).resize((S,
  S))` (its default filter for RGB images, antialiased bicubic), the
  preprocessing of the CSL authors' `infer.py`, as closely as TensorFlow's
  ops allow. Three things make the difference, each measured against
  Pillow on those photos (`benchmarks/resize_fidelity.py`): JPEGs are
  decoded with libjpeg's accurate integer IDCT, as Pillow does
  (TensorFlow's default, the fast IDCT, differs by about one grey level
  on average); the resize is TensorFlow's antialiased bicubic (Keys,
  `a = -0.5`, the kernel widened by the scale when shrinking: Pillow's
  filter), run as two one-axis passes, each rounded to whole grey levels
  and clipped to [0, 255] like Pillow's 8-bit intermediate image; the
  passes go in Pillow's order (width first, except height first when the
  height shrinks by more than twice as many pixels as the width: Pillow
  13; earlier Pillow always went width first, which differs by at most a
  few grey levels on some pixels of such images). Pair it with
  `jpeg_downscale=False`: Pillow decodes at full size. The output holds
  whole numbers in [0, 255], like Pillow's `uint8` image. On those photos
  at 224 px it differs from Pillow's pixels by 0.0002 grey levels on
  average and by at most 2 (in 0.02% of the values), against 2.8 on
  average for `"bilinear"` with `jpeg_downscale`; it takes about twice the
  CPU time per image of that default (side by side on a shared 2-core
  machine), about as much as Pillow itself (`benchmarks/resize_fidelity.py`,
  docs/PIPELINE.md).
"""

import math

import numpy as np
import tensorflow as tf

from keras_csl.models.card import RESIZE_METHODS
from keras_csl.models.card import RESIZE_MODES

_JPEG_RATIOS = (1, 2, 4, 8)
# A JPEG is decoded at 1/r scale while its shorter side stays >= 3/4 S.
_JPEG_MIN_SCALED_SIDE = 0.75
# libjpeg's IDCT per resize method: TensorFlow's default ("", the fast
# integer IDCT), or the accurate integer IDCT that Pillow uses.
_DCT_METHODS = {"bilinear": "", "pillow_bicubic": "INTEGER_ACCURATE"}


def _check_mode(mode):
    if mode not in RESIZE_MODES:
        raise ValueError(
            f"Invalid value for argument `mode`. Expected one of "
            f"{RESIZE_MODES}. Received: mode={mode!r}"
        )


def _check_method(method):
    if method not in RESIZE_METHODS:
        raise ValueError(
            f"Invalid value for argument `method`. Expected one of "
            f"{RESIZE_METHODS}. Received: method={method!r}"
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


def decode_image(encoded, downscale_to=None, dct_method=""):
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
        dct_method: libjpeg's inverse DCT for JPEGs, as in
            `tf.io.decode_jpeg`: `""` (TensorFlow's default, the fast
            integer IDCT) or `"INTEGER_ACCURATE"` (Pillow's).

    Returns:
        uint8 tensor of shape `[H, W, 3]`.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)

    def jpeg():
        if downscale_to is None:
            return tf.io.decode_jpeg(encoded, channels=3, dct_method=dct_method)
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
                (
                    lambda r=r: tf.io.decode_jpeg(
                        encoded, channels=3, ratio=r, dct_method=dct_method
                    )
                )
                for r in _JPEG_RATIOS
            ],
        )

    def other():
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def resize_image(image, image_size, mode="squash", method="bilinear"):
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
        method: `"bilinear"` or `"pillow_bicubic"` (see the module
            docstring): how the image is resized to the size the mode asks
            for.

    Returns:
        float32 tensor `[S, S, C]`.
    """
    _check_mode(mode)
    _check_method(method)
    image_size = check_positive_int("image_size", image_size)
    image = tf.convert_to_tensor(image)
    resize = tf.image.resize if method == "bilinear" else pillow_bicubic_resize
    size = image_size
    if mode == "squash":
        out = resize(image, [size, size])
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
            resized = resize(image, tf.stack([new_h, new_w]))
            out = tf.image.pad_to_bounding_box(
                resized, (size - new_h) // 2, (size - new_w) // 2, size, size
            )
        else:
            new_h = tf.maximum(new_h, size)
            new_w = tf.maximum(new_w, size)
            resized = resize(image, tf.stack([new_h, new_w]))
            out = tf.image.crop_to_bounding_box(
                resized, (new_h - size) // 2, (new_w - size) // 2, size, size
            )
    out = tf.clip_by_value(tf.cast(out, tf.float32), 0.0, 255.0)
    out.set_shape([size, size, image.shape[-1]])
    return out


def pillow_bicubic_resize(image, size):
    """Pillow's default resize (antialiased bicubic) of one image, in TF ops.

    What `PIL.Image.fromarray(image).resize((width, height))` computes for
    a uint8 RGB image: a horizontal and a vertical pass of the bicubic
    filter (Keys, `a = -0.5`) widened by the scale factor when shrinking,
    each pass rounded to whole numbers and clipped to [0, 255] as Pillow's
    8-bit intermediate image is, in Pillow 13's order (the vertical pass
    first when the height shrinks by more than twice as many pixels as the
    width, else the horizontal pass first). TensorFlow computes in float32
    where Pillow uses 22-bit fixed point, so a result that lands on (or a
    hair from) half a grey level can round the other way: one grey level
    here and there (`benchmarks/resize_fidelity.py`).

    Each pass is one `tf.image.resize(..., "bicubic", antialias=True)`
    along the first axis of an image reshaped to `[H, 1, W * C]` (the
    horizontal pass transposes first): resizing one axis of a `[H, W, C]`
    image directly also runs a 5-tap identity filter along the other axis,
    wasted work that the reshape avoids.

    Example:

    >>> image = tf.constant([[[0], [255], [0], [255]]], tf.uint8)  # 1 x 4
    >>> pillow_bicubic_resize(image, [1, 2])[0, :, 0].numpy()  # Pillow: 107, 148
    array([107., 148.], dtype=float32)

    Args:
        image: uint8 or float tensor `[H, W, C]` with values in [0, 255].
        size: `[height, width]` of the output (ints or an int32 tensor).

    Returns:
        float32 tensor `[height, width, C]` of whole numbers in [0, 255].
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    in_height, in_width = shape[0], shape[1]
    height, width = size[0], size[1]

    def vertical(values, new_height):
        rows, columns, channels = tf.unstack(tf.shape(values))
        flat = tf.reshape(values, [rows, 1, columns * channels])
        out = tf.image.resize(
            flat, tf.stack([new_height, 1]), method="bicubic", antialias=True
        )
        out = tf.reshape(out, tf.stack([new_height, columns, channels]))
        return tf.clip_by_value(tf.floor(out + 0.5), 0.0, 255.0)

    def horizontal(values, new_width):
        transposed = tf.transpose(values, [1, 0, 2])
        return tf.transpose(vertical(transposed, new_width), [1, 0, 2])

    def width_first():
        return vertical(horizontal(image, width), height)

    def height_first():
        return horizontal(vertical(image, height), width)

    height_shrinks_more = tf.logical_and(
        height < in_height, in_height - height > 2 * (in_width - width)
    )
    out = tf.cond(height_shrinks_more, height_first, width_first)
    static = [d if isinstance(d, int) else None for d in (height, width)]
    out.set_shape(static + [image.shape[-1]])
    return out


def preprocess_encoded(
    encoded, image_size, mode="squash", jpeg_downscale=True, method="bilinear"
):
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
        method: `"bilinear"` (default) or `"pillow_bicubic"` (Pillow's
            pixels: also decodes JPEGs with Pillow's accurate IDCT; use it
            with `jpeg_downscale=False`). See the module docstring.

    Returns:
        float32 tensor `[S, S, 3]` for a scalar, `[N, S, S, 3]` for a vector.

    Raises:
        ValueError: if `encoded` is neither a scalar nor a vector.
    """
    _check_mode(mode)
    _check_method(method)
    image_size = check_positive_int("image_size", image_size)
    encoded = tf.convert_to_tensor(encoded, tf.string)

    def one(value):
        image = decode_image(
            value, image_size if jpeg_downscale else None, _DCT_METHODS[method]
        )
        return resize_image(image, image_size, mode, method)

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
