"""Tests of the partial-label mean average precision (function and metric)."""

import inspect
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import average_precision_score

from keras_csl.metrics import PartialMeanAveragePrecision
from keras_csl.metrics import partial_mean_average_precision

REPO = pathlib.Path(__file__).resolve().parents[2]
MAP = "partial_mean_average_precision"  # the metric's default name

# Class 0: annotated (0.9, +), (0.8, -), (0.3, +); the -1 at 0.95 is left
#   out. Precisions at the positives: 1/1 and 2/3, AP = 5/6.
# Class 1: (0.5, -) and (0.5, +) tie: the positive gets the precision at
#   the end of the tie group, 1/2; (0.2, -) is below it. AP = 1/2.
TINY_TRUE = [[1, 0], [0, 1], [1, -1], [-1, 0]]
TINY_SCORE = [[0.9, 0.5], [0.8, 0.5], [0.3, 0.1], [0.95, 0.2]]
TINY_PER_CLASS = [500 / 6, 50.0]
TINY_MEAN = (500 / 6 + 50.0) / 2  # 66.67


def reference_ap(targets, scores):
    """AP (percent) of one class straight from the definition, O(n^2).

    Mean over annotated positives of (annotated positives with score >= s)
    / (annotated entries with score >= s); NaN without a positive or a
    negative.
    """
    annotated = targets != -1
    targets, scores = targets[annotated], scores[annotated]
    positive = targets == 1
    if positive.all() or not positive.any():
        return np.nan
    precisions = [
        np.sum(positive & (scores >= s)) / np.sum(scores >= s)
        for s in scores[positive]
    ]
    return 100.0 * np.mean(precisions)


LOGIT_RANGE = 16.0  # the bounded mode clips logits to [-16, 16]


def bin_position(logits):
    """Where a logit falls in [0, 1] in the bounded mode, float64."""
    logits = np.asarray(logits, "float64")
    clipped = np.clip(logits, -LOGIT_RANGE, LOGIT_RANGE)
    return (1 / (1 + np.exp(-logits)) + (clipped + LOGIT_RANGE) / 32) / 2


def score_bins(scores, num_thresholds, from_logits=True):
    """The bounded mode's bin of each score, in float32 as the metric.

    Bin `floor(u * B)` of `u = (p + (clip(z, -16, 16) + 16) / 32) / 2`, the
    mean of the probability and the rescaled logit. The sigmoid is Keras's,
    so that bins match the metric's to the last bit.
    """
    scores = np.asarray(scores, "float32")
    if from_logits:
        logits = scores
        probabilities = keras.ops.convert_to_numpy(
            keras.ops.sigmoid(keras.ops.convert_to_tensor(scores))
        )
    else:
        probabilities = np.clip(scores, 0, 1)
        with np.errstate(divide="ignore"):
            logits = np.log(probabilities) - np.log1p(-probabilities)
    logits = np.clip(logits, -LOGIT_RANGE, LOGIT_RANGE).astype("float32")
    position = probabilities + (logits + np.float32(LOGIT_RANGE)) / np.float32(32)
    bins = np.floor(position * np.float32(num_thresholds / 2))
    return np.minimum(bins, num_thresholds - 1).astype("int64")


def bounded_reference(targets, scores, num_thresholds, from_logits=True):
    """The bounded mode's per-class AP (percent) from its definition, O(n^2).

    Each annotated positive gets the precision of the middle positive of
    its bin: (positives in higher bins + (positives in the bin + 1) / 2) /
    (annotated in higher bins + (annotated in the bin + 1) / 2).
    """
    targets = np.asarray(targets)
    bins = score_bins(scores, num_thresholds, from_logits)
    per_class = []
    for t, b in zip(targets.T, bins.T):
        t, b = t[t != -1], b[t != -1]
        positive = t == 1
        if positive.all() or not positive.any():
            per_class.append(np.nan)
            continue
        precisions = [
            (np.sum(positive & (b > s)) + (np.sum(positive & (b == s)) + 1) / 2)
            / (np.sum(b > s) + (np.sum(b == s) + 1) / 2)
            for s in b[positive]
        ]
        per_class.append(100.0 * np.mean(precisions))
    per_class = np.array(per_class)
    return float(np.nanmean(per_class)), per_class


