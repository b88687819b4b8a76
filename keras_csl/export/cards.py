"""The model card an export or a predictor uses: the model's, then overrides.

A keras-csl model carries its `ModelCard` (`keras_csl.models.card`): image
size, resize mode and method, JPEG downscale, from-logits, class ids and
names. Export
and inference take every setting from it. A caller may still override a
field (a command-line flag, an argument); each override that changes the
card is logged, so the log says where every setting came from. A model
without a card gets the documented defaults (classes named by index,
`"squash"`, `"bilinear"`, `jpeg_downscale=True`, `from_logits=True`) with a
warning that names them, never silently.
"""

import logging
import os

from keras_csl.models.card import ModelCard
from keras_csl.models.card import get_model_card

logger = logging.getLogger(__name__)

# The preprocessing and output settings (fixed in an export's graph).
SETTINGS = ("resize_mode", "resize_method", "jpeg_downscale", "from_logits")
# The fields a caller may override, in the order they are reported.
OVERRIDABLE = ("class_ids", "display_names") + SETTINGS


def index_class_ids(num_classes):
    """Class ids `"0"`, `"1"`, ...: the ids of a model nobody named."""
    return tuple(str(i) for i in range(num_classes))


def is_default_card(card):
    """Whether `card` is the placeholder `build_model` writes.

    Classes named by index, no display names of their own and no `source`:
    nobody has told the model what it was trained on (a model built with
    `build_model` and saved before training wrote real cards).
    """
    return (
        card is not None
        and card.class_ids == index_class_ids(card.num_classes)
        and card.display_names == card.class_ids
        and not card.source
    )


def default_card(num_classes, image_size, source):
    """The card of a model without one: documented defaults, with a warning."""
    card = ModelCard(image_size=image_size, class_ids=index_class_ids(num_classes))
    logger.warning(
        "%s has no model card: using the defaults: classes named by index "
        "(0-%d), resize_mode=%r, jpeg_downscale=%r, from_logits=%r, "
        "resize_method=%r. If training used other settings, pass them (or "
        "give the model its card with keras_csl.models.set_model_card).",
        source, num_classes - 1, card.resize_mode, card.jpeg_downscale,
        card.from_logits, card.resize_method,
    )
    return card


def warn_if_placeholder(card, source, classes_given=False):
    """Warns that `card` is `build_model`'s placeholder, unless classes are given.

    A placeholder card was never told the classes or the preprocessing of
    training: using it as it is names the classes by index and assumes the
    default preprocessing, which the warning says.
    """
    if is_default_card(card) and not classes_given:
        logger.warning(
            "%s has only the placeholder model card of build_model: classes "
            "named by index (0-%d), resize_mode=%r, jpeg_downscale=%r, "
            "resize_method=%r. Give the model its card with "
            "keras_csl.models.set_model_card (or pass the classes and "
            "settings of training).", source, card.num_classes - 1,
            card.resize_mode, card.jpeg_downscale, card.resize_method,
        )


def card_of_model(model, image_size, source, classes_given=False):
    """The card inside `model`, else `default_card` (with its warning).

    A placeholder card is returned with a warning (`warn_if_placeholder`),
    unless `classes_given` says the caller overrides its classes.
    """
    card = get_model_card(model)
    if card is not None:
        warn_if_placeholder(card, source, classes_given)
        return card
    num_classes = int(model.outputs[0].shape[-1])
    return default_card(num_classes, image_size, source)


def classes_from_csv(classes_csv, num_classes):
    """`(class_ids, display_names)` of a `classes.csv`, one per model output.

    Raises:
        ValueError: naming the file if it lists another number of classes.
    """
    from keras_csl.data.features import read_classes_csv

    class_ids, names = read_classes_csv(classes_csv)
    if len(class_ids) != num_classes:
        raise ValueError(
            "Invalid value for argument `classes_csv`. Expected one class per "
            f"model output ({num_classes}). Received: "
            f"classes_csv={os.fspath(classes_csv)!r}, which lists "
            f"{len(class_ids)} classes"
        )
    return class_ids, names


