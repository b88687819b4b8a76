"""Tests of keras_csl.metrics.curves: precision-recall over annotated entries."""

import numpy as np
import pytest

from keras_csl.metrics import partial_mean_average_precision
from keras_csl.metrics.curves import precision_recall_curve
from keras_csl.metrics.curves import precision_recall_from_histograms


def test_precision_recall_curve_hand_checked():
    # Annotated: scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.6 (neg);
    # the -1 entry at 0.95 is left out.
    precision, recall = precision_recall_curve(
        [1, 0, -1, 1, 0], [0.9, 0.8, 0.95, 0.7, 0.6]
    )
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0, 1.0])
    # Ties form one point.
    precision, recall = precision_recall_curve([1, 0, 1], [0.5, 0.5, 0.2])
    np.testing.assert_allclose(precision, [0.5, 2 / 3])
    np.testing.assert_allclose(recall, [0.5, 1.0])
    assert len(precision_recall_curve([0, -1], [0.1, 0.2])[0]) == 0


def test_curve_gives_the_ap_of_the_metric():
    """AP = sum over recall steps of precision: the metric's AP, independently."""
    rng = np.random.default_rng(1)
    targets = rng.choice([-1, 0, 1], size=(400, 3), p=[0.3, 0.5, 0.2])
    scores = np.round(rng.random((400, 3)), 2)  # many ties
    _, per_class = partial_mean_average_precision(targets, scores)
    for c in range(3):
        precision, recall = precision_recall_curve(targets[:, c], scores[:, c])
        ap = np.sum(np.diff(recall, prepend=0.0) * precision)
        assert 100 * ap == pytest.approx(per_class[c], abs=1e-9)


def test_precision_recall_from_histograms():
    # Bins by increasing score. Bin 2: 2 positives, 1 negative -> precision
    # 2/3 at recall 2/3; bin 1: 1 negative -> 2/4, 2/3; bin 0: 1 positive
    # -> 3/5, 1. Bin 3 is empty: no point.
    precision, recall = precision_recall_from_histograms([1, 0, 2, 0], [0, 1, 1, 0])
    np.testing.assert_allclose(precision, [2 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(recall, [2 / 3, 2 / 3, 1.0])
    assert len(precision_recall_from_histograms([0], [3])[0]) == 0
    # The curve of the bin indices taken as tied scores.
    rng = np.random.default_rng(0)
    targets = rng.choice([-1, 0, 1], size=300, p=[0.3, 0.5, 0.2])
    bins = rng.integers(0, 20, size=300)
    counts = [np.bincount(bins[targets == t], minlength=20) for t in (1, 0)]
    for got, expected in zip(
        precision_recall_from_histograms(*counts),
        precision_recall_curve(targets, bins),
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("targets, scores, message", [
    ([1, 0.5], [0.1, 0.2], r"`targets`. Expected 1, 0 or -1. Received: \[0.5\]"),
    ([1, np.nan], [0.1, 0.2], r"`targets`.*\[nan\]"),
    ([1, 0], [0.1, np.inf], "`scores`. Expected finite scores"),
    ([1, 0, 1], [0.1, 0.2], r"shape of `targets` \(3,\)"),
])
def test_curve_rejects_bad_input(targets, scores, message):
    with pytest.raises(ValueError, match=message):
        precision_recall_curve(targets, scores)


def test_histograms_reject_bad_counts():
    with pytest.raises(ValueError, match="`negative_counts`"):
        precision_recall_from_histograms([1, 2], [1])
    with pytest.raises(ValueError, match="finite counts >= 0"):
        precision_recall_from_histograms([1, -2], [1, 0])
