"""Reading, checking and (optionally) re-encoding one image for a shard.

Images are stored as their original bytes (JPEG or PNG, told apart by
their magic bytes; other formats TensorFlow decodes, e.g. BMP or GIF, are
transcoded to RGB PNG). With `resize_short_side=N`, images whose short side
exceeds `N` are resized (bilinear, antialiased) to a short side of exactly
`N` and re-encoded as JPEG; smaller ones keep their bytes. With
`validate_images` every image is decoded once to check it; note that
libjpeg silently recovers from some corrupt JPEG data (e.g. garbage inside
the entropy-coded segment): such images decode, with a warning on stderr,
and are stored as they are.
"""

import collections
import re

import tensorflow as tf

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# `reason` is set when the image cannot be used; `change` is None,
# "resized" or "transcoded"; `size_in` is the size of the file read.
LoadedImage = collections.namedtuple(
    "LoadedImage", "data format reason change size_in"
)


def _tf_message(error):
    message = error.message.splitlines()[0] if error.message else str(error)
    message = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", message)
    return re.sub(r"\s*\[Op:\w+\]$", "", message)


def _rejected(reason):
    return LoadedImage(None, None, reason, None, 0)


def load_image(path, resize_short_side=None, jpeg_quality=90, validate=True):
    """Reads one image for a shard; returns a `LoadedImage`.

    Never raises for a bad image: `reason` ("missing image", "empty image
    file", "unreadable image (...)", "undecodable image (...)") says why it
    cannot be stored.
    """
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except tf.errors.NotFoundError:
        return _rejected("missing image")
    except (tf.errors.OpError, OSError) as error:
        message = _tf_message(error) if isinstance(error, tf.errors.OpError) else error
        return _rejected(f"unreadable image ({message})")
    if not data:
        return _rejected("empty image file")
    if data.startswith(JPEG_MAGIC):
        image_format = "jpeg"
    elif data.startswith(PNG_MAGIC):
        image_format = "png"
    else:
        image_format = None
    if image_format and not validate and not resize_short_side:
        return LoadedImage(data, image_format, None, None, len(data))
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        return _rejected(f"undecodable image ({_tf_message(error)})")
    height, width = int(image.shape[0]), int(image.shape[1])
    if resize_short_side and min(height, width) > resize_short_side:
        scale = resize_short_side / min(height, width)
        size = (
            resize_short_side if height <= width else round(height * scale),
            resize_short_side if width < height else round(width * scale),
        )
        resized = tf.image.resize(image, size, method="bilinear", antialias=True)
        resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
        encoded = tf.io.encode_jpeg(resized, quality=jpeg_quality)
        return LoadedImage(encoded.numpy(), "jpeg", None, "resized", len(data))
    if image_format is None:
        # Lossless (but RGB), so the stored pixels are the original ones.
        encoded = tf.io.encode_png(image)
        return LoadedImage(encoded.numpy(), "png", None, "transcoded", len(data))
    return LoadedImage(data, image_format, None, None, len(data))
