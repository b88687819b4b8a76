"""The training loop: strategies agree, resume, validation, precision, files."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_csl
from keras_csl.training import TrainConfig
from keras_csl.training import inputs
from keras_csl.training import make_strategy
from keras_csl.training import train

GLOBAL_BATCH = 16
STEPS = 4
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
TARGETS = RNG.choice([-1.0, 0.0, 1.0], (64, 5)).astype("float32")
VAL_IMAGES = IMAGES[:40]
VAL_TARGETS = np.where(TARGETS[:40] < 0, 0.0, TARGETS[:40])


@pytest.fixture(autouse=True)
def _fresh_collective_keys():
    # Two MirroredStrategy objects in one process number their collectives
    # from the same keys and TensorFlow mixes them up ("Shape mismatch in
    # the collective instance"); TensorFlow's own tests move each new
    # strategy's keys away (`_collective_key_base`, "only set this in
    # tests"), and so do these, so that a strategy created here never
    # shares keys with one made by another test module.
    tf.distribute.MirroredStrategy._collective_key_base += 100_000


def mirrored():
    return make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])


def tiny_config(**changes):
    config = TrainConfig(
        backbone="tiny", weights=None, num_classes=5, image_size=32,
        epochs=2, per_replica_batch_size=GLOBAL_BATCH, learning_rate=1e-2,
        precision="float32", likelihood_topk=0, sync_batchnorm=True,
        prior_warmup_epochs=1,
    )
    return dataclasses.replace(config, **changes)


def run(strategy=None, run_dir=None, callbacks=(), val=True, **changes):
    strategy = strategy or tf.distribute.get_strategy()
    config = tiny_config(**changes)
    config = dataclasses.replace(
        config,
        per_replica_batch_size=GLOBAL_BATCH // strategy.num_replicas_in_sync,
    )
    return train(
        config,
        inputs.in_memory_train_data(IMAGES, TARGETS, GLOBAL_BATCH, seed=1),
        inputs.in_memory_val_data(VAL_IMAGES, VAL_TARGETS, GLOBAL_BATCH)
        if val else None,
        steps_per_epoch=STEPS,
        run_dir=None if run_dir is None else os.fspath(run_dir),
        strategy=strategy,
        callbacks=callbacks,
        verbose=0,
    )


def max_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def one_device():
    return run()


def test_one_device_run(one_device):
    result = one_device
    assert result.iterations == 2 * STEPS
    assert result.global_batch_size == GLOBAL_BATCH
    assert [sorted(h) for h in result.history][0] == sorted(
        ["loss", "learning_rate", "images_per_second", "val_map",
         "val_map_ema", "val_map_best"]
    )
    assert 0 <= result.best_map <= 100 and result.best_epoch in (1, 2)
    # The online prior was estimated after the warm-up epoch.
    assert result.loss.prior is not None
    # The learning rate of the last step is the schedule's final value.
    np.testing.assert_allclose(result.history[-1]["learning_rate"], 1e-2 / 25 / 1e4, rtol=1e-5)


def test_two_replicas_match_one_device(one_device):
    result = run(mirrored())
    # Float32 summation order only: measured 1e-6 to 4e-6 after 8 steps.
    assert max_difference(one_device.model.get_weights(), result.model.get_weights()) < 5e-5
    assert max_difference(one_device.ema.averaged_values(), result.ema.averaged_values()) < 1e-6
    np.testing.assert_allclose(one_device.loss.prior, result.loss.prior, atol=1e-6)
    for h1, h2 in zip(one_device.history, result.history):
        np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-5)
        np.testing.assert_allclose(h1["val_map"], h2["val_map"], atol=1e-3)


def test_moving_statistics_stay_equal_across_replicas():
    # Without synchronized BN each replica normalises with its own batch;
    # the loop averages the moving statistics so the copies never drift.
    result = run(mirrored(), val=False, epochs=1, sync_batchnorm=False)
    for variable in result.model.non_trainable_variables:
        copies = [v.numpy() for v in variable.value.values]
        np.testing.assert_array_equal(copies[0], copies[1])


class StopAt(keras.callbacks.Callback):
    """Simulates a crash at the start of an epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"killed at epoch {epoch}")


