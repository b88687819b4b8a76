"""The Class-aware Selective Loss (CSL) for partially annotated labels."""

import keras
import numpy as np
from keras import ops

from keras_csl.losses import targets as target_checks
from keras_csl.losses.selection import selection_weight
from keras_csl.losses.settings import MODES  # noqa: F401 (re-exported)
from keras_csl.losses.settings import SCOPES  # noqa: F401 (re-exported)
from keras_csl.losses.settings import SelectiveLossSettings
from keras_csl.losses.settings import expose_settings
from keras_csl.losses.settings import signature
from keras_csl.priors import validate_prior


def class_aware_selective_loss(y_true, y_pred, *, prior=None, **settings):
    """Per-sample CSL loss, the function behind `ClassAwareSelectiveLoss`.

    Takes the same settings as `ClassAwareSelectiveLoss` (same names, same
    defaults: `SelectiveLossSettings`). Targets are 1 (positive), 0
    (verified negative) or -1 (un-annotated); see the class for how other
    values and mismatched shapes are reported.

    Example:

    >>> float(class_aware_selective_loss(  # ln 2 * (1 + 1/2), -1 ignored
    ...     [[1.0, 0.0, -1.0]], [[0.0, 0.0, 0.0]], mode="ignore")[0])
    1.0397207...

    Args:
        y_true: targets `[batch, classes]`.
        y_pred: logits (or probabilities, `from_logits=False`) of the same
            shape.
        prior: `None` or a float tensor of shape `[classes]`.
        **settings: any of the `ClassAwareSelectiveLoss` settings.

    Returns:
        Float32 tensor of shape `[batch]`: minus the sum over classes of
        selection weight x focusing weight x alpha x log-likelihood.

    Raises:
        ValueError: for bad shapes or targets (where it can raise; see
            `ClassAwareSelectiveLoss`) or a bad setting.
        TypeError: for an unknown setting.
    """
    settings = SelectiveLossSettings.from_arguments(
        settings, "class_aware_selective_loss"
    )
    return selective_loss(y_true, y_pred, settings, prior=prior)


class_aware_selective_loss.__signature__ = signature(
    SelectiveLossSettings,
    ("y_true", "y_pred"),
    (("prior", None),),
)


def selective_loss(
    y_true,
    y_pred,
    settings,
    prior=None,
    num_classes=None,
    check_inputs=True,
    allowed=target_checks.PARTIAL_TARGETS,
    caller="ClassAwareSelectiveLoss",
):
    """`class_aware_selective_loss` with a `SelectiveLossSettings` record.

    `allowed` is the set of valid targets (`PARTIAL_TARGETS`, or
    `FULL_TARGETS` for ASL) and `caller` the name used in error messages.
    """
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    if check_inputs:
        target_checks.check_static_shapes(y_true, y_pred, caller, num_classes)
        y_true, rows_ok = target_checks.check_rows(y_true, y_pred, caller)
    targets = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    # Kinds by equality, as the authors' code: anything else is invalid.
    positive = ops.equal(targets, 1.0)
    unannotated = ops.equal(targets, -1.0)
    if not check_inputs:
        return _per_sample_loss(y_pred, positive, unannotated, settings, prior)
    valid = ops.logical_or(positive, ops.equal(targets, 0.0))
    if -1.0 in allowed:
        valid = ops.logical_or(valid, unannotated)
    # Under jax.jit a bad target turns its own entry's weight into NaN
    # (fused with the loss: no extra pass); elsewhere it raises, or (XLA in
    # TensorFlow) the assertion's boolean turns the loss into NaN below.
    entry_by_entry = target_checks.traced_without_assertions(targets)
    values_ok = None if entry_by_entry else target_checks.check_values(
        targets, valid, allowed, caller
    )
    per_sample = _per_sample_loss(
        y_pred, positive, unannotated, settings, prior,
        valid=valid if entry_by_entry else None,
    )
    factor = target_checks.nan_unless(rows_ok, values_ok)
    if factor is None:
        return per_sample
    # Traced: bad input makes the loss and its gradient NaN.
    return per_sample * ops.stop_gradient(factor)