def override_card(card, source, classes_csv=None, **overrides):
    """`card` with the given (not None) fields replaced, each change logged.

    Example:

    ```python
    card = ModelCard(image_size=32, class_ids=("a", "b"))
    override_card(card, "model.keras", resize_mode="pad").resize_mode
    # 'pad'; logged: "model.keras: resize_mode='pad' overrides the model
    # card's 'squash'."
    ```

    Args:
        card: the `ModelCard` to start from.
        source: what the card belongs to, for the log.
        classes_csv: a `classes.csv` whose classes replace the card's (it
            must list one class per output).
        **overrides: fields of `OVERRIDABLE`; None leaves a field as it is.
            New `class_ids` without `display_names` are also the names.

    Returns:
        The card to use (validated by `ModelCard`).

    Raises:
        ValueError: for an unknown field, a class list of the wrong length,
            or an invalid value (named by `ModelCard`).
    """
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(
            f"Invalid override {unknown}: expected some of {list(OVERRIDABLE)}."
        )
    changes = {k: v for k, v in overrides.items() if v is not None}
    if classes_csv:
        class_ids, names = classes_from_csv(classes_csv, card.num_classes)
        changes.setdefault("class_ids", class_ids)
        changes.setdefault("display_names", names)
    for key in ("class_ids", "display_names"):
        if key in changes:
            changes[key] = tuple(
                v.decode("utf-8") if isinstance(v, bytes) else str(v)
                for v in changes[key]
            )
            if len(changes[key]) != card.num_classes:
                raise ValueError(
                    f"Invalid value for argument `{key}`. Expected one entry "
                    f"per model output ({card.num_classes}). Received: "
                    f"{len(changes[key])} entries"
                )
    if "class_ids" in changes and "display_names" not in changes and (
        changes["class_ids"] != card.class_ids
    ):
        changes["display_names"] = changes["class_ids"]
    changes = {k: v for k, v in changes.items() if v != getattr(card, k)}
    if not changes:
        return card
    new = card.replace(**changes)
    # Overriding a real card is worth a warning: the model was trained with
    # the card's settings. A placeholder card says nothing to override.
    level = logging.INFO if is_default_card(card) else logging.WARNING
    for key in OVERRIDABLE:
        if key not in changes:
            continue
        if key in ("class_ids", "display_names"):
            origin = f" from {os.fspath(classes_csv)}" if classes_csv else ""
            logger.log(
                level, "%s: %d %s%s override the model card's.", source,
                new.num_classes, key, origin,
            )
        else:
            logger.log(
                level, "%s: %s=%r overrides the model card's %r.", source, key,
                getattr(new, key), getattr(card, key),
            )
    return new


def check_fixed_card(card, owner, classes_csv=None, **settings):
    """`card` (renamed by `classes_csv`) for a model whose preprocessing is fixed.

    An export has its preprocessing in its graph, a `Predictor` in its
    functions: a setting given for it must agree with its card, and a
    `classes_csv` may only name its classes (or number them, where the
    card's ids are indices).

    Example:

    ```python
    card = ModelCard(image_size=32, class_ids=("a", "b"))
    check_fixed_card(card, "export at exports/x", resize_mode="squash")  # card
    check_fixed_card(card, "export at exports/x", resize_mode="pad")
    # ValueError: ... The export at exports/x was made with
    # resize_mode='squash'. Received: resize_mode='pad'
    ```

    Args:
        card: the fixed `ModelCard`.
        owner: what the card belongs to, for the messages and the log
            (e.g. `"export at exports/coco"`).
        classes_csv: a `classes.csv` whose names (and ids) replace the
            card's.
        **settings: `resize_mode`, `resize_method`, `jpeg_downscale`,
            `from_logits`; None is no setting.

    Returns:
        The card to use.

    Raises:
        ValueError: for a setting other than the card's, or a `classes_csv`
            whose class ids differ from the card's (unless those are
            indices).
    """
    for name, given in settings.items():
        if name not in SETTINGS:
            raise ValueError(
                f"Invalid setting {name!r}: expected some of {list(SETTINGS)}."
            )
        if given is not None and given != getattr(card, name):
            raise ValueError(
                f"Invalid value for argument `{name}`. The {owner} was made "
                f"with {name}={getattr(card, name)!r}. Received: {name}={given!r}"
            )
    if not classes_csv:
        return card
    csv_ids, _ = classes_from_csv(classes_csv, card.num_classes)
    if card.class_ids not in (index_class_ids(card.num_classes), tuple(csv_ids)):
        raise ValueError(
            f"Invalid value for argument `classes_csv`. Its class ids differ "
            f"from those of the {owner}. Received: "
            f"classes_csv={os.fspath(classes_csv)!r}"
        )
    return override_card(card, owner, classes_csv=classes_csv)
