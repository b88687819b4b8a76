import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_csl
from keras_csl import priors


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype("float64")))


def build(num_classes=4, lr=0.0, with_tracker=True):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(num_classes, bias_initializer="ones")(inputs))
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=num_classes, likelihood_topk=0, prior_threshold=0.5)
    metrics = [keras_csl.metrics.MeanPrediction(num_classes)] if with_tracker else []
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss, metrics=metrics)
    return model, loss


def data(n=24, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32") + shift
    y = rng.choice([-1.0, 0.0, 1.0], size=(n, 4)).astype("float32")
    return x, y


def test_training_means_survive_validation():
    model, loss = build()
    x, y = data()
    x_val, y_val = data(8, seed=1, shift=4.0)
    updater = keras_csl.callbacks.ClassPriorUpdater(loss)
    model.fit(x, y, batch_size=8, epochs=1, validation_data=(x_val, y_val), callbacks=[updater], verbose=0)
    expected = sigmoid(model.predict(x, verbose=0)).mean(0)
    np.testing.assert_allclose(loss.prior, expected, rtol=1e-5)
    assert not np.allclose(expected, sigmoid(model.predict(x_val, verbose=0)).mean(0), rtol=1e-2)


def test_dataset_pass_warmup_every_and_momentum(tmp_path):
    model, loss = build(with_tracker=False)
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    updater = keras_csl.callbacks.ClassPriorUpdater(
        loss, dataset=dataset, warmup_epochs=1, every_n_epochs=2, momentum=0.5,
        csv_path=str(tmp_path / "prior-{epoch}.csv"), class_names=["a", "b", "c", "d"], verbose=0,
    )
    model.fit(x, y, batch_size=8, epochs=5, callbacks=[updater], verbose=0)
    # Updates after epochs 3 and 5 (1-based): warm-up 1, then every 2.
    assert [epoch for epoch, _ in updater.history] == [2, 4]
    estimate = sigmoid(model.predict(x, verbose=0)).mean(0)
    # lr 0: both estimates are equal, and momentum keeps them so.
    np.testing.assert_allclose(loss.prior, estimate, rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior-3.csv", "prior-5.csv"]
    np.testing.assert_allclose(priors.read_prior_csv(tmp_path / "prior-5.csv"), loss.prior, rtol=1e-6)


def test_momentum_blends_with_the_loss_prior_across_fits():
    # The previous estimate is the loss's prior, so smoothing goes on in a
    # second fit() (or a resumed run, whose checkpoint restores the prior).
    model, loss = build(lr=0.0, with_tracker=False)
    x, y = data()
    first = tf.data.Dataset.from_tensor_slices((x, y)).batch(24)
    updater = keras_csl.callbacks.ClassPriorUpdater(loss, dataset=first, momentum=0.75, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[updater], verbose=0)
    p1 = loss.prior.copy()
    np.testing.assert_allclose(p1, sigmoid(model.predict(x, verbose=0)).mean(0), rtol=1e-5)
    updater.dataset = tf.data.Dataset.from_tensor_slices((x + 2.0, y)).batch(24)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[updater], verbose=0)
    p2_raw = sigmoid(model.predict(x + 2.0, verbose=0)).mean(0)
    np.testing.assert_allclose(loss.prior, 0.75 * p1 + 0.25 * p2_raw, rtol=1e-5)


def test_inference_pass_respects_probability_outputs():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="sigmoid")(inputs))
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=4, from_logits=False, likelihood_topk=0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    updater = keras_csl.callbacks.ClassPriorUpdater(loss, dataset=dataset, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[updater], verbose=0)
    # No second sigmoid: the prior is the mean of the probabilities.
    np.testing.assert_allclose(loss.prior, model.predict(x, verbose=0).mean(0), rtol=1e-5)


def test_tracker_and_loss_must_agree_on_logits():
    model, loss = build(with_tracker=False)
    tracker = keras_csl.metrics.MeanPrediction(4, from_logits=False)
    model.compile(optimizer="sgd", loss=loss, metrics=[tracker])
    x, y = data()
    with pytest.raises(ValueError, match="from_logits=False, loss from_logits=True"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras_csl.callbacks.ClassPriorUpdater(loss)])