def _per_sample_loss(y_pred, positive, unannotated, settings, prior, valid=None):
    """The CSL maths: `-sum_c w * (1 - p_t)^gamma * alpha * log p_t`.

    Where `valid` is given and False, the weight is NaN: the sample's loss
    and the gradient at that entry become NaN.
    """
    s = settings
    logits = y_pred if s.from_logits else _probabilities_to_logits(y_pred)

    def coefficient_of(one_minus_p_t, logits):
        """alpha * (1 - p_t)^gamma * selection weight, without gradient."""
        coefficient = _by_kind(
            positive,
            unannotated,
            _scaled(s.alpha_pos, _power(one_minus_p_t, s.gamma_pos)),
            _scaled(s.alpha_neg, _power(one_minus_p_t, s.gamma_neg)),
            _scaled(
                s.alpha_unannotated, _power(one_minus_p_t, s.gamma_unannotated)
            ),
        )
        keep = selection_weight(
            logits,
            unannotated,
            mode=s.mode,
            likelihood_topk=s.likelihood_topk,
            likelihood_scope=s.likelihood_scope,
            prior=prior,
            prior_threshold=s.prior_threshold,
        )
        if keep is not None:
            coefficient = ops.where(keep, coefficient, 0.0)
        if valid is not None:
            coefficient = ops.where(valid, coefficient, float("nan"))
        return ops.stop_gradient(coefficient)

    if s.clip > 0:
        # Probability shifting of ASL on every non-positive entry:
        # p_neg = min(1 - p + clip, 1) >= clip, so its log is finite. Its
        # gradient, -p (1 - p) / (1 - p + clip), vanishes as p -> 1.
        log_likelihood = ops.where(
            positive,
            ops.log_sigmoid(logits),
            ops.log(ops.minimum(ops.sigmoid(-logits) + s.clip, 1.0)),
        )
        p = ops.sigmoid(logits)
        coefficient = coefficient_of(
            ops.where(positive, 1.0 - p, ops.maximum(p - s.clip, 0.0)), logits
        )
        return -ops.sum(coefficient * log_likelihood, axis=-1)
    return _weighted_log_sigmoid_loss(logits, positive, coefficient_of)


def _weighted_log_sigmoid_loss(logits, positive, coefficient_of):
    """-sum_c coefficient * log p_t, with a hand-written gradient.

    With s = x for positives and -x otherwise, log p_t = log_sigmoid(s)
    and 1 - p_t = sigmoid(-s); both come from one `exp(-|s|)`, and the
    gradient -coefficient * sigmoid(-s) * ds/dx reuses them, so the backward
    pass is two multiplications instead of a replay of the forward graph.
    """

    @ops.custom_gradient
    def loss_fn(x):
        signed = ops.where(positive, x, -x)
        e = ops.exp(-ops.abs(signed))
        log_p_t = ops.minimum(signed, 0.0) - ops.log1p(e)
        one_minus_p_t = ops.where(signed > 0, e, 1.0) / (1.0 + e)
        # Selection reads `x`, not the outer logits: under JAX a closure over
        # the outer tracer would leak out of the custom-gradient trace.
        coefficient = coefficient_of(one_minus_p_t, x)
        scaled = coefficient * one_minus_p_t

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return ops.expand_dims(upstream, -1) * ops.where(positive, -scaled, scaled)

        return -ops.sum(coefficient * log_p_t, axis=-1), grad

    return loss_fn(logits)


def _power(base, exponent):
    """`base ** exponent` for a Python float exponent, cheaply.

    A tensor exponent (one per kind) costs a full `exp(g * log(b))` per
    entry; small integer exponents are a few multiplications instead.
    """
    if exponent == 0:
        return 1.0  # Also where base is 0, as torch.pow(0, 0) = 1.
    if exponent == int(exponent) and exponent <= 4:
        result = base
        for _ in range(int(exponent) - 1):
            result = result * base
        return result
    return ops.power(base, exponent)


def _scaled(alpha, value):
    if alpha == 1:
        return value
    return float(alpha) * value


def _by_kind(positive, unannotated, if_pos, if_neg, if_unannotated):
    """Per-entry values chosen by the target's kind (tensors or floats)."""
    values = if_neg
    if not _same(if_unannotated, if_neg):
        values = ops.where(unannotated, if_unannotated, values)
    if not _same(if_pos, values):
        values = ops.where(positive, if_pos, values)
    if isinstance(values, float):
        values = ops.full(ops.shape(positive), values, dtype="float32")
    return values


def _same(a, b):
    return a is b or (isinstance(a, float) and isinstance(b, float) and a == b)


def _probabilities_to_logits(probabilities):
    # Same clipping as keras.losses.binary_crossentropy(from_logits=False).
    epsilon = keras.config.epsilon()
    p = ops.clip(probabilities, epsilon, 1.0 - epsilon)
    return ops.log(p) - ops.log1p(-p)