def random_partial_labels(rng, samples, classes, ties=False):
    targets = rng.choice(
        [-1, 0, 1], size=(samples, classes), p=[0.5, 0.35, 0.15]
    )
    scores = rng.normal(size=(samples, classes)) + 1.5 * (targets == 1)
    if ties:
        scores = np.round(scores * 4) / 4
    return targets.astype("float32"), scores.astype("float32")


# ----------------------------------------------------------------------------
# The NumPy function.


def test_tiny_hand_checked_values():
    mean_ap, per_class = partial_mean_average_precision(TINY_TRUE, TINY_SCORE)
    np.testing.assert_allclose(per_class, TINY_PER_CLASS, rtol=1e-12)
    assert mean_ap == pytest.approx(TINY_MEAN, rel=1e-12)


def test_unannotated_entries_are_left_out_not_negatives():
    # Class 0 of the tiny case with its -1 counted as a negative instead:
    # (0.95, -), (0.9, +), (0.8, -), (0.3, +): precisions 1/2 and 2/4.
    y_true = np.array(TINY_TRUE)
    y_true[3, 0] = 0
    _, per_class = partial_mean_average_precision(y_true, TINY_SCORE)
    assert per_class[0] == pytest.approx(50.0)


def test_tie_group_shares_the_precision_at_its_end():
    # Scores 0.7 (+), 0.7 (-), 0.7 (+), 0.1 (-): one tie group holding
    # 2 positives out of 3; both positives get precision 2/3 whatever the
    # order of the rows.
    y_true = np.array([[1], [0], [1], [0]])
    y_score = np.array([[0.7], [0.7], [0.7], [0.1]])
    for order in ([0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]):
        mean_ap, _ = partial_mean_average_precision(
            y_true[order], y_score[order]
        )
        assert mean_ap == pytest.approx(200 / 3)


@pytest.mark.parametrize("ties", [False, True])
def test_matches_the_definition_on_random_partial_labels(ties):
    rng = np.random.default_rng(1 + ties)
    targets, scores = random_partial_labels(rng, 300, 12, ties=ties)
    targets[:, 0] = np.where(targets[:, 0] == 1, -1, targets[:, 0])
    mean_ap, per_class = partial_mean_average_precision(targets, scores)
    expected = np.array(
        [reference_ap(targets[:, c], scores[:, c]) for c in range(12)]
    )
    assert np.isnan(per_class[0]) and np.isnan(expected[0])
    np.testing.assert_allclose(per_class, expected, rtol=1e-12)
    assert mean_ap == pytest.approx(np.nanmean(expected), rel=1e-12)
    assert 40 < mean_ap < 90  # a real ranking signal, not degenerate


@pytest.mark.parametrize("ties", [False, True])
def test_without_unannotated_entries_equals_sklearn(ties):
    rng = np.random.default_rng(3)
    targets = (rng.random((400, 9)) < 0.2).astype("int64")
    scores = rng.random((400, 9))
    if ties:
        scores = np.round(scores * 5) / 5  # 6 distinct values, many ties
    mean_ap, per_class = partial_mean_average_precision(targets, scores)
    expected = [
        100 * average_precision_score(targets[:, c], scores[:, c])
        for c in range(9)
    ]
    np.testing.assert_allclose(per_class, expected, rtol=1e-12)
    assert mean_ap == pytest.approx(np.mean(expected), rel=1e-12)


