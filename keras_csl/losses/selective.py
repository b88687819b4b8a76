"""The Class-aware Selective Loss (CSL) for partially annotated labels."""

import numpy as np
import keras
from keras import ops

from keras_csl.losses import selection
from keras_csl.priors import validate_prior

MODES = ("negative", "ignore", "selective")
SCOPES = ("batch", "sample")


def class_aware_selective_loss(
    y_true,
    y_pred,
    mode="selective",
    gamma_pos=0.0,
    gamma_neg=1.0,
    gamma_unannotated=2.0,
    alpha_pos=1.0,
    alpha_neg=1.0,
    alpha_unannotated=1.0,
    clip=0.0,
    likelihood_topk=5,
    likelihood_scope="batch",
    prior=None,
    prior_threshold=0.05,
    from_logits=True,
):
    """Per-sample CSL loss; see `ClassAwareSelectiveLoss` for the arguments.

    Targets are 1 (positive), 0 (verified negative) or -1 (un-annotated).
    `prior` is `None` or a float tensor of shape `[classes]`.

    Returns:
        Float32 tensor of shape `[batch]`: minus the sum over classes of
        selection weight x focusing weight x alpha x log-likelihood.
    """
    targets = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    logits = y_pred if from_logits else _probabilities_to_logits(y_pred)

    # Neither positive nor un-annotated means a verified negative.
    positive = targets > 0.5
    unannotated = targets < -0.5

    def coefficient_of(one_minus_p_t, logits):
        """alpha * (1 - p_t)^gamma * selection weight, without gradient."""
        coefficient = _by_kind(
            positive,
            unannotated,
            _scaled(alpha_pos, _power(one_minus_p_t, gamma_pos)),
            _scaled(alpha_neg, _power(one_minus_p_t, gamma_neg)),
            _scaled(alpha_unannotated, _power(one_minus_p_t, gamma_unannotated)),
        )
        keep = selection_weight(
            logits,
            unannotated,
            mode=mode,
            likelihood_topk=likelihood_topk,
            likelihood_scope=likelihood_scope,
            prior=prior,
            prior_threshold=prior_threshold,
        )
        if keep is not None:
            coefficient = ops.where(keep, coefficient, 0.0)
        return ops.stop_gradient(coefficient)

    if clip > 0:
        # Probability shifting of ASL on every non-positive entry:
        # p_neg = min(1 - p + clip, 1) >= clip, so its log is finite.
        log_likelihood = ops.where(
            positive,
            ops.log_sigmoid(logits),
            ops.log(ops.minimum(ops.sigmoid(-logits) + clip, 1.0)),
        )
        p = ops.sigmoid(logits)
        coefficient = coefficient_of(
            ops.where(positive, 1.0 - p, ops.maximum(p - clip, 0.0)), logits
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


def selection_weight(
    logits,
    unannotated,
    mode="selective",
    likelihood_topk=5,
    likelihood_scope="batch",
    prior=None,
    prior_threshold=0.05,
):
    """Which entries count in the loss (the paper's selection weight).

    Annotated entries always count. Un-annotated ones count in `"negative"`
    mode, never in `"ignore"` mode, and in `"selective"` mode unless their
    class prior exceeds `prior_threshold` or they are among the
    `likelihood_topk * batch_size` highest un-annotated logits of the batch
    (`likelihood_scope="batch"`), or the `likelihood_topk` highest of their
    sample (`likelihood_scope="sample"`).

    Returns:
        A boolean tensor of the shape of `logits`, or `None` when every entry
        counts.
    """
    if mode == "negative":
        return None
    annotated = ops.logical_not(unannotated)
    if mode == "ignore":
        return annotated
    keep = None
    if prior is not None:
        common_class = ops.cast(prior, "float32") > prior_threshold
        keep = ops.logical_not(ops.logical_and(unannotated, common_class[None, :]))
    if likelihood_topk > 0:
        likely_positive = selection.top_entries_mask(
            ops.stop_gradient(logits),
            unannotated,
            likelihood_topk,
            scope=likelihood_scope,
        )
        dropped = ops.logical_not(likely_positive)
        keep = dropped if keep is None else ops.logical_and(keep, dropped)
    return keep


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


def _check(condition, argument, expected, value):
    if not condition:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected {expected}. "
            f"Received: {argument}={value!r}"
        )


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
      prior `P_r(c)` exceeds `prior_threshold` (the class-aware rule), nor if
      it is among the `likelihood_topk * batch_size` un-annotated entries of
      the batch with the highest predicted probability (the likelihood rule,
      as the authors' code does; `likelihood_scope="sample"` takes the top
      `likelihood_topk` of each sample instead, as the paper words it).
      The remaining un-annotated entries count as negatives.

    Annotated entries always count. Focusing and selection weights carry no
    gradient. Log-probabilities are computed stably from logits in float32,
    whatever the input dtype, so even logits of +-100 give finite values.

    The class prior lives in the non-trainable variable `prior_variable`
    (shape `[num_classes]`), so `set_prior()` and
    `keras_csl.callbacks.ClassPriorUpdater` take effect inside already
    compiled train steps. Until a prior is given, no class is excluded by it.
    Under `tf.distribute`, create the loss inside `strategy.scope()`.

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
        clip: probability margin `m` of ASL added to `1 - p` (0 disables).
        likelihood_topk: `K` of the likelihood rule; 0 disables it.
            Defaults to 5.
        likelihood_scope: `"batch"` (default) or `"sample"`.
        prior_threshold: classes whose prior exceeds this are not treated as
            negatives when un-annotated. Defaults to 0.05.
        num_classes: number of classes; needed for a prior set later.
        prior: initial class prior, a sequence of `num_classes` floats in
            [0, 1].
        from_logits: whether `y_pred` are logits (default) or probabilities.
        reduction: Keras reduction of the per-sample losses; `"sum"` gives
            the authors' total over the batch.
        name: name of the loss.
        dtype: dtype of the returned loss; the computation is in float32.

    Raises:
        ValueError: for an unknown mode or scope, or an out-of-range value.
    """

    def __init__(
        self,
        mode="selective",
        gamma_pos=0.0,
        gamma_neg=1.0,
        gamma_unannotated=2.0,
        alpha_pos=1.0,
        alpha_neg=1.0,
        alpha_unannotated=1.0,
        clip=0.0,
        likelihood_topk=5,
        likelihood_scope="batch",
        prior_threshold=0.05,
        num_classes=None,
        prior=None,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="class_aware_selective_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _check(mode in MODES, "mode", f"one of {MODES}", mode)
        _check(
            likelihood_scope in SCOPES,
            "likelihood_scope",
            f"one of {SCOPES}",
            likelihood_scope,
        )
        for arg, value in (
            ("gamma_pos", gamma_pos),
            ("gamma_neg", gamma_neg),
            ("gamma_unannotated", gamma_unannotated),
            ("alpha_pos", alpha_pos),
            ("alpha_neg", alpha_neg),
            ("alpha_unannotated", alpha_unannotated),
        ):
            _check(
                isinstance(value, (int, float)) and 0 <= value < np.inf,
                arg,
                "a finite number >= 0",
                value,
            )
        _check(
            isinstance(clip, (int, float)) and 0 <= clip < 1,
            "clip",
            "a number in [0, 1)",
            clip,
        )
        _check(
            isinstance(likelihood_topk, (int, np.integer))
            and not isinstance(likelihood_topk, bool)
            and likelihood_topk >= 0,
            "likelihood_topk",
            "an integer >= 0",
            likelihood_topk,
        )
        _check(
            isinstance(prior_threshold, (int, float))
            and 0 <= prior_threshold <= 1,
            "prior_threshold",
            "a number in [0, 1]",
            prior_threshold,
        )
        if num_classes is not None:
            _check(
                isinstance(num_classes, (int, np.integer)) and num_classes > 0,
                "num_classes",
                "a positive integer",
                num_classes,
            )
        if prior is not None:
            prior = validate_prior(prior, num_classes, argument="prior")
            num_classes = len(prior)

        self.mode = mode
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)
        self.gamma_unannotated = float(gamma_unannotated)
        self.alpha_pos = float(alpha_pos)
        self.alpha_neg = float(alpha_neg)
        self.alpha_unannotated = float(alpha_unannotated)
        self.clip = float(clip)
        self.likelihood_topk = int(likelihood_topk)
        self.likelihood_scope = likelihood_scope
        self.prior_threshold = float(prior_threshold)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.from_logits = from_logits

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

    def call(self, y_true, y_pred):
        y_true, y_pred = _as_tensors(y_true, y_pred)
        _check_multilabel_shapes(y_true, y_pred, self.num_classes)
        prior = None
        if self.mode == "selective" and self.prior_variable is not None:
            prior = self.prior_variable.value
        return class_aware_selective_loss(
            y_true,
            y_pred,
            mode=self.mode,
            gamma_pos=self.gamma_pos,
            gamma_neg=self.gamma_neg,
            gamma_unannotated=self.gamma_unannotated,
            alpha_pos=self.alpha_pos,
            alpha_neg=self.alpha_neg,
            alpha_unannotated=self.alpha_unannotated,
            clip=self.clip,
            likelihood_topk=self.likelihood_topk,
            likelihood_scope=self.likelihood_scope,
            prior=prior,
            prior_threshold=self.prior_threshold,
            from_logits=self.from_logits,
        )

    def get_config(self):
        config = super().get_config()
        prior = self.prior
        config.update(
            {
                "mode": self.mode,
                "gamma_pos": self.gamma_pos,
                "gamma_neg": self.gamma_neg,
                "gamma_unannotated": self.gamma_unannotated,
                "alpha_pos": self.alpha_pos,
                "alpha_neg": self.alpha_neg,
                "alpha_unannotated": self.alpha_unannotated,
                "clip": self.clip,
                "likelihood_topk": self.likelihood_topk,
                "likelihood_scope": self.likelihood_scope,
                "prior_threshold": self.prior_threshold,
                "num_classes": self.num_classes,
                "prior": None if prior is None else [float(v) for v in prior],
                "from_logits": self.from_logits,
                "dtype": self.dtype,
            }
        )
        return config


def _as_tensors(y_true, y_pred):
    # Loss.__call__ maps nested Python lists to lists of tensors.
    return ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)


def _check_multilabel_shapes(y_true, y_pred, num_classes):
    pred_shape = tuple(y_pred.shape)
    true_shape = tuple(y_true.shape)
    if len(pred_shape) != 2:
        raise ValueError(
            "Invalid value for argument `y_pred`. Expected a 2D tensor of "
            f"shape [batch, classes]. Received: y_pred.shape={pred_shape}"
        )
    if len(true_shape) != 2 or (
        None not in (true_shape[-1], pred_shape[-1])
        and true_shape[-1] != pred_shape[-1]
    ):
        raise ValueError(
            "Invalid value for argument `y_true`. Expected the shape of "
            f"y_pred {pred_shape}. Received: y_true.shape={true_shape}"
        )
    if num_classes is not None and pred_shape[-1] not in (None, num_classes):
        raise ValueError(
            "Invalid value for argument `y_pred`. Expected "
            f"num_classes={num_classes} columns. Received: "
            f"y_pred.shape={pred_shape}"
        )
