"""Export a trained classifier as a SavedModel for TensorFlow Serving.

`export_for_serving` writes `<export_dir>/<version>/`, the layout TF Serving
expects under its `--model_base_path`:

    <export_dir>/
      3/
        saved_model.pb
        variables/
        assets.extra/export_metadata.json   (classes, image size, ...)

Two signatures (`SIGNATURES`):

- `serving_default`: input `image_bytes`, a `tf.string` vector of encoded
  JPEG/PNG/GIF/BMP files (any size, colour or grayscale). The bytes are
  turned into model input by `keras_csl.data.preprocessing.preprocess_encoded`,
  the function the training and evaluation pipelines use, so serving cannot
  drift from training.
- `serve_images`: input `images`, float32 `[N, S, S, 3]` RGB in [0, 255]
  (already decoded and resized, e.g. by that same function).

Both return the same outputs (`OUTPUT_KEYS`), `N` rows each:

| key | dtype | shape | meaning |
|---|---|---|---|
| `probabilities` | float32 | `[N, C]` | sigmoid of the logits, one per class |
| `top_k_indices` | int32 | `[N, k]` | class indices, highest probability first |
| `top_k_scores` | float32 | `[N, k]` | their probabilities |
| `top_k_class_ids` | string | `[N, k]` | their class ids (e.g. OpenImages MIDs) |
| `top_k_names` | string | `[N, k]` | their display names (UTF-8) |

with `k = min(top_k, C)`. An empty batch (`N = 0`) gives empty outputs of
those shapes: the model is not called on it, since a convolution on an
empty batch crashes on CPU.

The SavedModel needs nothing but TensorFlow to run: no `keras_csl`, no
custom objects. Loading it back in Python:

```python
serving = tf.saved_model.load("exports/coco/3")
outputs = serving.signatures["serving_default"](
    image_bytes=tf.constant([open("cat.jpg", "rb").read()])
)
```
"""

import json
import logging
import os
import uuid

import keras
import tensorflow as tf

from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.data.preprocessing import RESIZE_MODES
from keras_csl.version import __version__

logger = logging.getLogger(__name__)

BYTES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serve_images"
SIGNATURES = (BYTES_SIGNATURE, IMAGES_SIGNATURE)
# TF Serving's REST API reads {"b64": ...} into any string input; the
# `_bytes` suffix is the convention of Google's prediction services.
BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
OUTPUT_KEYS = (
    "probabilities",
    "top_k_indices",
    "top_k_scores",
    "top_k_class_ids",
    "top_k_names",
)
# `assets.extra/` is the SavedModel folder for files that the graph does
# not use (TF Serving reads its warm-up requests from there); the loaders
# and TF Serving ignore what else it holds.
METADATA_DIR = "assets.extra"
METADATA_FILE = "export_metadata.json"


