"""The training loop: strategies agree, `fit` agrees, resume, files, precision."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import average_precision_score

import keras_csl
from keras_csl.callbacks import TrainingCheckpoint
from keras_csl.models import get_model_card
from keras_csl.models import read_model_card
from keras_csl.training import TrainConfig
from keras_csl.training import build_run
from keras_csl.training import inputs
from keras_csl.training import train

GLOBAL_BATCH = 16
STEPS = 4
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
TARGETS = RNG.choice([-1.0, 0.0, 1.0], (64, 5)).astype("float32")
# 40 rows: the last batch is partial (40 = 2 x 16 + 8), also per replica.
VAL_IMAGES = IMAGES[:40]
VAL_TARGETS = np.where(TARGETS[:40] < 0, 0.0, TARGETS[:40])


def tiny_config(**changes):
    config = TrainConfig(
        backbone="tiny", weights=None, num_classes=5, image_size=32,
        epochs=2, per_replica_batch_size=GLOBAL_BATCH, learning_rate=1e-2,
        precision="float32", sync_batchnorm=True, prior_warmup_epochs=1,
        # Top-k 0: bit-comparable across replica counts (PITFALLS.md). The
        # threshold splits the classes of the final prior (test_one_device_run).
        loss=dict(gamma_unannotated=4.0, likelihood_topk=0, prior_threshold=0.53),
    )
    return dataclasses.replace(config, **changes)


def config_for(strategy, **changes):
    return tiny_config(
        per_replica_batch_size=GLOBAL_BATCH // strategy.num_replicas_in_sync,
        **changes,
    )


def train_fn():
    return inputs.in_memory_train_data(IMAGES, TARGETS, GLOBAL_BATCH, seed=1)


def val_fn():
    return inputs.in_memory_val_data(VAL_IMAGES, VAL_TARGETS, GLOBAL_BATCH)


def run(strategy=None, run_dir=None, callbacks=(), val=True, **changes):
    strategy = strategy or tf.distribute.get_strategy()
    return train(
        config_for(strategy, **changes),
        train_fn(),
        val_fn() if val else None,
        steps_per_epoch=STEPS,
        run_dir=None if run_dir is None else os.fspath(run_dir),
        strategy=strategy,
        callbacks=callbacks,
        verbose=0,
    )


def fit(strategy, **changes):
    """The same run with `model.fit` and the callbacks of `build_run`."""
    config = config_for(strategy, **changes)
    parts = build_run(config, STEPS, val_data=val_fn(), strategy=strategy)
    data_fn = train_fn()
    whole_batches = tf.distribute.InputContext()  # One pipeline, one replica.
    # The loop's batches in the loop's order; fit cuts each global batch
    # into per-replica halves as the loop's pipeline does.
    data = tf.data.Dataset.range(config.epochs).flat_map(
        lambda epoch: data_fn(whole_batches, epoch).take(STEPS)
    )
    parts.model.fit(data, epochs=config.epochs, steps_per_epoch=STEPS,
                    callbacks=parts.callbacks, verbose=0)
    return parts


def max_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def one_device():
    return run()


@pytest.fixture(scope="module")
def two_replicas(two_cpu_strategy):
    return run(two_cpu_strategy)


def test_one_device_run(one_device):
    result = one_device
    assert result.iterations == 2 * STEPS
    assert result.global_batch_size == GLOBAL_BATCH
    assert sorted(result.history[0]) == sorted(
        ["epoch", "loss", "mean_prediction", "learning_rate", "steps_per_second",
         "images_per_second", "val_map", "val_map_ema", "val_map_best"]
    )
    # After the warm-up epoch the prior is estimated and reported: measured
    # 0.565, 0.504, 0.553, 0.556, 0.560, so 4 classes above the threshold 0.53.
    assert result.loss.prior is not None
    assert (result.loss.prior > 0.53).sum() == 4
    assert result.history[1]["prior_above_threshold"] == 4
    assert 0 <= result.best_map <= 100 and result.best_epoch in (1, 2)
    # The learning rate after the last step is the schedule's final value.
    np.testing.assert_allclose(result.history[-1]["learning_rate"], 1e-2 / 25 / 1e4,
                               rtol=1e-5)
    # The last val_map is the exact mAP of the final raw weights (40 images
    # fit the exact metric), checked against scikit-learn class by class.
    scores = result.model.predict(VAL_IMAGES, verbose=0)
    expected = np.mean([
        average_precision_score(VAL_TARGETS[:, c], scores[:, c])
        for c in range(5) if 0 < VAL_TARGETS[:, c].sum() < 40
    ]) * 100
    np.testing.assert_allclose(result.history[-1]["val_map"], expected, rtol=1e-5)


def test_two_replicas_match_one_device(one_device, two_replicas):
    result = two_replicas
    # Float32 summation order only: measured 1e-6 to 4e-6 after 8 steps.
    assert max_difference(one_device.model.get_weights(), result.model.get_weights()) < 5e-5
    assert max_difference(one_device.ema.averaged_values(), result.ema.averaged_values()) < 1e-6
    np.testing.assert_allclose(one_device.loss.prior, result.loss.prior, atol=1e-6)
    for h1, h2 in zip(one_device.history, result.history):
        np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-5)
        np.testing.assert_allclose(h1["val_map"], h2["val_map"], atol=1e-3)


@pytest.mark.parametrize("replicas", [1, 2])
def test_fit_with_the_callbacks_follows_the_loop(one_device, two_replicas,
                                                 two_cpu_strategy, replicas):
    loop = one_device if replicas == 1 else two_replicas
    strategy = tf.distribute.get_strategy() if replicas == 1 else two_cpu_strategy
    parts = fit(strategy)
    # Same batches, loss scaling, optimizer, EMA and prior updates. Measured
    # on TF 2.21 CPU: raw weights, averaged weights and prior bit-equal
    # after 8 steps, with 1 and 2 replicas; the epoch's mean loss differs
    # in the 7th digit (averaged in another order). Tolerance: 1e-6.
    assert int(parts.optimizer.iterations.numpy()) == loop.iterations
    assert max_difference(loop.model.get_weights(), parts.model.get_weights()) < 1e-6
    assert max_difference(loop.ema.averaged_values(), parts.ema.averaged_values()) < 1e-6
    np.testing.assert_allclose(loop.loss.prior, parts.loss.prior, atol=1e-6)
    assert len(parts.metrics.records) == len(loop.history) == 2
    for h_loop, h_fit in zip(loop.history, parts.metrics.records):
        for key in ("loss", "mean_prediction", "val_map", "val_map_ema"):
            np.testing.assert_allclose(h_loop[key], h_fit[key], rtol=1e-6, err_msg=key)
    assert (parts.best.best_epoch, parts.best.best_source) == (
        loop.best_epoch, loop.best_source)


def test_moving_statistics_stay_equal_across_replicas(two_cpu_strategy):
    # Without synchronized BN each replica normalises with its own batch;
    # the loop averages the moving statistics so the copies never drift.
    result = run(two_cpu_strategy, val=False, epochs=1, sync_batchnorm=False)
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


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    # With momentum, the first update after the restart blends with the
    # restored prior, as in the uninterrupted run.
    settings = dict(epochs=3, prior_momentum=0.5, prior_warmup_epochs=0)
    uninterrupted = run(run_dir=tmp_path / "a", **settings)
    with pytest.raises(KeyboardInterrupt):
        run(run_dir=tmp_path / "b", callbacks=[StopAt(2)], **settings)
    resumed = run(run_dir=tmp_path / "b", **settings)
    assert resumed.iterations == uninterrupted.iterations == 3 * STEPS
    assert [h["epoch"] for h in resumed.history] == [3]  # only epoch 3 again
    assert max_difference(uninterrupted.model.get_weights(), resumed.model.get_weights()) < 1e-6
    assert max_difference(uninterrupted.ema.averaged_values(), resumed.ema.averaged_values()) < 1e-6
    np.testing.assert_allclose(uninterrupted.loss.prior, resumed.loss.prior, atol=1e-6)
    assert resumed.best_map == uninterrupted.best_map
    assert resumed.best_epoch == uninterrupted.best_epoch
    # metrics.jsonl has one line per epoch across both sessions.
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_finished_run_resumes_to_nothing_and_changed_settings_fail(tmp_path):
    first = run(run_dir=tmp_path, epochs=1, val=False)
    again = run(run_dir=tmp_path, epochs=1, val=False)
    assert again.history == [] and again.iterations == first.iterations
    with pytest.raises(ValueError, match="epochs"):
        run(run_dir=tmp_path, epochs=2, val=False)


def test_run_dir_files_and_model_cards(tmp_path):
    result = run(run_dir=tmp_path, log_every_steps=2)
    for name in ("config.json", "metrics.jsonl", "prior.csv", "best.json",
                 "best.weights.h5", "best.keras", "final.keras",
                 "final.weights.h5"):
        assert (tmp_path / name).exists(), name
    assert TrainingCheckpoint(tmp_path / "checkpoints").latest().endswith("ckpt-2")
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["epoch"] == result.best_epoch and best["weights"] == result.best_source
    np.testing.assert_allclose(best["val_map"], result.best_map)
    # Both models carry the card: classes (by index here: no classes.csv),
    # preprocessing, logits, architecture, the run folder, the best epoch.
    card = read_model_card(tmp_path / "best.keras")
    assert card.class_ids == ("0", "1", "2", "3", "4") and card.image_size == 32
    assert (card.resize_mode, card.jpeg_downscale, card.from_logits) == ("squash", True, True)
    assert card.architecture == "tiny" and card.source == str(tmp_path)
    assert card.extra == {"best_epoch": result.best_epoch, "val_map": best["val_map"],
                          "weights": result.best_source}
    assert read_model_card(tmp_path / "final.keras").extra == {"epoch": 2, "weights": "raw"}
    # The best model reloads (no optimizer inside) and predicts float32.
    model = keras.saving.load_model(str(tmp_path / "best.keras"))
    assert getattr(model, "optimizer", None) is None and model.input.name == "images"
    final = keras.saving.load_model(str(tmp_path / "final.keras"))
    np.testing.assert_allclose(final.predict(IMAGES[:4], verbose=0),
                               result.model.predict(IMAGES[:4], verbose=0), atol=1e-6)
    prior = keras_csl.priors.read_prior_csv(str(tmp_path / "prior.csv"))
    np.testing.assert_allclose(prior, result.loss.prior, rtol=1e-6)
    # TensorBoard (Keras's callback, run by the loop): epoch scalars.
    tags = set()
    for path in (tmp_path / "logs").rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_loss", "epoch_map", "epoch_map_ema", "epoch_learning_rate",
            "step/loss", "step/learning_rate"} <= tags


def test_a_model_fn_without_card_layer_is_wrapped_before_training(tmp_path):
    def model_fn():
        images = keras.Input((32, 32, 3), name="images")
        x = keras.layers.Conv2D(4, 3, strides=4)(images)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(images, keras.layers.Dense(5)(x), name="mine")

    result = train(tiny_config(epochs=1, ema_decay=0.0), train_fn(), val_fn(),
                   steps_per_epoch=2, run_dir=str(tmp_path), verbose=0,
                   model_fn=model_fn)
    assert get_model_card(result.model).architecture == "mine"
    assert result.iterations == 2
    assert read_model_card(tmp_path / "best.keras").image_size == 32


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


def test_jit_under_a_strategy_on_cpu_is_refused(two_cpu_strategy):
    with pytest.raises(ValueError, match="jit_compile"):
        run(two_cpu_strategy, jit_compile=True)


@pytest.mark.parametrize("precision, replicas", [("mixed_bfloat16", 1), ("mixed_float16", 2)])
def test_mixed_precision(precision, replicas, two_cpu_strategy):
    strategy = two_cpu_strategy if replicas == 2 else None
    config_loss = dict(tiny_config().loss, likelihood_topk=2)
    result = run(strategy, epochs=1, precision=precision, loss=config_loss,
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
    assert max_difference(one_device.ema.averaged_values(), result.ema.averaged_values()) < 1e-6


def test_float16_overflow_on_one_replica_skips_the_step_on_all(two_cpu_strategy):
    from keras_csl.training.loop import _agree_on_finiteness

    strategy = two_cpu_strategy

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
