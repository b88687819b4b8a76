"""One interface for predictions from an export or from a Keras model.

`load_predictor` opens a serving export (`export_for_serving`), a bare
SavedModel version folder, or a `.keras` file, and returns a `Predictor`
that turns encoded image files or decoded images into probabilities with
the export's own preprocessing. The recipes `infer.py` and `evaluate.py`
use it, so that they work the same on a training run's `best.keras` and on
the SavedModel that TF Serving will load.
"""

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from keras_csl.data.features import read_classes_csv
from keras_csl.data.preprocessing import RESIZE_MODES
from keras_csl.data.preprocessing import preprocess_encoded
from keras_csl.export import serving

logger = logging.getLogger(__name__)


class Predictor:
    """Class probabilities for images, with the classes and preprocessing.

    Build it with `load_predictor` (or `Predictor.from_keras_model`).

    Attributes:
        class_ids: list of `C` class ids.
        display_names: list of `C` display names.
        image_size: side `S` of the model input.
        resize_mode: how encoded images are resized (`RESIZE_MODES`).
        jpeg_downscale: whether large JPEGs are decoded at reduced scale.
        source: what was loaded (a path or the model name).
    """

    def __init__(
        self,
        images_fn,
        bytes_fn,
        class_ids,
        display_names,
        image_size,
        resize_mode,
        jpeg_downscale,
        source,
    ):
        self._images_fn = images_fn
        self._bytes_fn = bytes_fn
        self.class_ids = list(class_ids)
        self.display_names = list(display_names)
        self.image_size = int(image_size)
        self.resize_mode = resize_mode
        self.jpeg_downscale = bool(jpeg_downscale)
        self.source = source

    @property
    def num_classes(self):
        return len(self.class_ids)

    @classmethod
    def from_keras_model(
        cls,
        model,
        class_ids=None,
        display_names=None,
        resize_mode="squash",
        jpeg_downscale=True,
        source=None,
    ):
        """A predictor over an in-memory `keras.Model` returning logits."""
        num_classes, image_size = serving._check_model(model, None)
        class_ids, display_names = _classes(class_ids, display_names, num_classes)
        if resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"Invalid value for argument `resize_mode`. Expected one of "
                f"{RESIZE_MODES}. Received: resize_mode={resize_mode!r}"
            )
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)

        @tf.function(input_signature=[spec])
        def images_fn(images):
            def predict():
                return tf.sigmoid(tf.cast(model(images, training=False), tf.float32))

            return tf.cond(
                tf.shape(images)[0] > 0,
                predict,
                lambda: tf.zeros([0, num_classes], tf.float32),
            )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def bytes_fn(encoded):
            return images_fn(
                preprocess_encoded(
                    encoded, image_size, mode=resize_mode,
                    jpeg_downscale=jpeg_downscale,
                )
            )

        return cls(
            images_fn, bytes_fn, class_ids, display_names, image_size,
            resize_mode, jpeg_downscale, source or model.name,
        )

    def predict_images(self, images, batch_size=32):
        """Probabilities `[N, C]` (NumPy) of float images `[N, S, S, 3]`, 0-255."""
        images = np.asarray(images, dtype="float32")
        expected = (self.image_size, self.image_size, 3)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                "Invalid value for argument `images`. Expected shape "
                f"[N, {', '.join(map(str, expected))}]. Received: {images.shape}"
            )
        return self._batched(self._images_fn, images, batch_size)

    def predict_encoded(self, encoded, batch_size=16):
        """Probabilities `[N, C]` (NumPy) for a list of encoded image files (bytes)."""
        encoded = np.asarray(list(encoded), dtype=object).reshape(-1)
        return self._batched(self._bytes_fn, encoded, batch_size)

    def _batched(self, fn, values, batch_size):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                "Invalid value for argument `batch_size`. Expected a positive "
                f"int. Received: batch_size={batch_size!r}"
            )
        outputs = [
            np.asarray(fn(tf.constant(values[start : start + batch_size])))
            for start in range(0, len(values), batch_size)
        ]
        if not outputs:
            return np.zeros([0, self.num_classes], "float32")
        return np.concatenate(outputs, axis=0)

    def __repr__(self):
        return (
            f"Predictor(source={self.source!r}, classes={self.num_classes}, "
            f"image_size={self.image_size}, resize_mode={self.resize_mode!r})"
        )