@pytest.mark.parametrize("prior_momentum", [0.0, 0.5])
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, prior_momentum):
    # With momentum, the first update after the restart blends with the
    # restored prior, as in the uninterrupted run.
    settings = dict(epochs=3, prior_momentum=prior_momentum, prior_warmup_epochs=0)
    uninterrupted = run(run_dir=tmp_path / "a", **settings)
    with pytest.raises(KeyboardInterrupt):
        run(run_dir=tmp_path / "b", callbacks=[StopAt(2)], **settings)
    resumed = run(run_dir=tmp_path / "b", **settings)
    assert resumed.iterations == uninterrupted.iterations == 3 * STEPS
    assert len(resumed.history) == 1  # only epoch 3 was run again
    assert max_difference(uninterrupted.model.get_weights(), resumed.model.get_weights()) < 1e-6
    assert max_difference(uninterrupted.ema.averaged_values(), resumed.ema.averaged_values()) < 1e-6
    np.testing.assert_allclose(uninterrupted.loss.prior, resumed.loss.prior, atol=1e-6)
    assert resumed.best_map == uninterrupted.best_map
    # metrics.jsonl has one line per epoch across both sessions.
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_finished_run_resumes_to_nothing_and_changed_settings_fail(tmp_path):
    first = run(run_dir=tmp_path, epochs=1, val=False)
    again = run(run_dir=tmp_path, epochs=1, val=False)
    assert again.history == [] and again.iterations == first.iterations
    with pytest.raises(ValueError, match="epochs"):
        run(run_dir=tmp_path, epochs=2, val=False)


def test_run_dir_files(tmp_path):
    result = run(run_dir=tmp_path)
    for name in ("config.json", "metrics.jsonl", "prior.csv", "best.json",
                 "best.weights.h5", "best.keras", "final.weights.h5"):
        assert (tmp_path / name).exists(), name
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-2")
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["epoch"] == result.best_epoch and best["weights"] == result.best_source
    np.testing.assert_allclose(best["val_map"], result.best_map)
    # The best model reloads (no optimizer inside) and predicts float32.
    model = keras.saving.load_model(str(tmp_path / "best.keras"))
    assert getattr(model, "optimizer", None) is None and model.input.name == "images"
    prior = keras_csl.priors.read_prior_csv(str(tmp_path / "prior.csv"))
    np.testing.assert_allclose(prior, result.loss.prior, rtol=1e-6)


def test_prior_from_a_file(tmp_path):
    path = str(tmp_path / "prior.csv")
    values = np.array([0.9, 0.1, 0.6, 0.0, 0.2], "float32")
    keras_csl.priors.write_prior_csv(path, values)
    result = run(val=False, epochs=1, prior=path)
    np.testing.assert_allclose(result.loss.prior, values)
    with pytest.raises(ValueError, match="no such file"):
        run(val=False, epochs=1, prior=str(tmp_path / "missing.csv"))


def test_jit_compile_matches(one_device):
    result = run(jit_compile=True)
    assert max_difference(one_device.model.get_weights(), result.model.get_weights()) < 1e-4


def test_jit_under_a_strategy_on_cpu_is_refused():
    with pytest.raises(ValueError, match="jit_compile"):
        run(mirrored(), jit_compile=True)


@pytest.mark.parametrize("precision, replicas", [("mixed_bfloat16", 1), ("mixed_float16", 2)])
def test_mixed_precision(precision, replicas):
    strategy = mirrored() if replicas == 2 else None
    result = run(strategy, epochs=1, precision=precision, likelihood_topk=2,
                 ema_decay=0.0)
    assert result.ema is None
    assert result.model.get_layer("tiny").get_layer("conv0").compute_dtype == precision[6:]
    assert result.model.output.dtype == "float32"
    assert np.isfinite(result.history[0]["loss"]) and np.isfinite(result.best_map)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_steps_per_execution_gives_the_same_weights(one_device):
    result = run(steps_per_execution=3)
    assert result.iterations == one_device.iterations
    assert max_difference(one_device.model.get_weights(), result.model.get_weights()) < 1e-6


def test_float16_overflow_on_one_replica_skips_the_step_on_all():
    from keras_csl.training.loop import _agree_on_finiteness

    strategy = mirrored()

    @tf.function
    def agree():
        def replica_fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            bad = tf.where(tf.equal(replica, 1), float("inf"), 1.0)
            return _agree_on_finiteness([tf.ones([2]), tf.fill([3], bad)])
        return strategy.run(replica_fn)

    for grads in zip(*[strategy.experimental_local_results(g) for g in agree()]):
        for per_replica in grads:
            assert np.isnan(per_replica.numpy()).all()


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append((batch, int(self.model.optimizer.iterations.numpy())))

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_callbacks_see_the_optimizer_and_can_stop_training():
    callback = StopAfterFirstEpoch()
    result = run(val=False, epochs=3, callbacks=[callback])
    assert len(result.history) == 1 and result.iterations == STEPS
    assert callback.seen == [(step, step + 1) for step in range(STEPS)]
    assert result.model.history.history["loss"] == [result.history[0]["loss"]]
