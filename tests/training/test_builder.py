"""A run's parts: the prior it starts with (logged), its TensorBoard step scalars."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_csl
from keras_csl.training import TrainConfig
from keras_csl.training import build_run
from keras_csl.training.builder import _StepScalars


@pytest.mark.parametrize("mode, left_out", [("selective", 2), ("ignore", 0)])
def test_the_log_of_a_prior_file_counts_what_the_loss_leaves_out(
        tmp_path, caplog, mode, left_out):
    path = str(tmp_path / "prior.csv")
    keras_csl.priors.write_prior_csv(path, [0.9, 0.1, 0.6, 0.2])
    config = TrainConfig(backbone="tiny", weights=None, num_classes=4,
                         image_size=32, precision="float32", prior=path,
                         loss=dict(mode=mode, prior_threshold=0.5))
    with caplog.at_level(logging.INFO, logger="keras_csl.training.builder"):
        run = build_run(config, steps_per_epoch=1)
    # Two classes above 0.5, but only selective mode leaves classes out.
    np.testing.assert_allclose(run.loss.prior, [0.9, 0.1, 0.6, 0.2], rtol=1e-6)
    assert f"{left_out} of 4 classes left out" in caplog.text


class CountingStepScalars(_StepScalars):
    """Counts the reads of the optimizer's step counter (device to host)."""

    reads = 0

    def _iterations(self):
        self.reads += 1
        return super()._iterations()


class SkipStep(keras.callbacks.Callback):
    """Takes one step back off the counter after global batch `at` (1-based),
    as a float16 step that overflowed leaves it."""

    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            self.model.optimizer.iterations.assign_sub(1)


def fit(callbacks, steps_per_execution=1, epochs=2, steps_per_epoch=4):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse",
                  steps_per_execution=steps_per_execution)
    x = np.ones((8, 2), "float32")
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2).repeat()
    model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch,
              callbacks=callbacks, verbose=0)
    return model


def logged_steps(log_dir):
    steps = {"step/loss": [], "step/learning_rate": []}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps[value.tag].append(event.step)
    assert steps["step/loss"] == steps["step/learning_rate"]
    return steps["step/loss"]


@pytest.mark.parametrize("steps_per_execution, expected", [
    # Steps 1..8; logged when the step enters a new block of 3.
    (1, [3, 6]),
    # Batch ends at steps 2, 4, 6, 8: the first ones of blocks 1 and 2.
    (2, [4, 6]),
])
def test_logs_the_first_step_of_each_block(tmp_path, steps_per_execution, expected):
    scalars = CountingStepScalars(str(tmp_path), every=3)
    fit([scalars], steps_per_execution=steps_per_execution)
    assert logged_steps(tmp_path) == expected
    # Once at the start, then only where a block may begin: not per batch.
    assert scalars.reads == 1 + len(expected)


def test_a_skipped_step_delays_the_log_to_the_counter(tmp_path):
    # The counter reads 1, 2, 2, 3, 4, 5, 6, 7 after the 8 batches: the
    # host count (3 at the third batch) runs ahead and the counter decides.
    fit([SkipStep(at=3), _StepScalars(str(tmp_path), every=3)])
    assert logged_steps(tmp_path) == [3, 6]


def test_a_second_fit_goes_on_from_the_counter(tmp_path):
    scalars = _StepScalars(str(tmp_path), every=3)
    model = fit([scalars], epochs=1)  # Steps 1..4: logs 3.
    model.fit(tf.data.Dataset.from_tensor_slices(
        (np.ones((4, 2), "float32"), np.ones((4, 1), "float32"))).batch(2),
        epochs=1, callbacks=[scalars], verbose=0)  # Steps 5, 6: logs 5 (the
    # first batch of a fit logs, as before), then 6.
    assert logged_steps(tmp_path) == [3, 5, 6]
