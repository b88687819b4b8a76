"""ModelEMA: the authors' update over all weights, swap, replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl.models import build_model
from keras_csl.training import ModelEMA
from keras_csl.training import make_strategy


@pytest.fixture(autouse=True)
def _fresh_collective_keys():
    # Two MirroredStrategy objects in one process number their collectives
    # from the same keys and TensorFlow mixes them up ("Shape mismatch in
    # the collective instance"); TensorFlow's own tests move each new
    # strategy's keys away (`_collective_key_base`, "only set this in
    # tests"), and so do these, so that a strategy created here never
    # shares keys with one made by another test module.
    tf.distribute.MirroredStrategy._collective_key_base += 100_000


def small_model():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_update_is_the_authors_formula_over_every_float_weight():
    model = small_model()
    ema = ModelEMA(model, decay=0.75)
    # Every float weight, BN moving statistics included; not the seed state.
    assert len(ema.shadows) == len(model.weights)
    assert any("moving_mean" in v.path for v in ema.source_variables)
    start = [w.numpy() for w in model.weights]
    target = [w + 1.0 for w in start]
    for weight, value in zip(model.weights, target):
        weight.assign(value)
    ema.update()
    ema.update()
    for shadow, s, t in zip(ema.shadows, start, target):
        # Two steps from s towards t: t + (s - t) * decay^2.
        # float32 rounding of two updates: ~1 ulp of the weights (about 1.2).
        np.testing.assert_allclose(shadow.numpy(), t + (s - t) * 0.75**2, rtol=1e-6, atol=2e-7)


def test_averaged_weights_swaps_in_and_back():
    model = small_model()
    ema = ModelEMA(model, decay=0.5)
    raw = [w.numpy() for w in model.weights]
    for weight in model.weights:
        weight.assign(weight + 2.0)
    ema.update()  # shadows = raw + 1
    trained = [w.numpy() for w in model.weights]
    with ema.averaged_weights():
        for weight, r in zip(model.weights, raw):
            np.testing.assert_allclose(weight.numpy(), r + 1.0, rtol=1e-6)
    for weight, t in zip(model.weights, trained):
        np.testing.assert_array_equal(weight.numpy(), t)
    for value, r in zip(ema.averaged_values(), raw):
        np.testing.assert_allclose(value, r + 1.0, rtol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    model = small_model()
    ema = ModelEMA(model, decay=0.5)
    for weight in model.weights:
        weight.assign(weight + 2.0)
    ema.update()
    path = tf.train.Checkpoint(ema=ema).write(str(tmp_path / "ema"))
    other = ModelEMA(model, decay=0.5)
    tf.train.Checkpoint(ema=other).read(path).assert_existing_objects_matched()
    for a, b in zip(ema.shadows, other.shadows):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The EMA does not carry the model into the checkpoint.
    names = [name for name, _ in tf.train.list_variables(path)]
    assert all(name.startswith(("ema/", "_CHECKPOINTABLE", "save_counter")) for name in names)


def test_updates_each_replica_in_place_under_mirrored_strategy():
    strategy = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build_model("tiny", num_classes=2, image_size=16)
        ema = ModelEMA(model, decay=0.5)

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
        replicas = [v.numpy() for v in shadow.values]
        np.testing.assert_array_equal(replicas[0], replicas[1])
        moved = 0.5 if source.trainable else 0.0
        np.testing.assert_allclose(replicas[0], s + moved, rtol=1e-6)
    with ema.averaged_weights(strategy):
        np.testing.assert_allclose(
            model.trainable_variables[0].value.values[1].numpy(),
            start[0] + 0.5, rtol=1e-6,
        )
