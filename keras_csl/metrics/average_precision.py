"""Mean average precision over the annotated entries of partial labels.

With partial annotations (targets 1 positive, 0 verified negative, -1
un-annotated) the average precision (AP) of a class is computed on its
annotated entries only, as in the evaluation protocol of OpenImages and of
Ben-Baruch et al. (CVPR 2022): an un-annotated entry is neither a hit nor a
false alarm. With no -1 present this is the ordinary mAP.

Ties in score form one group: every positive of a group gets the precision
counted at the end of the group (all entries with score >= s), the
convention of `sklearn.metrics.average_precision_score`; the AP of a class
does not depend on the order of tied entries.

`PartialMeanAveragePrecision` is the Keras metric for `fit`/`evaluate`;
`partial_mean_average_precision` (in `partial_map.py`, re-exported here)
is the NumPy function it agrees with.
"""

import keras
import numpy as np
from keras import ops

from keras_csl.losses import targets as target_checks
from keras_csl.metrics.partial_map import AVERAGES  # noqa: F401 (re-export)
from keras_csl.metrics.partial_map import _validate_average
from keras_csl.metrics.partial_map import partial_mean_average_precision  # noqa: F401

# Exact-mode target codes: 0 marks an empty buffer row, so that a zeroed
# buffer (and the zeros of other replicas' slots) drops out like -1.
_EMPTY = 0
_UNANNOTATED = 1
_NEGATIVE = 2
_POSITIVE = 3

# Bounded mode: the logit part of the bin position is clipped to
# [-_LOGIT_RANGE, _LOGIT_RANGE]. 16 is about where float32 probabilities end
# (the largest below 1, 1 - 2**-24, has logit 16.6); a narrower range would
# merge confident scores (benchmarks/metric_error.py, "overconfident").
_LOGIT_RANGE = 16.0