def test_classes_without_a_positive_or_a_negative_are_left_out():
    y_true = [[1, 0, 1, -1], [0, 0, 1, -1], [1, -1, -1, -1]]
    y_score = [[0.9, 0.1, 0.2, 0.3], [0.2, 0.2, 0.1, 0.4], [0.1, 0.3, 0.5, 0.6]]
    # Class 0: (0.9, +), (0.2, -), (0.1, +): AP (1 + 2/3) / 2 = 5/6.
    mean_ap, per_class = partial_mean_average_precision(y_true, y_score)
    assert per_class[0] == pytest.approx(500 / 6)
    assert np.isnan(per_class[1:]).all()  # no positive, no negative, none
    assert mean_ap == pytest.approx(500 / 6)

    mean_ap, per_class = partial_mean_average_precision(
        [[1, -1], [1, 0]], [[0.2, 0.3], [0.4, 0.5]]
    )
    assert np.isnan(mean_ap) and np.isnan(per_class).all()


def test_weighted_average_by_annotated_positives():
    # Class 0: (0.9, +), (0.2, -), (0.1, -): AP 1, one positive.
    # Class 1: (0.9, -), (0.2, +), (0.1, +): precisions 1/2 and 2/3,
    #   AP 7/12, two positives.
    # Class 2: only un-annotated entries: left out of both averages.
    y_true = [[1, 0, -1], [0, 1, -1], [0, 1, -1]]
    y_score = [[0.9, 0.9, 0.5], [0.2, 0.2, 0.5], [0.1, 0.1, 0.5]]
    macro, per_class = partial_mean_average_precision(y_true, y_score)
    weighted, per_class_w = partial_mean_average_precision(
        y_true, y_score, average="weighted"
    )
    np.testing.assert_array_equal(per_class, per_class_w)
    assert macro == pytest.approx(100 * (1 + 7 / 12) / 2)  # 79.17
    assert weighted == pytest.approx(100 * (1 + 2 * 7 / 12) / 3)  # 72.22


@pytest.mark.parametrize(
    "y_true, y_score, kwargs, message",
    [
        ([1, 0], [0.1, 0.2], {}, "Expected a 2D array"),
        ([[1, 0]], [[0.1, 0.2, 0.3]], {}, r"y_true.shape=\(1, 2\)"),
        ([[1, 2]], [[0.1, 0.2]], {}, r"y_true\[0, 1\]=2.0"),
        ([[1, 0.5]], [[0.1, 0.2]], {}, r"y_true\[0, 1\]=0.5"),
        ([[1, 0]], [[0.1, np.nan]], {}, r"finite scores.*y_score\[0, 1\]"),
        ([[1, 0]], [[np.inf, 0.1]], {}, r"y_score\[0, 0\]=inf"),
        ([[1, 0]], [["a", 0.1]], {}, "Expected numeric arrays"),
        ([[1, 0]], [[0.1, 0.2]], {"average": "micro"}, "average='micro'"),
    ],
)
def test_input_validation(y_true, y_score, kwargs, message):
    with pytest.raises(ValueError, match=r"Invalid value for argument"):
        partial_mean_average_precision(y_true, y_score, **kwargs)
    with pytest.raises(ValueError, match=message):
        partial_mean_average_precision(y_true, y_score, **kwargs)


# ----------------------------------------------------------------------------
# The Keras metric, eagerly.


# The bounded mode on the tiny case, 100 bins: class 0's scores 0.9, 0.8,
# 0.3 sit in distinct bins (73, 67, 38), AP 5/6 as exact.
# Class 1's tied (0.5, -) and (0.5, +) share a bin, so the positive gets the
# precision of the bin's middle: (0 + 1) / (0 + 3/2) = 2/3, where the exact
# tie convention gives 1/2. Mean (5/6 + 2/3) / 2 = 3/4.
TINY_BOUNDED_PER_CLASS = [500 / 6, 200 / 3]


