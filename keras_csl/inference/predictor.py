"""One interface for predictions from an export or from a Keras model.

`load_predictor` opens a serving export (`keras_csl.export`), a bare
SavedModel version folder, a `.keras` file or a training run folder, and
returns a `Predictor` that turns encoded image files or decoded images
into probabilities with the model card's preprocessing: the export's own
(baked into its graph), or the `.keras` file's (read by
`keras_csl.inference.load_model_with_card`). Tagging and evaluation use it,
so they work the same on a `.keras` file and on the SavedModel that TF
Serving loads.

Undecodable files: `Predictor.predict_encoded` decodes each file on its
own (`keras_csl.export.signatures.decode_valid_images`), so one bad file
never fails the others. By default it raises `InvalidImageError`, which
names the bad positions; with `return_valid=True` it returns the
probabilities (zeros for the bad files) and a validity mask instead.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from keras_csl.data.preprocessing import check_positive_int
from keras_csl.export import cards
from keras_csl.export import signatures
from keras_csl.export.serving import load_for_serving
from keras_csl.export.serving import read_export_card
from keras_csl.export.versions import holds_saved_model
from keras_csl.export.versions import latest_version_path
from keras_csl.inference import legacy
from keras_csl.models.card import ModelCard

logger = logging.getLogger(__name__)


class InvalidImageError(ValueError):
    """Some encoded images could not be decoded; `indices` says which.

    Attributes:
        indices: positions (in the input) of the undecodable images.
    """

    def __init__(self, indices, count):
        self.indices = [int(i) for i in indices]
        shown = self.indices[:20]
        more = f" and {len(self.indices) - 20} more" if len(self.indices) > 20 else ""
        super().__init__(
            "Invalid value for argument `encoded`. Expected encoded JPEG, "
            f"PNG, GIF or BMP images. Received: {len(self.indices)} of {count} "
            f"that cannot be decoded, at indices {shown}{more}. Pass "
            "return_valid=True to get the probabilities of the others and a "
            "validity mask."
        )


class Predictor:
    """Class probabilities for images, with the model card they need.

    Build it with `load_predictor` (or `Predictor.from_keras_model`).

    Example:

    ```python
    predictor = load_predictor("somewhere/coco.keras")
    probabilities = predictor.predict_encoded([open("photo.jpg", "rb").read()])
    probabilities.shape  # (1, 80)
    ```

    Attributes:
        card: the `ModelCard` used (classes and preprocessing).
        class_ids: list of `C` class ids.
        display_names: list of `C` display names.
        image_size: side `S` of the model input.
        resize_mode: how encoded images are resized (`RESIZE_MODES`).
        resize_method: how the resized pixels are computed
            (`RESIZE_METHODS`).
        jpeg_downscale: whether large JPEGs are decoded at reduced scale.
        from_logits: whether the model outputs logits (the predictor
            applies the sigmoid) or probabilities.
        source: what was loaded (a path or the model name).
    """

    def __init__(self, images_fn, bytes_fn, card, source):
        """Wraps `images_fn` (images -> probabilities) and `bytes_fn`.

        `bytes_fn` maps a `tf.string` vector to `(probabilities, valid)`.
        """
        if not isinstance(card, ModelCard):
            raise ValueError(
                "Invalid value for argument `card`. Expected a ModelCard. "
                f"Received: card of type {type(card).__name__}"
            )
        self._images_fn = images_fn
        self._bytes_fn = bytes_fn
        self.card = card
        self.source = source

    class_ids = property(lambda self: list(self.card.class_ids))
    display_names = property(lambda self: list(self.card.display_names))
    image_size = property(lambda self: self.card.image_size)
    resize_mode = property(lambda self: self.card.resize_mode)
    resize_method = property(lambda self: self.card.resize_method)
    jpeg_downscale = property(lambda self: self.card.jpeg_downscale)
    from_logits = property(lambda self: self.card.from_logits)
    num_classes = property(lambda self: self.card.num_classes)

    @classmethod
    def from_keras_model(
        cls,
        model,
        class_ids=None,
        display_names=None,
        resize_mode=None,
        jpeg_downscale=None,
        source=None,
        from_logits=None,
        card=None,
        resize_method=None,
    ):
        """A predictor over an in-memory `keras.Model`.

        Args:
            model: a `keras.Model` from float32 RGB images `[N, S, S, 3]`
                in [0, 255] to `[N, C]` scores.
            class_ids: `C` class ids; default: the card's.
            display_names: `C` display names; default: the card's (or the
                class ids given).
            resize_mode: default: the card's.
            jpeg_downscale: default: the card's.
            source: what to report as the source (default: the model name).
            from_logits: default: the card's.
            card: a `ModelCard` to use instead of the model's own. A model
                without a card gets the defaults, with a warning.
            resize_method: default: the card's.
        """
        num_classes, image_size = signatures.check_model(model)
        source = source or model.name
        if card is None:
            card = cards.card_of_model(
                model, image_size, source, classes_given=class_ids is not None
            )
        card = cards.override_card(
            card, source, class_ids=class_ids, display_names=display_names,
            resize_mode=resize_mode, resize_method=resize_method,
            jpeg_downscale=jpeg_downscale, from_logits=from_logits,
        )
        card.check_model(model)
        probabilities_fn = signatures.make_probabilities_fn(
            model, num_classes, card.from_logits
        )
        images_fn = tf.function(
            probabilities_fn,
            input_signature=[tf.TensorSpec([None, image_size, image_size, 3])],
        )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def bytes_fn(encoded):
            return signatures.encoded_probabilities(encoded, card, probabilities_fn)

        return cls(images_fn, bytes_fn, card, source)

    def predict_images(self, images, batch_size=32):
        """Probabilities `[N, C]` (NumPy) of float images `[N, S, S, 3]`, 0-255.

        Raises:
            ValueError: for another shape, or images with non-finite pixels
                (named by index).
        """
        images = np.asarray(images, dtype="float32")
        expected = (self.image_size, self.image_size, 3)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                "Invalid value for argument `images`. Expected shape "
                f"[N, {', '.join(map(str, expected))}]. Received: {images.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(images).all(axis=(1, 2, 3)))
        if len(bad):
            raise ValueError(
                "Invalid value for argument `images`. Expected finite pixel "
                f"values. Received: NaN or infinite pixels in images "
                f"{bad[:20].tolist()}"
            )
        batch_size = check_positive_int("batch_size", batch_size)
        outputs = [
            np.asarray(self._images_fn(tf.constant(images[start : start + batch_size])))
            for start in range(0, len(images), batch_size)
        ]
        if not outputs:
            return np.zeros([0, self.num_classes], "float32")
        return np.concatenate(outputs, axis=0)

    def predict_encoded(self, encoded, batch_size=16, return_valid=False):
        """Probabilities `[N, C]` (NumPy) for a list of encoded image files.

        Each file is decoded on its own: a file that is not a decodable
        JPEG, PNG, GIF or BMP image (truncated, empty, another format) does
        not affect the others.

        Example:

        ```python
        probabilities, valid = predictor.predict_encoded(
            [jpeg_bytes, b"not an image"], return_valid=True)
        valid  # array([ True, False]); probabilities[1] is all zeros
        ```

        Args:
            encoded: a list of `bytes` (file contents).
            batch_size: files per model call.
            return_valid: False (default): raise `InvalidImageError` if any
                file cannot be decoded. True: return `(probabilities,
                valid)`, with zero probabilities where `valid` is False.

        Returns:
            float32 `[N, C]`, or `(probabilities, valid)` with a bool `[N]`
            mask.

        Raises:
            InvalidImageError: (a `ValueError`) naming the indices of the
                undecodable files, unless `return_valid`.
            ValueError: for an entry that is not `bytes` (e.g. a path).
        """
        encoded = list(encoded)
        for index, value in enumerate(encoded):
            if not isinstance(value, bytes):
                raise ValueError(
                    "Invalid value for argument `encoded`. Expected the bytes "
                    "of encoded image files (e.g. open(path, 'rb').read()). "
                    f"Received: {type(value).__name__} at index {index}: "
                    f"{str(value)[:80]!r}"
                )
        encoded = np.asarray(encoded, dtype=object).reshape(-1)
        batch_size = check_positive_int("batch_size", batch_size)
        probabilities, valid = [], []
        for start in range(0, len(encoded), batch_size):
            batch_probabilities, batch_valid = self._bytes_fn(
                tf.constant(encoded[start : start + batch_size], tf.string)
            )
            probabilities.append(np.asarray(batch_probabilities, "float32"))
            valid.append(np.asarray(batch_valid, bool))
        if probabilities:
            probabilities = np.concatenate(probabilities, axis=0)
            valid = np.concatenate(valid, axis=0)
        else:
            probabilities = np.zeros([0, self.num_classes], "float32")
            valid = np.zeros([0], bool)
        if return_valid:
            return probabilities, valid
        if not valid.all():
            raise InvalidImageError(np.flatnonzero(~valid), len(valid))
        return probabilities

    def __repr__(self):
        return (
            f"Predictor(source={self.source!r}, classes={self.num_classes}, "
            f"image_size={self.image_size}, resize_mode={self.resize_mode!r}, "
            f"resize_method={self.resize_method!r}, "
            f"jpeg_downscale={self.jpeg_downscale}, from_logits={self.from_logits})"
        )


def load_predictor(
    path, classes_csv=None, resize_mode=None, jpeg_downscale=None, from_logits=None,
    resize_method=None,
):
    """Opens an export, a SavedModel version folder, a `.keras` file or a run.

    Example:

    ```python
    predictor = load_predictor("exports/coco")  # the latest version
    probabilities = predictor.predict_encoded([open("photo.jpg", "rb").read()])
    ```

    Args:
        path: a model base path of `export_for_serving` (the latest version
            is used), one version folder, a `.keras` file, or a training run
            folder (its `best.keras`).
        classes_csv: a `classes.csv`. For a `.keras` file its classes
            override the card's; for an export its class ids must be the
            export's (only names may differ).
        resize_mode: for a `.keras` file, overrides the card's (logged). An
            export has its preprocessing in its graph: a different value
            raises.
        jpeg_downscale: likewise.
        from_logits: likewise.
        resize_method: likewise.

    Returns:
        A `Predictor`.

    Raises:
        ValueError: if nothing loadable is at `path`, the classes do not
            match the model's outputs, or the settings disagree with the
            export.
    """
    path = os.fspath(path)
    if _is_keras_model(path):
        from keras_csl.inference.model_files import load_model_with_card

        model, card, model_path = load_model_with_card(
            path, classes_csv=classes_csv, resize_mode=resize_mode,
            jpeg_downscale=jpeg_downscale, from_logits=from_logits,
            resize_method=resize_method,
        )
        return Predictor.from_keras_model(model, card=card, source=model_path)
    return _load_export(
        path, classes_csv, resize_mode, jpeg_downscale, from_logits, resize_method
    )


def as_predictor(
    model, classes_csv=None, resize_mode=None, jpeg_downscale=None,
    from_logits=None, resize_method=None,
):
    """`model` if it is a `Predictor`, else `load_predictor(model, ...)`.

    A `Predictor` has its preprocessing fixed, like an export: the settings
    given must agree with its card, and `classes_csv` may only name its
    classes (`keras_csl.export.cards.check_fixed_card`); the predictor is
    returned with the renamed classes.

    Raises:
        ValueError: as `load_predictor`, and for a setting other than the
            predictor's.
    """
    if not isinstance(model, Predictor):
        return load_predictor(
            model, classes_csv=classes_csv, resize_mode=resize_mode,
            jpeg_downscale=jpeg_downscale, from_logits=from_logits,
            resize_method=resize_method,
        )
    card = cards.check_fixed_card(
        model.card, f"predictor of {model.source}", classes_csv=classes_csv,
        resize_mode=resize_mode, resize_method=resize_method,
        jpeg_downscale=jpeg_downscale, from_logits=from_logits,
    )
    if card is model.card:
        return model
    return Predictor(model._images_fn, model._bytes_fn, card, model.source)


def _is_keras_model(path):
    if tf.io.gfile.isdir(path):
        return not holds_saved_model(path) and tf.io.gfile.exists(
            os.path.join(path, legacy.RUN_MODEL_FILE)
        )
    return path.endswith(".keras") or tf.io.gfile.exists(path)


def _load_export(
    path, classes_csv, resize_mode, jpeg_downscale, from_logits, resize_method
):
    """`load_predictor` for a SavedModel: its card, its signatures."""
    version_path = latest_version_path(path)
    serve_bytes, serve_images, _ = load_for_serving(version_path)
    num_classes = int(serve_images.structured_outputs["probabilities"].shape[-1])
    image_size = int(serve_images.structured_input_signature[1]["images"].shape[1])
    card = read_export_card(version_path)
    if card is None:
        card = cards.default_card(num_classes, image_size, version_path)
    if (card.num_classes, card.image_size) != (num_classes, image_size):
        raise ValueError(
            f"Invalid export {version_path}: its model card says "
            f"{card.num_classes} classes at {card.image_size} px, its "
            f"signatures {num_classes} classes at {image_size} px."
        )
    card = cards.check_fixed_card(
        card, f"export at {path}", classes_csv=classes_csv,
        resize_mode=resize_mode, resize_method=resize_method,
        jpeg_downscale=jpeg_downscale, from_logits=from_logits,
    )

    def images_fn(images):
        return serve_images(images=images)["probabilities"]

    if "valid" in serve_bytes.structured_outputs:
        def bytes_fn(encoded):
            outputs = serve_bytes(image_bytes=encoded)
            return outputs["probabilities"], outputs["valid"]
    else:
        bytes_fn = _one_by_one_on_error(serve_bytes, num_classes)
    return Predictor(images_fn, bytes_fn, card, version_path)


def _one_by_one_on_error(serve_bytes, num_classes):
    """`bytes_fn` for exports older than the `valid` output.

    Their signature fails the whole batch on one undecodable file: the
    batch is then retried file by file.
    """

    def bytes_fn(encoded):
        try:
            return serve_bytes(image_bytes=encoded)["probabilities"], np.ones(
                [len(encoded)], bool
            )
        except tf.errors.InvalidArgumentError:
            pass
        probabilities = np.zeros([len(encoded), num_classes], "float32")
        valid = np.zeros([len(encoded)], bool)
        for i in range(len(encoded)):
            try:
                probabilities[i] = serve_bytes(image_bytes=encoded[i : i + 1])[
                    "probabilities"
                ][0]
                valid[i] = True
            except tf.errors.InvalidArgumentError:
                pass
        return probabilities, valid

    return bytes_fn