def test_logs_how_many_classes_the_prior_excludes():
    # Zero weights, no learning: each prior is sigmoid(bias), i.e. 0.27,
    # 0.73, 0.12 and 0.88; two of the four exceed the threshold 0.5.
    inputs = keras.Input((3,))
    biases = keras.initializers.Constant([-1.0, 1.0, -2.0, 2.0])
    model = keras.Model(inputs, keras.layers.Dense(
        4, kernel_initializer="zeros", bias_initializer=biases)(inputs))
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=4, likelihood_topk=0,
                                             prior_threshold=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss,
                  metrics=[keras_csl.metrics.MeanPrediction(4)])
    x, y = data()
    updater = keras_csl.callbacks.ClassPriorUpdater(loss, warmup_epochs=1)
    history = model.fit(x, y, batch_size=8, epochs=2, callbacks=[updater], verbose=0)
    np.testing.assert_allclose(loss.prior, sigmoid(np.array([-1.0, 1.0, -2.0, 2.0])),
                               rtol=1e-5)
    # No prior during the warm-up epoch (no value), then the classes above 0.5.
    assert history.history["prior_above_threshold"] == [2]


def test_threshold_zero_turns_the_class_aware_rule_off_in_the_logs():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(4, bias_initializer="ones")(inputs))
    loss = keras_csl.ClassAwareSelectiveLoss(
        num_classes=4, likelihood_topk=0, prior_threshold=0.0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss,
                  metrics=[keras_csl.metrics.MeanPrediction(4)])
    x, y = data()
    updater = keras_csl.callbacks.ClassPriorUpdater(loss, warmup_epochs=0)
    history = model.fit(x, y, batch_size=8, epochs=1, callbacks=[updater], verbose=0)
    # Biases of 1: every class has a prior near sigmoid(1) = 0.73 > 0, yet
    # the authors' `if args.prior_threshold:` leaves no class out at 0.
    assert (loss.prior > 0.3).all()
    assert history.history["prior_above_threshold"] == [0]


def test_resets_between_fits():
    model, loss = build()
    x, y = data()
    updater = keras_csl.callbacks.ClassPriorUpdater(loss)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[updater], verbose=0)
    assert len(updater.history) == 2
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[updater], verbose=0)
    assert len(updater.history) == 1


def test_prior_changes_the_training_loss():
    model, loss = build(lr=0.0)
    x, y = data()
    updater = keras_csl.callbacks.ClassPriorUpdater(loss)
    history = model.fit(x, y, batch_size=24, epochs=2, callbacks=[updater], verbose=0)
    logits = model.predict(x, verbose=0)
    from csl_reference import csl_reference

    first = csl_reference(y, logits, likelihood_topk=0).mean()
    second = csl_reference(y, logits, likelihood_topk=0, prior=loss.prior, prior_threshold=0.5).mean()
    np.testing.assert_allclose(history.history["loss"], [first, second], rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="num_classes"):
        keras_csl.callbacks.ClassPriorUpdater(keras_csl.ClassAwareSelectiveLoss())
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=4)
    with pytest.raises(ValueError, match="every_n_epochs"):
        keras_csl.callbacks.ClassPriorUpdater(loss, every_n_epochs=0)
    with pytest.raises(ValueError, match="momentum"):
        keras_csl.callbacks.ClassPriorUpdater(loss, momentum=1.0)
    model, loss = build(with_tracker=False)
    x, y = data()
    with pytest.raises(ValueError, match="MeanPrediction"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras_csl.callbacks.ClassPriorUpdater(loss)])


def test_mean_prediction_metric():
    metric = keras_csl.metrics.MeanPrediction(2, from_logits=False)
    metric.update_state([[1, -1], [0, 1]], [[0.2, 0.9], [0.4, 0.7]])
    np.testing.assert_allclose(metric.class_means(), [0.3, 0.8], rtol=1e-6)
    assert float(metric.result()) == pytest.approx(1.1)
    clone = keras_csl.metrics.MeanPrediction.from_config(metric.get_config())
    assert clone.get_config() == metric.get_config()
    metric.reset_state()
    # Weighted rows: 3 * [0.2, 0.9] + 1 * [0.4, 0.7] over a weight of 4; a
    # zero-weighted padding row is ignored.
    metric.update_state(None, [[0.2, 0.9], [0.4, 0.7], [0.99, 0.99]], sample_weight=[3.0, 1.0, 0.0])
    np.testing.assert_allclose(metric.class_means(), [0.25, 0.85], rtol=1e-6)
    metric.reset_state()
    with pytest.raises(ValueError, match="no predictions"):
        metric.class_means()
