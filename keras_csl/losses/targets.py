"""Input checks of the losses and the mAP metric: target values and shapes.

Targets are 1 (positive), 0 (verified negative) or -1 (un-annotated); ASL
takes 1 and 0 only. Anything else (NaN, which is how pandas writes a
missing value, 0.5, 2, -7) and a `y_true` whose rows do not match
`y_pred`'s must never turn into a plausible number. What each check can do
depends on where it runs:

- Shapes known while tracing (eager, JAX, fixed batches): a `ValueError`
  before any computation.
- Eager execution (TensorFlow or JAX outside `jit`, PyTorch): a
  `ValueError` naming the count, the first bad entry and the bad values.
- TensorFlow graphs (`tf.function`, `model.fit` without XLA): a run-time
  assertion, `tf.errors.InvalidArgumentError` with the same text, raised
  before the step's result (the loss value and so the weight update)
  exists. keras.ops has no run-time assertion; this is the only
  TensorFlow-specific code here, imported lazily.
- XLA (`jit_compile=True`) and `jax.jit`: nothing can raise at run time
  (XLA drops TensorFlow's assertions), so the callers turn the boolean
  returned here into NaN (the loss of the batch and its gradient become
  NaN, the metric's result NaN); under `jax.jit` the loss instead makes
  each bad entry NaN and does not call `check_values`.
"""

import keras
import numpy as np
from keras import ops

PARTIAL_TARGETS = (1.0, 0.0, -1.0)
FULL_TARGETS = (1.0, 0.0)

_DESCRIPTIONS = {
    PARTIAL_TARGETS: "1 (positive), 0 (negative) or -1 (un-annotated)",
    FULL_TARGETS: "1 (positive) or 0 (negative)",
}
_HINTS = {
    PARTIAL_TARGETS: "Missing labels are -1 (pandas writes them as NaN).",
    FULL_TARGETS: "For partial labels (-1) use ClassAwareSelectiveLoss.",
}


def describe(allowed):
    """Human-readable list of the allowed target values."""
    return _DESCRIPTIONS[tuple(allowed)]


def check_static_shapes(y_true, y_pred, caller, num_classes=None):
    """Raises a `ValueError` for shapes that are wrong already when traced.

    Both must be 2D `[batch, classes]`, with the same number of classes
    (and `num_classes` if given) and, where both are known, the same batch.
    """
    pred_shape = tuple(y_pred.shape)
    true_shape = tuple(y_true.shape)
    if len(pred_shape) != 2:
        raise ValueError(
            f"Invalid value for argument `y_pred` of {caller}. Expected a 2D "
            f"tensor of shape [batch, classes]. Received: y_pred.shape={pred_shape}"
        )
    if len(true_shape) != 2 or any(
        a is not None and b is not None and a != b
        for a, b in zip(true_shape, pred_shape)
    ):
        raise ValueError(
            f"Invalid value for argument `y_true` of {caller}. Expected the "
            f"shape of y_pred {pred_shape}. Received: y_true.shape={true_shape}"
        )
    if num_classes is not None and pred_shape[-1] not in (None, num_classes):
        raise ValueError(
            f"Invalid value for argument `y_pred` of {caller}. Expected "
            f"num_classes={num_classes} columns. Received: "
            f"y_pred.shape={pred_shape}"
        )


def check_rows(y_true, y_pred, caller):
    """Checks at run time that `y_true` has as many rows as `y_pred`.

    Only needed where a batch size is unknown while tracing (TensorFlow
    graphs): there a `(1, C)` target would broadcast against `(B, C)`
    predictions.

    Returns:
        `(y_true, ok)`. `ok` is `None` when the rows are known to match,
        else a boolean scalar tensor. In a TensorFlow graph, `y_true` comes
        back tied to the run-time assertion, so that no broadcasting error
        from the computation can come first.
    """
    true_rows, pred_rows = y_true.shape[0], y_pred.shape[0]
    if true_rows is not None and pred_rows is not None:
        return y_true, None  # check_static_shapes compared them.
    ok = ops.equal(ops.shape(y_true)[0], ops.shape(y_pred)[0])
    if keras.backend.backend() == "tensorflow" and not is_concrete(y_true):
        ok = _tf_assert(
            ok,
            lambda: [
                f"Invalid value for argument `y_true` of {caller}. Expected "
                "the shape of y_pred. Received: y_true.shape, y_pred.shape =",
                _tf().shape(y_true),
                _tf().shape(y_pred),
            ],
        )
        y_true = _tf_after(ok, y_true)
    return y_true, ok


