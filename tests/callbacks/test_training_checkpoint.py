"""TrainingCheckpoint: a fit killed mid-epoch resumes to the same weights."""

import json

import keras
import numpy as np
import pytest

import keras_csl
from keras_csl.callbacks import BestModelCheckpoint
from keras_csl.callbacks import ClassPriorUpdater
from keras_csl.callbacks import MetricsLogger
from keras_csl.callbacks import ModelEMA
from keras_csl.callbacks import PartialMAPValidation
from keras_csl.callbacks import TrainingCheckpoint

RNG = np.random.default_rng(7)
X = RNG.normal(size=(32, 6)).astype("float32")
Y = RNG.choice([-1.0, 0.0, 1.0], size=(32, 4)).astype("float32")
X_VAL = RNG.normal(size=(20, 6)).astype("float32")
Y_VAL = RNG.choice([0.0, 1.0], size=(20, 4)).astype("float32")
EPOCHS = 4


def make_run(folder):
    """Everything a process builds before `fit` (same seed every time)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="images")
    x = keras.layers.Dense(8)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=4, likelihood_topk=0,
                                             prior_threshold=0.5)
    schedule = keras.optimizers.schedules.CosineDecay(0.05, EPOCHS * 4)
    model.compile(keras.optimizers.AdamW(schedule), loss,
                  metrics=[keras_csl.metrics.MeanPrediction(4)])
    ema = ModelEMA(decay=0.8)
    best = BestModelCheckpoint(str(folder / "best.keras"), ema=ema, verbose=0)
    callbacks = [
        ema,
        PartialMAPValidation((X_VAL, Y_VAL), ema=ema, num_thresholds=None,
                             max_samples=20),
        best,
        ClassPriorUpdater(loss, momentum=0.5, verbose=0),
        TrainingCheckpoint(folder / "checkpoints", track=[ema, best]),
        MetricsLogger(folder / "metrics.jsonl"),
    ]
    return model, loss, ema, best, callbacks


class Crash(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self.params and batch == 1 and self._epoch == 2:
            raise RuntimeError("killed in the middle of epoch 3")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


def fit(model, callbacks, epochs=EPOCHS):
    return model.fit(X, Y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=callbacks)


def test_a_killed_fit_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    model_a, loss_a, ema_a, best_a, callbacks = make_run(tmp_path / "a")
    fit(model_a, callbacks)

    folder = tmp_path / "b"
    model, _, _, _, callbacks = make_run(folder)
    with pytest.raises(RuntimeError, match="killed"):
        fit(model, callbacks + [Crash()])
    # A new process: everything built again, then the same call.
    model_b, loss_b, ema_b, best_b, callbacks = make_run(folder)
    history = fit(model_b, callbacks)
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only

    assert int(model_b.optimizer.iterations.numpy()) == EPOCHS * 4
    for a, b in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for a, b in zip(model_a.optimizer.variables, model_b.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    for a, b in zip(ema_a.averaged_values(), ema_b.averaged_values()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(loss_a.prior, loss_b.prior, atol=1e-6)
    assert best_a.get_state() == best_b.get_state()
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    # Two checkpoints kept (the default), the last one complete.
    checkpoint = TrainingCheckpoint(folder / "checkpoints")
    assert [epoch for epoch, _ in checkpoint.checkpoints()] == [3, 4]


def test_partial_folders_are_ignored_and_arguments_checked(tmp_path):
    (tmp_path / "ckpt-3.partial").mkdir()
    (tmp_path / "ckpt-2").mkdir()  # No state.json: incomplete.
    assert TrainingCheckpoint(tmp_path).latest() is None
    with pytest.raises(ValueError, match="keep"):
        TrainingCheckpoint(tmp_path, keep=0)
    with pytest.raises(ValueError, match="different classes"):
        TrainingCheckpoint(tmp_path, track=[ModelEMA(), ModelEMA()])


JAX_SCRIPT = """
import json, pathlib, sys
sys.path.insert(0, sys.argv[2])
import keras, numpy as np
import test_training_checkpoint as t
root = pathlib.Path(sys.argv[1])
model_a, loss_a, ema_a, best_a, callbacks = t.make_run(root / "a")
t.fit(model_a, callbacks, epochs=3)
model, _, _, _, callbacks = t.make_run(root / "b")
try:  # Killed in the middle of the third epoch.
    t.fit(model, callbacks + [t.Crash()], epochs=3)
except RuntimeError:
    pass
model_b, loss_b, ema_b, best_b, callbacks = t.make_run(root / "b")
history = t.fit(model_b, callbacks, epochs=3)
def gap(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))
print(json.dumps(dict(
    backend=keras.backend.backend(),
    epochs_rerun=len(history.history["loss"]),
    weights=gap(model_a.get_weights(), model_b.get_weights()),
    ema=gap(ema_a.averaged_values(), ema_b.averaged_values()),
    ema_vs_raw=gap(ema_b.averaged_values(), model_b.get_weights()),
    prior=float(np.abs(loss_a.prior - loss_b.prior).max()),
    best=[best_a.get_state(), best_b.get_state()],
)))
"""


@pytest.mark.slow
def test_the_same_on_jax(tmp_path):
    # keras.ops only: the callbacks train, checkpoint and resume on JAX too.
    pytest.importorskip("jax")
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path), here],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax" and report["epochs_rerun"] == 1
    assert report["weights"] < 1e-6 and report["ema"] < 1e-6 and report["prior"] < 1e-6
    assert report["ema_vs_raw"] > 1e-3  # The average did move apart.
    assert report["best"][0] == report["best"][1] and report["best"][0]["best_epoch"] > 0