@keras.saving.register_keras_serializable(package="keras_csl")
class PartialMeanAveragePrecision(keras.metrics.Metric):
    """Mean average precision (percent) over the annotated entries.

    The Keras metric of `partial_mean_average_precision`, for `compile`,
    `fit` and `evaluate`: targets are 1 (positive), 0 (negative) or -1
    (un-annotated), and -1 entries count neither as hits nor as false
    alarms. Two modes:

    - Exact (`num_thresholds=None`, the default): the scores and targets of
      up to `max_samples` samples are kept in fixed-size buffers and
      `result()` equals `partial_mean_average_precision` on them (the raw
      `y_pred` is ranked, so logits keep ties that `sigmoid` would create in
      float32). Memory: `8 * max_samples * num_classes` bytes per replica.
      Each `result()` sorts the whole buffer, and Keras calls it at every
      step for the progress bar: size `max_samples` to the data.
      More samples than `max_samples` are counted, not stored: `result()`
      is then NaN, and raises a `ValueError` when computed eagerly (as
      Keras does at the end of `evaluate` and of each epoch).
    - Bounded (`num_thresholds=B`): per class, histograms of the positives
      and negatives over `B` equal bins of `(p + (z + 16) / 32) / 2`, the
      mean of the probability `p` and of the logit `z` clipped to
      [-16, 16] and rescaled to [0, 1]: fine bins both near p = 0.5 and at
      small probabilities. The positives of a bin are scored at the
      precision of the bin's middle positive, as if the bin's entries came
      in random order. Memory `8 * num_classes * B` bytes, independent of
      the number of samples (OpenImages-sized evaluation); at `B = 1000`,
      within about 0.03 mAP points of the exact value on the score
      distributions measured in docs/METRICS.md.

    Under `tf.distribute.MirroredStrategy` create the metric inside
    `strategy.scope()`; each replica writes into its own slot of the buffer
    (or adds its own histograms), and the value read at the end of an epoch
    covers all replicas. Per-step values shown during an epoch under a
    strategy are means of per-replica values; the epoch's value is exact.

    `sample_weight`, if given, only masks: an entry with weight 0 is treated
    as un-annotated; other weights are not used.

    Bad input, as for the losses: targets other than 1, 0, -1 (NaN, 0.5,
    2) and a `y_true` whose rows differ from `y_pred`'s (10 predictions
    against 9 target rows, or a `(1, C)` target) raise a `ValueError` from
    `update_state` when run eagerly or when shapes are known while
    tracing, and `tf.errors.InvalidArgumentError` in a TensorFlow graph
    (`evaluate` without XLA). Under XLA or `jax.jit`, where nothing can
    raise at run time, the batch is counted: `result()` is then NaN inside
    compiled steps and raises a `ValueError` when computed eagerly, as
    Keras does at the end of `evaluate` and of each epoch.

    Example:

    >>> metric = keras_csl.metrics.PartialMeanAveragePrecision(
    ...     2, from_logits=False)
    >>> metric.update_state([[1, 0], [0, 1], [1, -1], [-1, 0]],
    ...                     [[0.9, 0.5], [0.8, 0.5], [0.3, 0.1], [0.95, 0.2]])
    >>> float(metric.result())  # (AP 5/6 + AP 1/2) / 2
    66.666...

    Args:
        num_classes: number of classes.
        from_logits: whether `y_pred` are logits (default) or
            probabilities.
        average: `"macro"` (default) or `"weighted"` (by the number of
            annotated positives of each class).
        max_samples: exact mode: samples kept per replica. Defaults to
            10000.
        num_thresholds: `None` (default) for the exact mode, or the number
            of score bins (>= 2) of the bounded-memory mode.
        name: name of the metric.
        dtype: dtype of the result; the computation is in float32.

    Raises:
        ValueError: for an out-of-range argument; from `update_state`, for
            bad targets or shapes, or when used under a `tf.distribute`
            strategy other than the one it was created in; from an eager
            `result()`, after an overflow or a batch counted as bad.
    """

    def __init__(
        self,
        num_classes,
        from_logits=True,
        average="macro",
        max_samples=10000,
        num_thresholds=None,
        name="partial_mean_average_precision",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        _check_positive_int(num_classes, "num_classes", minimum=1)
        _validate_average(average)
        _check_positive_int(max_samples, "max_samples", minimum=1)
        if num_thresholds is not None:
            _check_positive_int(num_thresholds, "num_thresholds", minimum=2)
        self.num_classes = int(num_classes)
        self.from_logits = bool(from_logits)
        self.average = average
        self.max_samples = int(max_samples)
        self.num_thresholds = (
            None if num_thresholds is None else int(num_thresholds)
        )

        # Batches with bad targets or mismatched rows seen where
        # update_state could not raise (XLA, jax.jit): result() is NaN.
        self.rejected_batches = self.add_variable(
            shape=(), initializer="zeros", dtype="float32",
            aggregation="sum", name="rejected_batches",
        )
        if self.num_thresholds is not None:
            shape = (self.num_classes, self.num_thresholds)
            self.positive_counts = self.add_variable(
                shape=shape, initializer="zeros", dtype="float32",
                aggregation="sum", name="positive_counts",
            )
            self.negative_counts = self.add_variable(
                shape=shape, initializer="zeros", dtype="float32",
                aggregation="sum", name="negative_counts",
            )
            # Annotated entries with a NaN score, which fit in no bin.
            self.nan_counts = self.add_variable(
                shape=(self.num_classes,), initializer="zeros",
                dtype="float32", aggregation="sum", name="nan_counts",
            )
            return

        # One slot of `max_samples` rows per replica: replicas write disjoint
        # rows, so the cross-replica sum of the buffers is their union.
        self._num_slots = _num_replicas()
        shape = (self._num_slots * self.max_samples, self.num_classes)
        self.scores = self.add_variable(
            shape=shape, initializer="zeros", dtype="float32",
            aggregation="sum", name="scores",
        )
        self.codes = self.add_variable(
            shape=shape, initializer="zeros", dtype="float32",
            aggregation="sum", name="codes",
        )
        self.row_count = self.add_variable(
            shape=(), initializer="zeros", dtype="float32",
            aggregation="sum", name="row_count",
        )
        self.overflow = self.add_variable(
            shape=(), initializer="zeros", dtype="float32",
            aggregation="sum", name="overflow",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        caller = type(self).__name__
        target_checks.check_static_shapes(
            y_true, y_pred, caller, self.num_classes
        )
        y_true, rows_ok = target_checks.check_rows(y_true, y_pred, caller)
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        positive = ops.equal(y_true, 1.0)
        unannotated = ops.equal(y_true, -1.0)
        valid = ops.logical_or(
            ops.logical_or(positive, unannotated), ops.equal(y_true, 0.0)
        )
        values_ok = target_checks.check_values(
            y_true, valid, target_checks.PARTIAL_TARGETS, caller
        )
        rejected = target_checks.nan_unless(rows_ok, values_ok)
        if rejected is not None:  # Traced: count instead of raising.
            self.rejected_batches.assign_add(
                ops.cast(ops.isnan(rejected), "float32")
            )
        codes = ops.where(
            positive,
            float(_POSITIVE),
            ops.where(unannotated, float(_UNANNOTATED), float(_NEGATIVE)),
        )
        if sample_weight is not None:
            weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            if len(weight.shape) == 1:
                weight = ops.expand_dims(weight, -1)
            codes = ops.where(weight > 0, codes, float(_UNANNOTATED))

        if self.num_thresholds is None:
            self._update_buffer(codes, y_pred)
        else:
            self._update_histograms(codes, y_pred)

    def _update_buffer(self, codes, scores):
        slot = self._slot()
        batch = ops.shape(scores)[0]
        if isinstance(batch, int) and batch > self.max_samples:
            # Cannot fit even in an empty buffer (and would not trace).
            self.overflow.assign_add(float(batch))
            return
        count = ops.cast(self.row_count, "int32")
        fits = count + batch <= self.max_samples
        start = slot * self.max_samples + count

        def write():
            return (
                ops.slice_update(self.scores.value, [start, 0], scores),
                ops.slice_update(self.codes.value, [start, 0], codes),
            )

        def keep():
            return self.scores.value, self.codes.value

        new_scores, new_codes = ops.cond(fits, write, keep)
        self.scores.assign(new_scores)
        self.codes.assign(new_codes)
        stored = ops.cast(ops.where(fits, batch, 0), "float32")
        self.row_count.assign_add(stored)
        self.overflow.assign_add(ops.cast(batch, "float32") - stored)

    def _update_histograms(self, codes, y_pred):
        invalid = ops.isnan(y_pred)
        invalid_annotated = ops.logical_and(invalid, codes >= _NEGATIVE)
        self.nan_counts.assign_add(
            ops.sum(ops.cast(invalid_annotated, "float32"), axis=0)
        )
        codes = ops.where(invalid, float(_UNANNOTATED), codes)
        bins = _score_bins(
            ops.where(invalid, 0.0, y_pred), self.from_logits,
            self.num_thresholds,
        )
        # One segment sum counts both: negatives in the first
        # `classes * bins` segments, positives in the next (one scatter
        # instead of two: the cost of an OpenImages-sized batch).
        size = self.num_classes * self.num_thresholds
        index = bins + self.num_thresholds * ops.arange(
            self.num_classes, dtype="int32"
        )
        index = index + size * ops.cast(codes == _POSITIVE, "int32")
        counts = ops.segment_sum(
            ops.reshape(ops.cast(codes >= _NEGATIVE, "float32"), (-1,)),
            ops.reshape(index, (-1,)),
            num_segments=2 * size,
        )
        counts = ops.reshape(counts, (2,) + tuple(self.negative_counts.shape))
        self.negative_counts.assign_add(counts[0])
        self.positive_counts.assign_add(counts[1])

    def _slot(self):
        """Which slot of the buffer this replica writes (0 but under TF)."""
        if keras.backend.backend() != "tensorflow":
            return 0
        replica_id, num_replicas = _tf_replica()
        if num_replicas != self._num_slots:
            raise ValueError(
                f"PartialMeanAveragePrecision '{self.name}' was created for "
                f"{self._num_slots} replica(s) and is updated by "
                f"{num_replicas}: create it inside the `strategy.scope()` "
                "of the strategy that runs it."
            )
        if replica_id is None:
            # Keras traces update_state once in the cross-replica context to
            # build the metrics (nothing is written then); an eager update
            # there would mix the replicas' rows.
            if num_replicas > 1 and target_checks.is_concrete(None):
                raise ValueError(
                    f"PartialMeanAveragePrecision '{self.name}': update_state "
                    "was called in a cross-replica context; call it inside "
                    "`strategy.run` (as fit/evaluate do)."
                )
            return 0
        return ops.cast(replica_id, "int32")

    def result(self):
        per_class_ap, positives = self._per_class_ap()
        evaluated = ops.logical_not(ops.isnan(per_class_ap))
        if self.average == "weighted":
            weights = ops.where(evaluated, positives, 0.0)
        else:
            weights = ops.cast(evaluated, "float32")
        total = ops.sum(ops.where(evaluated, per_class_ap, 0.0) * weights)
        mean_ap = ops.where(
            ops.sum(weights) > 0,
            total / ops.maximum(ops.sum(weights), 1.0),
            float("nan"),
        )
        return ops.cast(mean_ap, self.dtype)

    def per_class_ap(self):
        """The AP (percent) of each class, a NumPy vector; NaN if left out."""
        per_class_ap, _ = self._per_class_ap()
        return np.asarray(ops.convert_to_numpy(per_class_ap), dtype="float64")

    def _per_class_ap(self):
        """Per-class AP in percent (NaN if undefined) and positive counts."""
        rejected = ops.convert_to_tensor(self.rejected_batches)
        if target_checks.is_concrete(rejected) and float(
            ops.convert_to_numpy(rejected)
        ):
            raise ValueError(
                f"PartialMeanAveragePrecision '{self.name}' was updated with "
                f"{int(ops.convert_to_numpy(rejected))} batch(es) whose "
                "targets were not all 1, 0 or -1, or whose y_true and y_pred "
                "had different numbers of rows (where update_state cannot "
                "raise: XLA, jax.jit): its value is undefined. Missing labels "
                "are -1 (pandas writes them as NaN)."
            )
        per_class_ap, positives = self._per_class_ap_of_state()
        return ops.where(rejected > 0, float("nan"), per_class_ap), positives

    def _per_class_ap_of_state(self):
        if self.num_thresholds is not None:
            per_class_ap, positives = _histogram_average_precision(
                self.positive_counts.value, self.negative_counts.value
            )
            per_class_ap = ops.where(
                self.nan_counts.value > 0, float("nan"), per_class_ap
            )
            return per_class_ap * 100.0, positives
        overflow = ops.convert_to_tensor(self.overflow)
        if target_checks.is_concrete(overflow) and float(ops.convert_to_numpy(overflow)):
            stored = int(ops.convert_to_numpy(self.row_count))
            raise ValueError(
                f"PartialMeanAveragePrecision '{self.name}' received more "
                f"samples than it can keep: {stored} stored, "
                f"{int(ops.convert_to_numpy(overflow))} not stored "
                f"(max_samples={self.max_samples} per replica). Raise "
                "`max_samples`, or use the bounded-memory mode "
                "(`num_thresholds=...`)."
            )
        per_class_ap, positives = _exact_average_precision(
            self.codes.value, self.scores.value
        )
        per_class_ap = ops.where(overflow > 0, float("nan"), per_class_ap)
        return per_class_ap * 100.0, positives

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "from_logits": self.from_logits,
            "average": self.average,
            "max_samples": self.max_samples,
            "num_thresholds": self.num_thresholds,
            "name": self.name,
            "dtype": self.dtype,
        }


def _exact_average_precision(codes, scores):
    """Per-class AP (fraction, NaN if undefined) and positive counts.

    `codes` and `scores` are `[rows, classes]`; only rows coded positive or
    negative count; a class with a NaN score on such a row gets NaN.
    Graph-compatible: fixed shapes, keras.ops only.
    """
    has_nan = ops.any(
        ops.logical_and(ops.isnan(scores), codes >= _NEGATIVE), axis=0
    )
    codes = ops.transpose(codes)
    scores = ops.transpose(scores)
    num_classes, num_rows = codes.shape
    order = ops.argsort(-scores, axis=-1)
    scores = ops.take_along_axis(scores, order, axis=-1)
    codes = ops.take_along_axis(codes, order, axis=-1)
    hits = ops.cast(codes == _POSITIVE, "float32")
    annotated = ops.cast(codes >= _NEGATIVE, "float32")
    cumulative_hits = ops.cumsum(hits, axis=-1)
    cumulative_annotated = ops.cumsum(annotated, axis=-1)

    # Tie groups: each entry takes the counts at the end of its group,
    # found as the segment maximum of the (non-decreasing) cumulative counts.
    starts = ops.concatenate(
        [
            ops.ones((num_classes, 1), dtype="int32"),
            ops.cast(scores[:, 1:] != scores[:, :-1], "int32"),
        ],
        axis=-1,
    )
    group = ops.cumsum(starts, axis=-1) - 1
    group = group + num_rows * ops.arange(num_classes, dtype="int32")[:, None]
    group = ops.reshape(group, (-1,))

    def at_group_end(cumulative):
        ends = ops.segment_max(
            ops.reshape(cumulative, (-1,)),
            group,
            num_segments=num_classes * num_rows,
        )
        return ops.reshape(ops.take(ends, group), (num_classes, num_rows))

    precision = at_group_end(cumulative_hits) / ops.maximum(
        at_group_end(cumulative_annotated), 1.0
    )
    positives = cumulative_hits[:, -1]
    negatives = cumulative_annotated[:, -1] - positives
    average_precision = ops.sum(hits * precision, axis=-1) / ops.maximum(
        positives, 1.0
    )
    defined = ops.logical_and(positives > 0, negatives > 0)
    defined = ops.logical_and(defined, ops.logical_not(has_nan))
    return ops.where(defined, average_precision, float("nan")), positives


def _score_bins(y_pred, from_logits, num_thresholds):
    """Bounded-mode bin (int32) of each score.

    Bin `floor(u * B)` of `u = (p + (z + range) / (2 * range)) / 2`, with
    `p` the probability (clipped to [0, 1]) and `z` the logit clipped to
    [-range, range]: the probability part resolves scores near p = 0.5, the
    logit part small and large probabilities, where `p` alone would crowd
    into the end bins. `y_pred` must not hold NaN.
    """
    if from_logits:
        logits = y_pred
        probabilities = ops.sigmoid(y_pred)
    else:
        probabilities = ops.clip(y_pred, 0.0, 1.0)
        logits = ops.log(probabilities) - ops.log1p(-probabilities)
    logits = ops.clip(logits, -_LOGIT_RANGE, _LOGIT_RANGE)
    position = probabilities + (logits + _LOGIT_RANGE) / (2.0 * _LOGIT_RANGE)
    bins = ops.cast(ops.floor(position * (num_thresholds / 2.0)), "int32")
    return ops.minimum(bins, num_thresholds - 1)


def _histogram_average_precision(positive_counts, negative_counts):
    """Per-class AP (fraction, NaN if undefined) from `[classes, bins]`.

    The entries of a bin are taken in random order: each positive of bin
    `b` gets the precision of the bin's middle positive, `(TP_above +
    (pos_b + 1) / 2) / (N_above + (pos_b + neg_b + 1) / 2)`, with
    `TP_above` and `N_above` the positives and annotated entries in higher
    bins. A bin holding a single positive gets its exact precision.
    """
    counts = positive_counts + negative_counts
    # Counts in higher bins: reverse cumulative sums, less the bin itself.
    hits_above = (
        ops.flip(ops.cumsum(ops.flip(positive_counts, -1), axis=-1), -1)
        - positive_counts
    )
    annotated_above = (
        ops.flip(ops.cumsum(ops.flip(counts, -1), axis=-1), -1) - counts
    )
    precision = (hits_above + (positive_counts + 1.0) / 2.0) / (
        annotated_above + (counts + 1.0) / 2.0
    )
    positives = ops.sum(positive_counts, axis=-1)
    negatives = ops.sum(negative_counts, axis=-1)
    average_precision = ops.sum(
        positive_counts * precision, axis=-1
    ) / ops.maximum(positives, 1.0)
    defined = ops.logical_and(positives > 0, negatives > 0)
    return ops.where(defined, average_precision, float("nan")), positives


def _check_positive_int(value, argument, minimum):
    if (
        not isinstance(value, (int, np.integer))
        or isinstance(value, bool)
        or value < minimum
    ):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected an integer "
            f">= {minimum}. Received: {argument}={value!r}"
        )


# TensorFlow-only helpers, imported lazily: the rest of this module runs on
# every backend, where the metric sees the global batch in a single slot.


def _num_replicas():
    """Replicas of the current tf.distribute strategy (1 on other backends)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _tf_replica():
    """`(replica id or None in a cross-replica context, replica count)`."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:
        return None, tf.distribute.get_strategy().num_replicas_in_sync
    return context.replica_id_in_sync_group, context.num_replicas_in_sync
