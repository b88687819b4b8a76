"""ModelEMA: the authors' update over all weights, in fit and in a step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.callbacks import ModelEMA
from keras_csl.models import build_model


class Counter(keras.layers.Layer):
    """Identity with integer state (which no average should touch)."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), dtype="int32", trainable=False,
                                     initializer="zeros", name="count")

    def call(self, inputs):
        return inputs


def small_model():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = Counter()(keras.layers.Dropout(0.5)(x))
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_update_is_the_authors_formula_over_every_float_weight():
    model = small_model()
    ema = ModelEMA(decay=0.75)
    ema.build(model)
    # Every float weight, BN moving statistics included; not integer state.
    assert len(ema.shadows) == len(model.weights) - 1 == 8
    assert all("count" not in v.path for v in ema.source_variables)
    assert any("moving_mean" in v.path for v in ema.source_variables)
    start = [w.numpy() for w in ema.source_variables]
    target = [w + 1.0 for w in start]
    for weight, value in zip(ema.source_variables, target):
        weight.assign(value)
    ema.update()
    ema.update()
    for shadow, s, t in zip(ema.shadows, start, target):
        # Two steps from s towards t: t + (s - t) * decay^2.
        np.testing.assert_allclose(shadow.numpy(), t + (s - t) * 0.75**2, rtol=1e-6, atol=2e-7)


def test_averaged_weights_swaps_in_and_back():
    model = small_model()
    ema = ModelEMA(decay=0.5)
    ema.build(model)
    raw = [w.numpy() for w in ema.source_variables]
    for weight in ema.source_variables:
        weight.assign(weight + 2.0)
    ema.update()  # shadows = raw + 1
    trained = [w.numpy() for w in ema.source_variables]
    with ema.averaged_weights():
        for weight, r in zip(ema.source_variables, raw):
            np.testing.assert_allclose(weight.numpy(), r + 1.0, rtol=1e-6)
    for weight, t in zip(ema.source_variables, trained):
        np.testing.assert_array_equal(weight.numpy(), t)
    averaged = ema.averaged_values()
    assert len(averaged) == len(model.weights)
    for source, r in zip(ema.source_variables, raw):
        index = [id(w) for w in model.weights].index(id(source))
        np.testing.assert_allclose(averaged[index], r + 1.0, rtol=1e-6)


def test_state_round_trip_and_mismatch():
    model = small_model()
    ema = ModelEMA(decay=0.5)
    ema.build(model)
    for weight in ema.source_variables:
        weight.assign(weight + 2.0)
    ema.update()
    state = ema.get_state()
    other = ModelEMA(decay=0.5)
    other.set_model(model)
    other.set_state(state)  # Builds, then restores.
    for a, b in zip(ema.shadows, other.shadows):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    third = ModelEMA()
    third.set_model(small_model())
    with pytest.raises(ValueError, match="holds 2 averaged weights"):
        third.set_state(dict(list(state.items())[:2]))


def test_updates_each_replica_in_place_under_mirrored_strategy(two_cpu_strategy):
    strategy = two_cpu_strategy
    with strategy.scope():
        model = build_model("tiny", num_classes=2, image_size=16)
    ema = ModelEMA(decay=0.5, update_on_batch_end=False)
    ema.build(model)

    @tf.function
    def step():
        def replica_fn():
            for weight in model.trainable_variables:
                weight.assign_add(tf.ones_like(weight))
            ema.update()
        strategy.run(replica_fn)

    start = [s.numpy() for s in ema.shadows]
    step()
    for shadow, s, source in zip(ema.shadows, start, ema.source_variables):
        replicas = [v.numpy() for v in shadow.value.values]
        np.testing.assert_array_equal(replicas[0], replicas[1])
        moved = 0.5 if source.trainable else 0.0
        np.testing.assert_allclose(replicas[0], s + moved, rtol=1e-6)
    with ema.averaged_weights():
        np.testing.assert_allclose(
            model.trainable_variables[0].value.values[1].numpy(),
            start[0] + 0.5, rtol=1e-6,
        )


class Recorder(keras.callbacks.Callback):
    """The weights after every callback of the batch end (before ModelEMA)."""

    def __init__(self, variables):
        super().__init__()
        self.variables = variables
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append([v.numpy() for v in self.variables])


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_fit_updates_after_every_batch(steps_per_execution):
    keras.utils.set_random_seed(1)
    model = small_model()
    model.compile(keras.optimizers.SGD(0.1), "mse",
                  steps_per_execution=steps_per_execution)
    ema = ModelEMA(decay=0.8)
    ema.build(model)
    recorder = Recorder(ema.source_variables)
    start = [v.numpy() for v in ema.source_variables]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 3)), rng.normal(size=(24, 2))
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
              callbacks=[recorder, ema])
    # NumPy: the authors' update once per callback, with decay**k for the
    # k steps of each call (k = steps_per_execution).
    decay = 0.8**steps_per_execution
    expected = start
    for weights in recorder.seen:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    assert len(recorder.seen) == 2 * 6 // steps_per_execution
    for shadow, value in zip(ema.shadows, expected):
        np.testing.assert_allclose(shadow.numpy(), value, rtol=1e-5, atol=1e-6)
    # The shadows persist across fit() calls, like the optimizer's slots.
    before = [s.numpy() for s in ema.shadows]
    model.fit(x, y, batch_size=24, epochs=1, verbose=0, callbacks=[ema])
    assert not np.allclose(before[0], ema.shadows[0].numpy())


def test_errors():
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(decay=1.0)
    with pytest.raises(ValueError, match="no averaged weights"):
        ModelEMA().averaged_values()
    ema = ModelEMA()
    ema.build(small_model())
    with pytest.raises(ValueError, match="already averages"):
        ema.build(small_model())