@keras.saving.register_keras_serializable(package="keras_csl")
class ClassAwareSelectiveLoss(keras.losses.Loss):
    """Class-aware Selective Loss (CSL) for partially annotated multi-label data.

    Ben-Baruch et al., "Multi-label Classification with Partial Annotations
    using Class-aware Selective Loss", CVPR 2022 (arXiv 2110.10955).

    Each target is 1 (positive), 0 (verified negative) or -1 (un-annotated).
    With `p = sigmoid(logit)` and `p_neg = 1 - p` (or `min(1 - p + clip, 1)`),
    the loss of a sample is

        L = -sum_c  w_c * (1 - p_t)^gamma * alpha * log p_t

    where `p_t` is `p` for positives and `p_neg` otherwise, `gamma` and
    `alpha` are chosen by the target's kind (the asymmetric focusing of ASL),
    and the selection weight `w_c` (no gradient) says which entries count:

    - `"negative"`: every un-annotated entry counts, as a negative.
    - `"ignore"`: no un-annotated entry counts.
    - `"selective"` (CSL): an un-annotated entry does not count if its class
      prior `P_r(c)` exceeds `prior_threshold` (the class-aware rule; a
      threshold of 0 turns it off, as in the authors' code), nor if it is
      among the `likelihood_topk * batch_size` un-annotated entries of the
      batch with the highest logits (the likelihood rule, as the authors'
      code does; `likelihood_scope="sample"` takes the top
      `likelihood_topk` of each sample instead, as the paper words it).
      The remaining un-annotated entries count as negatives.

    Annotated entries always count. Focusing and selection weights carry no
    gradient. Log-probabilities are computed stably from logits in float32,
    whatever the input dtype, so even logits of +-100 give finite values.

    Differences from the authors' PyTorch code (README, "What the loss
    computes"; each is tested): under `tf.distribute` the likelihood top-k
    ranks each replica's own rows (`likelihood_topk * per-replica batch`
    entries per replica: the same count in total, chosen among fewer
    entries, so not the entries one device would pick); the likelihood
    rule ranks by logit and leaves out every entry tied at the k-th value,
    while theirs ranks by `p_neg` and drops an arbitrary part of a tie
    (with `clip > 0` every entry with `p <= clip` ties at `p_neg = 1`, but
    such entries cost nothing and have no gradient, so the loss is the
    same); log-probabilities are exact beyond their 1e-8 clamp. Not a
    difference, but worth knowing: with `clip > 0` the gradient of a
    non-positive entry is `-p (1 - p) / (1 - p + clip)` times its weight,
    which vanishes for confidently wrong negatives (9.1e-4 at logit 10 with
    clip 0.05, against 1.0 without clip), in their code as here.

    Bad input. Targets other than 1, 0, -1 (NaN, 0.5, 2, -7) and a `y_true`
    whose shape differs from `y_pred`'s (also `(1, C)` against `(B, C)`,
    which would broadcast) are rejected:

    - shapes known when traced: `ValueError` at once;
    - eager (TensorFlow, JAX outside `jit`, PyTorch): `ValueError` naming
      the first bad target, the count and the bad values;
    - TensorFlow graph (`model.fit` without XLA, `tf.function`):
      `tf.errors.InvalidArgumentError` with the same text, before the
      weights are updated;
    - XLA (`jit_compile=True`) and `jax.jit`, which cannot raise at run
      time: the loss of the batch is NaN, and so is its gradient (for the
      whole batch in TensorFlow, at the bad entries under JAX).

    The check costs one comparison and a reduction over the targets
    (benchmarks/loss_speed.py measures it, with and without).

    The class prior lives in the non-trainable variable `prior_variable`
    (shape `[num_classes]`), so `set_prior()` and
    `keras_csl.callbacks.ClassPriorUpdater` take effect inside already
    compiled train steps. Until a prior is given, no class is excluded by it.
    Under `tf.distribute`, create the loss inside `strategy.scope()`.

    `ClassAwareSelectiveLoss(**loss.get_config())` rebuilds the loss, and
    `ClassAwareSelectiveLoss().get_config()` holds the defaults. Each
    setting is defined once, in `SelectiveLossSettings`, and readable (not
    assignable) as an attribute, e.g. `loss.gamma_neg`.

    Example:

    >>> loss = keras_csl.ClassAwareSelectiveLoss(likelihood_topk=0,
    ...                                          reduction="sum")
    >>> y_true = [[1.0, 0.0, -1.0, -1.0]]
    >>> y_pred = [[0.0, 0.0, 0.0, 0.0]]
    >>> float(loss(y_true, y_pred))  # log 2 * (1 + 0.5 + 0.25 + 0.25)
    1.3862943...

    Args:
        mode: `"selective"` (default), `"negative"` or `"ignore"`.
        gamma_pos: focusing exponent of positives. Defaults to 0.
        gamma_neg: focusing exponent of verified negatives. Defaults to 1.
        gamma_unannotated: focusing exponent of un-annotated entries that
            count as negatives. Defaults to 2.
        alpha_pos: weight of positives' log-likelihood. Defaults to 1.
        alpha_neg: weight of verified negatives. Defaults to 1.
        alpha_unannotated: weight of un-annotated entries. Defaults to 1.
        clip: probability margin `m` of ASL added to `1 - p` (0, the
            default, disables it).
        likelihood_topk: `K` of the likelihood rule; 0 disables it.
            Defaults to 5.
        likelihood_scope: `"batch"` (default) or `"sample"`.
        prior_threshold: classes whose prior exceeds this are not treated as
            negatives when un-annotated; 0 turns the class-aware rule off.
            Defaults to 0.05.
        from_logits: whether `y_pred` are logits (default) or probabilities.
        num_classes: number of classes; needed for a prior set later.
        prior: initial class prior, a sequence of `num_classes` floats in
            [0, 1].
        reduction: Keras reduction of the per-sample losses; `"sum"` gives
            the authors' total over the batch.
        name: name of the loss.
        dtype: dtype of the returned loss; the computation is in float32.

    Raises:
        ValueError: for an unknown mode or scope, or an out-of-range value.
        TypeError: for an unknown argument.
    """

    def __init__(
        self,
        *,
        num_classes=None,
        prior=None,
        reduction="sum_over_batch_size",
        name="class_aware_selective_loss",
        dtype=None,
        **settings,
    ):
        self.settings = SelectiveLossSettings.from_arguments(
            settings, type(self).__name__
        )
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if num_classes is not None and not (
            isinstance(num_classes, (int, np.integer)) and num_classes > 0
        ):
            raise ValueError(
                "Invalid value for argument `num_classes`. Expected a "
                f"positive integer. Received: num_classes={num_classes!r}"
            )
        if prior is not None:
            prior = validate_prior(prior, num_classes, argument="prior")
            num_classes = len(prior)
        self.num_classes = None if num_classes is None else int(num_classes)

        self.prior_variable = None
        if self.num_classes is not None:
            initial = prior if prior is not None else np.zeros(self.num_classes)
            self.prior_variable = keras.Variable(
                np.asarray(initial, dtype="float32"),
                trainable=False,
                dtype="float32",
                name="class_prior",
            )

    @property
    def prior(self):
        """The current class prior as a NumPy array, or `None` if unset.

        The variable is the only state: an all-zero prior (the initial
        value) excludes no class, and reads as unset.
        """
        if self.prior_variable is None:
            return None
        values = np.asarray(keras.ops.convert_to_numpy(self.prior_variable))
        return values if values.any() else None

    def set_prior(self, values):
        """Replaces the class prior; takes effect in compiled train steps.

        Args:
            values: `num_classes` floats in [0, 1] (NumPy array, list or
                tensor).

        Raises:
            ValueError: if the loss was built without `num_classes`/`prior`,
                or `values` has the wrong shape or range.
        """
        if self.prior_variable is None:
            raise ValueError(
                "This loss has no prior variable: pass `num_classes` (or an "
                "initial `prior`) to ClassAwareSelectiveLoss to set a prior "
                "later. Received: num_classes=None"
            )
        values = validate_prior(values, self.num_classes, argument="values")
        self.prior_variable.assign(values)

    def excluded_classes(self, prior=None):
        """Which classes the class-aware rule leaves out when un-annotated.

        Those whose prior exceeds `prior_threshold`, in selective mode with
        a threshold above 0; none otherwise (also when no prior is set).

        Example:

        >>> loss = keras_csl.ClassAwareSelectiveLoss(prior_threshold=0.5)
        >>> loss.excluded_classes([0.9, 0.2, 0.6])
        array([ True, False,  True])

        Args:
            prior: the prior to read; defaults to the loss's current one.

        Returns:
            A boolean NumPy vector, one entry per class (empty when neither
            `prior` nor a current prior is known).
        """
        values = self.prior if prior is None else validate_prior(prior)
        if values is None:
            return np.zeros(self.num_classes or 0, dtype=bool)
        if not self.settings.class_aware_rule_on:
            return np.zeros(len(values), dtype=bool)
        return np.asarray(values) > self.settings.prior_threshold

    def call(self, y_true, y_pred):
        prior = None
        if self.settings.class_aware_rule_on and self.prior_variable is not None:
            prior = self.prior_variable.value
        return selective_loss(
            y_true,
            y_pred,
            self.settings,
            prior=prior,
            num_classes=self.num_classes,
            caller=type(self).__name__,
        )

    def get_config(self):
        config = super().get_config()
        prior = self.prior
        config.update(self.settings.to_config())
        config.update(
            num_classes=self.num_classes,
            prior=None if prior is None else [float(v) for v in prior],
            dtype=self.dtype,
        )
        return config


expose_settings(
    ClassAwareSelectiveLoss,
    SelectiveLossSettings,
)