def export_for_serving(
    model,
    export_dir,
    class_ids,
    display_names=None,
    image_size=None,
    version=None,
    top_k=10,
    resize_mode="squash",
    jpeg_downscale=True,
    from_logits=True,
):
    """Writes `model` as a TF Serving SavedModel in `<export_dir>/<version>/`.

    The model is exported with the weights it holds now. A training run's
    `best.keras` holds the better of its raw and averaged (EMA) weights
    (`best.json` says which); to export the averaged weights of a model in
    memory, call this inside `ema.averaged_weights()`.

    The version folder appears complete or not at all: the SavedModel is
    written into a temporary sibling folder whose name is not a number
    (TF Serving skips those) and then renamed, so a server polling
    `export_dir` never loads a half-written version.

    Example:

    ```python
    import keras_csl.models  # registers the package's layers

    model = keras.saving.load_model("runs/coco/best.keras")
    class_ids, names = keras_csl.data.read_classes_csv("data/coco/classes.csv")
    path = export_for_serving(model, "exports/coco", class_ids, names)
    # path == "exports/coco/1"; the next export goes to "exports/coco/2".
    ```

    Args:
        model: a `keras.Model` from float32 RGB images `[N, S, S, 3]` in
            [0, 255] to `[N, C]` logits (`keras_csl.models.build_model`).
        export_dir: the model base path of TF Serving (created if needed).
        class_ids: `C` class ids (strings), in output order.
        display_names: `C` display names; defaults to `class_ids`.
        image_size: side `S` of the model input; defaults to the model's
            static input shape.
        version: positive int; defaults to one more than the largest
            numeric folder in `export_dir` (1 in an empty one).
        top_k: number of top classes returned per image (clamped to `C`).
        resize_mode: `"squash"`, `"pad"` or `"crop"`: as in training
            (`keras_csl.data.preprocessing`).
        jpeg_downscale: as in training: decode large JPEGs at reduced
            scale first.
        from_logits: whether the model outputs logits (sigmoid applied in
            the signature) or probabilities already.

    Returns:
        The path of the version folder.

    Raises:
        ValueError: on a mismatch between the model and the arguments, or
            an existing version folder.
    """
    num_classes, image_size = _check_model(model, image_size)
    class_ids = _check_strings(class_ids, num_classes, "class_ids")
    display_names = (
        list(class_ids) if display_names is None
        else _check_strings(display_names, num_classes, "display_names")
    )
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(
            "Invalid value for argument `top_k`. Expected an integer >= 1. "
            f"Received: top_k={top_k!r}"
        )
    if resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"Invalid value for argument `resize_mode`. Expected one of "
            f"{RESIZE_MODES}. Received: resize_mode={resize_mode!r}"
        )
    _check_bool("jpeg_downscale", jpeg_downscale)
    _check_bool("from_logits", from_logits)
    export_dir = os.fspath(export_dir)
    tf.io.gfile.makedirs(export_dir)
    if version is None:
        version = next_version(export_dir)
    elif not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(
            "Invalid value for argument `version`. Expected a positive int. "
            f"Received: version={version!r}"
        )
    path = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(path):
        raise ValueError(
            f"Invalid value for argument `version`. The folder {path} already "
            f"exists. Received: version={version} (next free version: "
            f"{next_version(export_dir)})"
        )

    k = min(top_k, num_classes)
    archive = keras.export.ExportArchive()
    # No `archive.track(model)`: the endpoints' variables are saved anyway,
    # and tracking the model too saves every weight twice (Keras 3.15,
    # like `model.export`), doubling the SavedModel. The model holds no
    # lookup table, the one resource that needs tracking.
    outputs_fn = _make_outputs_fn(
        model, num_classes, k, class_ids, display_names, from_logits
    )

    def serve_bytes(image_bytes):
        images = preprocess_encoded(
            image_bytes, image_size, mode=resize_mode, jpeg_downscale=jpeg_downscale
        )
        return outputs_fn(images)

    def serve_images(images):
        return outputs_fn(images)

    archive.add_endpoint(
        BYTES_SIGNATURE,
        serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
    )
    archive.add_endpoint(
        IMAGES_SIGNATURE,
        serve_images,
        input_signature=[
            tf.TensorSpec(
                [None, image_size, image_size, 3], tf.float32, name=IMAGES_INPUT
            )
        ],
    )

    metadata = dict(
        format="keras_csl_serving",
        keras_csl_version=__version__,
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
        model_name=model.name,
        version=version,
        signatures={
            BYTES_SIGNATURE: dict(inputs={BYTES_INPUT: "string [N]"}),
            IMAGES_SIGNATURE: dict(
                inputs={IMAGES_INPUT: f"float32 [N, {image_size}, {image_size}, 3]"}
            ),
        },
        outputs=list(OUTPUT_KEYS),
        image_size=image_size,
        resize_mode=resize_mode,
        jpeg_downscale=jpeg_downscale,
        value_range=[0, 255],
        from_logits=from_logits,
        top_k=k,
        num_classes=num_classes,
        class_ids=list(class_ids),
        display_names=list(display_names),
    )
    staging = os.path.join(export_dir, f"tmp-{version}-{uuid.uuid4().hex[:8]}")
    try:
        archive.write_out(staging, verbose=False)
        extra = os.path.join(staging, METADATA_DIR)
        tf.io.gfile.makedirs(extra)
        with tf.io.gfile.GFile(os.path.join(extra, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=1, ensure_ascii=False)
        tf.io.gfile.rename(staging, path)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
    logger.info(
        "Exported %s (%d classes, %d px, top %d) for TF Serving to %s",
        model.name, num_classes, image_size, k, path,
    )
    return path


def next_version(export_dir):
    """One more than the largest numeric folder in `export_dir` (1 if none)."""
    return max(_versions(export_dir), default=0) + 1


def latest_version_path(export_dir):
    """The path of the highest complete version folder in `export_dir`.

    Accepts a version folder itself (one holding `saved_model.pb`) too. A
    numbered folder without `saved_model.pb` (or `saved_model.pbtxt`), such
    as a copy still in progress, is skipped; a warning names the folders
    skipped.

    Raises:
        ValueError: if there is neither a SavedModel nor a complete version
            folder.
    """
    export_dir = os.fspath(export_dir)
    if _holds_saved_model(export_dir):
        return export_dir
    incomplete = []
    for version in sorted(_versions(export_dir), reverse=True):
        path = os.path.join(export_dir, str(version))
        if _holds_saved_model(path):
            if incomplete:
                logger.warning(
                    "Skipped version folders of %s without saved_model.pb: %s; "
                    "using version %d.", export_dir, incomplete, version,
                )
            return path
        incomplete.append(version)
    if incomplete:
        raise ValueError(
            f"No complete SavedModel in {export_dir}: its version folders "
            f"{sorted(incomplete)} hold no saved_model.pb (still being "
            "written or copied?)."
        )
    raise ValueError(
        f"No SavedModel found in {export_dir}: expected saved_model.pb or "
        "numbered version folders (1/, 2/, ...)."
    )


def _versions(export_dir):
    """The version numbers of the numbered folders in `export_dir`."""
    if not tf.io.gfile.isdir(export_dir):
        return []
    return [
        int(name.rstrip("/"))
        for name in tf.io.gfile.listdir(export_dir)
        if name.rstrip("/").isdigit()
    ]


def _holds_saved_model(path):
    return any(
        tf.io.gfile.exists(os.path.join(path, name))
        for name in ("saved_model.pb", "saved_model.pbtxt")
    )


def load_for_serving(path):
    """Loads an export: `(serving_default, serve_images, metadata)`.

    Only TensorFlow is needed to call the two signatures; this helper also
    reads `assets.extra/export_metadata.json` (an empty dict when absent,
    e.g. for a SavedModel written by other tools).

    Example:

    ```python
    serve_bytes, serve_images, metadata = load_for_serving("exports/coco")
    out = serve_bytes(image_bytes=tf.constant([jpeg_bytes]))
    out["top_k_names"][0]  # the most likely classes of the first image
    ```

    Args:
        path: a version folder, or a model base path (the latest version
            is loaded).

    Returns:
        The two concrete signature functions (keyword argument
        `image_bytes`, resp. `images`; each returns a dict of `OUTPUT_KEYS`)
        and the metadata dict.
    """
    path = latest_version_path(path)
    loaded = tf.saved_model.load(path)
    metadata = {}
    metadata_path = os.path.join(path, METADATA_DIR, METADATA_FILE)
    if tf.io.gfile.exists(metadata_path):
        with tf.io.gfile.GFile(metadata_path, "r") as f:
            metadata = json.load(f)
    signatures = loaded.signatures
    missing = [name for name in SIGNATURES if name not in signatures]
    if missing:
        raise ValueError(
            f"The SavedModel at {path} has no signature {missing}: expected "
            f"{list(SIGNATURES)}. Found: {sorted(signatures)}"
        )
    return signatures[BYTES_SIGNATURE], signatures[IMAGES_SIGNATURE], metadata


def make_probabilities_fn(model, num_classes, from_logits=True):
    """A function from images `[N, S, S, 3]` to float32 probabilities `[N, C]`.

    The probabilities are the sigmoid of the model's outputs, or the
    outputs themselves with `from_logits=False` (a model that ends in a
    sigmoid). An empty batch gives `[0, C]` without calling the model:
    Conv2D crashes on an empty batch on CPU. The export's signatures and
    `keras_csl.export.Predictor` both use it.
    """

    def probabilities(images):
        def predict():
            scores = tf.cast(model(images, training=False), tf.float32)
            return tf.sigmoid(scores) if from_logits else scores

        def empty():
            return tf.zeros([0, num_classes], tf.float32)

        probabilities = tf.cond(tf.shape(images)[0] > 0, predict, empty)
        return tf.ensure_shape(probabilities, [None, num_classes])

    return probabilities


def _make_outputs_fn(model, num_classes, k, class_ids, display_names, from_logits):
    class_ids = tf.constant(class_ids, tf.string)
    display_names = tf.constant(display_names, tf.string)
    probabilities_fn = make_probabilities_fn(model, num_classes, from_logits)

    def outputs_fn(images):
        probabilities = probabilities_fn(images)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {
            "probabilities": probabilities,
            "top_k_indices": indices,
            "top_k_scores": scores,
            "top_k_class_ids": tf.gather(class_ids, indices),
            "top_k_names": tf.gather(display_names, indices),
        }

    return outputs_fn


def _check_model(model, image_size):
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


def _check_strings(values, num_classes, argument):
    values = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    if len(values) != num_classes:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one entry per "
            f"model output ({num_classes}). Received: {len(values)} entries"
        )
    return values


def _check_bool(argument, value):
    if not isinstance(value, bool):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected True or False. "
            f"Received: {argument}={value!r}"
        )
