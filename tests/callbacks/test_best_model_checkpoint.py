"""BestModelCheckpoint: the better of raw and EMA weights, with its card."""

import json
import math

import keras
import numpy as np
import pytest

from keras_csl.callbacks import BestModelCheckpoint
from keras_csl.callbacks import ModelEMA
from keras_csl.models import ModelCard
from keras_csl.models import get_model_card
from keras_csl.models import read_model_card
from keras_csl.models import set_model_card


def model_with_ema():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), name="images")
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="net")
    ema = ModelEMA(decay=0.5)
    ema.build(model)
    for weight in model.weights:
        weight.assign(weight + 1.0)  # Raw weights now differ from the average.
    return model, ema


def test_keeps_the_better_weights_and_says_which(tmp_path):
    model, ema = model_with_ema()
    path = tmp_path / "best.keras"
    callback = BestModelCheckpoint(str(path), ema=ema, verbose=0)
    callback.set_model(model)
    callback.on_train_begin()
    raw, averaged = model.get_weights(), ema.averaged_values()

    logs = {"val_map": 50.0, "val_map_ema": 60.0}
    callback.on_epoch_end(0, logs)  # The EMA wins.
    assert logs["val_map_best"] == 60.0
    saved = keras.saving.load_model(str(path)).get_weights()
    for a, b in zip(saved, averaged):
        np.testing.assert_allclose(a, b)
    for a, b in zip(model.get_weights(), raw):  # Swapped back.
        np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "best.json").read_text()) == {
        "epoch": 1, "val_map": 60.0, "weights": "ema", "monitor": "val_map"}

    callback.on_epoch_end(1, {"val_map": 70.0, "val_map_ema": float("nan")})
    saved = keras.saving.load_model(str(path)).get_weights()
    for a, b in zip(saved, raw):
        np.testing.assert_allclose(a, b)
    assert (callback.best, callback.best_epoch, callback.best_source) == (70.0, 2, "raw")

    mtime = path.stat().st_mtime_ns
    logs = {"val_map": 65.0, "val_map_ema": 69.0}
    callback.on_epoch_end(2, logs)  # Worse: nothing written.
    assert path.stat().st_mtime_ns == mtime and logs["val_map_best"] == 70.0
    assert (tmp_path / "best.weights.h5").exists()


def test_writes_the_model_card_with_the_best_epoch(tmp_path):
    model, ema = model_with_ema()
    card = ModelCard(image_size=3, class_ids=("a", "b"), display_names=("A", "B"),
                     resize_mode="pad")
    # A model without a card layer: the saved copy gets one, the model not.
    callback = BestModelCheckpoint(str(tmp_path / "best.keras"), ema=ema,
                                   card=card, verbose=0)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(4, {"val_map": 42.5})
    saved = read_model_card(tmp_path / "best.keras")
    assert saved.display_names == ("A", "B") and saved.resize_mode == "pad"
    assert saved.extra == {"best_epoch": 5, "val_map": 42.5, "weights": "raw"}
    assert get_model_card(model) is None
    # A model holding a card keeps its own card (extra not accumulated).
    model = set_model_card(model, card)
    callback = BestModelCheckpoint(str(tmp_path / "b.keras"), verbose=0)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0, {"val_map": 1.0})
    assert read_model_card(tmp_path / "b.keras").extra["best_epoch"] == 1
    assert get_model_card(model).extra == {}


def test_state_survives_on_train_begin_only_when_restored():
    model, ema = model_with_ema()
    callback = BestModelCheckpoint(None, ema=ema)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0, {"val_map": 10.0, "val_map_ema": 12.0})
    state = callback.get_state()
    assert state == {"best": 12.0, "best_epoch": 1, "best_source": "ema"}
    callback.on_train_begin()  # A new fit forgets...
    assert callback.best == -math.inf and callback.best_epoch == 0
    callback.set_state(state)  # ...unless a checkpoint restored it.
    callback.on_train_begin()
    assert callback.get_state() == state
    callback.on_epoch_begin(1)
    callback.on_epoch_end(1, {"val_map": 11.0})
    assert callback.best == 12.0


def test_errors():
    with pytest.raises(ValueError, match="filepath"):
        BestModelCheckpoint("best.h5")
