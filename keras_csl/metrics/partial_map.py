"""Partial-label mean average precision in NumPy: the reference function.

With partial annotations (targets 1 positive, 0 verified negative, -1
un-annotated) the average precision (AP) of a class is computed on its
annotated entries only, as in the evaluation protocol of OpenImages and of
Ben-Baruch et al. (CVPR 2022): an un-annotated entry is neither a hit nor a
false alarm. With no -1 present this is the ordinary mAP. Ties in score form
one group, as in `sklearn.metrics.average_precision_score`.

The Keras metric (`keras_csl.metrics.PartialMeanAveragePrecision`, in
`average_precision.py`) computes the same inside `fit`/`evaluate` and under
`tf.distribute`.
"""

import logging

import numpy as np

logger = logging.getLogger(__name__)

AVERAGES = ("macro", "weighted")


def partial_mean_average_precision(y_true, y_score, average="macro"):
    """Mean average precision (percent) over the annotated entries.

    The AP of class `c` is the mean, over its annotated positives, of the
    precision at the positive's rank when the annotated entries of `c`
    (target 0 or 1) are sorted by descending score; entries with target -1
    are left out. Tied scores share the precision counted at the end of the
    tie group (all entries with score >= s), as in
    `sklearn.metrics.average_precision_score`. A class without an annotated
    positive or without an annotated negative has no AP (NaN) and is left
    out of the mean.

    Example:

    >>> y_true = [[1, 0], [0, 1], [1, -1], [-1, 0]]
    >>> y_score = [[0.9, 0.5], [0.8, 0.5], [0.3, 0.1], [0.95, 0.2]]
    >>> mean_ap, per_class_ap = partial_mean_average_precision(y_true, y_score)
    >>> mean_ap  # (AP 5/6 + AP 1/2) / 2
    66.66666666666666
    >>> per_class_ap
    array([83.33333333, 50.        ])

    Args:
        y_true: array `[samples, classes]` of 1 (positive), 0 (negative) and
            -1 (un-annotated).
        y_score: array `[samples, classes]` of finite scores (probabilities
            or logits: only their order matters).
        average: `"macro"` (default): the plain mean over the evaluated
            classes; `"weighted"`: each class weighted by its number of
            annotated positives.

    Returns:
        `(mean_ap, per_class_ap)`: a float and a float64 vector of one AP
        per class, both in percent; NaN for a class left out, and a NaN
        mean when every class is left out.

    Raises:
        ValueError: if the arrays are not 2D of the same shape, a target is
            not 1, 0 or -1, a score is not finite, or `average` is unknown.
    """
    targets, scores = _validate_arrays(y_true, y_score)
    _validate_average(average)
    num_classes = targets.shape[1]
    per_class_ap = np.full(num_classes, np.nan)
    positives = np.zeros(num_classes)
    for c in range(num_classes):
        annotated = targets[:, c] != -1
        per_class_ap[c], positives[c] = _class_average_precision(
            targets[annotated, c], scores[annotated, c]
        )
    per_class_ap *= 100.0
    evaluated = ~np.isnan(per_class_ap)
    if not evaluated.any():
        logger.warning(
            "No class has both an annotated positive and an annotated "
            "negative: the mean average precision is NaN."
        )
        return float("nan"), per_class_ap
    weights = positives[evaluated] if average == "weighted" else None
    mean_ap = float(np.average(per_class_ap[evaluated], weights=weights))
    return mean_ap, per_class_ap


def _class_average_precision(targets, scores):
    """AP (fraction) of one class and its positive count; NaN if undefined.

    `targets` holds only 0 and 1 (annotated entries).
    """
    num_positives = int(targets.sum())
    if num_positives == 0 or num_positives == len(targets):
        return float("nan"), num_positives
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    hits = np.cumsum(targets[order])
    # The last index of each tie group: precision is counted there.
    group_ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = hits[group_ends]
    precision = true_positives / (group_ends + 1.0)
    positives_in_group = np.diff(true_positives, prepend=0)
    return float(positives_in_group @ precision) / num_positives, num_positives


def _validate_arrays(y_true, y_score):
    try:
        targets = np.asarray(y_true, dtype="float64")
        scores = np.asarray(y_score, dtype="float64")
    except (TypeError, ValueError) as error:
        raise ValueError(
            "Invalid value for argument `y_true`/`y_score`. Expected numeric "
            f"arrays. Received: {error}"
        ) from None
    if scores.ndim != 2:
        raise ValueError(
            "Invalid value for argument `y_score`. Expected a 2D array of "
            f"shape [samples, classes]. Received: y_score.shape={scores.shape}"
        )
    if targets.shape != scores.shape:
        raise ValueError(
            "Invalid value for argument `y_true`. Expected the shape of "
            f"y_score {scores.shape}. Received: y_true.shape={targets.shape}"
        )
    bad = ~np.isin(targets, (-1.0, 0.0, 1.0))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            "Invalid value for argument `y_true`. Expected targets 1 "
            "(positive), 0 (negative) or -1 (un-annotated). Received: "
            f"y_true[{index[0]}, {index[1]}]={targets[index]} "
            f"({int(bad.sum())} bad values)"
        )
    bad = ~np.isfinite(scores)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            "Invalid value for argument `y_score`. Expected finite scores. "
            f"Received: y_score[{index[0]}, {index[1]}]={scores[index]} "
            f"({int(bad.sum())} bad values)"
        )
    return targets.astype("int8"), scores


def _validate_average(average):
    if average not in AVERAGES:
        raise ValueError(
            f"Invalid value for argument `average`. Expected one of "
            f"{AVERAGES}. Received: average={average!r}"
        )
