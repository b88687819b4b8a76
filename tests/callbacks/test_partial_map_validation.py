"""PartialMAPValidation: the streaming partial mAP, raw and EMA, any strategy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import average_precision_score

from keras_csl.callbacks import ModelEMA
from keras_csl.callbacks import PartialMAPValidation

RNG = np.random.default_rng(3)
X = RNG.normal(size=(45, 6)).astype("float32")  # 45: partial last batches.
Y = RNG.choice([-1.0, 0.0, 1.0], size=(45, 4), p=[0.3, 0.4, 0.3]).astype("float32")


def model_in(strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
        model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def sklearn_partial_map(targets, scores):
    """Macro AP (percent) over the annotated entries, class by class."""
    values = []
    for c in range(targets.shape[1]):
        keep = targets[:, c] >= 0
        t, s = targets[keep, c], scores[keep, c]
        if 0 < t.sum() < len(t):
            values.append(average_precision_score(t, s))
    return 100 * float(np.mean(values))


def evaluate(model, data, **kwargs):
    callback = PartialMAPValidation(data, **kwargs)
    callback.set_model(model)
    return callback, callback.evaluate()


def test_exact_value_is_sklearn_and_bounded_is_close():
    model = model_in()
    expected = sklearn_partial_map(Y, model.predict(X, verbose=0))
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    _, exact = evaluate(model, data, num_thresholds=None, max_samples=45)
    np.testing.assert_allclose(exact["val_map"], expected, rtol=1e-5)
    _, bounded = evaluate(model, data, num_thresholds=1000)
    assert abs(bounded["val_map"] - expected) < 0.1
    # Arrays and a dataset function give the same.
    _, from_arrays = evaluate(model, (X, Y), num_thresholds=None, max_samples=45,
                              batch_size=7)
    np.testing.assert_allclose(from_arrays["val_map"], expected, rtol=1e-5)


def test_memory_is_the_metrics_buffers():
    model = model_in()
    bounded, _ = evaluate(model, (X, Y), num_thresholds=500)
    sizes = {v.path.split("/")[-1]: int(np.prod(v.shape)) * 4
             for v in bounded.metric.variables}
    # 8 bytes per class and bin (positive and negative counts), the NaN
    # counts per class and the counter of batches with bad targets.
    assert sizes == {"positive_counts": 4 * 4 * 500, "negative_counts": 4 * 4 * 500,
                     "nan_counts": 4 * 4, "rejected_batches": 4}
    exact, _ = evaluate(model, (X, Y), num_thresholds=None, max_samples=45)
    sizes = {v.path.split("/")[-1]: int(np.prod(v.shape)) * 4
             for v in exact.metric.variables}
    # Scores and codes (4 bytes each per sample and class), + 3 counters.
    assert sum(sizes.values()) == 8 * 45 * 4 + 3 * 4, sizes


def test_two_replicas_score_like_one_device(two_cpu_strategy):
    one = model_in()
    expected = sklearn_partial_map(Y, one.predict(X, verbose=0))
    two = model_in(two_cpu_strategy)
    two.set_weights(one.get_weights())
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    # 45 rows in per-replica batches of 8: replicas get 24 and 21 rows, the
    # last ones padded; each writes its own slot of the exact buffer.
    callback, logs = evaluate(two, data, num_thresholds=None, max_samples=24,
                              batch_size=8)
    np.testing.assert_allclose(logs["val_map"], expected, rtol=1e-5)
    assert callback.metric.scores.shape == (2 * 24, 4)
    _, bounded = evaluate(two, data, num_thresholds=1000, batch_size=8)
    _, bounded_one = evaluate(one, data, num_thresholds=1000)
    np.testing.assert_allclose(bounded["val_map"], bounded_one["val_map"], rtol=1e-6)
    # Too small a buffer is an error, never a plausible number.
    with pytest.raises(ValueError, match="max_samples"):
        evaluate(two, data, num_thresholds=None, max_samples=16, batch_size=8)


def test_in_fit_raw_and_ema_values_reach_the_logs():
    model = model_in()
    ema = ModelEMA(decay=0.5)
    validation = PartialMAPValidation((X, Y), ema=ema, num_thresholds=None,
                                      max_samples=45)
    history = model.fit(X, np.where(Y > 0, 1.0, 0.0), batch_size=15, epochs=2,
                        verbose=0, callbacks=[ema, validation])
    assert len(history.history["val_map"]) == 2
    np.testing.assert_allclose(
        history.history["val_map"][-1],
        sklearn_partial_map(Y, model.predict(X, verbose=0)), rtol=1e-5)
    with ema.averaged_weights():
        expected_ema = sklearn_partial_map(Y, model.predict(X, verbose=0))
    np.testing.assert_allclose(history.history["val_map_ema"][-1], expected_ema,
                               rtol=1e-5)


def test_auto_takes_the_exact_metric_where_it_fits(two_cpu_strategy):
    model = model_in()
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    assert evaluate(model, (X, Y))[0].metric.num_thresholds is None  # 45 rows
    assert evaluate(model, data)[0].metric.num_thresholds == 1000  # size unknown
    exact, logs = evaluate(model, data, num_examples=45)
    assert exact.metric.num_thresholds is None and exact.metric.max_samples == 45
    # 2 replicas, per-replica batches of 8: at most 3 batches (24 rows) each.
    two = evaluate(model_in(two_cpu_strategy), data, num_examples=45, batch_size=8)[0]
    assert two.metric.max_samples == 24
    # 8 bytes x 1 replica x 10^7 rows x 4 classes > 256 MiB: bounded.
    assert evaluate(model, data, num_examples=10**7)[0].metric.num_thresholds == 1000


def test_errors():
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    with pytest.raises(ValueError, match="max_samples"):
        evaluate(model_in(), data, num_thresholds=None)
    with pytest.raises(ValueError, match="num_thresholds"):
        PartialMAPValidation((X, Y), num_thresholds=1)
    with pytest.raises(ValueError, match="ema"):
        PartialMAPValidation((X, Y), ema="yes")
    with pytest.raises(ValueError, match="validation_data"):
        evaluate(model_in(), {"x": X})