@pytest.mark.parametrize(
    "num_thresholds, per_class",
    [(None, TINY_PER_CLASS), (100, TINY_BOUNDED_PER_CLASS)],
)
def test_metric_tiny_hand_checked_values(num_thresholds, per_class):
    metric = PartialMeanAveragePrecision(
        2, from_logits=False, num_thresholds=num_thresholds
    )
    metric.update_state(TINY_TRUE[:2], TINY_SCORE[:2])
    metric.update_state(TINY_TRUE[2:], TINY_SCORE[2:])
    assert float(metric.result()) == pytest.approx(np.mean(per_class), rel=1e-6)
    np.testing.assert_allclose(metric.per_class_ap(), per_class, rtol=1e-6)
    if num_thresholds:
        _, reference = bounded_reference(TINY_TRUE, TINY_SCORE, 100, False)
        np.testing.assert_allclose(reference, per_class, rtol=1e-12)


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_exact_metric_equals_function_over_batches(average):
    rng = np.random.default_rng(4)
    targets, scores = random_partial_labels(rng, 250, 7, ties=True)
    metric = PartialMeanAveragePrecision(7, average=average, max_samples=256)
    for start in range(0, 250, 64):  # ragged last batch
        metric.update_state(targets[start:start + 64], scores[start:start + 64])
    expected, per_class = partial_mean_average_precision(
        targets, scores, average=average
    )
    assert float(metric.result()) == pytest.approx(expected, abs=1e-4)
    np.testing.assert_allclose(metric.per_class_ap(), per_class, atol=1e-4)

    metric.reset_state()
    assert np.isnan(float(metric.result()))
    metric.update_state(targets[:100], scores[:100])
    expected, _ = partial_mean_average_precision(
        targets[:100], scores[:100], average=average
    )
    assert float(metric.result()) == pytest.approx(expected, abs=1e-4)


def test_exact_metric_ranks_logits_and_bounded_clips_them():
    # Logits 30 and 40 both give sigmoid 1.0 in float32: the exact mode
    # still ranks them apart. (40, +), (30, -), (-5, +): AP (1 + 2/3) / 2.
    y_true = [[1], [0], [1]]
    logits = [[40.0], [30.0], [-5.0]]
    exact = PartialMeanAveragePrecision(1)
    exact.update_state(y_true, logits)
    assert float(exact.result()) == pytest.approx(500 / 6, rel=1e-6)
    # Bounded, 10 bins: 40 and 30 (p = 1, logits clipped to 16) share the
    # top bin (precision of its middle positive (0 + 1) / (0 + 3/2) = 2/3);
    # -5 (p = 0.0067) is alone in bin 1, below both: (1 + 1) / (2 + 1).
    # AP (2/3 + 2/3) / 2.
    bounded = PartialMeanAveragePrecision(1, num_thresholds=10)
    bounded.update_state(y_true, logits)
    assert float(bounded.result()) == pytest.approx(200 / 3, rel=1e-6)
    # The same as probabilities: 1.0 (twice, from sigmoid) and 0.0067.
    bounded = PartialMeanAveragePrecision(
        1, from_logits=False, num_thresholds=10
    )
    bounded.update_state(y_true, keras.ops.sigmoid(np.array(logits)))
    assert float(bounded.result()) == pytest.approx(200 / 3, rel=1e-6)


# Both tests below leave class 1 of the tiny case as it was: AP 1/2 exact,
# 2/3 bounded (its tied positive and negative share a bin).
CLASS_1_AP = {None: 50.0, 100: 200 / 3}


@pytest.mark.parametrize("num_thresholds", [None, 100])
def test_zero_sample_weight_masks_entries(num_thresholds):
    # A per-entry weight of 0 on class 0's only negative (0.8) leaves it
    # (0.9, +), (0.3, +): no negative, NaN.
    weight = np.ones((4, 2), "float32")
    weight[1, 0] = 0.0
    metric = PartialMeanAveragePrecision(
        2, from_logits=False, num_thresholds=num_thresholds
    )
    metric.update_state(TINY_TRUE, TINY_SCORE, sample_weight=weight)
    per_class = metric.per_class_ap()
    assert np.isnan(per_class[0])
    assert per_class[1] == pytest.approx(CLASS_1_AP[num_thresholds])
    # A per-sample weight of 0 drops the whole row (row 2: class 0's
    # positive at 0.3): class 0 keeps (0.9, +), (0.8, -) (distinct bins of
    # 100): AP 1.
    metric.reset_state()
    metric.update_state(TINY_TRUE, TINY_SCORE, sample_weight=[1, 1, 0, 1])
    np.testing.assert_allclose(
        metric.per_class_ap(), [100.0, CLASS_1_AP[num_thresholds]], rtol=1e-6
    )


