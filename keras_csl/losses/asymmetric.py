"""Asymmetric Loss (ASL) for fully labelled multi-label data."""

import keras

from keras_csl.losses import targets as target_checks
from keras_csl.losses.selective import selective_loss
from keras_csl.losses.settings import AsymmetricLossSettings
from keras_csl.losses.settings import SelectiveLossSettings
from keras_csl.losses.settings import expose_settings


@keras.saving.register_keras_serializable(package="keras_csl")
class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric Loss (Ridnik et al., ICCV 2021) for fully labelled data.

    Targets are 1 (positive) or 0 (negative), and

        L = -sum_c [ y (1 - p)^gamma_pos log p
                     + (1 - y) p_m^gamma_neg log(1 - p_m) ]

    with the shifted probability `p_m = max(p - clip, 0)`. Focusing weights
    carry no gradient. It is the CSL computation with every label
    annotated.

    Only 1 and 0 are accepted: ASL has no un-annotated label (in the
    authors' formula a -1 target would weigh `log p` by -1 and `log(1 - p)`
    by 2). -1 and any other value (NaN, 0.5, 2) are rejected as
    `ClassAwareSelectiveLoss` rejects bad targets: a `ValueError` eagerly,
    `tf.errors.InvalidArgumentError` in a TensorFlow graph, a NaN loss and
    gradient under XLA or `jax.jit`; so are shapes that differ from
    `y_pred`'s. For partial labels use `ClassAwareSelectiveLoss`; ASL with
    every -1 counted as a negative (the paper's "negative ASL" baseline) is
    `ClassAwareSelectiveLoss(mode="negative", gamma_pos=1, gamma_neg=4,
    gamma_unannotated=4, clip=0.05)`.

    Example:

    >>> loss = keras_csl.AsymmetricLoss(reduction="sum")
    >>> float(loss([[1.0, 0.0]], [[0.0, 0.0]]))  # 0.5 log 2 + 0.45^4 log(1/0.55)
    0.3710...

    Args:
        gamma_pos: focusing exponent of positives. Defaults to 1.
        gamma_neg: focusing exponent of negatives. Defaults to 4.
        clip: probability margin added to `1 - p` of negatives. Defaults
            to 0.05.
        from_logits: whether `y_pred` are logits (default).
        reduction: Keras reduction of the per-sample losses.
        name: name of the loss.
        dtype: dtype of the returned loss; the computation is in float32.

    Raises:
        ValueError: for an out-of-range argument.
        TypeError: for an unknown argument.
    """

    def __init__(
        self,
        *,
        reduction="sum_over_batch_size",
        name="asymmetric_loss",
        dtype=None,
        **settings,
    ):
        self.settings = AsymmetricLossSettings.from_arguments(
            settings, type(self).__name__
        )
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        s = self.settings
        self._selective_settings = SelectiveLossSettings(
            mode="negative",
            gamma_pos=s.gamma_pos,
            gamma_neg=s.gamma_neg,
            gamma_unannotated=s.gamma_neg,
            clip=s.clip,
            likelihood_topk=0,
            from_logits=s.from_logits,
        )

    def call(self, y_true, y_pred):
        return selective_loss(
            y_true,
            y_pred,
            self._selective_settings,
            allowed=target_checks.FULL_TARGETS,
            caller=type(self).__name__,
        )

    def get_config(self):
        config = super().get_config()
        config.update(self.settings.to_config())
        config.update(dtype=self.dtype)
        return config


expose_settings(AsymmetricLoss, AsymmetricLossSettings)
