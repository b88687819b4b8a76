"""Models saved before model cards: settings from their training run folder.

A `best.keras` written before keras-csl put a `ModelCard` into its models
does not say how it was trained. Its training run folder does, in a layout
only this module knows: `config.json` (the run's `TrainConfig`: the resize
mode and JPEG downscale, in `dataset_options` or, in newer configs, as
fields of their own; runs of that time all resized bilinearly, so the
resize method is `"bilinear"` unless the config says otherwise) and the
`classes.csv` next to the config's `train_files`. `card_from_training_run` is the one place that reads them;
everything else in keras-csl reads the card.
"""

import json
import logging
import os
import warnings

import tensorflow as tf

from keras_csl.export import cards
from keras_csl.models.card import ModelCard

logger = logging.getLogger(__name__)

# What `keras_csl.training` writes into a run folder: the `TrainConfig`, and
# the model of the best epoch.
RUN_CONFIG_FILE = "config.json"
RUN_MODEL_FILE = "best.keras"
_SETTINGS = ("resize_mode", "jpeg_downscale", "resize_method")


def card_from_training_run(
    model_path, card, num_classes, image_size, classes_given=False
):
    """The card of a model without a real one, from its training run.

    Called for a `.keras` file with no card, or with the placeholder card of
    `build_model` (`keras_csl.export.cards.is_default_card`). Where the
    file's folder holds a training run's `config.json`, its resize mode,
    JPEG downscale, resize method (`"bilinear"` where it does not say) and
    classes (`classes.csv` next to its `train_files`)
    fill the card, with a warning that says so. Where it does not, the
    placeholder card is used as it is, or for no card the documented
    defaults (`keras_csl.export.cards.default_card`), with a warning.

    Args:
        model_path: the `.keras` file.
        card: its card (a placeholder) or None.
        num_classes: the model's number of outputs.
        image_size: the model's input size.
        classes_given: whether the caller overrides the classes (no
            warning about a placeholder's index names then).

    Returns:
        A `ModelCard`.

    Raises:
        ValueError: if the run's `classes.csv` lists another number of
            classes than the model has outputs.
    """
    model_path = os.fspath(model_path)
    settings = training_run_settings(model_path)
    found = {k: settings[k] for k in _SETTINGS if settings[k] is not None}
    if _run_config(os.path.dirname(model_path)) is None:
        if card is None:
            return cards.default_card(num_classes, image_size, model_path)
        cards.warn_if_placeholder(card, model_path, classes_given)
        return card
    if card is None:
        card = ModelCard(
            image_size=image_size, class_ids=cards.index_class_ids(num_classes)
        )
    changes = dict(found)
    if settings["classes_csv"]:
        changes["class_ids"], changes["display_names"] = cards.classes_from_csv(
            settings["classes_csv"], num_classes
        )
    card = card.replace(**changes)
    logger.warning(
        "%s has no model card of its own (saved before keras-csl wrote "
        "cards): using its training run's %s: resize_mode=%r%s, "
        "jpeg_downscale=%r%s, resize_method=%r%s, classes %s. "
        "Save the model again with keras_csl.models.set_model_card to make it "
        "self-describing.", model_path, RUN_CONFIG_FILE, card.resize_mode,
        "" if "resize_mode" in found else " (default)", card.jpeg_downscale,
        "" if "jpeg_downscale" in found else " (default)", card.resize_method,
        "" if "resize_method" in found else " (default)",
        f"from {settings['classes_csv']}" if settings["classes_csv"]
        else "named by index (no classes.csv next to its train_files)",
    )
    return card


def training_run_settings(path):
    """The input settings of the training run that a model comes from.

    A training run's folder holds `best.keras` and `config.json` (its
    `TrainConfig`). The preprocessing of training is in the config (fields
    `resize_mode`, `jpeg_downscale` and `resize_method`, or older configs'
    `dataset_options`),
    the classes in the `classes.csv` next to its `train_files`.

    Example:

    ```python
    training_run_settings("runs/coco_rps")
    # {"model_path": "runs/coco_rps/best.keras",
    #  "classes_csv": "data/coco/classes.csv",
    #  "resize_mode": "pad", "jpeg_downscale": False, "resize_method": None}
    ```

    Args:
        path: a run folder, or a file in one (e.g. `<run_dir>/best.keras`).

    Returns:
        A dict: `model_path` (`<run_dir>/best.keras` for a folder, else
        `path`), `classes_csv` (None if that file does not exist),
        `resize_mode`, `jpeg_downscale` and `resize_method`: None where the
        run does not say (no `config.json` of a training run next to the
        model, or the option not set: the run then used the defaults,
        `"squash"`, True and `"bilinear"`).
    """
    from keras_csl.data.features import CLASSES_FILE

    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        run_dir, model_path = path, os.path.join(path, RUN_MODEL_FILE)
    else:
        run_dir, model_path = os.path.dirname(path), path
    settings = dict(
        model_path=model_path, classes_csv=None, resize_mode=None,
        jpeg_downscale=None, resize_method=None,
    )
    config = _run_config(run_dir)
    if config is None:
        return settings
    options = config.get("dataset_options")
    options = options if isinstance(options, dict) else {}
    for key in _SETTINGS:
        value = config.get(key)
        settings[key] = options.get(key) if value is None else value
    train_files = config.get("train_files")
    if isinstance(train_files, (list, tuple)):
        train_files = train_files[0] if train_files else ""
    if train_files:
        candidate = os.path.join(os.path.dirname(train_files), CLASSES_FILE)
        if tf.io.gfile.exists(candidate):
            settings["classes_csv"] = candidate
    return settings


def resolve_training_settings(
    path, classes_csv=None, resize_mode=None, jpeg_downscale=None
):
    """Deprecated: `(classes_csv, resize_mode, jpeg_downscale)` of a run.

    Kept for code written before model cards; use
    `keras_csl.inference.load_model_with_card`, which reads the model's
    card. Each argument given is used as it is; the others come from
    `training_run_settings`, else default to None, `"squash"` and True.
    """
    warnings.warn(
        "resolve_training_settings is deprecated: models carry their "
        "settings in their model card (keras_csl.inference."
        "load_model_with_card).", DeprecationWarning, stacklevel=2,
    )
    run = training_run_settings(path)
    given = dict(
        classes_csv=classes_csv, resize_mode=resize_mode,
        jpeg_downscale=jpeg_downscale,
    )
    settings = {k: run[k] if v is None else v for k, v in given.items()}
    for name, default in (("resize_mode", "squash"), ("jpeg_downscale", True)):
        if settings[name] is None:
            settings[name] = default
    return settings["classes_csv"], settings["resize_mode"], settings["jpeg_downscale"]


def _run_config(run_dir):
    """The training config in `run_dir`, or None (absent, or another tool's)."""
    path = os.path.join(run_dir, RUN_CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        config = json.load(f)
    # Other tools write a config.json too (e.g. a keras-hub preset).
    if not isinstance(config, dict) or not (
        isinstance(config.get("dataset_options"), dict) or "train_files" in config
    ):
        return None
    return config
