"""Export a trained classifier as a SavedModel for TensorFlow Serving.

`export_for_serving` writes `<export_dir>/<version>/`, the layout TF Serving
expects under its `--model_base_path`:

    <export_dir>/
      3/
        saved_model.pb
        variables/
        assets.extra/model_card.json        (the model card: classes, ...)
        assets.extra/export_metadata.json   (versions, signatures, top_k)

Everything the export needs comes from the model's card
(`keras_csl.models.ModelCard`): image size, resize mode and method, JPEG
downscale, from-logits, class ids and display names; arguments override it.

Two signatures (`SIGNATURES`):

- `serving_default`: input `image_bytes`, a `tf.string` vector of encoded
  JPEG/PNG/GIF/BMP files (any size, colour or grayscale). The bytes are
  turned into model input by `keras_csl.data.preprocessing.preprocess_encoded`,
  the function the training and evaluation pipelines use, so serving cannot
  drift from training. A file that cannot be decoded does not fail the
  batch: its row says `valid = False` (`keras_csl.export.signatures`).
- `serve_images`: input `images`, float32 `[N, S, S, 3]` RGB in [0, 255]
  (already decoded and resized, e.g. by that same function); an image with
  a non-finite pixel is invalid.

Both return the same outputs (`OUTPUT_KEYS`), `N` rows each:

| key | dtype | shape | meaning |
|---|---|---|---|
| `probabilities` | float32 | `[N, C]` | sigmoid of the logits; zeros for an invalid image |
| `top_k_indices` | int32 | `[N, k]` | class indices, highest probability first; -1 for an invalid image |
| `top_k_scores` | float32 | `[N, k]` | their probabilities; 0 for an invalid image |
| `top_k_class_ids` | string | `[N, k]` | their class ids (e.g. OpenImages MIDs); "" for an invalid image |
| `top_k_names` | string | `[N, k]` | their display names (UTF-8); "" for an invalid image |
| `valid` | bool | `[N]` | False where an image could not be decoded (or had non-finite pixels) |

with `k = min(top_k, C)`. An empty batch (`N = 0`) gives empty outputs of
those shapes: the model is not called on it, since a convolution on an
empty batch crashes on CPU.

The SavedModel needs nothing but TensorFlow to run: no `keras_csl`, no
custom objects. Loading it back in Python:

```python
serving = tf.saved_model.load("exports/coco/3")
outputs = serving.signatures["serving_default"](
    image_bytes=tf.constant([open("photo.jpg", "rb").read()])
)
```
"""

import json
import logging
import os
import uuid

import keras
import tensorflow as tf

from keras_csl.export import cards
from keras_csl.export import signatures
from keras_csl.export.signatures import OUTPUT_KEYS
from keras_csl.export.versions import latest_version_path
from keras_csl.export.versions import next_version
from keras_csl.models.card import ModelCard
from keras_csl.version import __version__

logger = logging.getLogger(__name__)

BYTES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serve_images"
SIGNATURES = (BYTES_SIGNATURE, IMAGES_SIGNATURE)
# TF Serving's REST API reads {"b64": ...} into any string input; the
# `_bytes` suffix is the convention of Google's prediction services.
BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
# `assets.extra/` is the SavedModel folder for files that the graph does
# not use (TF Serving reads its warm-up requests from there); the loaders
# and TF Serving ignore what else it holds.
METADATA_DIR = "assets.extra"
METADATA_FILE = "export_metadata.json"
CARD_FILE = "model_card.json"
# The fields of the card that exports made before model cards kept in
# export_metadata.json.
_LEGACY_CARD_FIELDS = (
    "image_size", "class_ids", "display_names", "resize_mode",
    "jpeg_downscale", "from_logits",
)


