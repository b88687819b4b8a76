"""Tests of keras_csl.export.cards: the card used, overrides, defaults."""

import logging

import keras
import pytest

from keras_csl.data import write_classes_csv
from keras_csl.export import cards
from keras_csl.models import ModelCard
from keras_csl.models import build_model

CARD = ModelCard(
    image_size=32, class_ids=("/m/a", "/m/b"), display_names=("A", "B"),
    resize_mode="pad", jpeg_downscale=False,
)


def test_override_replaces_given_fields_and_logs_each(caplog):
    with caplog.at_level(logging.INFO, logger="keras_csl.export.cards"):
        assert cards.override_card(CARD, "m.keras") is CARD  # nothing given
        assert cards.override_card(CARD, "m.keras", resize_mode="pad") is CARD
    assert caplog.text == ""  # an override equal to the card changes nothing

    with caplog.at_level(logging.INFO, logger="keras_csl.export.cards"):
        new = cards.override_card(
            CARD, "m.keras", jpeg_downscale=True, class_ids=["x", "y"]
        )
    assert new.jpeg_downscale is True and new.resize_mode == "pad"
    # New ids without names: the ids name the classes (not the old names).
    assert new.class_ids == ("x", "y") and new.display_names == ("x", "y")
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.WARNING, "m.keras: 2 class_ids override the model card's.") in records
    assert (
        logging.WARNING, "m.keras: jpeg_downscale=True overrides the model card's False."
    ) in records


def test_override_from_classes_csv(tmp_path):
    path = tmp_path / "classes.csv"
    write_classes_csv(str(path), ["/m/c", "/m/d"], ["Cat", "Dog"])
    new = cards.override_card(CARD, "m", classes_csv=path)
    assert new.class_ids == ("/m/c", "/m/d") and new.display_names == ("Cat", "Dog")
    write_classes_csv(str(path), ["/m/c"], ["Cat"])
    with pytest.raises(ValueError, match=r"classes_csv=.*which lists 1 classes"):
        cards.override_card(CARD, "m", classes_csv=path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(class_ids=["x"]), r"`class_ids`. Expected one entry per model output \(2\)"),
        (dict(display_names=["x", "y", "z"]), "`display_names`"),
        (dict(resize_mode="stretch"), "resize_mode='stretch'"),
        (dict(from_logits="no"), "from_logits='no'"),
        (dict(image_size=64), r"Invalid override \['image_size'\]"),
    ],
)
def test_invalid_overrides(overrides, message):
    with pytest.raises(ValueError, match=message):
        cards.override_card(CARD, "m", **overrides)


def test_default_cards(caplog):
    model = build_model("tiny", num_classes=3, image_size=32)
    assert cards.is_default_card(cards.card_of_model(model, 32, "m"))
    assert not cards.is_default_card(CARD)
    assert not cards.is_default_card(None)
    named = ModelCard(image_size=32, class_ids=("0", "1"), source="converted")
    assert not cards.is_default_card(named)

    # A placeholder used as it is gets a warning; not when classes are given.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="keras_csl.export.cards"):
        placeholder = cards.card_of_model(model, 32, "m.keras")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "m.keras has only the placeholder model card of build_model" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="keras_csl.export.cards"):
        cards.card_of_model(model, 32, "m.keras", classes_given=True)
        # Overriding a placeholder card is the expected use: INFO, not WARNING.
        cards.override_card(placeholder, "m", resize_mode="crop")
    assert [r.levelno for r in caplog.records] == [logging.INFO]

    caplog.clear()
    inputs = keras.Input((32, 32, 3))
    bare = keras.Model(inputs, keras.layers.Dense(2)(
        keras.layers.GlobalAveragePooling2D()(inputs)))
    with caplog.at_level(logging.WARNING, logger="keras_csl.export.cards"):
        card = cards.card_of_model(bare, 32, "bare.keras")
    assert card == ModelCard(image_size=32, class_ids=("0", "1"))
    assert "bare.keras has no model card: using the defaults: classes named by " \
        "index (0-1), resize_mode='squash', jpeg_downscale=True, " \
        "from_logits=True" in caplog.text


def test_check_fixed_card(tmp_path):
    owner = "export at e/1"
    assert cards.check_fixed_card(CARD, owner) is CARD
    same = dict(resize_mode="pad", jpeg_downscale=False, from_logits=True)
    assert cards.check_fixed_card(CARD, owner, **same) is CARD
    message = (
        "The export at e/1 was made with resize_mode='pad'. "
        "Received: resize_mode='crop'"
    )
    with pytest.raises(ValueError, match=message):
        cards.check_fixed_card(CARD, owner, resize_mode="crop")
    with pytest.raises(ValueError, match="Invalid setting 'class_ids'"):
        cards.check_fixed_card(CARD, owner, class_ids=["x", "y"])

    names = tmp_path / "names.csv"
    write_classes_csv(str(names), ["/m/a", "/m/b"], ["Apple", "Bee"])
    renamed = cards.check_fixed_card(CARD, owner, classes_csv=str(names))
    assert renamed.display_names == ("Apple", "Bee")
    assert renamed.resize_mode == "pad"
    other = tmp_path / "other.csv"
    write_classes_csv(str(other), ["x", "y"], ["X", "Y"])
    with pytest.raises(ValueError, match="class ids differ from those of the export"):
        cards.check_fixed_card(CARD, owner, classes_csv=str(other))
    # Ids that are indices may be replaced by real ones.
    numbered = CARD.replace(class_ids=("0", "1"), display_names=("0", "1"))
    assert cards.check_fixed_card(
        numbered, owner, classes_csv=str(other)
    ).class_ids == ("x", "y")