@pytest.mark.parametrize("num_thresholds", [None, 100])
def test_nan_score_makes_its_class_nan(num_thresholds):
    metric = PartialMeanAveragePrecision(
        2, from_logits=False, num_thresholds=num_thresholds
    )
    scores = np.array(TINY_SCORE, "float32")
    scores[0, 0] = np.nan
    metric.update_state(TINY_TRUE, scores)
    per_class = metric.per_class_ap()
    assert np.isnan(per_class[0])
    assert per_class[1] == pytest.approx(CLASS_1_AP[num_thresholds])
    assert float(metric.result()) == pytest.approx(CLASS_1_AP[num_thresholds])


def test_metric_rejects_wrong_shapes():
    metric = PartialMeanAveragePrecision(3)
    with pytest.raises(ValueError, match=r"Expected num_classes=3 columns"):
        metric.update_state([[1, 0]], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="argument `y_true`"):
        metric.update_state([1, 0, 1], [[0.1, 0.2, 0.3]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 0}, "num_classes=0"),
        ({"num_classes": 2.0}, "num_classes=2.0"),
        ({"num_classes": 2, "max_samples": 0}, "max_samples=0"),
        ({"num_classes": 2, "num_thresholds": 1}, "num_thresholds=1"),
        ({"num_classes": 2, "num_thresholds": True}, "num_thresholds=True"),
        ({"num_classes": 2, "average": "micro"}, "average='micro'"),
    ],
)
def test_metric_argument_validation(kwargs, message):
    with pytest.raises(ValueError, match=f"Invalid value for arg.*{message}"):
        PartialMeanAveragePrecision(**kwargs)


# ----------------------------------------------------------------------------
# Overflow of the exact buffer.


def test_overflow_raises_eagerly_and_is_nan_in_a_graph():
    metric = PartialMeanAveragePrecision(2, from_logits=False, max_samples=3)
    metric.update_state(TINY_TRUE[:2], TINY_SCORE[:2])
    metric.update_state(TINY_TRUE[2:], TINY_SCORE[2:])  # 2 + 2 > 3
    with pytest.raises(ValueError, match=r"2 stored, 2 not stored.*=3 per"):
        metric.result()
    assert np.isnan(float(tf.function(metric.result)()))

    # A batch larger than the whole buffer is counted too.
    metric = PartialMeanAveragePrecision(2, from_logits=False, max_samples=3)
    metric.update_state(TINY_TRUE, TINY_SCORE)
    with pytest.raises(ValueError, match=r"0 stored, 4 not stored"):
        metric.result()
    metric.reset_state()
    metric.update_state(TINY_TRUE[:3], TINY_SCORE[:3])
    assert np.isfinite(float(metric.result()))


def test_overflow_in_evaluate_raises():
    model, x, targets = _tiny_model_and_data()
    model.compile(
        loss="mse", metrics=[PartialMeanAveragePrecision(4, max_samples=50)]
    )
    with pytest.raises(ValueError, match="max_samples=50"):
        model.evaluate(x, targets, batch_size=16, verbose=0)


# ----------------------------------------------------------------------------
# In fit/evaluate (TensorFlow) and under MirroredStrategy.


def evaluate(model, x, targets, batch_size):
    return model.evaluate(
        x, targets, batch_size=batch_size, verbose=0, return_dict=True
    )


def _tiny_model_and_data(samples=96, classes=4, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 6)).astype("float32")
    targets = rng.choice([-1, 0, 1], size=(samples, classes), p=[0.4, 0.4, 0.2])
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(classes)])
    return model, x, targets.astype("float32")


