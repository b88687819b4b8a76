"""Class priors: estimate, compare, read and write them.

The class prior `P_r(c)` of CSL is the probability that class `c` is present
in an image. The paper estimates it with a model trained in "ignore" mode,
averaging its predicted probabilities over the training set; the naive
estimate from the partial labels is biased wherever annotation is not
uniform (a class annotated mostly where it appears looks frequent).

Everything here works on NumPy arrays and any Keras backend. How a
training run uses these (the prior's life cycle: naive prior, the loss's
prior variable, a prior CSV at the start of a run, online re-estimation by
`keras_csl.callbacks.ClassPriorUpdater`, checkpoints, and the paper's
two-stage flow) is told in one place: `keras_csl.training.class_prior`.
"""

import csv
import itertools
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

# The two columns the authors' training script writes (by row order).
AUTHORS_HEADER = ("Classes", "avg_pred")
HEADER = ("index", "class_id", "prior")


def validate_prior(values, num_classes=None, argument="prior"):
    """Checks a class prior and returns it as a float32 NumPy vector.

    Args:
        values: sequence or tensor of probabilities, one per class.
        num_classes: expected length, or `None` to accept any.
        argument: name used in error messages.

    Raises:
        ValueError: if `values` is not a finite 1D vector in [0, 1] of the
            expected length.
    """
    try:
        array = np.asarray(values, dtype="float32")
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a 1D sequence "
            f"of floats. Received: {argument}={values!r} ({error})"
        ) from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a non-empty "
            f"1D vector, one value per class. Received: shape={array.shape}"
        )
    if num_classes is not None and array.shape[0] != num_classes:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected "
            f"{num_classes} values (num_classes). Received: "
            f"{array.shape[0]} values"
        )
    bad = ~np.isfinite(array) | (array < 0) | (array > 1)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected "
            f"probabilities in [0, 1]. Received: {argument}[{index}]="
            f"{array[index]} ({int(bad.sum())} bad values)"
        )
    return array


def naive_prior(targets, empty_value=0.0):
    """Fraction of positives among the annotated entries of each class.

    Example:

    >>> naive_prior([[1, 0, -1], [1, -1, -1], [0, 1, -1]])
    array([0.6666667, 0.5      , 0.       ], dtype=float32)

    Args:
        targets: array `[samples, classes]` with 1 (positive), 0 (negative)
            and -1 (un-annotated), or an iterable of such batches (or of
            `(inputs, targets)` tuples, e.g. a `tf.data.Dataset`).
        empty_value: prior of a class without any annotated entry.

    Returns:
        Float32 vector `[classes]`.
    """
    counter = LabelCounter()
    for batch in _target_batches(targets):
        counter.update(batch)
    if not counter.count:
        raise ValueError(
            "Invalid value for argument `targets`. Expected at least one "
            "batch of targets. Received: an empty iterable"
        )
    return counter.result(empty_value)


class LabelCounter:
    """Streaming counts of positive and annotated entries per class.

    What `naive_prior` computes, one batch at a time, in O(classes) memory.

    Attributes:
        positives: int64 vector, positive entries per class.
        annotated: int64 vector, annotated (positive or negative) entries.
        count: number of samples seen.
    """

    def __init__(self):
        self.positives = None
        self.annotated = None
        self.count = 0

    def update(self, targets):
        targets = _as_2d(targets)
        positives = (targets > 0.5).sum(axis=0)
        annotated = (targets > -0.5).sum(axis=0)
        if self.positives is None:
            self.positives, self.annotated = positives, annotated
        else:
            self.positives = self.positives + positives
            self.annotated = self.annotated + annotated
        self.count += targets.shape[0]

    def result(self, empty_value=0.0):
        """The naive prior; `empty_value` for classes never annotated."""
        empty = self.annotated == 0
        if empty.any():
            logger.info(
                "naive_prior: %d of %d classes have no annotated entry; their "
                "prior is %s.", int(empty.sum()), len(empty), empty_value
            )
        prior = np.where(
            empty, empty_value, self.positives / np.maximum(self.annotated, 1)
        )
        return prior.astype("float32")


def _target_batches(targets):
    if isinstance(targets, np.ndarray) or (
        isinstance(targets, (list, tuple)) and _is_number_rows(targets)
    ):
        yield _as_2d(targets)
        return
    for batch in targets:
        if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
            batch = batch[1]
        yield _as_2d(batch)


