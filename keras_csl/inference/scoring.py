"""Per-class APs, counts and precision-recall curves from predicted batches.

Two ways to score the `(probabilities, record_targets, eval_targets)`
batches of an evaluation, with the same result keys:

- `exact_summary`: keeps every score and target (float64, about 29 bytes
  per image and class for the mAP) and scores them with
  `keras_csl.metrics.partial_mean_average_precision`;
- `bounded_summary`: streams them through
  `PartialMeanAveragePrecision(num_thresholds=...)`, two histograms per
  class: memory O(classes x bins) whatever the number of images.

`eval_targets` are the labels evaluated (e.g. a label overlay's),
`record_targets` the records' own, used for the complete-label mAP.
"""

import numpy as np


def exact_summary(batches):
    """Per-class APs and counts from every score and target, kept in memory.

    Returns:
        A dict: `num_images`, `per_class_ap` and `full_ap` (percent, NaN for
        a class without annotated positive and negative; `full_ap` None
        unless the records' labels are complete), `labels_complete`,
        `positives`, `negatives`, `annotated` (counts over the evaluated
        labels) and `curve`, a function of a class index returning its
        `(precision, recall)`. Only `num_images=0` for no batch.
    """
    from keras_csl import metrics
    from keras_csl.metrics.curves import precision_recall_curve

    scores, record_targets, eval_targets = [], [], []
    for batch_scores, batch_records, batch_targets in batches:
        scores.append(batch_scores)
        record_targets.append(batch_records)
        eval_targets.append(batch_targets)
    if not scores:
        return dict(num_images=0)
    # Without an overlay the evaluated targets are the records' (one copy).
    overlaid = any(r is not e for r, e in zip(record_targets, eval_targets))
    scores = np.concatenate(scores).astype("float64")
    record_targets = np.concatenate(record_targets).astype("float64")
    if overlaid:
        eval_targets = np.concatenate(eval_targets).astype("float64")
    else:
        eval_targets = record_targets
    labels_complete = bool((record_targets != -1).all())
    _, per_class_ap = metrics.partial_mean_average_precision(eval_targets, scores)
    full_ap = None
    if labels_complete:
        # Without an overlay the evaluated labels are the records': reuse.
        full_ap = (
            metrics.partial_mean_average_precision(record_targets, scores)[1]
            if overlaid else per_class_ap
        )

    def curve(c):
        return precision_recall_curve(eval_targets[:, c], scores[:, c])

    return dict(
        num_images=len(scores),
        per_class_ap=per_class_ap,
        full_ap=full_ap,
        labels_complete=labels_complete,
        positives=(eval_targets == 1).sum(axis=0),
        negatives=(eval_targets == 0).sum(axis=0),
        annotated=int((eval_targets != -1).sum()),
        curve=curve,
    )


def bounded_summary(batches, num_classes, num_thresholds, with_overlay):
    """Per-class APs and counts from histograms: memory O(classes x bins).

    The APs come from `PartialMeanAveragePrecision(num_thresholds=...)`;
    with a label overlay, a second metric scores the records' own labels
    (for `full_ap`). The curves are drawn from the histograms, one point
    per non-empty bin. Same keys as `exact_summary`.
    """
    import keras

    from keras_csl.metrics import PartialMeanAveragePrecision
    from keras_csl.metrics.curves import precision_recall_from_histograms

    def make_metric():
        return PartialMeanAveragePrecision(
            num_classes, from_logits=False, num_thresholds=num_thresholds
        )

    metric = make_metric()
    full_metric = make_metric() if with_overlay else None
    positives = np.zeros(num_classes, "int64")
    negatives = np.zeros(num_classes, "int64")
    num_images = annotated = 0
    labels_complete = True
    for scores, record_targets, eval_targets in batches:
        metric.update_state(eval_targets, scores)
        if full_metric is not None:
            full_metric.update_state(record_targets, scores)
        positives += (eval_targets == 1).sum(axis=0)
        negatives += (eval_targets == 0).sum(axis=0)
        annotated += int((eval_targets != -1).sum())
        labels_complete &= bool((record_targets != -1).all())
        num_images += len(scores)
    if not num_images:
        return dict(num_images=0)
    per_class_ap = metric.per_class_ap()
    full_ap = per_class_ap if full_metric is None else full_metric.per_class_ap()
    histograms = {}

    def curve(c):
        if not histograms:
            for key in ("positive_counts", "negative_counts"):
                histograms[key] = keras.ops.convert_to_numpy(getattr(metric, key))
        return precision_recall_from_histograms(
            histograms["positive_counts"][c], histograms["negative_counts"][c]
        )

    return dict(
        num_images=num_images,
        per_class_ap=per_class_ap,
        full_ap=full_ap if labels_complete else None,
        labels_complete=labels_complete,
        positives=positives,
        negatives=negatives,
        annotated=annotated,
        curve=curve,
    )


def mean_ap(per_class_ap, weights=None):
    """Mean of the defined (finite) per-class APs; NaN if there is none."""
    per_class_ap = np.asarray(per_class_ap, "float64")
    evaluated = np.isfinite(per_class_ap)
    if not evaluated.any():
        return float("nan")
    if weights is not None:
        weights = np.asarray(weights, "float64")[evaluated]
    return float(np.average(per_class_ap[evaluated], weights=weights))
