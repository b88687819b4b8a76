"""The prior must reach already-compiled train steps on every backend."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from csl_reference import csl_reference

import keras_csl

TARGETS = np.array([[1, 0, -1, -1], [-1, 1, 0, -1]], dtype="float32")
PRIOR = np.array([0.9, 0.0, 0.7, 0.1], dtype="float32")


def zero_logit_model():
    inputs = keras.Input((3,), name="features")
    outputs = keras.layers.Dense(4, kernel_initializer="zeros")(inputs)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_set_prior_reaches_compiled_steps(jit_compile):
    model = zero_logit_model()
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=4, likelihood_topk=0, prior_threshold=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss, jit_compile=jit_compile)
    x = np.ones((2, 3), "float32")
    zeros = np.zeros((2, 4), "float32")
    before = csl_reference(TARGETS, zeros, likelihood_topk=0).mean()
    after = csl_reference(TARGETS, zeros, likelihood_topk=0, prior=PRIOR, prior_threshold=0.5).mean()
    assert abs(before - after) > 0.1
    np.testing.assert_allclose(model.evaluate(x, TARGETS, verbose=0), before, rtol=1e-6)
    np.testing.assert_allclose(model.train_on_batch(x, TARGETS), before, rtol=1e-6)
    loss.set_prior(PRIOR)
    np.testing.assert_allclose(model.evaluate(x, TARGETS, verbose=0), after, rtol=1e-6)
    np.testing.assert_allclose(model.train_on_batch(x, TARGETS), after, rtol=1e-6)


def test_set_prior_reaches_compiled_steps_under_mirrored_strategy(two_cpu_strategy):
    with two_cpu_strategy.scope():
        model = zero_logit_model()
        loss = keras_csl.ClassAwareSelectiveLoss(num_classes=4, likelihood_topk=0, prior_threshold=0.5)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
    x = np.ones((4, 3), "float32")
    y = np.concatenate([TARGETS, TARGETS])  # 2 rows per replica.
    zeros = np.zeros((4, 4), "float32")
    before = csl_reference(y, zeros, likelihood_topk=0).mean()
    after = csl_reference(y, zeros, likelihood_topk=0, prior=PRIOR, prior_threshold=0.5).mean()
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=4, verbose=0), before, rtol=1e-6)
    np.testing.assert_allclose(model.train_on_batch(x, y), before, rtol=1e-6)
    loss.set_prior(PRIOR)  # Cross-replica context, after both steps were traced.
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=4, verbose=0), after, rtol=1e-6)
    np.testing.assert_allclose(model.train_on_batch(x, y), after, rtol=1e-6)


def _train_one_epoch(strategy, x, y, prior):
    with strategy.scope():
        keras.utils.set_random_seed(3)
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(5)(inputs))
        loss = keras_csl.ClassAwareSelectiveLoss(num_classes=5, likelihood_topk=0, prior_threshold=0.5)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
    loss.set_prior(prior)  # Assigned in cross-replica context, after compile.
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return model.get_weights(), model.evaluate(x, y, batch_size=8, verbose=0)


def test_mirrored_strategy_matches_one_device(two_cpu_strategy):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.choice([-1.0, 0.0, 1.0], size=(32, 5)).astype("float32")
    prior = np.array([0.9, 0.1, 0.6, 0.0, 0.2], "float32")
    mirrored = two_cpu_strategy
    assert mirrored.num_replicas_in_sync == 2
    weights_1, loss_1 = _train_one_epoch(tf.distribute.get_strategy(), x, y, prior)
    weights_2, loss_2 = _train_one_epoch(mirrored, x, y, prior)
    for w1, w2 in zip(weights_1, weights_2):
        np.testing.assert_allclose(w1, w2, atol=1e-6)
    np.testing.assert_allclose(loss_1, loss_2, rtol=1e-6)
    # And the prior was used: without it the weights differ.
    weights_0, _ = _train_one_epoch(tf.distribute.get_strategy(), x, y, np.zeros(5, "float32"))
    assert max(np.abs(a - b).max() for a, b in zip(weights_0, weights_1)) > 1e-3


JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import keras_csl
    sys.path.insert(0, sys.argv[1])
    from csl_reference import csl_reference, sigmoid

    assert keras.backend.backend() == "jax"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    x_val = rng.normal(size=(8, 3)).astype("float32") + 3.0
    y = rng.choice([-1.0, 0.0, 1.0], size=(16, 4)).astype("float32")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(4, bias_initializer="ones")(inputs))
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=4, likelihood_topk=0, prior_threshold=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss, jit_compile=True,
                  metrics=[keras_csl.metrics.MeanPrediction(4)])
    stale = model.evaluate(x, y, batch_size=16, verbose=0)[0]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x_val, y[:8]),
              callbacks=[keras_csl.callbacks.ClassPriorUpdater(loss)])
    logits = np.asarray(model.predict(x, verbose=0))
    expected_prior = sigmoid(logits.astype("float64")).mean(0)
    expected = csl_reference(y, logits, likelihood_topk=0, prior=loss.prior, prior_threshold=0.5).mean()
    print(json.dumps(dict(
        prior=loss.prior.tolist(), expected_prior=expected_prior.tolist(),
        evaluate=float(model.evaluate(x, y, batch_size=16, verbose=0)[0]),
        train=float(model.train_on_batch(x, y)[0]),
        expected=float(expected), stale=float(stale))))
    """
)


def test_prior_updates_reach_jax_compiled_steps(tmp_path):
    script = tmp_path / "jax_prior.py"
    script.write_text(JAX_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, str(script), here], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    out = json.loads(result.stdout.strip().splitlines()[-1])
    # The prior is the training epoch's mean prediction, not validation's.
    np.testing.assert_allclose(out["prior"], out["expected_prior"], rtol=1e-5)
    assert sum(p > 0.5 for p in out["prior"]) >= 1
    np.testing.assert_allclose(out["evaluate"], out["expected"], rtol=1e-5)
    np.testing.assert_allclose(out["train"], out["expected"], rtol=1e-5)
    assert abs(out["stale"] - out["expected"]) > 1e-3