def _is_number_rows(rows):
    return len(rows) > 0 and np.ndim(rows[0]) == 1 and np.ndim(rows) == 2


def _as_2d(batch):
    array = np.asarray(batch, dtype="float32")
    if array.ndim != 2:
        raise ValueError(
            "Invalid value for argument `targets`. Expected batches of shape "
            f"[samples, classes]. Received: shape={array.shape}"
        )
    return array


class PredictionAverager:
    """Streaming mean of predicted probabilities per class; memory O(classes).

    Example:

    >>> averager = PredictionAverager(from_logits=False)
    >>> averager.update([[0.2, 0.9], [0.4, 0.7]])
    >>> averager.result()
    array([0.3, 0.8], dtype=float32)
    """

    def __init__(self, from_logits=True):
        self.from_logits = from_logits
        self.reset()

    def reset(self):
        self.total = None
        self.count = 0

    def update(self, predictions):
        predictions = np.asarray(predictions, dtype="float64")
        if predictions.ndim != 2:
            raise ValueError(
                "Invalid value for argument `predictions`. Expected shape "
                f"[batch, classes]. Received: shape={predictions.shape}"
            )
        if self.from_logits:
            predictions = 0.5 * (1.0 + np.tanh(0.5 * predictions))  # sigmoid
        batch_sum = predictions.sum(axis=0)
        self.total = batch_sum if self.total is None else self.total + batch_sum
        self.count += predictions.shape[0]

    def result(self):
        if not self.count:
            raise ValueError(
                "PredictionAverager.result() needs at least one update. "
                "Received: no predictions"
            )
        return (self.total / self.count).astype("float32")


def prior_from_predictions(
    model, dataset, steps=None, from_logits=True, verbose=1
):
    """Class prior as the mean predicted probability over a dataset.

    This is how the paper estimates `P_r(c)`: average the sigmoid outputs of
    a model (ideally one trained in "ignore" mode) over the training images.
    Memory stays O(classes) whatever the dataset size.

    Args:
        model: a Keras model whose output is `[batch, classes]`.
        dataset: iterable of batches: inputs, or `(inputs, targets[, w])`
            tuples (a `tf.data.Dataset` works).
        steps: stop after this many batches (`None`: the whole dataset).
        from_logits: whether the model outputs logits.
        verbose: 1 shows a progress bar.

    Returns:
        Float32 vector `[classes]`.
    """
    import keras

    averager = PredictionAverager(from_logits=from_logits)
    progbar = keras.utils.Progbar(steps, unit_name="batch") if verbose else None
    batches = dataset if steps is None else itertools.islice(dataset, steps)
    for step, batch in enumerate(batches):
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        averager.update(keras.ops.convert_to_numpy(model.predict_on_batch(inputs)))
        if progbar is not None:
            progbar.update(step + 1)
    return averager.result()


def rank_correlation(a, b):
    """Spearman rank correlation of two priors (ties get average ranks).

    Example:

    >>> rank_correlation([0.1, 0.5, 0.3], [1.0, 3.0, 2.0])
    1.0
    """
    a = np.asarray(a, dtype="float64").ravel()
    b = np.asarray(b, dtype="float64").ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(
            "Invalid value for arguments `a`, `b`. Expected two vectors of "
            f"the same length >= 2. Received: a.shape={a.shape}, "
            f"b.shape={b.shape}"
        )
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denominator == 0:
        return float("nan")
    return float((ra * rb).sum() / denominator)


def _average_ranks(values):
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype="float64")
    # Each run of equal values shares the mean of its positions.
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(values)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = 0.5 * (start + end - 1)
    return ranks


