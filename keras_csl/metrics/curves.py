"""Precision-recall curves over the annotated entries of partial labels.

The curves that go with `partial_mean_average_precision` and with the
bounded mode of `PartialMeanAveragePrecision`: entries with target -1 are
left out, and entries with tied scores form one point (every entry with a
score >= s is counted at threshold s), the convention under which those APs
are computed. NumPy only; `keras_csl.inference` draws them.

- `precision_recall_curve(targets, scores)`: from every score of one class.
- `precision_recall_from_histograms(positive_counts, negative_counts)`:
  from the per-bin counts the bounded metric keeps; the curve of the bin
  indices taken as tied scores.

Both return `(precision, recall)` by decreasing threshold, one point per
distinct score (or non-empty bin).
"""

import numpy as np


def precision_recall_curve(targets, scores):
    """Precision and recall of one class over its annotated entries.

    Entries with target -1 are left out; tied scores form one point.

    Example:

    >>> precision, recall = precision_recall_curve(
    ...     [1, 0, -1, 1, 0], [0.9, 0.8, 0.95, 0.7, 0.6])
    >>> precision.tolist()  # thresholds 0.9, 0.8, 0.7, 0.6
    [1.0, 0.5, 0.6666666666666666, 0.5]
    >>> recall.tolist()
    [0.5, 0.5, 1.0, 1.0]

    Args:
        targets: vector of 1 (positive), 0 (negative) and -1 (un-annotated).
        scores: vector of finite scores, same length.

    Returns:
        `(precision, recall)` float64 vectors by decreasing threshold;
        empty when the class has no annotated positive.

    Raises:
        ValueError: if the inputs are not vectors of the same length, a
            target is not 1, 0 or -1, or a score is not finite.
    """
    targets, scores = _check_vectors(targets, scores)
    annotated = targets != -1
    targets, scores = targets[annotated], scores[annotated]
    num_positives = targets.sum()
    if num_positives == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], np.cumsum(targets[order])
    # The last entry of each group of tied scores ends a point.
    ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    return hits[ends] / (ends + 1.0), hits[ends] / num_positives


def precision_recall_from_histograms(positive_counts, negative_counts):
    """Precision and recall of one class from per-bin counts.

    `positive_counts` and `negative_counts` count the annotated positives
    and negatives of the class in each score bin, bins by increasing score:
    a row of `PartialMeanAveragePrecision.positive_counts` /
    `negative_counts` in bounded mode. Each non-empty bin is one point, its
    entries taken as tied: the curve `precision_recall_curve` gives on the
    bin indices.

    Example:

    >>> precision, recall = precision_recall_from_histograms(
    ...     [1, 0, 2, 0], [0, 1, 1, 0])
    >>> precision.tolist()  # bins 2, 1, 0 (bin 3 is empty)
    [0.6666666666666666, 0.5, 0.6]
    >>> recall.tolist()
    [0.6666666666666666, 0.6666666666666666, 1.0]

    Args:
        positive_counts: vector of non-negative counts, one per bin.
        negative_counts: vector of the same length.

    Returns:
        `(precision, recall)` float64 vectors by decreasing threshold;
        empty when the class has no annotated positive.

    Raises:
        ValueError: if the inputs are not vectors of the same length or hold
            a negative or non-finite count.
    """
    positive_counts = np.asarray(positive_counts, dtype="float64")
    negative_counts = np.asarray(negative_counts, dtype="float64")
    for name, counts in (
        ("positive_counts", positive_counts), ("negative_counts", negative_counts)
    ):
        if counts.ndim != 1 or counts.shape != positive_counts.shape:
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected a vector of "
                f"{positive_counts.shape} counts. Received: shape {counts.shape}"
            )
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected finite counts "
                f">= 0. Received: minimum {np.nanmin(counts) if counts.size else 0}"
                f", {int(np.sum(~np.isfinite(counts)))} non-finite"
            )
    positives = positive_counts[::-1]
    counts = positives + negative_counts[::-1]
    num_positives = positives.sum()
    if num_positives == 0:
        return np.zeros(0), np.zeros(0)
    hits, annotated = np.cumsum(positives), np.cumsum(counts)
    ends = np.flatnonzero(counts)
    return hits[ends] / annotated[ends], hits[ends] / num_positives


def _check_vectors(targets, scores):
    targets = np.asarray(targets, dtype="float64")
    scores = np.asarray(scores, dtype="float64")
    if targets.ndim != 1 or scores.shape != targets.shape:
        raise ValueError(
            "Invalid value for argument `scores`. Expected a vector of the "
            f"shape of `targets` {targets.shape}. Received: targets with shape "
            f"{targets.shape}, scores with shape {scores.shape}"
        )
    unknown = ~np.isin(targets, (-1.0, 0.0, 1.0))
    if unknown.any():
        raise ValueError(
            "Invalid value for argument `targets`. Expected 1, 0 or -1. "
            f"Received: {np.unique(targets[unknown])[:5].tolist()} at "
            f"{int(unknown.sum())} entries"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            "Invalid value for argument `scores`. Expected finite scores. "
            f"Received: {int(np.sum(~np.isfinite(scores)))} non-finite"
        )
    return targets, scores
