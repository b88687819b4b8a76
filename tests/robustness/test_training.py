"""Training with bad input: clear, early errors that name what is wrong.

Config errors, resume mismatches and old run folders; none of them trains
a model (each fails while the run is being built), so all are fast.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_csl import priors
from keras_csl.callbacks import PartialMAPValidation
from keras_csl.callbacks import TrainingCheckpoint
from keras_csl.training import TrainConfig
from keras_csl.training import apply_overrides
from keras_csl.training import build_run


def tiny(**changes):
    config = TrainConfig(backbone="tiny", weights=None, num_classes=3,
                         image_size=16, epochs=2, per_replica_batch_size=4,
                         precision="float32")
    return dataclasses.replace(config, **changes)


# ------------------------------------------------------------ config errors


@pytest.mark.parametrize("make, message", [
    (lambda: TrainConfig(loss={"gama_neg": 2.0}),
     r"Unknown keys 'gama_neg'; expected arguments of ClassAwareSelectiveLoss"),
    (lambda: apply_overrides(TrainConfig(), ["gamma_neg=2"]),
     r"`gamma_neg` is now `loss.gamma_neg`"),
    (lambda: apply_overrides(TrainConfig(), ["loss.loss_mode=ignore"]),
     r"'loss_mode' \(did you mean 'mode'\?\)"),
    (lambda: tiny(loss={"gamma_neg": -1.0}).validate(),
     r"config field `loss`.*argument `gamma_neg`.*Received: gamma_neg=-1.0"),
    (lambda: tiny(loss={"prior": [0.5, 0.5, 0.5]}).validate(),
     r"config field `loss.prior`. Expected None \(the `prior` field"),
    (lambda: tiny(dataset_options={"resize_mode": "pad"}).validate(),
     r"set `resize_mode=...` instead"),
    (lambda: tiny(resize_mode="letterbox").validate(),
     r"config field `resize_mode`. Expected one of \('squash', 'pad', 'crop'\)"),
    (lambda: tiny(val_num_thresholds=1).validate(),
     r"config field `val_num_thresholds`"),
    (lambda: build_run(tiny(), 0), r"argument `steps_per_epoch`.*Received: steps_per_epoch=0"),
])
def test_config_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_prior_files_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="config field `prior`.*no such file"):
        build_run(tiny(prior=str(tmp_path / "missing.csv")), 1)
    path = tmp_path / "prior.csv"
    priors.write_prior_csv(str(path), [0.1, 0.2])  # 2 classes, the model has 3
    with pytest.raises(ValueError, match="Expected 3 values"):
        build_run(tiny(prior=str(path)), 1)


def test_a_model_fn_of_another_input_size():
    def model_fn():
        images = keras.Input((24, 24, 3), name="images")
        pooled = keras.layers.GlobalAveragePooling2D()(images)
        return keras.Model(images, keras.layers.Dense(3)(pooled))

    with pytest.raises(ValueError, match="image_size=16"):
        build_run(tiny(), 1, model_fn=model_fn)


def test_an_exact_validation_that_overflows_is_an_error_not_a_number():
    images = np.zeros((10, 16, 16, 3), "float32")
    targets = np.eye(3, dtype="float32")[np.arange(10) % 3]
    validation = PartialMAPValidation((images, targets), num_thresholds=None,
                                      max_samples=4, batch_size=5)
    run = build_run(tiny(), 1, callbacks=[validation])
    validation.set_model(run.model)
    with pytest.raises(ValueError, match="max_samples=4"):
        validation.evaluate()


# --------------------------------------------------------- resume mismatch


def make_checkpoint(run_dir):
    """A complete (empty) checkpoint: enough for the resume checks."""
    folder = run_dir / "checkpoints" / "ckpt-1"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{}")


def test_resuming_with_other_steps_or_schedule(tmp_path):
    build_run(tiny(), 2, run_dir=tmp_path)  # writes config.json
    make_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"'epochs': \(2, 3\).*Use a new run_dir"):
        build_run(tiny(epochs=3), 2, run_dir=tmp_path)
    with pytest.raises(ValueError, match=r"'steps_per_epoch': \(2, 5\)"):
        build_run(tiny(), 5, run_dir=tmp_path)
    # Settings that do not change the schedule may change.
    build_run(tiny(loss={"gamma_neg": 3.0}), 2, run_dir=tmp_path)


def test_a_checkpoint_of_other_steps_in_fit(tmp_path):
    def fit(batch_size, epochs):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.fit(np.ones((8, 3)), np.ones((8, 2)), batch_size=batch_size,
                  epochs=epochs, verbose=0,
                  callbacks=[TrainingCheckpoint(tmp_path / "checkpoints")])

    fit(batch_size=2, epochs=1)  # 4 steps per epoch
    with pytest.raises(ValueError, match="4 optimizer steps after 1 epochs; 2 steps"):
        fit(batch_size=4, epochs=2)  # The same folder, 2 steps per epoch.


# ---------------------------------------------------------- old run folders


def test_an_old_run_folder_is_refused_with_directions(tmp_path):
    old = dict(tiny().to_dict(), loss_mode="selective", gamma_neg=1.0,
               prior_threshold=0.5, dataset_options={"resize_mode": "pad"})
    del old["loss"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError) as error:
        build_run(tiny(), 2, run_dir=tmp_path)
    text = str(error.value)
    assert "Cannot resume" in text and "older keras-csl" in text
    assert "gamma_neg -> loss.gamma_neg" in text and "loss_mode -> loss.mode" in text
    assert "dataset_options['resize_mode'] -> resize_mode" in text
    assert "new run folder" in text
    # Its checkpoints, in the old tf.train.Checkpoint format, are refused too.
    (tmp_path / "config.json").unlink()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"')
    with pytest.raises(ValueError, match="tf.train.Checkpoint format"):
        TrainingCheckpoint(tmp_path / "checkpoints").restore()