def test_metric_in_fit_and_evaluate_equals_function():
    model, x, targets = _tiny_model_and_data()
    # A zero learning rate keeps the predictions fixed during fit, so the
    # training metric can be checked too.
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        loss="mse",
        metrics=[
            PartialMeanAveragePrecision(4, max_samples=100),
            PartialMeanAveragePrecision(4, average="weighted", name="weighted"),
            PartialMeanAveragePrecision(4, num_thresholds=1000, name="bounded"),
        ],
    )
    history = model.fit(x, targets, batch_size=16, epochs=2, verbose=0).history
    logits = model.predict(x, verbose=0)
    expected, _ = partial_mean_average_precision(targets, logits)
    weighted, _ = partial_mean_average_precision(targets, logits, "weighted")
    np.testing.assert_allclose(
        history[MAP], [expected] * 2, atol=1e-4
    )
    logs = evaluate(model, x, targets, batch_size=16)
    assert logs[MAP] == pytest.approx(expected, abs=1e-4)
    assert logs["weighted"] == pytest.approx(weighted, abs=1e-4)
    binned, _ = bounded_reference(targets, logits, 1000)
    assert logs["bounded"] == pytest.approx(binned, abs=1e-4)
    assert 20 < expected < 80


def test_metric_under_xla_equals_function():
    # jit_compile="auto" is on for a single GPU but off on CPU: ask for it.
    model, x, targets = _tiny_model_and_data(seed=9)
    model.compile(
        loss="mse",
        metrics=[
            PartialMeanAveragePrecision(4, max_samples=100),
            PartialMeanAveragePrecision(4, num_thresholds=1000, name="bounded"),
        ],
        jit_compile=True,
    )
    logs = evaluate(model, x, targets, batch_size=16)
    logits = model.predict(x, verbose=0)
    expected, _ = partial_mean_average_precision(targets, logits)
    binned, _ = bounded_reference(targets, logits, 1000)
    assert logs[MAP] == pytest.approx(expected, abs=1e-4)
    assert logs["bounded"] == pytest.approx(binned, abs=1e-4)


def test_mirrored_strategy_evaluate_equals_function(two_cpu_strategy):
    strategy = two_cpu_strategy
    assert strategy.num_replicas_in_sync == 2
    _, x, targets = _tiny_model_and_data()
    with strategy.scope():
        model, _, _ = _tiny_model_and_data()
        exact = PartialMeanAveragePrecision(4, max_samples=64)
        bounded = PartialMeanAveragePrecision(4, num_thresholds=1000, name="b")
        model.compile(loss="mse", metrics=[exact, bounded])
    assert tuple(exact.scores.shape) == (2 * 64, 4)  # one slot per replica

    logs = evaluate(model, x, targets, batch_size=16)
    expected, per_class = partial_mean_average_precision(
        targets, model.predict(x, verbose=0)
    )
    assert logs[MAP] == pytest.approx(expected, abs=1e-4)
    np.testing.assert_allclose(exact.per_class_ap(), per_class, atol=1e-4)
    # Each global batch of 16 was split 8 + 8: both slots hold 48 rows, and
    # the 96 rows are the whole data (more than one slot's 64).
    local_rows = [float(v) for v in exact.row_count.value.values]
    assert local_rows == [48.0, 48.0]
    binned, _ = bounded_reference(targets, model.predict(x, verbose=0), 1000)
    assert logs["b"] == pytest.approx(binned, abs=1e-4)

    # 96 rows do not fit in 2 x 40.
    with strategy.scope():
        model.compile(
            loss="mse", metrics=[PartialMeanAveragePrecision(4, max_samples=40)]
        )
    with pytest.raises(ValueError, match=r"80 stored, 16 not stored"):
        model.evaluate(x, targets, batch_size=16, verbose=0)


def test_metric_created_outside_the_strategy_is_refused(two_cpu_strategy):
    strategy = two_cpu_strategy
    metric = PartialMeanAveragePrecision(2, from_logits=False)

    @tf.function
    def step(y_true, y_score):
        strategy.run(metric.update_state, args=(y_true, y_score))

    with pytest.raises(ValueError, match="created for 1 replica"):
        step(tf.constant(TINY_TRUE, "float32"), tf.constant(TINY_SCORE))


