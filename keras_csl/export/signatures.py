"""The graph functions behind the serving signatures and the `Predictor`.

TensorFlow only. Three steps, each a function that works eagerly, inside a
`tf.function` and inside a SavedModel:

1. `decode_valid_images`: a batch of encoded files to model input, leaving
   out the files that cannot be decoded instead of failing the batch.
2. `make_probabilities_fn`: model input to probabilities.
3. `make_outputs_fn`: probabilities and validity to the serving outputs
   (`OUTPUT_KEYS`), with neutral top-k rows for invalid images.

Why step 1 is not a plain `tf.map_fn`: a decode op that fails (a truncated
JPEG, random bytes, an empty string) raises, and an error inside a graph
aborts the whole call, so one bad upload would fail every image of the
batch, and under TF Serving's server-side batching the requests of other
clients batched with it. Checking file headers first does not help: a
truncated JPEG has a valid header and fails only while decoding. A
`tf.data` pipeline with `ignore_errors()` is the one in-graph construct that
catches a failing element and goes on: each image is decoded in a dataset
`map` (by `keras_csl.data.preprocessing.preprocess_encoded`, the function of
training, so serving cannot drift from it), the failing ones are dropped,
and the index carried with each image says which ones survived. The dataset
is read with `get_single_element()` (one batch, padded by a sentinel
element so that it is never empty; `Dataset.reduce` also works but was
much slower per call when tried). These are core TensorFlow ops: the
SavedModel runs with `tf.saved_model.load`, with `saved_model_cli run` (the
session loader TF Serving uses) and without keras-csl installed.
"""

import keras
import tensorflow as tf

from keras_csl.data.preprocessing import preprocess_encoded

# Serving outputs of both signatures, in this order.
OUTPUT_KEYS = (
    "probabilities",
    "top_k_indices",
    "top_k_scores",
    "top_k_class_ids",
    "top_k_names",
    "valid",
)
# The top-k row of an invalid image: no class.
INVALID_INDEX = -1
INVALID_STRING = ""