def load_predictor(
    path, classes_csv=None, resize_mode=None, jpeg_downscale=None
):
    """Opens an export, a SavedModel version folder or a `.keras` file.

    Example:

    ```python
    predictor = load_predictor("exports/coco")  # the latest version
    probabilities = predictor.predict_encoded([open("cat.jpg", "rb").read()])
    ```

    Args:
        path: a model base path of `export_for_serving` (the latest version
            is used), one version folder, or a `.keras` file (saved by the
            training loop: `<run_dir>/best.keras`).
        classes_csv: the dataset's `classes.csv`. Required for names with a
            `.keras` file (else classes are named by index); for an export
            the classes come from its metadata and this, if given, must
            agree.
        resize_mode: for a `.keras` file, the resize mode used in training
            (default `"squash"`). An export has its own: a different value
            raises.
        jpeg_downscale: likewise (default True).

    Returns:
        A `Predictor`.

    Raises:
        ValueError: if nothing loadable is at `path` or the settings
            disagree with the export.
    """
    path = os.fspath(path)
    classes = read_classes_csv(classes_csv) if classes_csv else (None, None)
    if path.endswith(".keras") or (
        tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)
    ):
        # Registers the package's layers (e.g. CaffePreprocessing) and loss.
        import keras_csl.losses  # noqa: F401
        import keras_csl.models  # noqa: F401

        model = keras.saving.load_model(path, compile=False)
        return Predictor.from_keras_model(
            model,
            *classes,
            resize_mode=resize_mode or "squash",
            jpeg_downscale=True if jpeg_downscale is None else jpeg_downscale,
            source=path,
        )

    serve_bytes, serve_images, metadata = serving.load_for_serving(path)
    num_classes = int(serve_images.structured_outputs["probabilities"].shape[-1])
    image_size = int(serve_images.structured_input_signature[1]["images"].shape[1])
    class_ids = metadata.get("class_ids")
    display_names = metadata.get("display_names")
    if classes[0] is not None:
        numbered = [str(i) for i in range(num_classes)]
        if class_ids not in (None, numbered) and list(classes[0]) != list(class_ids):
            raise ValueError(
                f"Invalid value for argument `classes_csv`. Its class ids "
                f"differ from those of the export {path}. Received: "
                f"classes_csv={classes_csv!r}"
            )
        class_ids, display_names = classes
    class_ids, display_names = _classes(class_ids, display_names, num_classes)
    settings = {}
    for name, given, default in (
        ("resize_mode", resize_mode, "squash"),
        ("jpeg_downscale", jpeg_downscale, True),
    ):
        exported = metadata.get(name, default)
        if given is not None and given != exported:
            raise ValueError(
                f"Invalid value for argument `{name}`. The export at {path} "
                f"preprocesses with {name}={exported!r}. Received: "
                f"{name}={given!r}"
            )
        settings[name] = exported

    def images_fn(images):
        return serve_images(images=images)["probabilities"]

    def bytes_fn(encoded):
        return serve_bytes(image_bytes=encoded)["probabilities"]

    return Predictor(
        images_fn, bytes_fn, class_ids, display_names, image_size,
        settings["resize_mode"], settings["jpeg_downscale"],
        serving.latest_version_path(path),
    )


def _classes(class_ids, display_names, num_classes):
    if class_ids is None:
        class_ids = [str(i) for i in range(num_classes)]
    class_ids = [str(c) for c in class_ids]
    if len(class_ids) != num_classes:
        raise ValueError(
            f"Invalid classes: {len(class_ids)} class ids for a model with "
            f"{num_classes} outputs."
        )
    if display_names is None:
        display_names = class_ids
    display_names = [str(n) for n in display_names]
    if len(display_names) != num_classes:
        raise ValueError(
            f"Invalid classes: {len(display_names)} display names for a model "
            f"with {num_classes} outputs."
        )
    return class_ids, display_names
