"""One interface for predictions from an export or from a Keras model.

`load_predictor` opens a serving export (`export_for_serving`), a bare
SavedModel version folder, a training run folder or a `.keras` file, and
returns a `Predictor` that turns encoded image files or decoded images into
probabilities with the preprocessing of training: an export's own, or the
one a training run's `config.json` records. The recipes `infer.py` and
`evaluate.py` use it, so that they work the same on a training run's
`best.keras` and on the SavedModel that TF Serving will load.
"""

import json
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

# What `keras_csl.training` writes into a run folder: the `TrainConfig`, and
# the model of the best epoch.
RUN_CONFIG_FILE = "config.json"
RUN_MODEL_FILE = "best.keras"


class Predictor:
    """Class probabilities for images, with the classes and preprocessing.

    Build it with `load_predictor` (or `Predictor.from_keras_model`).

    Attributes:
        class_ids: list of `C` class ids.
        display_names: list of `C` display names.
        image_size: side `S` of the model input.
        resize_mode: how encoded images are resized (`RESIZE_MODES`).
        jpeg_downscale: whether large JPEGs are decoded at reduced scale.
        from_logits: whether the model outputs logits (the predictor
            applies the sigmoid) or probabilities.
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
        from_logits=True,
    ):
        self._images_fn = images_fn
        self._bytes_fn = bytes_fn
        self.class_ids = list(class_ids)
        self.display_names = list(display_names)
        self.image_size = int(image_size)
        self.resize_mode = resize_mode
        self.jpeg_downscale = bool(jpeg_downscale)
        self.from_logits = bool(from_logits)
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
        from_logits=True,
    ):
        """A predictor over an in-memory `keras.Model`.

        Args:
            model: a `keras.Model` from float32 RGB images `[N, S, S, 3]`
                in [0, 255] to `[N, C]` scores.
            class_ids: `C` class ids; defaults to the indices.
            display_names: `C` display names; defaults to `class_ids`.
            resize_mode: the resize mode of training.
            jpeg_downscale: as in training.
            source: what to report as the source (default: the model name).
            from_logits: whether the model outputs logits (the predictor
                applies the sigmoid) or probabilities already.
        """
        num_classes, image_size = serving._check_model(model, None)
        class_ids, display_names = _classes(class_ids, display_names, num_classes)
        if resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"Invalid value for argument `resize_mode`. Expected one of "
                f"{RESIZE_MODES}. Received: resize_mode={resize_mode!r}"
            )
        serving._check_bool("jpeg_downscale", jpeg_downscale)
        serving._check_bool("from_logits", from_logits)
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
        images_fn = tf.function(
            serving.make_probabilities_fn(model, num_classes, from_logits),
            input_signature=[spec],
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
            from_logits=from_logits,
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
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or (
            batch_size < 1
        ):
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
            f"image_size={self.image_size}, resize_mode={self.resize_mode!r}, "
            f"jpeg_downscale={self.jpeg_downscale}, from_logits={self.from_logits})"
        )


def training_run_settings(path):
    """The input settings of the training run that a model comes from.

    A training run's folder holds `best.keras` and `config.json` (its
    `TrainConfig`). The preprocessing of training is in the config's
    `dataset_options` (passed to `keras_csl.data.make_dataset`), the
    classes in the `classes.csv` next to its `train_files`; predicting or
    exporting with other settings would feed the model images it was not
    trained on.

    Example:

    ```python
    training_run_settings("runs/coco_rps")
    # {"model_path": "runs/coco_rps/best.keras",
    #  "classes_csv": "data/coco/classes.csv",
    #  "resize_mode": "pad", "jpeg_downscale": False}
    ```

    Args:
        path: a run folder, or a file in one (e.g. `<run_dir>/best.keras`).

    Returns:
        A dict: `model_path` (`<run_dir>/best.keras` for a folder, else
        `path`), `classes_csv` (None if that file does not exist),
        `resize_mode` and `jpeg_downscale`: None where the run does not say
        (no `config.json` of a training run next to the model, or the
        option not set: the run then used `make_dataset`'s defaults,
        `"squash"` and True).
    """
    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        run_dir, model_path = path, os.path.join(path, RUN_MODEL_FILE)
    else:
        run_dir, model_path = os.path.dirname(path), path
    settings = dict(
        model_path=model_path,
        classes_csv=None,
        resize_mode=None,
        jpeg_downscale=None,
    )
    config_path = os.path.join(run_dir, RUN_CONFIG_FILE)
    if not tf.io.gfile.exists(config_path):
        return settings
    with tf.io.gfile.GFile(config_path) as f:
        config = json.load(f)
    # Other tools write a config.json too (e.g. a keras-hub preset).
    if not isinstance(config, dict) or not isinstance(
        config.get("dataset_options"), dict
    ):
        return settings
    options = config["dataset_options"]
    settings["resize_mode"] = options.get("resize_mode")
    settings["jpeg_downscale"] = options.get("jpeg_downscale")
    train_files = config.get("train_files")
    if isinstance(train_files, (list, tuple)):
        train_files = train_files[0] if train_files else ""
    if train_files:
        candidate = os.path.join(os.path.dirname(train_files), "classes.csv")
        if tf.io.gfile.exists(candidate):
            settings["classes_csv"] = candidate
    return settings


def resolve_training_settings(
    path, classes_csv=None, resize_mode=None, jpeg_downscale=None
):
    """The classes and preprocessing to use with the `.keras` model at `path`.

    Each argument given (not None) is used as it is; the others come from
    the training run of the model (`training_run_settings`), else default
    to None (classes named by index), `"squash"` and True, the defaults of
    `keras_csl.data.make_dataset`. What comes from the run is logged.

    Returns:
        `(classes_csv, resize_mode, jpeg_downscale)`.
    """
    run = training_run_settings(path)
    given = dict(
        classes_csv=classes_csv, resize_mode=resize_mode,
        jpeg_downscale=jpeg_downscale,
    )
    from_run = [k for k, v in given.items() if v is None and run[k] is not None]
    if from_run:
        logger.info(
            "%s: %s, from its training run (%s).", path,
            ", ".join(f"{k}={run[k]!r}" for k in from_run),
            os.path.join(os.path.dirname(os.fspath(path)), RUN_CONFIG_FILE),
        )
    settings = {k: run[k] if v is None else v for k, v in given.items()}
    for name, default in (("resize_mode", "squash"), ("jpeg_downscale", True)):
        if settings[name] is None:
            settings[name] = default
    return settings["classes_csv"], settings["resize_mode"], settings["jpeg_downscale"]


def load_predictor(
    path, classes_csv=None, resize_mode=None, jpeg_downscale=None, from_logits=None
):
    """Opens an export, a SavedModel version folder, a run or a `.keras` file.

    Example:

    ```python
    predictor = load_predictor("exports/coco")  # the latest version
    probabilities = predictor.predict_encoded([open("cat.jpg", "rb").read()])
    ```

    Args:
        path: a model base path of `export_for_serving` (the latest version
            is used), one version folder, a training run folder (its
            `best.keras` is used), or a `.keras` file.
        classes_csv: the dataset's `classes.csv`. For a `.keras` file it
            defaults to the training run's (`training_run_settings`), else
            classes are named by index; for an export the classes come from
            its metadata and this, if given, must agree.
        resize_mode: for a `.keras` file, the resize mode used in training;
            default: the training run's, if the file is in a run folder,
            else `"squash"`. An export has its own: a different value
            raises.
        jpeg_downscale: likewise (default: the run's, else True).
        from_logits: whether the model outputs logits (default True). An
            export records it in its metadata: a different value raises.

    Returns:
        A `Predictor`.

    Raises:
        ValueError: if nothing loadable is at `path`, the classes do not
            match the model's outputs, or the settings disagree with the
            export.
    """
    path = os.fspath(path)
    if tf.io.gfile.isdir(path) and tf.io.gfile.exists(
        os.path.join(path, RUN_MODEL_FILE)
    ) and not serving._holds_saved_model(path):
        path = os.path.join(path, RUN_MODEL_FILE)
    if path.endswith(".keras") or (
        tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)
    ):
        return _load_keras_file(
            path, classes_csv, resize_mode, jpeg_downscale, from_logits
        )

    classes = read_classes_csv(classes_csv) if classes_csv else (None, None)
    version_path = serving.latest_version_path(path)
    serve_bytes, serve_images, metadata = serving.load_for_serving(version_path)
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
        class_ids, display_names = _classes(*classes, num_classes, classes_csv)
    else:
        class_ids, display_names = _classes(
            class_ids, display_names, num_classes, metadata=os.path.join(
                version_path, serving.METADATA_DIR, serving.METADATA_FILE
            ),
        )
    settings = {}
    for name, given, default in (
        ("resize_mode", resize_mode, "squash"),
        ("jpeg_downscale", jpeg_downscale, True),
        ("from_logits", from_logits, True),
    ):
        exported = metadata.get(name, default)
        if given is not None and given != exported:
            raise ValueError(
                f"Invalid value for argument `{name}`. The export at {path} "
                f"was made with {name}={exported!r}. Received: "
                f"{name}={given!r}"
            )
        settings[name] = exported

    def images_fn(images):
        return serve_images(images=images)["probabilities"]

    def bytes_fn(encoded):
        return serve_bytes(image_bytes=encoded)["probabilities"]

    return Predictor(
        images_fn, bytes_fn, class_ids, display_names, image_size,
        settings["resize_mode"], settings["jpeg_downscale"], version_path,
        from_logits=settings["from_logits"],
    )


def _load_keras_file(path, classes_csv, resize_mode, jpeg_downscale, from_logits):
    """`load_predictor` for a `.keras` file; unset settings from its run."""
    # Registers the package's layers (e.g. CaffePreprocessing) and loss.
    import keras_csl.losses  # noqa: F401
    from keras_csl.models import load_model

    classes_csv, resize_mode, jpeg_downscale = resolve_training_settings(
        path, classes_csv, resize_mode, jpeg_downscale
    )
    model = load_model(path, compile=False)  # imports keras-hub if needed
    num_classes, _ = serving._check_model(model, None)
    class_ids = display_names = None
    if classes_csv:
        class_ids, display_names = _classes(
            *read_classes_csv(classes_csv), num_classes, classes_csv
        )
    return Predictor.from_keras_model(
        model,
        class_ids,
        display_names,
        resize_mode=resize_mode,
        jpeg_downscale=jpeg_downscale,
        source=path,
        from_logits=True if from_logits is None else from_logits,
    )


def _classes(class_ids, display_names, num_classes, classes_csv=None, metadata=None):
    """Checked lists of class ids and display names, one per model output.

    `classes_csv` or `metadata` (an export's metadata file) is where the
    lists come from, named in the error; neither for lists passed in as
    arguments.
    """
    if class_ids is None:
        class_ids = [str(i) for i in range(num_classes)]
    class_ids = [str(c) for c in class_ids]
    if display_names is None:
        display_names = class_ids
    display_names = [str(n) for n in display_names]
    for argument, values in (
        ("class_ids", class_ids), ("display_names", display_names)
    ):
        if len(values) == num_classes:
            continue
        if classes_csv is not None:
            raise ValueError(
                f"Invalid value for argument `classes_csv`. Expected one class "
                f"per model output ({num_classes}). Received: "
                f"classes_csv={os.fspath(classes_csv)!r}, which lists "
                f"{len(values)} classes"
            )
        if metadata is not None:
            raise ValueError(
                f"Invalid export: {metadata} lists {len(values)} {argument} "
                f"for a model with {num_classes} outputs."
            )
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one per model "
            f"output ({num_classes}). Received: {len(values)} entries"
        )
    return class_ids, display_names