def check_values(y_true, valid, allowed, caller):
    """Checks that every target is one of `allowed`.

    Args:
        y_true: float tensor `[batch, classes]` of targets.
        valid: boolean tensor of the same shape, True where the target is
            allowed (the caller builds it from the masks it needs anyway).
        allowed: `PARTIAL_TARGETS` or `FULL_TARGETS`.
        caller: name used in messages.

    Returns:
        `None` when the targets were checked eagerly (they are fine:
        otherwise this raised), else a boolean scalar tensor, False when a
        target is not allowed.

    Raises:
        ValueError: eagerly, naming the count, the first bad entry and the
            bad values.
    """
    ok = ops.all(valid)
    if traced_without_assertions(y_true):
        return ok
    if is_concrete(ok):
        if not bool(ops.convert_to_numpy(ok)):
            raise ValueError(_values_message(y_true, allowed, caller))
        return None

    def data():
        tf = _tf()
        bad = tf.reshape(tf.logical_not(valid), [-1])
        first = tf.argmax(tf.cast(bad, tf.int32))
        classes = tf.shape(y_true, out_type=first.dtype)[1]
        return [
            f"Invalid value for argument `y_true` of {caller}. Expected "
            f"targets {describe(allowed)}. {_HINTS[tuple(allowed)]} "
            "Received: the count of bad targets, the row and column of the "
            "first and its value:",
            tf.reduce_sum(tf.cast(bad, tf.int32)),
            first // classes,
            first % classes,
            tf.gather(tf.reshape(y_true, [-1]), first),
        ]

    return _tf_assert(ok, data)


def nan_unless(*oks):
    """1.0 where every `ok` is True (or `None`), NaN otherwise; `None` if all are `None`."""
    oks = [ok for ok in oks if ok is not None]
    if not oks:
        return None
    ok = oks[0]
    for other in oks[1:]:
        ok = ops.logical_and(ok, other)
    return ops.where(ok, 1.0, float("nan"))


def traced_without_assertions(tensor):
    """Traced on a backend with no run-time assertion (JAX's `jit`).

    There a bad input can only be signalled by NaN. TensorFlow graphs have
    assertions (which XLA then drops: see `check_values`' callers).
    """
    return keras.backend.backend() != "tensorflow" and not is_concrete(tensor)


def is_concrete(tensor):
    """Whether `tensor` has a value now (eager), not a traced placeholder."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf().executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(tensor, jax.core.Tracer)
    return True


def _values_message(y_true, allowed, caller):
    targets = np.asarray(ops.convert_to_numpy(y_true), dtype="float64")
    bad = ~np.isin(targets, allowed)
    row, column = (int(i) for i in np.argwhere(bad)[0])
    values = targets[bad]
    # By text: NaN != NaN would repeat every NaN.
    distinct = list(dict.fromkeys(str(float(v)) for v in values[:1000]))
    examples = ", ".join(distinct[:5])
    return (
        f"Invalid value for argument `y_true` of {caller}. Expected targets "
        f"{describe(allowed)}. Received: y_true[{row}, {column}]="
        f"{targets[row, column]} ({int(bad.sum())} bad values, e.g. "
        f"{examples}). {_HINTS[tuple(allowed)]}"
    )


# TensorFlow-only helpers, imported lazily: keras.ops has no run-time
# assertion, and XLA compiles the assertion away (callers add NaN).


def _tf():
    import tensorflow as tf

    return tf


def _tf_assert(ok, data):
    """`ok`, after raising `InvalidArgumentError` with `data()` if it is False.

    `data` is only computed when the check fails (inside the false branch).
    """
    tf = _tf()

    def fail():
        # The raw op: `tf.debugging.Assert` would wrap float data in a
        # second cond, which makes Grappler log a warning at every trace;
        # this branch already runs only when the check fails.
        assertion = tf.raw_ops.Assert(
            condition=tf.constant(False), data=data(), summarize=8
        )
        with tf.control_dependencies([assertion]):
            return tf.constant(False)

    return tf.cond(ok, lambda: tf.constant(True), fail)


def _tf_after(ok, tensor):
    tf = _tf()
    with tf.control_dependencies([ok]):
        return tf.identity(tensor)
