"""A `.keras` model file with its card: load it, or export it for serving.

A keras-csl model file describes itself: its `ModelCard` (inside the
`.keras` file) gives the image size, resize mode and method, JPEG
downscale, from-logits, class ids and names, so a file copied alone anywhere loads
with the settings of its training. Arguments override the card (logged).
A file without a real card (saved before keras-csl wrote cards) is read
through `keras_csl.inference.legacy`, with a warning.
"""

import logging
import os

import tensorflow as tf

from keras_csl.export import cards
from keras_csl.export import signatures
from keras_csl.inference import legacy
from keras_csl.models.card import get_model_card
from keras_csl.models.card import read_model_card

logger = logging.getLogger(__name__)


def resolve_model_path(path):
    """The `.keras` file of `path`: itself, or a run folder's `best.keras`.

    Raises:
        ValueError: if there is no such file.
    """
    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        candidate = os.path.join(path, legacy.RUN_MODEL_FILE)
        if not tf.io.gfile.exists(candidate):
            raise ValueError(
                f"Invalid value for argument `model`. Expected a .keras file "
                f"or a training run folder holding {legacy.RUN_MODEL_FILE}. "
                f"Received: {path!r}, a folder without {legacy.RUN_MODEL_FILE} "
                "(has the run finished an epoch?)"
            )
        return candidate
    if not tf.io.gfile.exists(path):
        raise ValueError(
            "Invalid value for argument `model`. Expected a .keras file or a "
            f"training run folder. Received: {path!r}, which does not exist"
        )
    return path


def load_model_with_card(
    path, classes_csv=None, resize_mode=None, jpeg_downscale=None, from_logits=None,
    resize_method=None,
):
    """Loads a `.keras` file (or a run folder's `best.keras`) and its card.

    Example:

    ```python
    model, card, model_path = load_model_with_card("somewhere/coco.keras")
    card.display_names[:2], card.resize_mode  # (('person', 'bicycle'), 'squash')
    ```

    Args:
        path: a `.keras` file, or a training run folder (its `best.keras`).
        classes_csv: a `classes.csv` whose classes override the card's.
        resize_mode: overrides the card's resize mode.
        jpeg_downscale: overrides the card's JPEG downscale.
        from_logits: overrides the card's from-logits.
        resize_method: overrides the card's resize method.

    Returns:
        `(model, card, model_path)`: the uncompiled `keras.Model`, the
        `ModelCard` to use with it, and the file loaded.

    Raises:
        ValueError: if there is no readable `.keras` file at `path`, the
            model is not an image classifier, or an override does not fit
            the model (e.g. a `classes.csv` with another number of classes).
    """
    # Registers the package's layers (e.g. CaffePreprocessing) and loss.
    import keras_csl.losses  # noqa: F401
    from keras_csl.models import load_model

    model_path = resolve_model_path(path)
    read_model_card(model_path)  # a clear error for a file that is no .keras
    model = load_model(model_path, compile=False)  # imports keras-hub if needed
    num_classes, image_size = signatures.check_model(model)
    card = get_model_card(model)
    if card is None or cards.is_default_card(card):
        card = legacy.card_from_training_run(
            model_path, card, num_classes, image_size,
            classes_given=bool(classes_csv),
        )
    card = cards.override_card(
        card, model_path, classes_csv=classes_csv, resize_mode=resize_mode,
        resize_method=resize_method, jpeg_downscale=jpeg_downscale,
        from_logits=from_logits,
    )
    card.check_model(model)
    return model, card, model_path


def export_model(
    model,
    export_dir,
    classes_csv=None,
    version=None,
    top_k=10,
    resize_mode=None,
    jpeg_downscale=None,
    from_logits=None,
    resize_method=None,
):
    """Exports a `.keras` file (or a run's `best.keras`) for TF Serving.

    What `recipes/export.py` does: `load_model_with_card`, then
    `keras_csl.export.export_for_serving` with that card, which the export
    keeps in `assets.extra/model_card.json`.

    Example:

    ```python
    export_model("somewhere/coco.keras", "exports/coco")  # "exports/coco/1"
    ```

    Args:
        model: a `.keras` file or a training run folder.
        export_dir: TF Serving's model base path.
        classes_csv: overrides the card's classes.
        version: the version number (default: the next free one).
        top_k: top classes returned per image.
        resize_mode: overrides the card's resize mode.
        jpeg_downscale: overrides the card's JPEG downscale.
        from_logits: overrides the card's from-logits.
        resize_method: overrides the card's resize method.

    Returns:
        The version folder written.
    """
    from keras_csl.export import export_for_serving

    keras_model, card, _ = load_model_with_card(
        model, classes_csv=classes_csv, resize_mode=resize_mode,
        jpeg_downscale=jpeg_downscale, from_logits=from_logits,
        resize_method=resize_method,
    )
    return export_for_serving(
        keras_model, export_dir, version=version, top_k=top_k, card=card
    )
