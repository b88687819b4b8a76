"""MetricsLogger: one JSON line per epoch, epochs redone after a resume dropped."""

import json

import keras
import numpy as np

from keras_csl.callbacks import MetricsLogger

X = np.random.default_rng(0).normal(size=(12, 3)).astype("float32")
Y = np.zeros((12, 1), "float32")


def model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    net = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    net.compile(keras.optimizers.SGD(0.1), "mse")
    return net


class AddValue(keras.callbacks.Callback):
    """A callback before the logger that adds a value, NaN at epoch 2."""

    def on_epoch_end(self, epoch, logs=None):
        logs["val_map"] = float("nan") if epoch == 1 else 10.0 * epoch


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_values_and_resume(tmp_path):
    path = tmp_path / "logs" / "metrics.jsonl"
    logger = MetricsLogger(path, global_batch_size=4)
    net = model()
    net.fit(X, Y, batch_size=4, epochs=3, verbose=0, callbacks=[AddValue(), logger])
    lines = read(path)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert lines[0]["val_map"] == 0.0 and np.isnan(lines[1]["val_map"])
    np.testing.assert_allclose([line["loss"] for line in lines],
                               net.history.history["loss"], rtol=1e-6)
    # SGD with a constant rate: the logged rate is the optimizer's.
    assert all(line["learning_rate"] == np.float32(0.1) for line in lines)
    for line in lines:  # 3 steps of 4 images per epoch.
        np.testing.assert_allclose(line["images_per_second"],
                                   4 * line["steps_per_second"], rtol=1e-9)
    assert [record["epoch"] for record in logger.records] == [1, 2, 3]
    # A resumed run that redoes epochs 2 and 3 replaces their lines.
    net.fit(X, Y, batch_size=4, epochs=3, initial_epoch=1, verbose=0,
            callbacks=[AddValue(), logger])
    assert [line["epoch"] for line in read(path)] == [1, 2, 3]
    assert [record["epoch"] for record in logger.records] == [2, 3]


def test_in_memory_only():
    logger = MetricsLogger()
    model().fit(X, Y, epochs=2, verbose=0, callbacks=[logger])
    assert [record["epoch"] for record in logger.records] == [1, 2]