# ----------------------------------------------------------------------------
# Bounded-memory mode.


@pytest.mark.parametrize("from_logits", [True, False])
def test_bounded_mode_equals_exact_with_one_entry_per_bin(from_logits):
    # Scores at the centres of distinct bins: a bin holding a single
    # positive gives it its exact precision, so the value is exact. Bins
    # 100-899 (logits -9.6 to 9.6): near p = 1, float32 probabilities are
    # coarser than a bin.
    rng = np.random.default_rng(6)
    samples, classes, bins = 400, 5, 1000
    targets, _ = random_partial_labels(rng, samples, classes)
    centres = np.stack(
        [100 + rng.permutation(800)[:samples] for _ in range(classes)], axis=1
    )
    # Invert the bin position by bisection.
    low = np.full(centres.shape, -LOGIT_RANGE)
    high = np.full(centres.shape, LOGIT_RANGE)
    for _ in range(60):
        middle = (low + high) / 2
        below = bin_position(middle) < (centres + 0.5) / bins
        low, high = np.where(below, middle, low), np.where(below, high, middle)
    scores = low if from_logits else 1 / (1 + np.exp(-low))
    scores = scores.astype("float32")
    np.testing.assert_array_equal(score_bins(scores, bins, from_logits), centres)
    metric = PartialMeanAveragePrecision(
        classes, from_logits=from_logits, num_thresholds=bins
    )
    metric.update_state(targets, scores)
    expected, per_class = partial_mean_average_precision(targets, scores)
    assert float(metric.result()) == pytest.approx(expected, abs=1e-4)
    np.testing.assert_allclose(metric.per_class_ap(), per_class, atol=1e-4)


def test_bounded_mode_equals_reference_with_shared_bins():
    rng = np.random.default_rng(3)
    targets, scores = random_partial_labels(rng, 300, 4, ties=True)
    metric = PartialMeanAveragePrecision(4, num_thresholds=40)
    for start in range(0, 300, 64):
        metric.update_state(targets[start:start + 64], scores[start:start + 64])
    expected, per_class = bounded_reference(targets, scores, 40)
    assert float(metric.result()) == pytest.approx(expected, abs=1e-4)
    np.testing.assert_allclose(metric.per_class_ap(), per_class, atol=1e-4)


@pytest.mark.parametrize(
    "case, tolerances",
    [
        # Negatives' logits N(-4, 2), positives' N(1, 2); exact mAP 81.06.
        # Measured errors: -0.041 (100 bins), +0.0004 (1000), +0.0002
        # (10000); probability bins scored as tie groups (before this
        # binning): -0.34, -0.034, -0.0032.
        ("spread", (0.2, 0.01, 0.005)),
        # Barely trained: negatives' logits N(-4.5, 0.5), positives'
        # N(-4, 0.5), 98 % of the probabilities in 0.0035 - 0.038; exact
        # mAP 29.73. Measured: -2.26, -0.061, +0.0044; before: -6.2, -0.71,
        # -0.076.
        ("concentrated", (3.0, 0.1, 0.02)),
    ],
)
def test_bounded_mode_is_close_to_exact(case, tolerances):
    rng = np.random.default_rng(7)
    samples, classes = 4000, 20
    present = rng.random((samples, classes)) < 0.1
    targets = np.where(rng.random((samples, classes)) < 0.4, present, -1)
    means, spread = {"spread": ((1.0, -4.0), 2.0),
                     "concentrated": ((-4.0, -4.5), 0.5)}[case]
    logits = np.where(
        present,
        rng.normal(means[0], spread, present.shape),
        rng.normal(means[1], spread, present.shape),
    ).astype("float32")
    expected, _ = partial_mean_average_precision(targets, logits)
    errors = []
    for bins in (100, 1000, 10000):
        metric = PartialMeanAveragePrecision(classes, num_thresholds=bins)
        metric.update_state(targets, logits)
        errors.append(float(metric.result()) - expected)
    assert np.all(np.abs(errors) < tolerances), errors


