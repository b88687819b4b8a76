"""Bad input to the losses and the mAP metric: the catalogue.

Each case names the input and what must happen; none may give a plausible
number. Where the backend can raise (eager; a TensorFlow graph, i.e.
`model.fit` without XLA) the error names the bad value; where it cannot
(XLA, `jax.jit`) the loss and its gradient are NaN and the metric's
`result()` is NaN inside compiled steps and raises when Keras reads it
eagerly at the end of `evaluate` or of an epoch. docs/METRICS.md
("Bad input") is the table of the same cases.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_csl
from keras_csl.metrics import PartialMeanAveragePrecision

TESTS = pathlib.Path(__file__).resolve().parents[1]
CLASSES = 4
GOOD = np.tile(np.array([[1, 0, -1, -1]], "float32"), (8, 1))
LOGITS = np.random.default_rng(0).normal(size=(8, CLASSES)).astype("float32")

PARTIAL = (
    r"Invalid value for argument `y_true` of {caller}\. Expected targets "
    r"1 \(positive\), 0 \(negative\) or -1 \(un-annotated\)"
)
FULL = (
    r"Invalid value for argument `y_true` of AsymmetricLoss\. Expected "
    r"targets 1 \(positive\) or 0 \(negative\)"
)
SHAPE = r"Invalid value for argument `y_true` of {caller}\. Expected the shape of y_pred"

# (name, bad target at [0, 1], how an eager error shows it, how a TF
# graph assertion shows it: count, row, column, value).
BAD_TARGETS = [
    ("nan (a missing value from pandas)", np.nan, r"y_true\[0, 1\]=nan", r"\[1\] \[0\] \[1\] \[nan\]"),
    ("0.5", 0.5, r"y_true\[0, 1\]=0\.5", r"\[1\] \[0\] \[1\] \[0\.5\]"),
    ("2", 2.0, r"y_true\[0, 1\]=2\.0", r"\[1\] \[0\] \[1\] \[2\]"),
    ("-7", -7.0, r"y_true\[0, 1\]=-7\.0", r"\[1\] \[0\] \[1\] \[-7\]"),
]


def with_bad_target(value):
    targets = GOOD.copy()
    targets[0, 1] = value
    return targets


def losses():
    return {
        "ClassAwareSelectiveLoss": keras_csl.ClassAwareSelectiveLoss(),
        "AsymmetricLoss": keras_csl.AsymmetricLoss(),
    }


def full_labels(targets):
    return np.where(targets == -1, 0.0, targets)


# --------------------------------------------------------------- eager


@pytest.mark.parametrize("name, value, eager, graph", BAD_TARGETS)
def test_eager_loss_names_the_bad_target(name, value, eager, graph):
    for caller, loss in losses().items():
        targets = with_bad_target(value)
        if caller == "AsymmetricLoss":
            targets = full_labels(targets)
            targets[0, 1] = value
        pattern = FULL if caller == "AsymmetricLoss" else PARTIAL.format(caller=caller)
        with pytest.raises(ValueError, match=f"{pattern}.*{eager}"):
            loss(targets, LOGITS)


def test_eager_error_counts_and_lists_the_bad_values():
    targets = GOOD.copy()
    targets[2, :] = [np.nan, 0.5, 2.0, np.nan]
    with pytest.raises(ValueError, match=r"y_true\[2, 0\]=nan \(4 bad values, e\.g\. nan, 0\.5, 2\.0\)\. Missing labels are -1"):
        keras_csl.ClassAwareSelectiveLoss()(targets, LOGITS)


def test_asymmetric_loss_rejects_unannotated():
    with pytest.raises(ValueError, match=FULL + r".*y_true\[0, 2\]=-1\.0.*use ClassAwareSelectiveLoss"):
        keras_csl.AsymmetricLoss()(GOOD, LOGITS)


@pytest.mark.parametrize("name, value, eager, graph", BAD_TARGETS)
def test_eager_metric_names_the_bad_target(name, value, eager, graph):
    metric = PartialMeanAveragePrecision(CLASSES)
    pattern = PARTIAL.format(caller="PartialMeanAveragePrecision")
    with pytest.raises(ValueError, match=f"{pattern}.*{eager}"):
        metric.update_state(with_bad_target(value), LOGITS)
    # Nothing was stored.
    assert float(metric.row_count) == 0.0


SHAPE_CASES = [
    # (name, y_true rows, y_pred rows)
    ("one target row against a batch (would broadcast)", 1, 8),
    ("4 target rows against 8 predictions", 4, 8),
    ("9 target rows against 10 predictions", 9, 10),
]


@pytest.mark.parametrize("name, true_rows, pred_rows", SHAPE_CASES)
def test_static_shape_mismatch(name, true_rows, pred_rows):
    y_true = np.zeros((true_rows, CLASSES), "float32")
    y_pred = np.zeros((pred_rows, CLASSES), "float32")
    message = rf"\({pred_rows}, 4\)\. Received: y_true\.shape=\({true_rows}, 4\)"
    for caller, loss in losses().items():
        with pytest.raises(ValueError, match=SHAPE.format(caller=caller) + " " + message):
            loss(y_true, y_pred)
    for num_thresholds in (None, 100):
        metric = PartialMeanAveragePrecision(CLASSES, num_thresholds=num_thresholds)
        with pytest.raises(ValueError, match=SHAPE.format(caller="PartialMeanAveragePrecision")):
            metric.update_state(y_true, y_pred)


def test_other_shape_errors():
    loss = keras_csl.ClassAwareSelectiveLoss(num_classes=5)
    with pytest.raises(ValueError, match=r"Expected num_classes=5 columns"):
        loss(GOOD, LOGITS)
    with pytest.raises(ValueError, match=r"Expected a 2D tensor"):
        loss(GOOD[0], LOGITS[0])
    with pytest.raises(ValueError, match=r"y_true\.shape=\(8,\)"):
        loss(GOOD[:, 0], LOGITS)
    with pytest.raises(ValueError, match=r"y_true\.shape=\(8, 3\)"):
        PartialMeanAveragePrecision(CLASSES).update_state(GOOD[:, :3], LOGITS)
    with pytest.raises(ValueError, match=r"MeanPrediction.*Expected shape \[batch, 4\]"):
        keras_csl.metrics.MeanPrediction(CLASSES).update_state(GOOD, LOGITS[:, :3])


# ----------------------------------------------------- TensorFlow graph


def dynamic_batch(fn, jit_compile=False):
    spec = tf.TensorSpec([None, CLASSES], tf.float32)
    return tf.function(fn, input_signature=[spec, spec], jit_compile=jit_compile)


@pytest.mark.parametrize("name, value, eager, graph", BAD_TARGETS)
def test_graph_assertion_and_xla_nan(name, value, eager, graph):
    loss = keras_csl.ClassAwareSelectiveLoss()
    targets = with_bad_target(value)
    pattern = PARTIAL.format(caller="ClassAwareSelectiveLoss")
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{pattern}.*{graph}"):
        dynamic_batch(loss)(targets, LOGITS)

    def value_and_gradient(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            value = loss(y_true, y_pred)
        return value, tape.gradient(value, y_pred)

    value_, grad = dynamic_batch(value_and_gradient, jit_compile=True)(targets, LOGITS)
    assert np.isnan(value_.numpy())
    assert np.isnan(grad.numpy()).all()
    # The same step on good targets is finite.
    value_, grad = dynamic_batch(value_and_gradient, jit_compile=True)(GOOD, LOGITS)
    assert np.isfinite(value_.numpy()) and np.isfinite(grad.numpy()).all()


def test_graph_row_mismatch():
    loss = keras_csl.ClassAwareSelectiveLoss()
    pattern = SHAPE.format(caller="ClassAwareSelectiveLoss")
    for rows in (1, 4):
        with pytest.raises(tf.errors.InvalidArgumentError, match=pattern + rf".*\[{rows} 4\] \[8 4\]"):
            dynamic_batch(loss)(GOOD[:rows], LOGITS)
    # XLA: (1, C) would broadcast: NaN; (4, C) against (8, C) cannot: XLA's
    # own "Incompatible shapes" error when it compiles.
    assert np.isnan(dynamic_batch(loss, jit_compile=True)(GOOD[:1], LOGITS).numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="Incompatible shapes"):
        dynamic_batch(loss, jit_compile=True)(GOOD[:4], LOGITS)


def tiny_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(CLASSES, kernel_initializer="ones")(inputs))


X = np.ones((8, 3), "float32")


def mismatched_pairs(x_rows, y_rows):
    """Batches whose rows differ, with the batch size unknown when traced.

    Keras checks `x` and `y` arrays it is given, but not what a dataset or
    generator yields.
    """
    def pairs():
        yield np.ones((x_rows, 3), "float32"), np.zeros((y_rows, CLASSES), "float32")

    spec = (tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None, CLASSES], tf.float32))
    return tf.data.Dataset.from_generator(pairs, output_signature=spec)


def test_fit_without_xla_raises_before_updating_the_weights():
    model = tiny_model()
    model.compile(keras.optimizers.SGD(0.1), keras_csl.ClassAwareSelectiveLoss())
    before = [w.copy() for w in model.get_weights()]
    pattern = PARTIAL.format(caller="ClassAwareSelectiveLoss")
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        model.fit(X, with_bad_target(np.nan), batch_size=8, verbose=0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    pairs = mismatched_pairs(8, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE.format(caller="ClassAwareSelectiveLoss")):
        model.fit(pairs, verbose=0)


def test_fit_with_xla_gives_a_nan_loss():
    model = tiny_model()
    model.compile(
        keras.optimizers.SGD(0.1), keras_csl.ClassAwareSelectiveLoss(), jit_compile=True
    )
    history = model.fit(X, with_bad_target(0.5), batch_size=8, verbose=0)
    assert np.isnan(history.history["loss"][0])
    # The NaN gradient reached the weights: nothing trains on silently.
    assert all(np.isnan(w).all() for w in model.get_weights())
    model = tiny_model()
    model.compile(
        keras.optimizers.SGD(0.1), keras_csl.ClassAwareSelectiveLoss(), jit_compile=True
    )
    pairs = mismatched_pairs(8, 1)
    assert np.isnan(model.fit(pairs, verbose=0).history["loss"][0])


def test_fit_with_xla_and_loss_scaling_skips_the_step():
    """A LossScaleOptimizer (mixed float16) skips non-finite steps instead."""
    model = tiny_model()
    model.compile(
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)),
        keras_csl.ClassAwareSelectiveLoss(), jit_compile=True,
    )
    history = model.fit(X, with_bad_target(np.nan), batch_size=8, verbose=0)
    assert np.isnan(history.history["loss"][0])
    np.testing.assert_array_equal(model.get_weights()[0], np.ones((3, CLASSES)))


def ignores_targets(y_true, y_pred):
    """A loss that reads no target, so that only the metric checks them."""
    return keras.ops.mean(keras.ops.square(y_pred), axis=-1)


@pytest.mark.parametrize("num_thresholds", [None, 100])
def test_metric_in_evaluate(num_thresholds):
    metric = PartialMeanAveragePrecision(CLASSES, num_thresholds=num_thresholds)
    model = tiny_model()
    model.compile(loss=ignores_targets, metrics=[metric])
    pattern = PARTIAL.format(caller="PartialMeanAveragePrecision")
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern + r".*\[nan\]"):
        model.evaluate(X, with_bad_target(np.nan), batch_size=8, verbose=0)
    pairs = mismatched_pairs(10, 9)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[9 4\] \[10 4\]"):
        model.evaluate(pairs, verbose=0)

    # XLA cannot raise inside the step: the batch is counted, the value in
    # the step is NaN, and Keras's eager read at the end raises.
    model.compile(loss=ignores_targets, metrics=[metric], jit_compile=True)
    cases = [(X, with_bad_target(2.0)), (mismatched_pairs(10, 1),)]
    if num_thresholds is None:
        cases.append((pairs,))
    for data in cases:
        with pytest.raises(ValueError, match=r"updated with 1 batch\(es\).*undefined"):
            model.evaluate(*data, batch_size=8, verbose=0)
        assert np.isnan(float(tf.function(metric.result)()))
    if num_thresholds is not None:
        # Rows that cannot broadcast: XLA's own error when it compiles.
        with pytest.raises(tf.errors.InvalidArgumentError, match="Incompatible shapes"):
            model.evaluate(pairs, verbose=0)


# ------------------------------------------------- JAX and PyTorch backends

BACKEND_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras, keras_csl
    from keras_csl.metrics import PartialMeanAveragePrecision
    backend = keras.backend.backend()
    good = np.tile(np.array([[1, 0, -1, -1]], "float32"), (8, 1))
    bad = good.copy(); bad[0, 1] = np.nan
    logits = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    out = {}

    def error(fn):
        try:
            fn()
        except ValueError as e:
            return str(e)
        return None

    loss = keras_csl.ClassAwareSelectiveLoss()
    out["loss_eager"] = error(lambda: loss(bad, logits))
    out["loss_shape"] = error(lambda: loss(good[:1], logits))
    metric = PartialMeanAveragePrecision(4)
    out["metric_eager"] = error(lambda: metric.update_state(bad, logits))
    if backend == "jax":
        import jax
        step = jax.jit(jax.value_and_grad(lambda x, t: loss(t, x)))
        value, grad = step(logits, bad)
        out["jit_value"] = float(value)
        # NaN at the bad entry: any update from this gradient is NaN.
        out["jit_grad_nan_at_bad"] = bool(np.isnan(np.asarray(grad)[0, 1]))
        out["jit_good_value"] = float(step(logits, good)[0])
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
        model.compile(loss="mse", metrics=[PartialMeanAveragePrecision(4)], jit_compile=True)
        out["evaluate"] = error(lambda: model.evaluate(np.ones((8, 3)), bad, verbose=0))
    print("RESULT " + json.dumps(out))
""")


def run_backend(backend, tmp_path):
    script = tmp_path / f"{backend}_bad_input.py"
    script.write_text(BACKEND_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends(backend, tmp_path):
    pytest.importorskip(backend)
    out = run_backend(backend, tmp_path)
    assert "y_true[0, 1]=nan" in out["loss_eager"]
    assert "Expected the shape of y_pred (8, 4)" in out["loss_shape"]
    assert "y_true[0, 1]=nan" in out["metric_eager"]
    if backend == "jax":
        # Under jax.jit nothing can raise: NaN value and gradient.
        assert np.isnan(out["jit_value"]) and out["jit_grad_nan_at_bad"]
        assert np.isfinite(out["jit_good_value"])
        assert "updated with 1 batch(es)" in out["evaluate"]