def write_prior_csv(path, prior, class_ids=None, display_names=None):
    """Writes a prior as CSV: `index,class_id,prior[,display_name]`.

    Args:
        path: file to write; its folder is created if needed.
        prior: vector `[classes]`.
        class_ids: optional class ids (e.g. OpenImages MIDs); default the
            index as a string.
        display_names: optional human-readable names.
    """
    prior = validate_prior(prior, argument="prior")
    n = len(prior)
    class_ids = [str(i) for i in range(n)] if class_ids is None else class_ids
    for argument, column in (("class_ids", class_ids), ("display_names", display_names)):
        if column is not None and len(column) != n:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected {n} "
                f"entries (one per class). Received: {len(column)}"
            )
    with _open_for_writing(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        header = list(HEADER) + (["display_name"] if display_names is not None else [])
        writer.writerow(header)
        for i in range(n):
            row = [i, class_ids[i], repr(float(prior[i]))]
            if display_names is not None:
                row.append(display_names[i])
            writer.writerow(row)


def _open_for_writing(path):
    """A text file for writing, creating its folder; `gs://` and other
    `tf.io.gfile` paths work when TensorFlow is installed."""
    path = os.fspath(path)
    gfile = _gfile()
    if gfile is not None:
        gfile.makedirs(os.path.dirname(path) or ".")
        return gfile.GFile(path, "w")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return open(path, "w", newline="", encoding="utf-8")


def _open_for_reading(path):
    path = os.fspath(path)
    gfile = _gfile()
    if gfile is None:
        return open(path, newline="", encoding="utf-8")
    return gfile.GFile(path, "r")


def _gfile():
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf.io.gfile


def read_prior_csv(path, class_ids=None, num_classes=None):
    """Reads a prior CSV written by `write_prior_csv` or by the authors' code.

    Our format is keyed by class id when `class_ids` is given (so a file
    whose rows are in another order, or hold more classes, still maps
    correctly) and by the `index` column otherwise. The authors'
    `Classes,avg_pred` file carries display names, which are not unique, so
    it is read by row order.

    Args:
        path: the CSV file.
        class_ids: the model's class ids in index order, to key rows by id.
        num_classes: expected number of classes (checked).

    Returns:
        Float32 vector `[classes]`.

    Raises:
        ValueError: on an unknown header, a malformed row (file and line
            named), a missing class or a wrong number of classes.
    """
    with _open_for_reading(path) as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"Invalid prior file {path}: it is empty.")
    header = tuple(column.strip() for column in rows[0])
    body = rows[1:]
    if header[:2] == AUTHORS_HEADER:
        values = [_parse_float(path, line, row, 1) for line, row in enumerate(body, 2)]
    elif header[:3] == HEADER:
        values = _read_keyed(path, body, class_ids)
    else:
        raise ValueError(
            f"Invalid prior file {path}: expected a header starting with "
            f"{','.join(HEADER)} or {','.join(AUTHORS_HEADER)}. "
            f"Received: {','.join(header)}"
        )
    expected = len(class_ids) if class_ids is not None else num_classes
    return validate_prior(values, expected, argument=f"prior read from {path}")


def _read_keyed(path, body, class_ids):
    if class_ids is None:
        by_index = {}
        for line, row in enumerate(body, 2):
            by_index[_parse_int(path, line, row, 0)] = _parse_float(path, line, row, 2)
        n = len(by_index)
        missing = sorted(set(range(n)) - set(by_index))
        if missing:
            raise ValueError(
                f"Invalid prior file {path}: indices must be 0..{n - 1}. "
                f"Missing: {missing[:10]}"
            )
        return [by_index[i] for i in range(n)]
    by_id = {}
    for line, row in enumerate(body, 2):
        if len(row) < 3:
            raise ValueError(f"Invalid prior file {path}, line {line}: {row!r}")
        by_id[row[1]] = _parse_float(path, line, row, 2)
    missing = [c for c in class_ids if c not in by_id]
    if missing:
        raise ValueError(
            f"Invalid prior file {path}: {len(missing)} of the model's "
            f"{len(class_ids)} classes are missing, e.g. {missing[:5]}"
        )
    return [by_id[c] for c in class_ids]


def _parse_float(path, line, row, column):
    try:
        return float(row[column])
    except (IndexError, ValueError):
        raise ValueError(
            f"Invalid prior file {path}, line {line}: expected a number in "
            f"column {column + 1}. Received: {row!r}"
        ) from None


def _parse_int(path, line, row, column):
    try:
        return int(row[column])
    except (IndexError, ValueError):
        raise ValueError(
            f"Invalid prior file {path}, line {line}: expected an integer "
            f"index in column {column + 1}. Received: {row!r}"
        ) from None


def top_classes(prior, k=10, class_names=None):
    """The `k` classes with the highest prior, as `(index, name, value)`."""
    prior = np.asarray(prior)
    order = np.argsort(-prior, kind="stable")[:k]
    return [
        (int(i), class_names[i] if class_names is not None else str(i), float(prior[i]))
        for i in order
    ]
