"""Saving a model for inference, with its card (private)."""

import logging
import os

import keras

from keras_csl.callbacks import _backend
from keras_csl.models.card import get_model_card
from keras_csl.models.card import set_model_card

logger = logging.getLogger(__name__)
_WARNED = set()  # Paths already warned about a missing card.


def inference_view(model):
    """An uncompiled model over `model`'s layers: no optimizer in its file."""
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs:
        return model  # Subclassed: saved as it is.
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=model.name,
    )


def save_inference_model(model, path, card=None, extra=None, weights_path=None):
    """Saves `model` as `.keras` (and its weights as `.weights.h5`).

    The file carries a model card: `card` if given, else the model's own,
    with `extra` merged into the card's `extra`; a model without either is
    saved without a card (logged). The `.keras` file is written under a
    temporary name first and renamed, so a reader never sees half a file.

    Returns:
        The `ModelCard` written, or `None`.
    """
    view = inference_view(model)
    own_card = get_model_card(model)
    card = card if card is not None else own_card
    if card is None:
        if path not in _WARNED:
            _WARNED.add(path)
            logger.warning("%s: the model has no model card (see "
                           "keras_csl.models.set_model_card); saving it "
                           "without.", path)
    else:
        card = card.replace(extra=dict(card.extra, **(extra or {})))
        view = set_model_card(view, card)
    _backend.makedirs(os.path.dirname(path) or ".")
    try:
        stem = path[: -len(".keras")] if path.endswith(".keras") else path
        partial = stem + ".partial.keras"
        view.save(partial)
        _backend.rename(partial, path)
        if weights_path is not None:
            view.save_weights(weights_path)
    finally:
        if own_card is not None:  # The view shares the model's card layer.
            set_model_card(model, own_card)
    return card


def sibling(path, suffix):
    """`run/best.keras` -> `run/best<suffix>`."""
    stem, _ = os.path.splitext(path)
    return stem + suffix