# ----------------------------------------------------------------------------
# Serialization.


@pytest.mark.parametrize("num_thresholds", [None, 200])
def test_config_round_trip(num_thresholds):
    metric = PartialMeanAveragePrecision(
        5,
        from_logits=False,
        average="weighted",
        max_samples=123,
        num_thresholds=num_thresholds,
        name="map",
        dtype="float64",
    )
    config = metric.get_config()
    parameters = inspect.signature(PartialMeanAveragePrecision).parameters
    assert set(parameters) == set(config)
    json.dumps(config)
    restored = PartialMeanAveragePrecision.from_config(config)
    assert restored.get_config() == config
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(restored, PartialMeanAveragePrecision)
    assert restored.get_config() == config
    # Columns of the tiny case: APs 5/6 (2 positives) x 3 and 1/2
    # (1 positive) x 2; weighted mean (6 x 5/6 + 2 x 1/2) / 8 = 3/4. Bounded:
    # class 1's AP is 2/3, (6 x 5/6 + 2 x 2/3) / 8 = 19/24.
    columns = [0, 1, 1, 0, 0]
    restored.update_state(
        np.array(TINY_TRUE)[:, columns], np.array(TINY_SCORE)[:, columns]
    )
    result = restored.result()
    assert keras.backend.standardize_dtype(result.dtype) == "float64"
    expected = 75.0 if num_thresholds is None else 1900 / 24
    assert float(result) == pytest.approx(expected, rel=1e-6)


# The optimizer was never built (no training): Keras warns when loading it.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_saved_model_file_round_trip(tmp_path):
    model, x, targets = _tiny_model_and_data(seed=10)
    model.compile(
        loss="mse",
        metrics=[
            PartialMeanAveragePrecision(4, average="weighted", max_samples=100)
        ],
    )
    logs = evaluate(model, x, targets, batch_size=32)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    restored_logs = evaluate(restored, x, targets, batch_size=32)
    expected, _ = partial_mean_average_precision(
        targets, model.predict(x, verbose=0), average="weighted"
    )
    assert logs[MAP] == pytest.approx(expected, abs=1e-4)
    assert restored_logs[MAP] == pytest.approx(expected, abs=1e-4)


# ----------------------------------------------------------------------------
# Another backend.

JAX_SCRIPT = """
import json
import numpy as np
import keras
from keras_csl.metrics import PartialMeanAveragePrecision
from keras_csl.metrics import partial_mean_average_precision

rng = np.random.default_rng(8)
x = rng.normal(size=(96, 6)).astype("float32")
targets = rng.choice([-1, 0, 1], size=(96, 4), p=[0.4, 0.4, 0.2])
targets = targets.astype("float32")
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
model.compile(loss="mse", metrics=[
    PartialMeanAveragePrecision(4, max_samples=100),
    PartialMeanAveragePrecision(4, num_thresholds=1000, name="bounded"),
])
logs = model.evaluate(
    x, targets, batch_size=16, verbose=0, return_dict=True
)
logits = model.predict(x, verbose=0)
expected, _ = partial_mean_average_precision(targets, logits)
model.compile(
    loss="mse", metrics=[PartialMeanAveragePrecision(4, max_samples=50)]
)
try:
    model.evaluate(x, targets, batch_size=16, verbose=0)
    overflow = None
except ValueError as error:
    overflow = str(error)
print(json.dumps({"backend": keras.backend.backend(), "logs": logs,
                  "expected": expected, "logits": logits.tolist(),
                  "targets": targets.tolist(),
                  "overflow": overflow}))
"""


def test_jax_backend_evaluate_equals_function():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    completed = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    expected = result["expected"]
    assert result["logs"][MAP] == pytest.approx(expected, abs=1e-4)
    binned, _ = bounded_reference(
        np.array(result["targets"]), np.array(result["logits"], "float32"), 1000
    )
    assert result["logs"]["bounded"] == pytest.approx(binned, abs=1e-4)
    assert "max_samples=50" in result["overflow"]