def decode_valid_images(
    encoded, image_size, resize_mode="squash", jpeg_downscale=True,
    resize_method="bilinear",
):
    """Decodes the decodable images of a batch; says which ones they were.

    Example:

    ```python
    jpeg = tf.io.encode_jpeg(tf.zeros([40, 60, 3], tf.uint8))
    images, indices, valid = decode_valid_images(
        tf.stack([jpeg, b"not an image", jpeg]), 32)
    images.shape, indices.numpy(), valid.numpy()
    # (TensorShape([2, 32, 32, 3]), array([0, 2]), array([True, False, True]))
    ```

    Args:
        encoded: `tf.string` vector `[N]` of encoded JPEG/PNG/GIF/BMP files.
        image_size: side `S` of the model input.
        resize_mode: `"squash"`, `"pad"` or `"crop"`, as in training.
        jpeg_downscale: as in training.
        resize_method: `"bilinear"` or `"pillow_bicubic"`, as in training.

    Returns:
        `(images, indices, valid)`: float32 `[M, S, S, 3]` in [0, 255] for
        the `M` images that decoded, their positions in the batch (int32
        `[M]`, increasing), and a bool `[N]` mask, True where an image
        decoded.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    count = tf.shape(encoded, out_type=tf.int64)[0]

    def one(index, value):
        image = preprocess_encoded(
            value, image_size, mode=resize_mode, jpeg_downscale=jpeg_downscale,
            method=resize_method,
        )
        return tf.cast(index, tf.int32), image

    images = (
        tf.data.Dataset.from_tensor_slices((tf.range(count), encoded))
        .map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
    )
    sentinel = tf.data.Dataset.from_tensors(
        (tf.constant(-1, tf.int32), tf.zeros([image_size, image_size, 3]))
    )
    indices, decoded = (
        images.concatenate(sentinel).batch(count + 1).get_single_element()
    )
    indices, decoded = indices[:-1], decoded[:-1]
    valid = tf.scatter_nd(
        indices[:, None], tf.ones_like(indices), tf.cast(count[None], tf.int32)
    ) > 0
    return decoded, indices, valid


def finite_images(images):
    """`(images with non-finite pixels zeroed, valid)` for float images.

    An image with a NaN or infinite pixel is invalid: its row of outputs is
    neutral rather than NaN.
    """
    valid = tf.reduce_all(tf.math.is_finite(images), axis=[1, 2, 3])
    return tf.where(valid[:, None, None, None], images, 0.0), valid


def scatter_rows(values, indices, count):
    """`[count, ...]` with `values[i]` at row `indices[i]`, zeros elsewhere."""
    shape = tf.concat([[count], tf.shape(values)[1:]], axis=0)
    return tf.scatter_nd(indices[:, None], values, shape)


def encoded_probabilities(encoded, card, probabilities_fn):
    """`(probabilities [N, C], valid [N])` of encoded files, as `card` says.

    Decodes with the card's preprocessing (`decode_valid_images`) and runs
    `probabilities_fn` (`make_probabilities_fn`) on the images that
    decoded; the rows of the others are zeros and `valid` is False there.
    """
    images, indices, valid = decode_valid_images(
        encoded, card.image_size, card.resize_mode, card.jpeg_downscale,
        card.resize_method,
    )
    probabilities = scatter_rows(
        probabilities_fn(images), indices, tf.shape(encoded)[0]
    )
    return probabilities, valid


def make_probabilities_fn(model, num_classes, from_logits=True):
    """A function from images `[N, S, S, 3]` to float32 probabilities `[N, C]`.

    The probabilities are the sigmoid of the model's outputs, or the
    outputs themselves with `from_logits=False` (a model that ends in a
    sigmoid). An empty batch gives `[0, C]` without calling the model:
    Conv2D crashes on an empty batch on CPU.
    """

    def probabilities(images):
        def predict():
            scores = tf.cast(model(images, training=False), tf.float32)
            return tf.sigmoid(scores) if from_logits else scores

        def empty():
            return tf.zeros([0, num_classes], tf.float32)

        result = tf.cond(tf.shape(images)[0] > 0, predict, empty)
        return tf.ensure_shape(result, [None, num_classes])

    return probabilities


def make_outputs_fn(class_ids, display_names, top_k):
    """A function `(probabilities [N, C], valid [N])` -> the serving outputs.

    Rows of invalid images get zero probabilities, top-k indices -1, scores
    0 and empty class ids and names.
    """
    class_ids = tf.constant(list(class_ids), tf.string)
    display_names = tf.constant(list(display_names), tf.string)

    def outputs(probabilities, valid):
        probabilities = tf.where(valid[:, None], probabilities, 0.0)
        scores, indices = tf.math.top_k(probabilities, k=top_k)
        row = valid[:, None]
        return {
            "probabilities": probabilities,
            "top_k_indices": tf.where(row, indices, INVALID_INDEX),
            "top_k_scores": tf.where(row, scores, 0.0),
            "top_k_class_ids": tf.where(
                row, tf.gather(class_ids, indices), INVALID_STRING
            ),
            "top_k_names": tf.where(
                row, tf.gather(display_names, indices), INVALID_STRING
            ),
            "valid": valid,
        }

    return outputs


def check_model(model, image_size=None):
    """`(num_classes, image_size)` of an image classifier, checked.

    Args:
        model: a `keras.Model` with one input `[N, S, S, 3]` and one output
            `[N, C]`.
        image_size: `S`; needed only when the input has no static square
            size, else checked against it.

    Raises:
        ValueError: naming what does not fit.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Invalid value for argument `model`. Expected a keras.Model. "
            f"Received: model of type {type(model).__name__}"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected one image input "
            f"and one logits output. Received: {len(model.inputs)} inputs, "
            f"{len(model.outputs)} outputs"
        )
    input_shape = tuple(model.inputs[0].shape)
    output_shape = tuple(model.outputs[0].shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(
            "Invalid value for argument `model`. Expected an input of shape "
            f"(None, S, S, 3). Received: {input_shape}"
        )
    if len(output_shape) != 2 or output_shape[-1] is None:
        raise ValueError(
            "Invalid value for argument `model`. Expected an output of shape "
            f"(None, num_classes). Received: {output_shape}"
        )
    static = input_shape[1] if input_shape[1] == input_shape[2] else None
    if image_size is None:
        image_size = static
        if image_size is None:
            raise ValueError(
                "Invalid value for argument `image_size`. The model input "
                f"{input_shape} has no static square size: pass image_size. "
                "Received: image_size=None"
            )
    if not isinstance(image_size, int) or isinstance(image_size, bool) or (
        image_size < 1
    ):
        raise ValueError(
            "Invalid value for argument `image_size`. Expected a positive "
            f"int. Received: image_size={image_size!r}"
        )
    if input_shape[1] not in (None, image_size) or input_shape[2] not in (
        None, image_size
    ):
        raise ValueError(
            "Invalid value for argument `image_size`. Expected the model's "
            f"input size {input_shape[1:3]}. Received: image_size={image_size}"
        )
    return int(output_shape[-1]), image_size