def export_for_serving(
    model,
    export_dir,
    class_ids=None,
    display_names=None,
    image_size=None,
    version=None,
    top_k=10,
    resize_mode=None,
    jpeg_downscale=None,
    from_logits=None,
    card=None,
    resize_method=None,
):
    """Writes `model` as a TF Serving SavedModel in `<export_dir>/<version>/`.

    The classes and the preprocessing come from the model's card
    (`keras_csl.models.get_model_card`, or `card`); an argument that is
    given overrides the card's field (logged). A model without a card gets
    the documented defaults (classes named by index, `"squash"`,
    `"bilinear"`, True, True) with a warning. The card used is written to
    `assets.extra/model_card.json`, so a serving client can read it.

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
    model = keras_csl.models.load_model("coco.keras")  # holds its card
    path = export_for_serving(model, "exports/coco")
    # path == "exports/coco/1"; the next export goes to "exports/coco/2".
    ```

    Args:
        model: a `keras.Model` from float32 RGB images `[N, S, S, 3]` in
            [0, 255] to `[N, C]` logits (`keras_csl.models.build_model`).
        export_dir: the model base path of TF Serving (created if needed).
        class_ids: `C` class ids (strings), in output order; default: the
            card's.
        display_names: `C` display names; default: the card's (or the
            class ids given).
        image_size: side `S` of the model input; default: the model's
            static input shape (checked against the card).
        version: positive int; defaults to one more than the largest
            numeric folder in `export_dir` (1 in an empty one).
        top_k: number of top classes returned per image (clamped to `C`).
        resize_mode: `"squash"`, `"pad"` or `"crop"`; default: the card's.
        jpeg_downscale: default: the card's.
        from_logits: whether the model outputs logits (sigmoid applied in
            the signature) or probabilities already; default: the card's.
        card: a `ModelCard` to use instead of the model's own.
        resize_method: `"bilinear"` or `"pillow_bicubic"`; default: the
            card's.

    Returns:
        The path of the version folder.

    Raises:
        ValueError: on a mismatch between the model, the card and the
            arguments, or an existing version folder.
    """
    num_classes, image_size = signatures.check_model(model, image_size)
    source = f"model {model.name!r}"
    if card is None:
        card = cards.card_of_model(
            model, image_size, source, classes_given=class_ids is not None
        )
    elif not isinstance(card, ModelCard):
        raise ValueError(
            "Invalid value for argument `card`. Expected a ModelCard. "
            f"Received: card of type {type(card).__name__}"
        )
    card = cards.override_card(
        card, source, class_ids=class_ids, display_names=display_names,
        resize_mode=resize_mode, resize_method=resize_method,
        jpeg_downscale=jpeg_downscale, from_logits=from_logits,
    )
    card.check_model(model)
    if card.image_size != image_size:
        raise ValueError(
            "Invalid value for argument `image_size`. Expected the card's "
            f"image_size {card.image_size}. Received: image_size={image_size}"
        )
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(
            "Invalid value for argument `top_k`. Expected an integer >= 1. "
            f"Received: top_k={top_k!r}"
        )
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
    archive = _make_archive(model, card, k)
    metadata = dict(
        format="keras_csl_serving",
        keras_csl_version=__version__,
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
        model_name=model.name,
        version=version,
        model_card=CARD_FILE,
        signatures={
            BYTES_SIGNATURE: dict(inputs={BYTES_INPUT: "string [N]"}),
            IMAGES_SIGNATURE: dict(
                inputs={IMAGES_INPUT: f"float32 [N, {image_size}, {image_size}, 3]"}
            ),
        },
        outputs=list(OUTPUT_KEYS),
        top_k=k,
    )
    staging = os.path.join(export_dir, f"tmp-{version}-{uuid.uuid4().hex[:8]}")
    try:
        archive.write_out(staging, verbose=False)
        extra = os.path.join(staging, METADATA_DIR)
        tf.io.gfile.makedirs(extra)
        with tf.io.gfile.GFile(os.path.join(extra, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=1, ensure_ascii=False)
        with tf.io.gfile.GFile(os.path.join(extra, CARD_FILE), "w") as f:
            f.write(card.to_json())
        tf.io.gfile.rename(staging, path)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
    logger.info(
        "Exported %s (%d classes, %d px, %s, %s, top %d) for TF Serving to %s",
        model.name, num_classes, image_size, card.resize_mode,
        card.resize_method, k, path,
    )
    return path


def _make_archive(model, card, k):
    """The `ExportArchive` with the two signatures of `card`'s settings."""
    archive = keras.export.ExportArchive()
    # No `archive.track(model)`: the endpoints' variables are saved anyway,
    # and tracking the model too saves every weight twice (Keras 3.15,
    # like `model.export`), doubling the SavedModel. The model holds no
    # lookup table, the one resource that needs tracking.
    probabilities_fn = signatures.make_probabilities_fn(
        model, card.num_classes, card.from_logits
    )
    outputs_fn = signatures.make_outputs_fn(card.class_ids, card.display_names, k)

    def serve_bytes(image_bytes):
        return outputs_fn(
            *signatures.encoded_probabilities(image_bytes, card, probabilities_fn)
        )

    def serve_images(images):
        images, valid = signatures.finite_images(images)
        return outputs_fn(probabilities_fn(images), valid)

    size = card.image_size
    archive.add_endpoint(
        BYTES_SIGNATURE,
        serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
    )
    archive.add_endpoint(
        IMAGES_SIGNATURE,
        serve_images,
        input_signature=[
            tf.TensorSpec([None, size, size, 3], tf.float32, name=IMAGES_INPUT)
        ],
    )
    return archive


def load_for_serving(path):
    """Loads an export: `(serving_default, serve_images, metadata)`.

    Only TensorFlow is needed to call the two signatures; this helper also
    reads `assets.extra/export_metadata.json` (an empty dict when absent,
    e.g. for a SavedModel written by other tools). The model card is read
    by `read_export_card`.

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
    metadata = _read_json(os.path.join(path, METADATA_DIR, METADATA_FILE)) or {}
    found = loaded.signatures
    missing = [name for name in SIGNATURES if name not in found]
    if missing:
        raise ValueError(
            f"The SavedModel at {path} has no signature {missing}: expected "
            f"{list(SIGNATURES)}. Found: {sorted(found)}"
        )
    return found[BYTES_SIGNATURE], found[IMAGES_SIGNATURE], metadata


def read_export_card(path):
    """The `ModelCard` of an export, or None if it has none.

    Reads `assets.extra/model_card.json`; for an export made before model
    cards, the same fields of `assets.extra/export_metadata.json`.

    Example:

    ```python
    read_export_card("exports/coco").display_names[:2]  # ('person', 'bicycle')
    ```

    Args:
        path: a version folder, or a model base path (its latest version).

    Raises:
        ValueError: if there is no SavedModel at `path`, or its card is
            invalid.
    """
    path = latest_version_path(path)
    card = _read_json(os.path.join(path, METADATA_DIR, CARD_FILE))
    if card is not None:
        return ModelCard.from_dict(card)
    metadata = _read_json(os.path.join(path, METADATA_DIR, METADATA_FILE)) or {}
    if not all(metadata.get(k) is not None for k in ("image_size", "class_ids")):
        return None
    return ModelCard(**{
        k: metadata[k] for k in _LEGACY_CARD_FIELDS if metadata.get(k) is not None
    })


def _read_json(path):
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)
